"""Writes that wait for the end of the current event-loop iteration, then go out in order.

Every record a server accepts costs a journal write, a write per neighbour, a reply and
traffic-log lines. Made one by one, that is a system call each; gathered over one loop
iteration they become one write per file and per socket, however many records the iteration
handled. The order of the flush is the server's promise: the subscribers and the peer links
first (a record moves on as soon as it can, and a neighbour has it before the client has its
reply), then the journal (an answered record is in the kernel), then the replies. The traffic
log follows within ``LOG_DELAY``.

Subscribers come before the peer links. A write to a link wakes its neighbour, which on a busy
machine (or one CPU) often takes the CPU at once and passes the record on through the herd
before this server writes its next socket: written after the links, a subscriber (the
gateway's map) waited for those wake-ups in about half the updates, 150-700 µs each. Written
first, its update is on its way before any neighbour wakes; the links lose only the time of
one write per subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from itertools import repeat
from pathlib import Path

from .config import LogRotation
from .files import open_private, private_dir
from .logs import rotate

__all__ = ["Outbox", "TrafficLog"]

log = logging.getLogger("herd.traffic")

# Seconds a traffic-log line may wait to be written, and the lines that make a write at once.
# A killed server loses at most this much of its log, never a record (the journal has those).
LOG_DELAY = 0.05
LOG_BATCH = 2000
# Bytes of big entries (WHATSAT replies, some 18 KB each) that make a write at once: a write of
# 50 ms of them held the loop for milliseconds (2.4 ms for 60 replies, measured), which every
# request waiting meanwhile paid; 64 KiB at a time holds it about 0.2 ms.
LOG_BYTES = 64 * 1024
BIG_ENTRY = 1024  # entries longer than this count toward LOG_BYTES


class TrafficLog:
    """Every line in and out of a server, appended to its log file in batches.

    A log line is ``<time> TRAFFIC <who> <arrow> <line>``. A caller makes its ``who arrow``
    tag once (``tag``) and hands over each line with its newline; a batch shares one
    timestamp (it spans at most LOG_DELAY) and becomes one log text with a single join, so
    logging a line costs a concatenation and an append on the hot path.

    The file is rotated (``rotation``) after the write that takes it to its size, and reopened
    when something else renamed it (logrotate); the server's ``logging`` records go to the
    same file and follow it (see ``logs.setup_logging``).
    """

    def __init__(self, path: Path | None, rotation: LogRotation | None = None) -> None:
        self._path = path
        self._rotation = rotation or LogRotation(max_bytes=0)
        self._fd = -1
        if path is not None:
            private_dir(path.parent)
            self._fd = self._open(path)
        # Entries waiting (``tag + data``); the outbox appends to this list itself.
        self.entries: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._big_bytes = 0  # bytes of big entries waiting (see LOG_BYTES)
        self._failing = False  # the last write failed (warned once until one succeeds)

    @staticmethod
    def tag(who: str, arrow: str) -> bytes:
        """The ``who arrow`` part of a log line (``>>`` in, ``<<`` out, ``++``/``--``
        connected/closed)."""
        return f"{who} {arrow} ".encode()

    def add(self, tag: bytes, data: bytes) -> None:
        """Log ``data`` (a line with its newline, or a multi-line reply) under ``tag``."""
        self.entries.append(tag + data)
        if len(data) > BIG_ENTRY:
            self.big(len(data))

    def big(self, size: int) -> None:
        """Count an entry over BIG_ENTRY bytes just added to ``entries`` (see LOG_BYTES)."""
        self._big_bytes += size

    def flush_soon(self) -> None:
        """Write within LOG_DELAY, or now if much is waiting: the log never delays a reply or
        a flood, and a busy server writes it in big pieces."""
        if len(self.entries) >= LOG_BATCH or self._big_bytes >= LOG_BYTES:
            self.flush()
        elif self.entries and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LOG_DELAY, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines = self.entries
        big, self._big_bytes = self._big_bytes, 0
        if not lines:
            return
        if self._fd < 0:  # closed: what comes after is dropped
            lines.clear()
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        head = f"{stamp}.{int(now * 1000) % 1000:03d} TRAFFIC ".encode()
        # The common batch: every entry is one line of printable ASCII ending in its newline.
        # Then the joined text already has one log line per entry, safe to show on a terminal:
        # deleting the printable bytes leaves exactly one LF per entry (one pass in C, no
        # dearer than the count of LFs it replaces). Otherwise each entry is made one log line
        # with its line breaks and unsafe bytes escaped (a WHATSAT reply, a CRLF line, an
        # escape sequence in a client ID), as a batch with a big entry is at once: that is
        # most often a reply of many lines (a HISTORY answer of 1.6 MB took 4 ms to log, a
        # fifth of them to look at it whole first).
        text = b"" if big else head.join(lines)
        ends = not big and all(map(bytes.endswith, lines, repeat(b"\n", len(lines))))
        if not (ends and len(text.translate(None, _PLAIN)) == len(lines)):
            text = head.join(map(_one_line, lines))
        lines.clear()
        try:
            os.writev(self._fd, (head, text))
        except OSError as exc:  # disk full, I/O error: the log loses lines, nobody else
            if not self._failing:
                log.warning("cannot write the traffic log, dropping its lines: %s", exc)
            self._failing = True
            return
        self._failing = False
        if self._path is not None:
            self._follow(self._path)

    def _follow(self, path: Path) -> None:
        """Rotate the file once it reaches its size; reopen it if something else rotated it
        (logrotate renames it: the name then points to another file, or none). Neither may
        stop the server: if the file cannot be rotated or reopened, the log goes on in the file
        it has, and stops following its name."""
        held = os.fstat(self._fd)
        max_bytes = self._rotation.max_bytes
        try:
            if max_bytes and held.st_size >= max_bytes:
                rotate(path, self._rotation.backups)
            else:
                named = os.stat(path)
                if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                    return
        except FileNotFoundError:
            pass  # renamed or deleted: open it anew
        except OSError as exc:
            self._stop_following(f"cannot rotate or check {path}: {exc}")
            return
        try:
            private_dir(path.parent)
            fd = self._open(path)
        except OSError as exc:
            self._stop_following(f"cannot reopen {path}: {exc}")
            return
        os.close(self._fd)
        self._fd = fd

    def _stop_following(self, why: str) -> None:
        log.warning("%s; the traffic log goes on in the file it has", why)
        self._path = None

    def _open(self, path: Path) -> int:
        # Private: every line in and out, client IDs and handshake lines included.
        return open_private(path, os.O_WRONLY | os.O_APPEND)

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# Bytes that go into a log line as they are: printable ASCII.
_PLAIN = bytes(range(0x20, 0x7F))
# What a terminal could act on (an escape sequence that moves the cursor, retitles the window,
# or worse) is written escaped, in Python's notation: C0 controls, DEL and the C1 controls.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {
    0x09: "\\t",
    0x0A: "\\n",
    0x0D: "\\r",
    **{c: f"\\u{c:04x}" for c in range(0x80, 0xA0)},
}


def _one_line(entry: bytes) -> bytes:
    """``entry`` as one log line: trailing line breaks dropped, inner ones and every control
    character escaped (``\\n``, ``\\x1b``, ``\\u009b``), bytes that are not UTF-8 written as
    ``\\xNN``; other UTF-8 text (a client ID in Cyrillic) stays as it is."""
    odd = entry.translate(None, _PLAIN)
    if len(odd) == 0:
        return entry + b"\n"
    if len(odd.translate(None, b"\n")) == 0 and entry.endswith(b"\n") and entry[-2:] != b"\n\n":
        # Line breaks only, and one at the end (a HISTORY answer): each escaped but that one,
        # in one pass, with no copy of the entry first.
        return entry.replace(b"\n", b"\\n", len(odd) - 1)
    body = entry.rstrip(b"\r\n")
    odd = body.translate(None, _PLAIN)
    if len(odd) == 0:
        return body + b"\n"
    if len(odd.translate(None, b"\n")) == 0:
        # Only line breaks (a reply of many lines: WHATSAT, HISTORY): escaped at C speed; a
        # 10,000-line HISTORY answer cost its server far more to log, a character at a time,
        # than to read.
        return body.replace(b"\n", b"\\n") + b"\n"
    text = body.decode("utf-8", "backslashreplace").translate(_ESCAPES)
    return text.encode() + b"\n"


class Outbox:
    """Collects flush callbacks for the end of this iteration and runs them in stage order,
    then writes the traffic log."""

    SUBSCRIBERS, PEERS, JOURNAL, CLIENTS = range(4)  # the order of the flush

    def __init__(self, traffic: TrafficLog) -> None:
        self.traffic = traffic
        self._entries = traffic.entries
        self._stages: list[list[Callable[[], None]]] = [[] for _ in range(4)]
        self._scheduled: asyncio.Handle | None = None

    def later(self, stage: int, flush: Callable[[], None]) -> None:
        """Run ``flush`` at the end of this iteration (the caller registers it once)."""
        self._stages[stage].append(flush)
        if self._scheduled is None:
            self._schedule()

    def log(self, tag: bytes, data: bytes) -> None:
        """Log ``data`` under ``tag`` (see ``TrafficLog.tag``)."""
        # TrafficLog.add, inline: every line in and out of the server comes here.
        self._entries.append(tag + data)
        if len(data) > BIG_ENTRY:
            self.traffic.big(len(data))
        if self._scheduled is None:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Run everything pending now, stage by stage (also called before a socket closes, and
        by a peer link at the end of each batch it reads)."""
        if self._scheduled is not None:
            self._scheduled.cancel()  # a no-op if this is that call
            self._scheduled = None
        for stage in self._stages:
            while stage:
                callbacks = stage[:]
                stage.clear()
                for callback in callbacks:
                    callback()
        self.traffic.flush_soon()
