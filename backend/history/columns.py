"""A chunk's points with their times, sorted, hashed and packed a chunk at a time (pure).

The writer thread holds the GIL while it works in Python, and the event loop waits for it
meanwhile, so its work per point is a few tight comprehensions (no row object made, no
function called per point) and C-level passes over whole chunks (``str.join``, ``zlib``, one
regex, and the XOR of a chunk's identity hashes folded as one integer). Records arrive in
their order (each is its client's newest), so sorting is a check that the times rise; only a
chunk with a late point or a copy is sorted and cleared of copies.
"""

from __future__ import annotations

import operator
import zlib
from collections.abc import Sequence
from hashlib import blake2b
from itertools import islice
from typing import NamedTuple

from .points import HOUR_NS, Point

__all__ = ["Columns", "columns_of", "identity_xor", "rising", "times_of"]

_ATTRIBUTES = operator.attrgetter("attributes")
# zlib's fastest level: ~75 bytes of a point's fields shrink to ~25 (the client ID is the
# chunk's, not repeated), for a fraction of a microsecond each (as points.encode_chunk).
_LEVEL = 1
# A small chunk (a slow client's, sent after MAX_AGE_S) is packed with an 8 KB window and
# a smaller hash table: zlib's default state is ~256 KB, which it clears for every call, and
# with the loop's data in the cache that took 60-90 us a chunk against 35-40 (measured, 35
# points; the same size out). Lines refer back to the line before, well within 8 KB. A
# larger chunk packs faster with the default. Either is a zlib stream as any other.
_SMALL = 8_192
_SMALL_WBITS = 13
_SMALL_MEMLEVEL = 6
_WORD = 64  # bits of an identity hash


class Columns(NamedTuple):
    """Points of one client in (time, location) order, each point once, with their times."""

    ns: list[int]
    items: list[Point]

    def pick(self, kept: list[int]) -> Columns:
        """The points at the positions ``kept`` (in that order)."""
        ns, items = self.ns, self.items
        return Columns([ns[i] for i in kept], [items[i] for i in kept])

    def locations(self) -> list[str]:
        return [p.location for p in self.items]

    def encode(self) -> bytes:
        """The points as a chunk's blob: ``points.encode_chunk``'s text, compressed."""
        pairs = zip(self.ns, self.items, strict=True)
        if any(map(_ATTRIBUTES, self.items)):
            lines = [
                f"{t}\t{p.client_time}\t{p.location}\t{p.server_id}\t{p.time_diff}\t"
                f"{p.attributes.decode('utf-8', 'surrogateescape')}"
                for t, p in pairs
            ]
        else:
            lines = [
                f"{t}\t{p.client_time}\t{p.location}\t{p.server_id}\t{p.time_diff}\t"
                for t, p in pairs
            ]
        data = "\n".join(lines).encode("utf-8", "surrogateescape")
        if len(data) > _SMALL:
            return zlib.compress(data, _LEVEL)
        packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, _SMALL_WBITS, _SMALL_MEMLEVEL)
        return packer.compress(data) + packer.flush()

    def hour_groups(self, low: int) -> list[tuple[int, Columns]]:
        """The points at or after ``low``, by the hour (since 1970) of their time."""
        ns = self.ns
        hour = ns[0] // HOUR_NS
        if ns[0] >= low and ns[-1] // HOUR_NS == hour:
            return [(hour, self)]  # the usual case: one hour, nothing too old
        hours: dict[int, list[int]] = {}
        for i, t in enumerate(ns):
            if t >= low:
                hours.setdefault(t // HOUR_NS, []).append(i)
        return [(h, self.pick(kept)) for h, kept in hours.items()]


def times_of(items: Sequence[Point]) -> list[int]:
    """Each point's time in nanoseconds: as the point carries it (a row; a record its server
    made), else from its key (``protocol.key_to_ns``, inlined)."""
    ns = [p.ns for p in items]
    if -1 not in ns:
        return ns
    # Only a record's can be -1 (a row's never is): its key, inlined (a call per point
    # costs a third more).
    return [
        t
        if t >= 0
        else (key := p.key)[0] * 1_000_000_000  # type: ignore[union-attr]
        + int(key[1][:9].ljust(9, "0"))
        + (key[1][9:10] >= "5")
        for t, p in zip(ns, items, strict=True)
    ]


def rising(ns: list[int]) -> bool:
    """Whether each time is after the one before (so no two points share an identity)."""
    return all(map(operator.lt, ns, islice(ns, 1, None)))


def columns_of(items: Sequence[Point]) -> Columns:
    """``items`` (one client's, any order, copies allowed) sorted by (time, location), and
    of two points with one identity the first in ``items`` kept."""
    ns = times_of(items)
    if rising(ns):
        return Columns(ns, list(items))  # rising times: sorted, no two with one identity
    # A stable order: of equal (time, location), the earlier item first; then drop copies.
    order = sorted(zip(ns, [p.location for p in items], range(len(ns)), strict=True))
    kept = [
        i
        for j, (t, location, i) in enumerate(order)
        if j == 0 or (order[j - 1][0], order[j - 1][1]) != (t, location)
    ]
    return Columns([ns[i] for i in kept], [items[i] for i in kept])


def identity_xor(client_id: str, ns: Sequence[int], locations: Sequence[str]) -> int:
    """The XOR of ``points.identity_hash`` over the points (what a bucket's digest adds):
    each point's 8-byte hash joined into one integer, whose 64-bit words are then folded
    together in halves (a few big-integer operations, not one per point)."""
    joined = b"".join(
        [
            blake2b(f"{client_id} {t} {location}".encode(), digest_size=8).digest()
            for t, location in zip(ns, locations, strict=True)
        ]
    )
    words = len(joined) // 8
    value = int.from_bytes(joined, "big")
    while words > 1:
        half = words // 2
        bits = half * _WORD
        value = (value >> bits) ^ (value & ((1 << bits) - 1))
        words -= half
    return value - (1 << _WORD) if value >> (_WORD - 1) else value
