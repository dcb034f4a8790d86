"""The one thread that writes history: chunks of points, deletions, retention.

The event loop never waits for SQLite: it gathers each client's points into chunks and queues
them (``Writer.put``) and goes on. This thread takes what is queued, writes it in one
transaction (a row per chunk, the digests it changes, client counts), and reports each
committed batch back. A batch that cannot be written (disk full) is retried, never dropped:
its points are in the record journal, which is not compacted past them until they are saved.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .batches import BatchThread
from .changes import Changes
from .columns import Columns, columns_of, identity_xor
from .points import (
    DAY_NS,
    HOUR_NS,
    HOURS,
    SPREAD,
    Point,
    Row,
    box_of,
    chunk_keys,
    decode_chunk,
    identity_hash,
    slice_of,
)
from .schema import converted

if TYPE_CHECKING:
    from .buffers import Tally

__all__ = ["Chunk", "Expire", "Forget", "Writer"]

log = logging.getLogger("herd.history")


@dataclass(frozen=True, slots=True)
class Forget:
    """Delete a client's points up to and including ``until_ns``."""

    client_id: str
    until_ns: int


@dataclass(frozen=True, slots=True)
class Expire:
    """Delete every point before the UTC day ``first_day`` (retention)."""

    first_day: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """Points of one client to keep, in any order, copies allowed (this thread sorts them,
    drops copies and hashes each point's identity for the digests)."""

    client_id: str
    items: list[Point]
    # The digests of its points, as far as anti-entropy has asked (buffers.py; not written).
    tally: Tally | None = field(default=None, compare=False)


Work = Chunk | Forget | Expire

_INSERT = "INSERT INTO chunks VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Client IDs looked up per query (SQLite allows 32,766 parameters since 3.32).
_IN = 500


class Writer(BatchThread["Work"]):
    """Owns the write connection; ``start`` runs it on a thread of its own."""

    retried = (sqlite3.Error,)  # a full disk, a locked file: the same batch again, later

    def __init__(
        self,
        conn: sqlite3.Connection,
        max_points: int,
        on_saved: Callable[[int, dict[str, int], int], None],
    ) -> None:
        super().__init__("herd-history")
        self.conn = conn
        self.max_points = max_points
        # Called on this thread after each commit with how many queued items it covered, the
        # floors that changed (client ID -> ns) and the change in points held: the owner
        # passes them to its loop.
        self.on_saved = on_saved
        # Points in the database (read once at start, then kept by this thread).
        total = conn.execute("SELECT coalesce(sum(points), 0) FROM clients").fetchone()
        self.stored: int = total[0]
        # Caches of what this thread alone writes (cleared when a transaction fails).
        self._ids: dict[str, int] = {}
        self._counts: dict[int, int] = {}
        self._floors: dict[int, int] = {}
        self._slices: dict[int, int] = {}
        # Client -> at least the latest time of its chunks (-1: none), when known: a chunk
        # that starts after it holds no point already held, and costs no query.
        self._newest: dict[int, int] = {}
        # Chunk rows of the transaction not yet inserted (``_write_rows``).
        self._rows: list[tuple[object, ...]] = []
        # Points of days before this are past retention: dropped, even from queued chunks.
        self.first_day = 0
        self._forget_caches()

    def roll_back(self) -> None:
        if self.conn.in_transaction:
            self.conn.rollback()
        self._forget_caches()  # they may hold what was rolled back

    def _forget_caches(self) -> None:
        self._ids.clear()
        self._slices.clear()
        self._counts.clear()
        self._newest.clear()
        self._rows.clear()
        self._floors = dict(
            self.conn.execute("SELECT id, floor FROM clients WHERE floor IS NOT NULL")
        )

    def write(self, batch: list[Work]) -> None:
        before = self.stored
        floors = self.apply(batch)
        self.on_saved(len(batch), floors, self.stored - before)

    def dropped(self, batch: list[Work]) -> None:
        # Rolled back: nothing saved, no floor moved. The points are still in the record
        # journal; a restart offers them again.
        self.on_saved(len(batch), {}, 0)

    def apply(self, batch: list[Work]) -> dict[str, int]:
        """Write ``batch`` in one transaction; return the client floors it changed."""
        changes = Changes()
        self.conn.execute("BEGIN IMMEDIATE")
        self._known([item.client_id for item in batch if not isinstance(item, Expire)])
        for item in batch:
            if isinstance(item, Chunk):
                self._insert(item, changes)
            elif isinstance(item, Forget):
                self._forget(item, changes)
            else:
                self._expire(item.first_day, changes)
        self._trim(changes)
        self._write_rows()
        changes.write(self.conn)
        self.conn.execute("COMMIT")
        self._floors.update(changes.floors)
        self.stored += sum(changes.deltas.values())
        for cid, delta in changes.deltas.items():
            self._counts[cid] = self._counts.get(cid, 0) + delta
        return {changes.names[cid]: ns for cid, ns in changes.floors.items()}

    def _known(self, names: list[str]) -> None:
        """Every client of ``names`` in the caches, made if new: a query per ``_IN`` names,
        not one or two per client."""
        wanted = list({n: None for n in names if n not in self._ids})
        for i in range(0, len(wanted), _IN):
            self._fetch(wanted[i : i + _IN])
        new = [n for n in wanted if n not in self._ids]
        if new:
            self.conn.executemany(
                "INSERT INTO clients (name, slice) VALUES (?, ?)", [(n, slice_of(n)) for n in new]
            )
            for i in range(0, len(new), _IN):
                for cid in self._fetch(new[i : i + _IN]):
                    self._newest[cid] = -1  # no chunk yet

    def _fetch(self, names: list[str]) -> list[int]:
        marks = ", ".join("?" * len(names))
        found = self.conn.execute(
            f"SELECT id, points, slice, name FROM clients WHERE name IN ({marks})", names
        ).fetchall()
        for cid, points, piece, name in found:
            self._ids[name] = cid
            self._counts[cid] = points
            self._slices[cid] = piece
        return [row[0] for row in found]

    def client(self, name: str) -> int:
        """The integer ID of a client, made on first use."""
        found = self._ids.get(name)
        if found is not None:
            return found
        row = self.conn.execute(
            "SELECT id, points, slice FROM clients WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            piece = slice_of(name)
            cur = self.conn.execute(
                "INSERT INTO clients (name, slice) VALUES (?, ?)", (name, piece)
            )
            row = (cur.lastrowid, 0, piece)
        self._ids[name] = row[0]
        self._counts[row[0]] = row[1]
        self._slices[row[0]] = row[2]
        return int(row[0])

    def _insert(self, chunk: Chunk, changes: Changes) -> None:
        """Keep the chunk's points that are above the floor, within retention and not held
        already, a chunk row per hour (so a chunk lies in one hour bucket)."""
        name = chunk.client_id
        cid = self.client(name)
        changes.names[cid] = name
        floor = self.floor(cid, changes)
        low = max(self.first_day * DAY_NS, -1 if floor is None else floor + 1)
        columns = columns_of(chunk.items)
        if columns.ns:
            for hour, part in columns.hour_groups(low):
                self._insert_hour(cid, name, hour, part, changes)

    def _insert_hour(self, cid: int, name: str, hour: int, part: Columns, changes: Changes) -> None:
        held = self._held(cid, part.ns[0], part.ns[-1])
        if held:
            keys = zip(part.ns, part.locations(), strict=True)
            part = part.pick([i for i, key in enumerate(keys) if key not in held])
        if part.ns:
            self._store(cid, part)
            xor = identity_xor(name, part.ns, part.locations())
            changes.count(hour * SPREAD + self._slices[cid], cid, len(part.ns), [xor])

    def _held(self, cid: int, first: int, last: int) -> set[tuple[int, str]]:
        """The (time, location) of the client's points held between ``first`` and ``last``:
        none, with no query, when ``first`` is after every chunk the client has (a newest
        record's chunk, the usual case)."""
        newest = self._newest.get(cid)
        if newest is None:
            self._write_rows()
            (newest,) = self.conn.execute(
                "SELECT coalesce(max(last), -1) FROM chunks WHERE client = ?", (cid,)
            ).fetchone()
            self._newest[cid] = newest
        held: set[tuple[int, str]] = set()
        if first > newest:
            return held
        self._write_rows()
        for (data,) in self.conn.execute(
            "SELECT data FROM chunks WHERE client = ? AND last >= ? AND first <= ?",
            (cid, first, last),
        ):
            held |= chunk_keys(data)
        return held

    def _store(self, cid: int, part: Columns) -> None:
        """One chunk row of sorted points of one client and one hour; no digest changes. The
        row is written with the others of the batch (``_write_rows``)."""
        ns = part.ns
        south, west, north, east = box_of(part.locations())
        self._rows.append(
            (cid, ns[0] // DAY_NS, ns[0], ns[-1], len(ns), south, west, north, east, part.encode())
        )
        newest = self._newest.get(cid)
        if newest is not None and ns[-1] > newest:
            self._newest[cid] = ns[-1]

    def _write_rows(self) -> None:
        """The chunk rows stored so far, into the database in one statement (before anything
        reads or deletes chunks, and before the commit)."""
        if self._rows:
            self.conn.executemany(_INSERT, self._rows)
            self._rows.clear()

    def _delete(self, cid: int, name: str, until_ns: int, changes: Changes) -> None:
        """Delete a client's points at or before ``until_ns``, updating the digests; a chunk
        that straddles the time keeps its later points."""
        self._write_rows()
        found = self.conn.execute(
            "SELECT id, first, data FROM chunks WHERE client = ? AND first <= ?", (cid, until_ns)
        ).fetchall()
        piece = self._slices[cid]
        for chunk_id, first, data in found:
            rows = decode_chunk(name, data)
            gone = [r for r in rows if r.ns <= until_ns]
            hashes = [identity_hash(name, r.ns, r.location) for r in gone]
            changes.count(first // HOUR_NS * SPREAD + piece, cid, -len(gone), hashes)
            self.conn.execute("DELETE FROM chunks WHERE id = ?", (chunk_id,))
            if len(gone) < len(rows):
                self._store(cid, columns_of([r for r in rows if r.ns > until_ns]))

    def floor(self, cid: int, changes: Changes) -> int | None:
        return changes.floors.get(cid, self._floors.get(cid))

    def _raise_floor(self, cid: int, ns: int, changes: Changes) -> int:
        floor = self.floor(cid, changes)
        changes.floors[cid] = ns if floor is None else max(ns, floor)
        return changes.floors[cid]

    def _forget(self, item: Forget, changes: Changes) -> None:
        cid = self.client(item.client_id)
        changes.names[cid] = item.client_id
        until = self._raise_floor(cid, item.until_ns, changes)
        self._delete(cid, item.client_id, until, changes)
        self.conn.execute(
            "INSERT INTO forgotten VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
            "SET until = max(until, excluded.until)",
            (item.client_id, until),
        )

    def _trim(self, changes: Changes) -> None:
        """Hold every client touched to ``max_points``: its oldest points go first."""
        for cid, name in list(changes.names.items()):
            count = self._counts.get(cid, 0) + changes.deltas.get(cid, 0)
            if count > self.max_points:
                ns = self._nth_time(cid, name, count - self.max_points)
                self._delete(cid, name, ns, changes)
                self._raise_floor(cid, ns, changes)

    def _nth_time(self, cid: int, name: str, n: int) -> int:
        """The time of the client's ``n``th oldest point (chunks may overlap in time, so a
        chunk's points count only once no later chunk can start before them)."""
        self._write_rows()
        times: list[int] = []
        for first, data in self.conn.execute(
            "SELECT first, data FROM chunks WHERE client = ? ORDER BY first", (cid,)
        ):
            if len(times) >= n and sorted(times)[n - 1] < first:
                break
            times.extend(r.ns for r in decode_chunk(name, data))
        return sorted(times)[n - 1]

    def _expire(self, first_day: int, changes: Changes) -> None:
        """Drop whole days before ``first_day``: their chunks, digests, deletions."""
        self._write_rows()
        self.first_day = max(self.first_day, first_day)
        before = first_day * DAY_NS
        for cid, name, count in self.conn.execute(
            "SELECT c.id, c.name, sum(x.count) FROM chunks x JOIN clients c ON c.id = x.client "
            "WHERE x.day < ? GROUP BY c.id",
            (first_day,),
        ).fetchall():
            changes.names[cid] = name
            changes.deltas[cid] = changes.deltas.get(cid, 0) - count
        self.conn.execute("DELETE FROM chunks WHERE day < ?", (first_day,))
        self.conn.execute("DELETE FROM digests WHERE bucket < ?", (first_day * SPREAD,))
        first_hour = first_day * HOURS * SPREAD
        self.conn.execute("DELETE FROM hours WHERE bucket < ?", (first_hour,))
        changes.digests = {b: d for b, d in changes.digests.items() if b >= first_hour}
        self.conn.execute("DELETE FROM forgotten WHERE until < ?", (before,))

    def convert_v1(self) -> None:
        """Move a version 1 database's points (a row each) into chunks, its digests and
        counts made again from them."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("DELETE FROM digests")
        self.conn.execute("UPDATE clients SET points = 0")
        self._forget_caches()
        changes = Changes()
        for cid, name in self.conn.execute("SELECT id, name FROM clients").fetchall():
            self.client(name)
            rows = [
                Row(name, ns, t, location, server, diff, attributes or b"")
                for ns, t, location, server, diff, attributes in self.conn.execute(
                    "SELECT ns, time, location, server, diff, attributes FROM points "
                    "WHERE client = ? ORDER BY ns, location",
                    (cid,),
                )
            ]
            hours: dict[int, list[Row]] = {}
            for row in rows:
                hours.setdefault(row.ns // HOUR_NS, []).append(row)
            for hour, found in hours.items():
                self._insert_hour(cid, name, hour, columns_of(found), changes)
        self._write_rows()
        changes.write(self.conn)
        converted(self.conn)
        self.conn.execute("COMMIT")
        self.stored = sum(changes.deltas.values())
        self._forget_caches()
