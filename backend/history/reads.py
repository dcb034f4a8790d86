"""Reads of history's database, in worker threads (``asyncio.to_thread``), each thread on a
connection of its own: WAL lets them read while the writer writes.

Every read takes ``extra``: the points not yet committed, which the event loop copies
before the read (store.py); they are merged in, each point once.
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator
from itertools import islice, pairwise
from pathlib import Path

from .points import (
    HOUR_NS,
    HOURS,
    MAX_NS,
    SPREAD,
    Digest,
    Point,
    Row,
    as_row,
    day_of,
    decode_chunk,
    lat_lng,
)
from .schema import connect

__all__ = ["Box", "Reads", "chunk_lines", "sorted_rows"]

Box = tuple[float, float, float, float]  # west, south, east, north


def _order(row: Row) -> tuple[int, str]:
    return (row.ns, row.location)


def sorted_rows(points: Iterable[Point]) -> list[Row]:
    """Points as rows in (time, location) order (copies are dropped by the merges below)."""
    return sorted(map(as_row, points), key=_order)


class Reads:
    """The database's side of every read."""

    def __init__(self, path: Path, *, durable: bool) -> None:
        self.path = path
        self.durable = durable
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, durable=self.durable)
            self._local.conn = conn
        return conn

    def window(
        self,
        client_id: str,
        since_ns: int,
        until_ns: int,
        extra: Iterable[Point] = (),
        box: Box | None = None,
    ) -> Iterator[Row]:
        """A client's points with since <= time <= until, oldest first, each once."""
        since_ns, until_ns = min(since_ns, MAX_NS), min(until_ns, MAX_NS)
        inside = [r for r in sorted_rows(extra) if since_ns <= r.ns <= until_ns]
        last: tuple[int, str] | None = None
        for row in heapq.merge(self._scan(client_id, since_ns, until_ns, box), inside, key=_order):
            key = _order(row)
            if key != last:
                last = key
                yield row

    def points(
        self, client_id: str, since_ns: int, until_ns: int, limit: int, extra: Iterable[Point] = ()
    ) -> list[Row]:
        return list(islice(self.window(client_id, since_ns, until_ns, extra), limit))

    def lines(
        self,
        client_id: str,
        since_ns: int,
        until_ns: int,
        limit: int,
        extra: Iterable[Point],
        points: bool,
    ) -> list[str]:
        """HISTORY's answer: the window's points as AT lines (with ``points``, POINT lines
        where they have attributes), oldest first, at most ``limit``.

        The usual case, chunks that do not overlap in time and uncommitted points all after
        them, goes from each chunk's text to the lines with no row made; otherwise the rows
        are merged (``window``)."""
        since_ns, until_ns = min(since_ns, MAX_NS), min(until_ns, MAX_NS)
        later = [r for r in sorted_rows(extra) if since_ns <= r.ns <= until_ns]
        spans = (
            self._conn()
            .execute(
                "SELECT x.id, x.first, x.last FROM chunks x JOIN clients c ON c.id = x.client "
                "WHERE c.name = ? AND x.last >= ? AND x.first <= ? ORDER BY x.first",
                (client_id, since_ns, until_ns),
            )
            .fetchall()
        )
        apart = all(a[2] < b[1] for a, b in pairwise(spans))
        if not apart or (spans and later and later[0].ns <= spans[-1][2]):
            rows = self.points(client_id, since_ns, until_ns, limit, later)
            return [_line(r.wire() if points else r.at_line()) for r in rows]
        found: list[str] = []
        for chunk_id, first, last in spans:
            (data,) = (
                self._conn().execute("SELECT data FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
            )
            whole = since_ns <= first and last <= until_ns
            found += chunk_lines(client_id, data, points, None if whole else (since_ns, until_ns))
            if len(found) >= limit:
                return found[:limit]
        found += (_line(r.wire() if points else r.at_line()) for r in later)
        return found[:limit]

    def _scan(self, client_id: str, since_ns: int, until_ns: int, box: Box | None) -> Iterator[Row]:
        """The committed points of the window in (time, location) order, reading chunks by
        their first time: a chunk's points are final once the next chunk starts after them."""
        query = (
            "SELECT x.first, x.data FROM chunks x JOIN clients c ON c.id = x.client "
            "WHERE c.name = ? AND x.last >= ? AND x.first <= ?"
        )
        params: tuple[object, ...] = (client_id, since_ns, until_ns)
        if box is not None:
            west, south, east, north = box
            query += " AND x.north >= ? AND x.south <= ? AND x.east >= ? AND x.west <= ?"
            params += (south, north, west, east)
        pending: list[Row] = []
        for first, data in self._conn().execute(query + " ORDER BY x.first", params):
            if pending and pending[0].ns < first:
                yield from (r for r in pending if r.ns < first)
                pending = [r for r in pending if r.ns >= first]
            rows = [r for r in decode_chunk(client_id, data) if since_ns <= r.ns <= until_ns]
            pending = rows if not pending else sorted(pending + rows, key=_order)
        yield from pending

    def area(
        self,
        box: Box,
        since_ns: int,
        until_ns: int,
        limit: int,
        extra: dict[str, list[Point]],
        per_client: int | None = None,
    ) -> dict[str, list[Row]]:
        """Up to ``limit`` points in all in the box and window, by client; with
        ``per_client``, at most that many of each client (then ``limit`` counts clients)."""
        west, south, east, north = box
        since_ns, until_ns = min(since_ns, MAX_NS), min(until_ns, MAX_NS)
        names = {
            name
            for (name,) in self._conn().execute(
                "SELECT DISTINCT c.name FROM chunks x JOIN clients c ON c.id = x.client "
                "WHERE x.day >= ? AND x.day <= ? AND x.last >= ? AND x.first <= ? "
                "AND x.north >= ? AND x.south <= ? AND x.east >= ? AND x.west <= ?",
                (day_of(since_ns), day_of(until_ns), since_ns, until_ns, south, north, west, east),
            )
        }
        names.update(extra)
        found: dict[str, list[Row]] = {}
        left = limit
        for name in sorted(names):
            rows = self.window(name, since_ns, until_ns, extra.get(name, ()), box)
            there = (r for r in rows if _inside(r, west, south, east, north))
            taken = list(islice(there, left if per_client is None else per_client))
            if taken:
                found[name] = taken
                left -= 1 if per_client is not None else len(taken)
                if left == 0:
                    break
        return found

    def digests(self, first_day: int, last_day: int) -> dict[int, Digest]:
        """Every non-empty bucket of committed points of the days ``first_day`` to
        ``last_day``."""
        return self._digests("digests", first_day * SPREAD, (last_day + 1) * SPREAD)

    def hours(self, day: int) -> dict[int, Digest]:
        """Every non-empty hour bucket of committed points of a day."""
        return self._digests("hours", day * HOURS * SPREAD, (day + 1) * HOURS * SPREAD)

    def _digests(self, table: str, low: int, high: int) -> dict[int, Digest]:
        rows = (
            self._conn()
            .execute(
                f"SELECT bucket, count, xor FROM {table} WHERE bucket >= ? AND bucket < ?",
                (low, high),
            )
            .fetchall()
        )
        return {b: Digest(count, xor) for b, count, xor in rows}

    def bucket(self, bucket: int, extra: Iterable[Point] = ()) -> list[Row]:
        """Every point of one hour bucket (a chunk lies in one hour), by client then time,
        each once; ``extra`` may hold points of other buckets, which are left out."""
        hour, piece = divmod(bucket, SPREAD)
        found = [r for r in map(as_row, extra) if r.ns // HOUR_NS == hour]
        for name, data in self._conn().execute(
            "SELECT c.name, x.data FROM chunks x JOIN clients c ON c.id = x.client "
            "WHERE x.day = ? AND x.first >= ? AND x.first < ? AND c.slice = ?",
            (hour // HOURS, hour * HOUR_NS, (hour + 1) * HOUR_NS, piece),
        ):
            found.extend(decode_chunk(name, data))
        unique = {(r.client_id, r.ns, r.location): r for r in found}
        return [unique[k] for k in sorted(unique)]

    def forgotten(self) -> dict[str, int]:
        """Every deletion held (client ID -> until, ns): replicated like points."""
        return dict(self._conn().execute("SELECT name, until FROM forgotten").fetchall())


def _line(wire: bytes) -> str:
    return wire.decode() + "\n"


def chunk_lines(
    client_id: str, data: bytes, points: bool, window: tuple[int, int] | None
) -> list[str]:
    """A chunk's points as AT (or POINT) lines, those in ``window`` only if one is given."""
    found = []
    for line in zlib.decompress(data).decode("utf-8", "surrogateescape").split("\n"):
        ns, client_time, location, server_id, time_diff, attributes = line.split("\t")
        if window is not None and not window[0] <= int(ns) <= window[1]:
            continue
        if points and attributes:
            found.append(
                f"POINT {server_id} {time_diff} {client_id} {location} {client_time} {attributes}\n"
            )
        else:
            found.append(f"AT {server_id} {time_diff} {client_id} {location} {client_time}\n")
    return found


def _inside(row: Row, west: float, south: float, east: float, north: float) -> bool:
    lat, lng = lat_lng(row.location)
    return south <= lat <= north and west <= lng <= east
