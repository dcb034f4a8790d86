"""The durable record log of one server: append-only segments plus a compacted snapshot.

Every accepted record's AT line is appended with one ``write(2)`` before the IAMAT that
made it is answered, so an acknowledged record survives the process being killed (``kill -9``):
the kernel holds the bytes. With ``fsync`` on, the reply also waits for an ``fsync(2)`` that
covers it; concurrent replies share one fsync (group commit), so the cost per record stays low.

Files in the server's data directory::

    snapshot          every record at the time of the last compaction
    journal.<seq>     records appended since (seq grows; older ones are deleted after a
                      compaction has captured them)

Recovery reads the snapshot and then every journal in order. Because a store keeps only the
newest record per client under a total order, replaying a record twice or out of order gives
the same result: recovery needs no sequence numbers, and a crash at any point of a compaction
loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path

from .files import open_private, private_dir

__all__ = ["Journal"]

log = logging.getLogger("herd.journal")

_SEGMENT = re.compile(r"journal\.([0-9]+)")


class Journal:
    """Append-only log in ``directory``; create it with ``open``, then ``append``."""

    def __init__(self, directory: Path, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync
        self._fd = -1
        self._seq = 0
        self.appended = 0  # records appended since the last compaction
        self._written = 0  # records written in all
        self._synced = 0  # records covered by a completed fsync
        self._sync: asyncio.Future[int] | None = None
        self._buffer: list[bytes] = []
        self._compacting: asyncio.Future[None] | None = None

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.iterdir():
            m = _SEGMENT.fullmatch(path.name)
            if m:
                found.append((int(m[1]), path))
        return sorted(found)

    def recover(self) -> Iterator[bytes]:
        """Every line recorded so far: the snapshot's, then each journal's, oldest first.

        A torn last line (power loss mid-write) is yielded too; the caller drops lines that
        do not parse.
        """
        for _, line in self.recover_marked():
            yield line

    def recover_marked(self) -> Iterator[tuple[bool, bytes]]:
        """``recover``'s lines, each with whether it came from a segment (appended since the
        last compaction) rather than the snapshot."""
        private_dir(self.directory, tighten=True)  # every location: the server's eyes only
        paths = [(False, self.directory / "snapshot")]
        paths += [(True, p) for _, p in self._segments()]
        for segment, path in paths:
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
                for line in f:
                    yield segment, line

    def open(self) -> None:
        """Start a new journal segment for appends (after ``recover``)."""
        private_dir(self.directory, tighten=True)
        segments = self._segments()
        self._seq = segments[-1][0] + 1 if segments else 1
        self._fd = self._open_segment(self._seq)

    def _open_segment(self, seq: int) -> int:
        path = self.directory / f"journal.{seq}"
        fd = open_private(path, os.O_WRONLY | os.O_APPEND)
        if self.fsync:
            _fsync_dir(self.directory)
        return fd

    def append(self, line: bytes) -> bool:
        """Buffer one record line (with its newline); ``flush`` hands the buffer to the kernel
        (then it is safe from ``kill -9``). Returns True for the first line of a batch, when
        the caller must arrange a flush."""
        self._buffer.append(line)
        self.appended += 1
        self._written += 1
        return len(self._buffer) == 1

    def flush(self) -> None:
        """One ``write(2)`` of every buffered line (more if the kernel takes it in parts).

        If the journal cannot be written (disk full, I/O error), the process exits at once:
        the replies waiting behind this write must never go out, since a record that is not
        in the journal could be lost. A supervisor (``herd up``) restarts the server, which
        recovers everything that was written.
        """
        if not self._buffer:
            return
        data = memoryview(b"".join(self._buffer))
        self._buffer.clear()
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            message = f"journal write failed, stopping so nothing unjournaled is answered: {exc}"
            log.critical(message)
            os.write(2, f"herd: {message}\n".encode())
            os._exit(75)  # EX_TEMPFAIL

    async def commit(self) -> None:
        """With fsync on, wait until everything appended so far is on disk (group commit)."""
        if not self.fsync:
            return
        self.flush()
        target = self._written
        while self._synced < target:
            if self._sync is None:
                loop = asyncio.get_running_loop()
                self._sync = loop.run_in_executor(None, self._fsync_upto, self._fd, self._written)
                self._sync.add_done_callback(self._synced_upto)
            await asyncio.shield(self._sync)

    def _fsync_upto(self, fd: int, count: int) -> int:
        os.fsync(fd)
        return count

    def _synced_upto(self, future: asyncio.Future[int]) -> None:
        self._sync = None
        if not future.cancelled() and future.exception() is None:
            self._synced = max(self._synced, future.result())

    def compact(
        self, lines: Iterable[bytes], ready: Callable[[], Awaitable[None]] | None = None
    ) -> asyncio.Future[None] | None:
        """Start a compaction to ``lines`` (the store's records now), unless one is running.

        Appends move to a new segment at once; the snapshot is written in a worker thread,
        then renamed into place, and only then, once ``ready`` (history: every point of the
        older segments is in its database) returns, are the older segments deleted.
        """
        if self._compacting is not None and not self._compacting.done():
            return None
        if self._sync is not None:
            return None  # an fsync of the current segment is in flight: compact next time
        self.flush()
        old_fd, upto = self._fd, self._seq
        self._seq += 1
        self._fd = self._open_segment(self._seq)
        if self.fsync:
            # Records awaiting a group commit on the old segment are made safe here, since
            # later fsyncs go to the new one.
            os.fsync(old_fd)
        os.close(old_fd)
        self.appended = 0
        snapshot = list(lines)
        self._compacting = asyncio.ensure_future(self._compact(snapshot, upto, ready))
        self._compacting.add_done_callback(_report_failure)
        return self._compacting

    async def _compact(
        self, lines: list[bytes], upto: int, ready: Callable[[], Awaitable[None]] | None
    ) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._write_snapshot, lines)
        if ready is not None:
            await ready()
        await loop.run_in_executor(None, self._delete_upto, upto)
        log.info("compacted the journal: %d records in the snapshot", len(lines))

    def _write_snapshot(self, lines: list[bytes]) -> None:
        tmp = self.directory / "snapshot.tmp"
        with open(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / "snapshot")
        _fsync_dir(self.directory)

    def _delete_upto(self, upto: int) -> None:
        for seq, path in self._segments():
            if seq <= upto:
                path.unlink(missing_ok=True)

    async def close(self) -> None:
        """Finish a running compaction, flush to disk, and close."""
        if self._compacting is not None:
            with contextlib.suppress(Exception):
                await self._compacting
        if self._fd >= 0:
            self.flush()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def _report_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        # The journal segments are still there: nothing is lost, the next compaction retries.
        log.error("journal compaction failed: %s", exc)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
