"""History on the event loop's side: what is new, what is queued, and reads off the loop.

``History.offer`` decides on the loop, in microseconds, whether a point is new here (so a
late point is flooded on exactly once) and queues it for the writer thread; reads run in
worker threads on connections of their own (WAL lets them read while the writer writes).
Nothing here waits for SQLite on the loop but the one-row lookup of ``offer``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..files import private_dir
from .points import DAY_NS, MAX_NS, SPREAD, Digest, Row, day_of, lat_lng
from .schema import connect, create
from .writer import BATCH, HOUR_NS, Expire, Forget, Writer

__all__ = ["FILE", "History", "fill"]

FILE = "history.db"
# A point's identity: client ID, client time in ns, location.
Identity = tuple[str, int, str]

_ROW = "SELECT c.name, p.ns, p.time, p.location, p.server, p.diff, p.attributes"


def _row(found: tuple[str, int, str, str, str, str, bytes | None]) -> Row:
    name, ns, client_time, location, server, diff, attributes = found
    return Row(name, ns, client_time, location, server, diff, attributes or b"")


class History:
    """Every point this server holds, in ``directory``/history.db."""

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
        self.floors: dict[str, int] = {}  # client -> no point at or before this ns is kept
        self.queued = 0  # items handed to the writer
        self.stored = 0  # points in the database
        self.late = 0  # late points kept since start (the server counts them)
        self.deletions = 0  # deletions applied since start
        self.saved = 0  # items the writer has committed
        self._unsaved: dict[Identity, int] = {}
        self._order: collections.deque[Identity | None] = collections.deque()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._local = threading.local()
        self._lookup: sqlite3.Connection | None = None
        self._writer: Writer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> bool:
        """Open (creating if need be) and start the writer; True if the database is new.

        Reads only the floors (deleted and trimmed clients: a few rows), never the points, so
        a server holding millions of points opens in milliseconds."""
        private_dir(self.path.parent, tighten=False)
        self._loop = asyncio.get_running_loop()
        conn = connect(self.path, durable=self.durable)
        new = create(conn)
        self.floors = dict(
            conn.execute("SELECT name, floor FROM clients WHERE floor IS NOT NULL").fetchall()
        )
        self._lookup = connect(self.path, durable=self.durable)
        self._writer = Writer(conn, self.max_points, self._from_writer)
        self.stored = self._writer.stored
        self._writer.start()
        self.expire()
        return new

    async def close(self) -> None:
        """Write everything queued, then close."""
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
            self._writer.conn.close()
            self._writer = None
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None

    # -- writes (on the loop) --------------------------------------------------------------

    def offer(self, row: Row) -> bool:
        """Queue ``row`` if this server does not hold its point; True if it was new.

        A point past retention or at or before its client's floor is not new: it is never
        stored, nor flooded on (so a deleted point does not come back from a peer)."""
        if not self.wanted(row):
            return False
        identity = (row.client_id, row.ns, row.location)
        if identity in self._unsaved or self._held(identity):
            return False
        self._queue(row, identity)
        return True

    def add(self, row: Row) -> None:
        """Queue ``row`` with no lookup: for a record that just became its client's newest,
        which no held point can equal (a copy is ignored by the writer all the same)."""
        if self.wanted(row):
            self._queue(row, (row.client_id, row.ns, row.location))

    def wanted(self, row: Row) -> bool:
        floor = self.floors.get(row.client_id)
        if not self.first_day * DAY_NS <= row.ns <= MAX_NS:
            return False
        return floor is None or row.ns > floor

    def forget(self, client_id: str, until_ns: int) -> bool:
        """Delete a client's points up to ``until_ns``; False if an equal or later deletion
        was applied already (so a deletion floods on only once)."""
        floor = self.floors.get(client_id)
        until_ns = min(until_ns, MAX_NS)
        if floor is not None and floor >= until_ns:
            return False
        self.floors[client_id] = until_ns
        self.deletions += 1
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
            self._put(Expire(first), None)

    async def wait_saved(self) -> None:
        """Until everything queued so far is committed (the record journal waits on this
        before it deletes the segments that hold those points)."""
        target = self.queued
        if self.saved >= target:
            return
        assert self._loop is not None and self._writer is not None
        self._writer.hurry()
        future = self._loop.create_future()
        self._waiters.append((target, future))
        await future

    def _queue(self, row: Row, identity: Identity) -> None:
        self._unsaved[identity] = self._unsaved.get(identity, 0) + 1
        self._put(row, identity)

    def _put(self, item: Row | Forget | Expire, identity: Identity | None) -> None:
        assert self._writer is not None, "history is not open"
        self._order.append(identity)
        self.queued += 1
        self._writer.put(item)

    def _held(self, identity: Identity) -> bool:
        assert self._lookup is not None
        found = self._lookup.execute(
            "SELECT 1 FROM points WHERE client = (SELECT id FROM clients WHERE name = ?) "
            "AND ns = ? AND location = ?",
            identity,
        ).fetchone()
        return found is not None

    def _from_writer(self, count: int, floors: dict[str, int], change: int) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone
            self._loop.call_soon_threadsafe(self._saved, count, floors, change)

    def _saved(self, count: int, floors: dict[str, int], change: int) -> None:
        self.stored += change
        for _ in range(count):
            identity = self._order.popleft()
            if identity is not None:
                left = self._unsaved[identity] - 1
                if left:
                    self._unsaved[identity] = left
                else:
                    del self._unsaved[identity]
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

    # -- reads (in a worker thread: asyncio.to_thread) -------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, durable=self.durable)
            self._local.conn = conn
        return conn

    def points(self, client_id: str, since_ns: int, until_ns: int, limit: int) -> list[Row]:
        """A client's points with since <= time <= until, oldest first, at most ``limit``."""
        since_ns, until_ns = min(since_ns, MAX_NS), min(until_ns, MAX_NS)
        return [_row(found) for found in self._window(client_id, since_ns, until_ns, limit)]

    def iter_points(
        self, client_id: str, since_ns: int, until_ns: int, page: int = 5_000
    ) -> Iterator[list[Row]]:
        """The same window in pages of ``page`` points: an export of any size in bounded
        memory (each page is a fresh range scan from the last time read)."""
        since_ns, until_ns = min(since_ns, MAX_NS), min(until_ns, MAX_NS)
        last: tuple[int, str] | None = None
        while True:
            if last is None:
                found = self._window(client_id, since_ns, until_ns, page)
            else:
                found = self._after(client_id, last, until_ns, page)
            if not found:
                return
            yield [_row(f) for f in found]
            last = (found[-1][1], found[-1][3])
            if len(found) < page:
                return

    def _window(
        self, client_id: str, since_ns: int, until_ns: int, limit: int
    ) -> list[Any]:
        return self._reader().execute(
            f"{_ROW} FROM points p JOIN clients c ON c.id = p.client "
            "WHERE c.name = ? AND p.ns >= ? AND p.ns <= ? ORDER BY p.ns, p.location LIMIT ?",
            (client_id, since_ns, until_ns, limit),
        ).fetchall()

    def _after(
        self, client_id: str, last: tuple[int, str], until_ns: int, limit: int
    ) -> list[Any]:
        return self._reader().execute(
            f"{_ROW} FROM points p JOIN clients c ON c.id = p.client "
            "WHERE c.name = ? AND (p.ns, p.location) > (?, ?) AND p.ns <= ? "
            "ORDER BY p.ns, p.location LIMIT ?",
            (client_id, *last, until_ns, limit),
        ).fetchall()

    def area(
        self, box: tuple[float, float, float, float], since_ns: int, until_ns: int, limit: int
    ) -> dict[str, list[Row]]:
        """The clients that were in ``box`` (west, south, east, north) in the window, with
        their points there, at most ``limit`` points in all."""
        west, south, east, north = box
        since_ns, until_ns = min(since_ns, MAX_NS), min(until_ns, MAX_NS)
        clients = self._reader().execute(
            "SELECT DISTINCT c.name FROM cells x JOIN clients c ON c.id = x.client "
            "WHERE x.hour >= ? AND x.hour <= ? AND x.north >= ? AND x.south <= ? "
            "AND x.east >= ? AND x.west <= ? ORDER BY c.name",
            (since_ns // HOUR_NS, until_ns // HOUR_NS, south, north, west, east),
        ).fetchall()
        found: dict[str, list[Row]] = {}
        left = limit
        for (name,) in clients:
            for page in self.iter_points(name, since_ns, until_ns):
                inside = [r for r in page if _inside(r, west, south, east, north)]
                if inside:
                    found.setdefault(name, []).extend(inside[:left])
                    left -= min(left, len(inside))
                if left == 0:
                    return found
        return found

    def area_clients(
        self, box: tuple[float, float, float, float], since_ns: int, until_ns: int, limit: int
    ) -> list[str]:
        """The clients with a point in ``box`` in the window, by ID, at most ``limit``."""
        west, south, east, north = box
        since_ns, until_ns = min(since_ns, MAX_NS), min(until_ns, MAX_NS)
        candidates = self._reader().execute(
            "SELECT DISTINCT c.name FROM cells x JOIN clients c ON c.id = x.client "
            "WHERE x.hour >= ? AND x.hour <= ? AND x.north >= ? AND x.south <= ? "
            "AND x.east >= ? AND x.west <= ? ORDER BY c.name",
            (since_ns // HOUR_NS, until_ns // HOUR_NS, south, north, west, east),
        ).fetchall()
        found: list[str] = []
        for (name,) in candidates:
            # A cell's box holds its hour's points; one of them inside the box is enough.
            if any(
                _inside(row, west, south, east, north)
                for page in self.iter_points(name, since_ns, until_ns)
                for row in page
            ):
                found.append(name)
                if len(found) == limit:
                    break
        return found

    def digests(self, first_day: int, last_day: int) -> dict[int, Digest]:
        """Every non-empty bucket of the days ``first_day`` to ``last_day``."""
        rows = self._reader().execute(
            "SELECT bucket, count, xor FROM digests WHERE bucket >= ? AND bucket < ?",
            (first_day * SPREAD, (last_day + 1) * SPREAD),
        ).fetchall()
        return {b: Digest(count, xor) for b, count, xor in rows}

    def bucket(self, bucket: int) -> list[Row]:
        """Every point of one bucket (anti-entropy sends these where digests differ)."""
        day, piece = divmod(bucket, SPREAD)
        return [
            _row(found)
            for found in self._reader().execute(
                f"{_ROW} FROM clients c JOIN points p ON p.client = c.id "
                "WHERE c.slice = ? AND p.ns >= ? AND p.ns < ? ORDER BY c.name, p.ns",
                (piece, day * DAY_NS, (day + 1) * DAY_NS),
            )
        ]

    def forgotten(self) -> dict[str, int]:
        """Every deletion held (client ID -> until, ns): replicated like points."""
        return dict(self._reader().execute("SELECT name, until FROM forgotten").fetchall())

    def stats(self) -> dict[str, int]:
        """STATUS's figures: points held, late points and deletions since start, bytes."""
        return {
            "points": self.stored,
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


def _inside(row: Row, west: float, south: float, east: float, north: float) -> bool:
    lat, lng = lat_lng(row.location)
    return south <= lat <= north and west <= lng <= east


def fill(directory: Path, rows: Iterable[Row], *, max_points: int = 1_000_000) -> int:
    """Write ``rows`` straight into ``directory``/history.db (made if need be), with no server:
    for benchmarks and tests that need a large history. Returns the points written."""
    private_dir(directory, tighten=False)
    conn = connect(directory / FILE, durable=False)
    create(conn)
    writer = Writer(conn, max_points, lambda *_: None)
    batch: list[Row | Forget | Expire] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            writer.apply(list(batch))
            batch.clear()
    if batch:
        writer.apply(batch)
    conn.close()
    return writer.stored
