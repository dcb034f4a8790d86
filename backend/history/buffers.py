"""Each client's points not yet committed: its open chunk, and the chunks with the writer.

The loop appends a record to its client's open chunk as it is, with no conversion, hashing
or sorting (the writer thread does those), so keeping a point costs the loop a list append.
Whether a late point is already here is answered from the last few points (a flood's copy
of a point comes back right after it), else from a set of identities built on first need.

Anti-entropy counts uncommitted points in its digests. Each list of points (an open chunk,
which becomes a chunk with the writer as it is) has a ``Tally`` of the digests of its points
so far, extended in a worker thread when an exchange asks: an exchange hashes only the points
that came since the last one, not every uncommitted point again.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterable

from .columns import identity_xor, rising, times_of
from .points import HOUR_NS, SPREAD, Key, Point, identity_hash, key_of, slice_of
from .writer import Chunk

__all__ = ["Buffer", "Tally", "digests_of"]

# How many of the newest points a lookup compares before it builds the identity set: a
# flood's copy of a point arrives within a few points of it.
TAIL = 8
# Digests are extended by one worker thread at a time (two exchanges may ask at once).
_LOCK = threading.Lock()

Hours = dict[int, tuple[int, int]]  # hour (since 1970) -> (count, XOR of identity hashes)


class Tally:
    """The hour digests of the first ``upto`` points of ``items``, a list that only grows
    (worker threads, under ``_LOCK``; the loop only makes one per list)."""

    __slots__ = ("first", "hours", "items", "last", "seen", "upto")

    def __init__(self, items: list[Point]) -> None:
        self.items = items
        self.upto = 0
        self.hours: Hours = {}
        self.first = self.last = -1  # the range of the times counted (none yet: -1)
        # The identities counted, once a point came out of order (a late point, a copy):
        # until then the times rise, and no point can be a copy of another.
        self.seen: set[tuple[int, str]] | None = None

    def extend(self, client_id: str, upto: int) -> None:
        """Count the points up to ``upto``."""
        new = self.items[self.upto : upto]
        if not new:
            return
        ns = times_of(new)
        locations = [p.location for p in new]
        if self.seen is None and ns[0] > self.last and rising(ns):
            self._add_rising(client_id, ns, locations)
        else:
            self._add_each(client_id, ns, locations)
        low = min(ns)
        self.first = low if self.first < 0 else min(self.first, low)
        self.last = max(self.last, max(ns))
        self.upto = upto

    def _add(self, hour: int, count: int, xor: int) -> None:
        held, held_xor = self.hours.get(hour, (0, 0))
        self.hours[hour] = (held + count, held_xor ^ xor)

    def _add_rising(self, client_id: str, ns: list[int], locations: list[str]) -> None:
        hour = ns[0] // HOUR_NS
        if ns[-1] // HOUR_NS == hour:  # the usual case: one hour
            self._add(hour, len(ns), identity_xor(client_id, ns, locations))
            return
        hours: dict[int, list[int]] = {}
        for i, t in enumerate(ns):
            hours.setdefault(t // HOUR_NS, []).append(i)
        for hour, picked in hours.items():
            xor = identity_xor(client_id, [ns[i] for i in picked], [locations[i] for i in picked])
            self._add(hour, len(picked), xor)

    def _add_each(self, client_id: str, ns: list[int], locations: list[str]) -> None:
        if self.seen is None:
            counted = self.items[: self.upto]
            self.seen = set(zip(times_of(counted), [p.location for p in counted], strict=True))
        seen = self.seen
        for key in zip(ns, locations, strict=True):
            if key not in seen:
                seen.add(key)
                self._add(key[0] // HOUR_NS, 1, identity_hash(client_id, *key))


class Buffer:
    """One client's uncommitted points."""

    __slots__ = ("client_id", "items", "keys", "piece", "sent", "tally")

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.piece = slice_of(client_id)
        self.items: list[Point] = []  # the open chunk, in arrival order (copies possible)
        self.tally = Tally(self.items)
        self.sent: collections.deque[Chunk] = collections.deque()  # with the writer
        self.keys: set[Key] | None = None  # of both, once a lookup needed it

    def append(self, point: Point) -> None:
        self.items.append(point)
        if self.keys is not None:
            self.keys.add(key_of(point))

    def holds(self, key: Key) -> bool:
        for point in self.items[-TAIL:]:
            if key_of(point) == key:
                return True
        if self.keys is None:
            self.keys = {key_of(p) for p in self.every()}
        return key in self.keys

    def take(self) -> Chunk:
        """The open chunk, now with the writer."""
        chunk = Chunk(self.client_id, self.items, self.tally)
        self.items = []
        self.tally = Tally(self.items)
        self.sent.append(chunk)
        return chunk

    def replace(self, items: list[Point]) -> None:
        """The open chunk is now ``items`` (a deletion took some of its points)."""
        self.items, self.keys = items, None
        self.tally = Tally(items)

    def parts(self) -> tuple[str, int, list[tuple[Tally, int]]]:
        """What ``digests_of`` needs of the buffer, taken on the loop: each list of points
        with its tally and its length now (the lists only grow)."""
        found = [(self.tally, len(self.items))]
        for chunk in self.sent:
            assert chunk.tally is not None
            found.append((chunk.tally, len(chunk.items)))
        return self.client_id, self.piece, found

    def committed(self) -> None:
        """The oldest chunk with the writer is in the database."""
        chunk = self.sent.popleft()
        if self.keys is not None:
            self.keys.difference_update(key_of(p) for p in chunk.items)
            # Copies of those still here (open, or in a later chunk with the writer) stay held.
            for rest in (self.items, *(c.items for c in self.sent)):
                self.keys.update(key_of(p) for p in rest)

    def empty(self) -> bool:
        return not self.items and not self.sent

    def every(self) -> list[Point]:
        """A copy of every uncommitted point, for a worker thread to read."""
        found = list(self.items)
        for chunk in self.sent:
            found.extend(chunk.items)
        return found


def digests_of(
    buffers: Iterable[tuple[str, int, list[tuple[Tally, int]]]], low: int, high: int
) -> dict[int, tuple[int, int]]:
    """The hour buckets from ``low`` to ``high`` (excluded) of uncommitted points, each point
    once, given as ``Buffer.parts`` (in a worker thread)."""
    digests: dict[int, tuple[int, int]] = {}
    with _LOCK:
        for client_id, piece, parts in buffers:
            for hour, (count, xor) in _hours_of(client_id, parts).items():
                bucket = hour * SPREAD + piece
                if low <= bucket < high:
                    held, held_xor = digests.get(bucket, (0, 0))
                    digests[bucket] = (held + count, held_xor ^ xor)
    return digests


def _hours_of(client_id: str, parts: list[tuple[Tally, int]]) -> Hours:
    """A client's uncommitted points' hours, each point once: the sum of its lists' tallies
    when their times do not overlap (a point in two lists is the same time in both), else
    counted afresh."""
    for tally, upto in parts:
        tally.extend(client_id, upto)
    counted = [t for t, upto in parts if upto]
    if len(counted) == 1:
        return counted[0].hours
    spans = sorted((t.first, t.last) for t in counted)
    if all(a[1] < b[0] for a, b in itertools.pairwise(spans)):
        hours: Hours = {}
        for tally in counted:
            for hour, (count, xor) in tally.hours.items():
                held, held_xor = hours.get(hour, (0, 0))
                hours[hour] = (held + count, held_xor ^ xor)
        return hours
    every = [p for tally, upto in parts for p in tally.items[:upto]]
    fresh = Tally(every)
    fresh.extend(client_id, len(every))
    return fresh.hours
