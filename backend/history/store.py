"""History on the event loop's side: what is new, the chunks being gathered, reads off the loop.

A point is kept in two steps. On the loop, ``History.add`` (a record that became its client's
newest) appends it to its client's open chunk (buffers.py), and ``History.offer`` (a late
point, or a neighbour's) first decides whether it is new here, so that it is flooded on
exactly once. A chunk goes to the writer thread once it holds CHUNK_POINTS points, is
MAX_AGE_S old, or the open chunks hold MAX_OPEN_POINTS in all; the writer stores it as one
row (schema.py), so a commit costs a row per chunk rather than per point. Until the writer
reports it committed, a point is in memory *and* in the record journal (which is not
compacted past it): reads (reads.py, in worker threads) merge it in, and anti-entropy's
digests count it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from ..files import private_dir
from ..protocol import Record
from .asking import Asking
from .buffers import Buffer
from .held import HeldIndex, line_held
from .points import (
    DAY_NS,
    MAX_NS,
    Point,
    Row,
    day_of,
    key_of,
    ns_of,
)
from .reads import Reads
from .schema import connect, create
from .writer import Chunk, Expire, Forget, Writer

__all__ = ["CHUNK_POINTS", "FILE", "History"]

FILE = "history.db"

# A chunk goes to the writer when it holds this many points: 512 points are ~12 KB packed,
# a day's trail at one fix per 10 s is 24 chunks (one an hour at most), and a window read
# decodes a few of them.
CHUNK_POINTS = 512
# ... or when its first point has waited this long: a slow client's chunk is still written
# within minutes (the journal keeps it meanwhile; a restart replays it).
MAX_AGE_S = 120.0
# ... or when the open chunks hold this many points in all (~35 MB): the oldest go first.
MAX_OPEN_POINTS = 100_000
# How often the loop looks for chunks past MAX_AGE_S.
TICK_S = 1.0
_DAY_S = 86_400
_LAST_S = MAX_NS // 1_000_000_000  # the last whole second history's nanoseconds reach


class History(Asking):
    """Every point this server holds, in ``directory``/history.db and in open chunks."""

    def __init__(
        self,
        directory: Path,
        *,
        keep_days: int,
        max_points: int,
        durable: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = directory / FILE
        self.keep_days = keep_days
        self.max_points = max_points
        self.durable = durable
        self.clock = clock
        self.first_day = 0  # points of earlier UTC days are past retention
        self._first_s = 0  # its first second
        self.floors: dict[str, int] = {}  # client -> no point at or before this ns is kept
        self.queued = 0  # items handed to the writer
        self.saved = 0  # items the writer has committed
        self.stored = 0  # points in the database
        self.late = 0  # late points kept since start (the server counts them)
        self.deletions = 0  # deletions applied since start
        self.reads = Reads(self.path, durable=durable)
        self._open: dict[str, Buffer] = {}
        self._ageing: dict[str, float] = {}  # client -> when its open chunk began, oldest first
        self._open_points = 0  # points in open chunks (not yet sent)
        self._order: collections.deque[Buffer | None] = collections.deque()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._lookup: sqlite3.Connection | None = None
        self._held: HeldIndex | None = None  # what the database holds, for ``offer``
        self._writer: Writer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick: asyncio.TimerHandle | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> bool:
        """Open (creating if need be) and start the writer; True if the database is new.

        Reads only the floors (deleted and trimmed clients: a few rows), never the points, so
        a server holding millions of points opens in milliseconds."""
        private_dir(self.path.parent, tighten=False)
        self._loop = asyncio.get_running_loop()
        conn = connect(self.path, durable=self.durable)
        new, version = create(conn)
        writer = Writer(conn, self.max_points, self._from_writer)
        if version == 1:
            writer.convert_v1()
        self.floors = dict(
            conn.execute("SELECT name, floor FROM clients WHERE floor IS NOT NULL").fetchall()
        )
        self._lookup = connect(self.path, durable=self.durable)
        self._held = HeldIndex(self._lookup)
        self._writer = writer
        self.stored = writer.stored
        writer.start()
        self.expire()
        self._tick = self._loop.call_later(TICK_S, self._age)
        return new

    async def close(self) -> None:
        """Write everything gathered, then close."""
        if self._tick is not None:
            self._tick.cancel()
        if self._writer is not None:
            self.flush()
            await asyncio.to_thread(self._writer.stop)
            self._writer.conn.close()
            self._writer = None
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = self._held = None

    # -- writes (on the loop) --------------------------------------------------------------

    def add(self, record: Point) -> None:
        """Keep ``record`` with no lookup: a record that just became its client's newest,
        which no held point can equal (a copy is dropped by the writer all the same).

        Every record a server takes comes here, so the common case (a client with no floor,
        a time well within retention, an open chunk to join) is a few steps inline."""
        if isinstance(record, Row):  # a tool's or a test's point
            if self.wanted(record):
                self._append(self._open.get(record.client_id), record)
            return
        seconds = record.key[0]
        client_id = record.client_id
        rare = not self._first_s <= seconds < _LAST_S or client_id in self.floors
        if rare and not self.wanted(record):
            return
        buffer = self._open.get(client_id)
        if buffer is None or not buffer.items or buffer.keys is not None:
            self._append(buffer, record)
            return
        items = buffer.items
        items.append(record)
        self._open_points += 1
        if len(items) >= CHUNK_POINTS or self._open_points > MAX_OPEN_POINTS:
            self._full(buffer)

    def offer(self, point: Point, *, unheld: bool = False) -> bool:
        """Keep ``point`` if this server does not hold it; True if it was new. ``unheld``:
        ``holds_line`` just said so of its line, in this same step of the loop (a
        neighbour's PUT), and it is not looked up again.

        A point past retention or at or before its client's floor is not new: it is never
        stored, nor flooded on (so a deleted point does not come back from a peer)."""
        if not self.wanted(point):
            return False
        buffer = self._open.get(point.client_id)
        if unheld:
            self._append(buffer, point)
            return True
        if buffer is not None:
            key = key_of(point)
            # Once a lookup built the buffer's identity set (kept current as points come
            # and go), it answers alone: a repair offers every point, and the tail's
            # comparisons would cost more than the set.
            keys = buffer.keys
            if key in keys if keys is not None else buffer.holds(key):
                return False
        assert self._held is not None, "history is not open"
        if self._held.holds(point.client_id, ns_of(point), point.location):
            return False
        self._append(buffer, point)
        return True

    def holds_line(self, line: bytes) -> bool | None:
        """Whether this server holds the point of an AT or POINT line (None when the line is
        not plainly one: not looked up). A copy is then dropped unparsed, as ``offer`` would
        drop it once parsed, and its record is no news either (a held point's record was the
        newest once, and a store only moves to newer records); a point found not held is
        offered ``unheld`` once parsed (the parse reads the same client, time and place)."""
        assert self._held is not None, "history is not open"
        return line_held(line, self._open, self._held)

    def wanted(self, point: Point) -> bool:
        """Within retention, within 64-bit nanoseconds, above its client's floor."""
        if isinstance(point, Record):
            seconds = point.key[0]  # to the second, exactly, without the nanoseconds
            if seconds < self.first_day * _DAY_S:
                return False
            if seconds >= _LAST_S and ns_of(point) > MAX_NS:
                return False
            floor = self.floors.get(point.client_id)
            return floor is None or ns_of(point) > floor
        floor = self.floors.get(point.client_id)
        if not self.first_day * DAY_NS <= point.ns <= MAX_NS:
            return False
        return floor is None or point.ns > floor

    def forget(self, client_id: str, until_ns: int) -> bool:
        """Delete a client's points up to ``until_ns``; False if an equal or later deletion
        was applied already (so a deletion floods on only once)."""
        floor = self.floors.get(client_id)
        until_ns = min(until_ns, MAX_NS)
        if floor is not None and floor >= until_ns:
            return False
        self.floors[client_id] = until_ns
        self.deletions += 1
        if self._held is not None:
            self._held.drop(client_id)
        buffer = self._open.get(client_id)
        if buffer is not None and buffer.items:
            # The open chunk's points it deletes never go to the writer; the chunks already
            # there are written before the deletion, which removes them.
            kept = [p for p in buffer.items if ns_of(p) > until_ns]
            self._open_points -= len(buffer.items) - len(kept)
            buffer.replace(kept)
        self._put(Forget(client_id, until_ns), None)
        return True

    def now_ns(self) -> int:
        return int(self.clock() * 1e9)

    def expire(self) -> None:
        """Apply retention: every point of a UTC day more than ``keep_days`` before today's
        goes, on every server alike (by client time, never by when a point arrived)."""
        first = day_of(self.now_ns()) - self.keep_days
        if first > self.first_day:
            self.first_day = first
            self._first_s = first * _DAY_S
            if self._held is not None:
                self._held.drop()
            self._put(Expire(first), None)

    def flush(self) -> None:
        """Send every open chunk to the writer."""
        for client_id in list(self._ageing):
            self._send(self._open[client_id])

    async def wait_saved(self, *, flush: bool = True) -> None:
        """Until every point gathered so far is committed (the record journal waits on this
        before it deletes the segments that hold those points); with ``flush=False``, only
        what was handed to the writer already (a deletion, say)."""
        if flush:
            self.flush()
        target = self.queued
        if self.saved >= target:
            return
        assert self._loop is not None and self._writer is not None
        self._writer.hurry()
        future = self._loop.create_future()
        self._waiters.append((target, future))
        await future

    def _append(self, buffer: Buffer | None, point: Point) -> None:
        client_id = point.client_id
        if buffer is None:
            buffer = self._open[client_id] = Buffer(client_id)
        if not buffer.items:
            self._ageing.pop(client_id, None)  # to the end: the youngest
            self._ageing[client_id] = time.monotonic()
        buffer.append(point)
        self._open_points += 1
        if len(buffer.items) >= CHUNK_POINTS or self._open_points > MAX_OPEN_POINTS:
            self._full(buffer)

    def _full(self, buffer: Buffer) -> None:
        """A point was just appended to ``buffer``: send it if its chunk is full, else the
        oldest quarter of the open chunks if they hold too many points in all."""
        if len(buffer.items) >= CHUNK_POINTS:
            self._send(buffer)
        elif self._open_points > MAX_OPEN_POINTS:
            for oldest in list(self._ageing)[: len(self._ageing) // 4 + 1]:
                self._send(self._open[oldest])

    def _send(self, buffer: Buffer) -> None:
        """The client's open chunk to the writer."""
        self._ageing.pop(buffer.client_id, None)
        if buffer.items:
            self._open_points -= len(buffer.items)
            self._put(buffer.take(), buffer)

    def _age(self) -> None:
        """Send the chunks whose first point has waited MAX_AGE_S; then again in TICK_S."""
        assert self._loop is not None
        limit = time.monotonic() - MAX_AGE_S
        for client_id, began in list(self._ageing.items()):
            if began > limit:
                break
            self._send(self._open[client_id])
        self._tick = self._loop.call_later(TICK_S, self._age)

    def _put(self, item: Chunk | Forget | Expire, buffer: Buffer | None) -> None:
        assert self._writer is not None, "history is not open"
        self._order.append(buffer)
        self.queued += 1
        self._writer.put(item)

    def _from_writer(self, count: int, floors: dict[str, int], change: int) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            self._loop.call_soon_threadsafe(self._saved, count, floors, change)

    def _saved(self, count: int, floors: dict[str, int], change: int) -> None:
        self.stored += change
        for _ in range(count):
            buffer = self._order.popleft()
            if buffer is not None:
                if self._held is not None:
                    self._held.committed(buffer.client_id, buffer.sent[0].items)
                buffer.committed()
                if buffer.empty() and self._open.get(buffer.client_id) is buffer:
                    del self._open[buffer.client_id]
        self.saved += count
        for name, ns in floors.items():
            self.floors[name] = max(ns, self.floors.get(name, ns))
        waiting = []
        for target, future in self._waiters:
            if target <= self.saved:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._waiters = waiting
        if waiting and self._writer is not None:
            self._writer.hurry()  # more than one batch queued before a reader

    # -- reads: copy what is uncommitted on the loop, read the database in a thread --------

    def points(self, client_id: str, since_ns: int, until_ns: int, limit: int) -> list[Row]:
        """The committed points of a client in a window (blocking: tests and tools)."""
        return self.reads.points(client_id, since_ns, until_ns, limit)

    def stats(self) -> dict[str, int]:
        """STATUS's figures: points held (those not yet committed included, which may count
        a copy of a held point until it is written), late points and deletions since start,
        bytes on disk."""
        uncommitted = self._open_points + sum(
            len(c.items) for b in self._open.values() for c in b.sent
        )
        return {
            "points": self.stored + uncommitted,
            "late": self.late,
            "deletions": self.deletions,
            "bytes": self.size(),
        }

    def size(self) -> int:
        """Bytes on disk: the database and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            path = self.path.with_name(self.path.name + suffix)
            total += path.stat().st_size if path.exists() else 0
        return total
