"""Whether the database holds a point, answered on the loop for ``History.offer``.

A late point new to the server's memory may still be in the database; a partition's repair
or a phone's queue asks that of every point, a client and an hour at a time. So the
identities of one client's points of one hour are read once (one indexed range of its chunks,
each decompressed once) and kept while they are asked about; a point the writer commits is
added to its hour's set if that set is kept, so a kept set is always the database's (points
removed since, by a deletion, a trim or retention, are below a floor the caller checks
first).
"""

from __future__ import annotations

import collections
import re
import sqlite3
from collections.abc import Mapping, Sequence

from ..protocol import key_to_ns
from .buffers import Buffer
from .columns import times_of
from .points import HOUR_NS, Point, chunk_keys

__all__ = ["HELD_KEYS", "HeldIndex", "line_held", "line_identity"]

# Identities kept, over all the sets (~150 bytes each: ~30 MB at most). A partition's repair
# of 1,000 clients' hour (both halves' 200 points each) fits; past it, the sets asked about
# least recently go, and are read again if asked about.
HELD_KEYS = 200_000

Identity = tuple[int, str]  # time (ns) and location
# A client time as the protocol writes it, bounded as MAX_TIME_BYTES bounds it.
_TIME = re.compile(rb"([0-9]{1,40})(?:\.([0-9]{1,40}))?")


def line_identity(line: bytes) -> tuple[str, tuple[int, str], str] | None:
    """The client, time key (``Record.key``'s first two) and location of an AT or POINT line
    as servers write them (single spaces), or None if it is not plainly one: what tells a
    copy of a held point from its bytes, before it is parsed (the full parse checks all)."""
    fields = line.split(b" ", 6)
    if len(fields) < 6 or fields[0] not in (b"AT", b"POINT"):
        return None
    m = _TIME.fullmatch(fields[5])
    if m is None:
        return None
    try:
        client_id, location = fields[3].decode(), fields[4].decode()
    except UnicodeDecodeError:
        return None
    fraction = m[2].rstrip(b"0").decode() if m[2] else ""
    return client_id, (int(m[1]), fraction), location


class HeldIndex:
    """The identities of the points held in the database, by client and hour, read on
    demand through ``conn`` (the loop's own read connection)."""

    def __init__(self, conn: sqlite3.Connection, limit: int = HELD_KEYS) -> None:
        self.conn = conn
        self.limit = limit
        self.size = 0  # identities kept
        self._sets: collections.OrderedDict[tuple[str, int], set[Identity]] = (
            collections.OrderedDict()
        )
        self._clients: collections.Counter[str] = collections.Counter()  # sets kept of each

    def holds(self, client_id: str, ns: int, location: str) -> bool:
        key = (client_id, ns // HOUR_NS)
        found = self._sets.get(key)
        if found is None:
            found = self._read(client_id, key[1])
            self._sets[key] = found
            self._clients[client_id] += 1
            self.size += len(found)
            self._trim()
        else:
            self._sets.move_to_end(key)
        return (ns, location) in found

    def committed(self, client_id: str, points: Sequence[Point]) -> None:
        """``points`` of ``client_id`` are in the database now (copies among them are not)."""
        if client_id not in self._clients:
            return  # the usual case: nothing of the client is kept
        sets = self._sets
        times = times_of(points)
        keys = zip(times, [p.location for p in points], strict=True)
        if times and min(times) // HOUR_NS == max(times) // HOUR_NS:  # a chunk's usual case
            found = sets.get((client_id, times[0] // HOUR_NS))
            if found is not None:
                before = len(found)
                found.update(keys)
                self.size += len(found) - before
            return
        for ns, location in keys:
            found = sets.get((client_id, ns // HOUR_NS))
            if found is not None and (ns, location) not in found:
                found.add((ns, location))
                self.size += 1

    def drop(self, client_id: str | None = None) -> None:
        """Forget what is kept of ``client_id`` (of every client when None): its points were
        deleted."""
        if client_id is not None and client_id not in self._clients:
            return
        for key in [k for k in self._sets if client_id is None or k[0] == client_id]:
            self._forget(key)

    def _read(self, client_id: str, hour: int) -> set[Identity]:
        # A chunk lies within one hour (the writer splits by hour): its last time says which.
        found: set[Identity] = set()
        for (data,) in self.conn.execute(
            "SELECT x.data FROM chunks x WHERE x.client = (SELECT id FROM clients WHERE name = ?) "
            "AND x.last >= ? AND x.last < ?",
            (client_id, hour * HOUR_NS, (hour + 1) * HOUR_NS),
        ):
            found |= chunk_keys(data)
        return found

    def _trim(self) -> None:
        while self.size > self.limit and len(self._sets) > 1:
            self._forget(next(iter(self._sets)))

    def _forget(self, key: tuple[str, int]) -> None:
        self.size -= len(self._sets.pop(key))
        self._clients[key[0]] -= 1
        if not self._clients[key[0]]:
            del self._clients[key[0]]


def line_held(line: bytes, buffers: Mapping[str, Buffer], held: HeldIndex) -> bool | None:
    """Whether the point of an AT or POINT line is among the uncommitted ``buffers`` or
    ``held`` in the database (None when the line is not plainly one: not looked up)."""
    found = line_identity(line)
    if found is None:
        return None
    client_id, time_key, location = found
    buffer = buffers.get(client_id)
    if buffer is not None:
        key = (time_key[0], time_key[1], location)
        keys = buffer.keys
        if key in keys if keys is not None else buffer.holds(key):
            return True
    return held.holds(client_id, key_to_ns(time_key), location)
