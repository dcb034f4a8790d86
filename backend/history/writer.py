"""The one thread that writes history: points in batches, deletions, retention.

The event loop never waits for SQLite: it queues work (``Writer.put``) and goes on. This
thread takes what is queued, writes it in one transaction (points, the digests and cells they
change, client counts), and reports each committed batch back. A batch that cannot be written
(disk full) is retried, never dropped: its points are in the record journal, which is not
compacted past them until they are saved (``Writer.saved``).
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .points import DAY_NS, SPREAD, Row, identity_hash, lat_lng, slice_of

__all__ = ["Expire", "Forget", "Writer"]

log = logging.getLogger("herd.history")

# Items per transaction, at most. A commit rewrites every page it touched, and points of
# many clients touch many pages: inserting 200,000 points of 1,000 interleaved clients cost
# 8 us a point in commits of 2,000 and 3.2 us in commits of 20,000, sorted by client (2 us
# when appending to one client). Under load a batch is what queued in IDLE_S or one commit.
BATCH = 20_000
# How long the thread lets work gather before it writes (sooner when a reader waits, or a
# batch is full). Longer gathers make bigger commits (each page touched once for more
# points) but burstier ones: with five servers on two cores, commits every 250 ms cut the
# flood rate the herd keeps up with from 11,390 to 2,250 updates/s (herd bench --only flood),
# for no gain in IAMAT throughput.
IDLE_S = 0.02
# After a failed write (disk full), wait this long before trying the same batch again.
RETRY_S = 1.0
HOUR_NS = 3_600 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class Forget:
    """Delete a client's points up to and including ``until_ns``."""

    client_id: str
    until_ns: int


@dataclass(frozen=True, slots=True)
class Expire:
    """Delete every point before the UTC day ``first_day`` (retention)."""

    first_day: int


Work = Row | Forget | Expire


_INSERT = "INSERT OR IGNORE INTO points VALUES (?, ?, ?, ?, ?, ?, ?)"


class Writer:
    """Owns the write connection; ``start`` runs it on a thread of its own."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        max_points: int,
        on_saved: Callable[[int, dict[str, int], int], None],
    ) -> None:
        self.conn = conn
        self.max_points = max_points
        # Called on this thread after each commit with how many queued items it covered, the
        # floors that changed (client ID -> ns) and the change in points held: the owner
        # passes them to its loop.
        self.on_saved = on_saved
        self.queue: collections.deque[Work] = collections.deque()
        self.wake = threading.Event()
        self.stopping = False
        self._thread: threading.Thread | None = None
        # Points in the database (read once at start, then kept by this thread).
        total = conn.execute("SELECT coalesce(sum(points), 0) FROM clients").fetchone()
        self.stored: int = total[0]
        # Caches of what this thread alone writes (cleared when a transaction fails).
        self._ids: dict[str, int] = {}
        self._counts: dict[int, int] = {}
        self._floors: dict[int, int] = {}
        self._forget_caches()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="herd-history", daemon=True)
        self._thread.start()

    def put(self, item: Work) -> None:
        self.queue.append(item)  # deque.append is atomic: no lock on the loop's side
        if len(self.queue) == BATCH:
            self.wake.set()

    def hurry(self) -> None:
        """Write what is queued now (a reader is waiting for it)."""
        self.wake.set()

    def stop(self) -> None:
        """Write what is queued, then end the thread (blocking: call from a worker)."""
        self.stopping = True
        self.wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            if len(self.queue) < BATCH:
                self.wake.wait(IDLE_S)
            self.wake.clear()
            batch = self._take()
            if not batch:
                if self.stopping:
                    return
                continue
            while True:
                try:
                    before = self.stored
                    floors = self.apply(batch)
                    break
                except sqlite3.Error as exc:
                    self._roll_back()
                    log.error("history write failed, retrying in %.0f s: %s", RETRY_S, exc)
                    time.sleep(RETRY_S)
                except Exception:
                    # A bug, not a full disk: retrying would stall history for good. The
                    # points are still in the record journal; a restart offers them again.
                    self._roll_back()
                    log.exception("history: a batch of %d could not be written", len(batch))
                    floors = {}
                    break
            self.on_saved(len(batch), floors, self.stored - before)

    def _roll_back(self) -> None:
        if self.conn.in_transaction:
            self.conn.rollback()
        self._forget_caches()  # they may hold what was rolled back

    def _take(self) -> list[Work]:
        batch: list[Work] = []
        queue = self.queue
        while queue and len(batch) < BATCH:
            batch.append(queue.popleft())
        return batch

    def _forget_caches(self) -> None:
        self._ids.clear()
        self._counts.clear()
        self._floors = dict(
            self.conn.execute("SELECT id, floor FROM clients WHERE floor IS NOT NULL")
        )

    def apply(self, batch: list[Work]) -> dict[str, int]:
        """Write ``batch`` in one transaction; return the client floors it changed."""
        changes = _Changes()
        self.conn.execute("BEGIN IMMEDIATE")
        run: list[Row] = []
        for item in batch:
            if isinstance(item, Row):
                run.append(item)
                continue
            self._insert(run, changes)
            run = []
            if isinstance(item, Forget):
                self._forget(item, changes)
            else:
                self._expire(item.first_day, changes)
        self._insert(run, changes)
        self._trim(changes)
        changes.write(self.conn)
        self.conn.execute("COMMIT")
        self._floors.update(changes.floors)
        self.stored += sum(changes.deltas.values())
        for cid, delta in changes.deltas.items():
            self._counts[cid] = self._counts.get(cid, 0) + delta
        return {changes.names[cid]: ns for cid, ns in changes.floors.items()}

    def client(self, name: str) -> int:
        """The integer ID of a client, made on first use."""
        found = self._ids.get(name)
        if found is not None:
            return found
        row = self.conn.execute("SELECT id, points FROM clients WHERE name = ?", (name,)).fetchone()
        if row is None:
            cur = self.conn.execute(
                "INSERT INTO clients (name, slice) VALUES (?, ?)", (name, slice_of(name))
            )
            row = (cur.lastrowid, 0)
        self._ids[name] = row[0]
        self._counts[row[0]] = row[1]
        return int(row[0])

    def _insert(self, rows: list[Row], changes: _Changes) -> None:
        """Insert ``rows``: all at once, and one by one only if some were held already (then
        only ``rowcount`` tells which were new)."""
        if not rows:
            return
        params = []
        kept = []
        for row in rows:
            cid = self.client(row.client_id)
            floor = changes.floors.get(cid, self._floors.get(cid))
            if floor is not None and row.ns <= floor:
                continue  # deleted or trimmed already: never brought back
            changes.names[cid] = row.client_id
            kept.append((row, cid))
            params.append(
                (cid, row.ns, row.location, row.client_time, row.server_id, row.time_diff,
                 row.attributes or None)
            )
        # In key order: each leaf page of the table is visited once per run.
        order = sorted(range(len(params)), key=lambda i: params[i][:3])
        params = [params[i] for i in order]
        kept = [kept[i] for i in order]
        self.conn.execute("SAVEPOINT run")
        before = self.conn.total_changes
        self.conn.executemany(_INSERT, params)
        if self.conn.total_changes - before != len(params):
            self.conn.execute("ROLLBACK TO run")
            kept = [k for k, p in zip(kept, params, strict=True) if self._insert_one(p)]
        self.conn.execute("RELEASE run")
        for row, cid in kept:
            changes.point(row.client_id, cid, row.ns, row.location, +1)
            changes.cell(row.ns // HOUR_NS, cid, row.location)

    def _insert_one(self, params: tuple[object, ...]) -> bool:
        return self.conn.execute(_INSERT, params).rowcount == 1

    def _delete(self, cid: int, name: str, until_ns: int, changes: _Changes) -> None:
        """Delete a client's points at or before ``until_ns``, updating the digests."""
        rows = self.conn.execute(
            "SELECT ns, location FROM points WHERE client = ? AND ns <= ?", (cid, until_ns)
        ).fetchall()
        for ns, location in rows:
            changes.point(name, cid, ns, location, -1)
        self.conn.execute("DELETE FROM points WHERE client = ? AND ns <= ?", (cid, until_ns))
        self.conn.execute(
            "DELETE FROM cells WHERE client = ? AND hour <= ?", (cid, until_ns // HOUR_NS)
        )

    def floor(self, cid: int, changes: _Changes) -> int | None:
        return changes.floors.get(cid, self._floors.get(cid))

    def _raise_floor(self, cid: int, ns: int, changes: _Changes) -> int:
        floor = self.floor(cid, changes)
        changes.floors[cid] = ns if floor is None else max(ns, floor)
        return changes.floors[cid]

    def _forget(self, item: Forget, changes: _Changes) -> None:
        cid = self.client(item.client_id)
        changes.names[cid] = item.client_id
        until = self._raise_floor(cid, item.until_ns, changes)
        self._delete(cid, item.client_id, until, changes)
        self.conn.execute(
            "INSERT INTO forgotten VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
            "SET until = max(until, excluded.until)",
            (item.client_id, until),
        )

    def _trim(self, changes: _Changes) -> None:
        """Hold every client touched to ``max_points``: its oldest points go first."""
        for cid, name in list(changes.names.items()):
            count = self._counts.get(cid, 0) + changes.deltas.get(cid, 0)
            if count <= self.max_points:
                continue
            (ns,) = self.conn.execute(
                "SELECT ns FROM points WHERE client = ? ORDER BY ns LIMIT 1 OFFSET ?",
                (cid, count - self.max_points - 1),
            ).fetchone()
            self._delete(cid, name, ns, changes)
            self._raise_floor(cid, ns, changes)

    def _expire(self, first_day: int, changes: _Changes) -> None:
        """Drop whole days before ``first_day``: their points, cells, digests, deletions."""
        before = first_day * DAY_NS
        clients = self.conn.execute("SELECT id, name FROM clients WHERE points > 0").fetchall()
        for cid, name in clients:
            cur = self.conn.execute(
                "DELETE FROM points WHERE client = ? AND ns < ?", (cid, before)
            )
            if cur.rowcount:
                changes.names[cid] = name
                changes.deltas[cid] = changes.deltas.get(cid, 0) - cur.rowcount
        self.conn.execute("DELETE FROM cells WHERE hour < ?", (before // HOUR_NS,))
        self.conn.execute("DELETE FROM digests WHERE bucket < ?", (first_day * SPREAD,))
        changes.digests = {b: d for b, d in changes.digests.items() if b >= first_day * SPREAD}
        self.conn.execute("DELETE FROM forgotten WHERE until < ?", (before,))


class _Changes:
    """What one transaction changes beside the points: digests, cells, counts, floors."""

    def __init__(self) -> None:
        self.digests: dict[int, tuple[int, int]] = {}  # bucket -> (count delta, xor)
        self.cells: dict[tuple[int, int], list[float]] = {}
        self.deltas: dict[int, int] = {}  # client -> change of its point count
        self.names: dict[int, str] = {}  # every client touched
        self.floors: dict[int, int] = {}  # floors set in this transaction
        self._slices: dict[str, int] = {}

    def point(self, name: str, cid: int, ns: int, location: str, sign: int) -> None:
        piece = self._slices.get(name)
        if piece is None:
            piece = self._slices[name] = slice_of(name)
        b = (ns // DAY_NS) * SPREAD + piece  # points.bucket_of, with the slice cached
        count, xor = self.digests.get(b, (0, 0))
        self.digests[b] = (count + sign, xor ^ identity_hash(name, ns, location))
        self.deltas[cid] = self.deltas.get(cid, 0) + sign
        self.names[cid] = name

    def cell(self, hour: int, cid: int, location: str) -> None:
        lat, lng = lat_lng(location)
        box = self.cells.get((hour, cid))
        if box is None:
            self.cells[(hour, cid)] = [lat, lng, lat, lng]
        else:
            box[0], box[1] = min(box[0], lat), min(box[1], lng)
            box[2], box[3] = max(box[2], lat), max(box[3], lng)

    def write(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO digests VALUES (?, ?, ?) ON CONFLICT (bucket) DO UPDATE "
            "SET count = count + excluded.count, "
            # SQLite has no XOR operator: a ^ b is (a | b) & ~(a & b), with no overflow.
            "xor = (xor | excluded.xor) & ~(xor & excluded.xor)",
            [(b, count, _signed(xor)) for b, (count, xor) in self.digests.items()],
        )
        conn.execute("DELETE FROM digests WHERE count = 0")
        conn.executemany(
            "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hour, client) DO UPDATE "
            "SET south = min(south, excluded.south), west = min(west, excluded.west), "
            "north = max(north, excluded.north), east = max(east, excluded.east)",
            [(hour, cid, *box) for (hour, cid), box in self.cells.items()],
        )
        conn.executemany(
            "UPDATE clients SET points = points + ? WHERE id = ?",
            [(delta, cid) for cid, delta in self.deltas.items() if delta],
        )
        conn.executemany(
            "UPDATE clients SET floor = ? WHERE id = ?",
            [(ns, cid) for cid, ns in self.floors.items()],
        )


def _signed(value: int) -> int:
    """XOR of signed 64-bit hashes stays in range; normalise Python's sign anyway."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value
