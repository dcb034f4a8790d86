"""The digests of uncommitted points, kept between anti-entropy's asks (in worker threads).

Anti-entropy compares digests that count uncommitted points like written ones, and asks for
them at every exchange, on every link, and again while a leaf settles: hashing every
uncommitted point at each ask (up to MAX_OPEN_POINTS and the chunks with the writer) cost a
repair seconds of CPU. A list of points here is either a client's open chunk, which only
grows until it is taken (a new list then begins), or a chunk with the writer, which never
changes; so each list's points are hashed once, and a later ask hashes only what was
appended since.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from .buffers import Buffer
from .points import HOUR_NS, SPREAD, Point, hash64, ns_of

__all__ = ["Pending", "Snapshot", "snapshot"]

Identity = tuple[int, str]  # time (ns) and location
# A client's uncommitted points as the loop saw them: its ID, its slice, and each of its
# lists with its length then.
Snapshot = list[tuple[str, int, list[tuple[list[Point], int]]]]


def snapshot(buffers: Iterable[Buffer]) -> Snapshot:
    """What the loop hands a worker thread: each buffer's lists and their lengths, no copy
    (a list only grows, and only at its end, while the thread reads it)."""
    return [
        (
            b.client_id,
            b.piece,
            [(b.items, len(b.items)), *((c.items, len(c.items)) for c in b.sent)],
        )
        for b in buffers
    ]


@dataclass
class _Part:
    items: list[Point]  # held, so that its id is not another list's while it is kept
    done: int = 0  # how many of its points are hashed
    seen: set[Identity] = field(default_factory=set)
    digests: dict[int, tuple[int, int]] = field(default_factory=dict)  # hour bucket -> digest


class Pending:
    """The hour-bucket digests of uncommitted points, each identity of a client once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # asks of two links may run in two threads at once
        self._parts: dict[int, _Part] = {}

    def digests(
        self, found: Snapshot, low: int, high: int, *, whole: bool
    ) -> dict[int, tuple[int, int]]:
        """The buckets from ``low`` to ``high`` (excluded) of the points in ``found``;
        ``whole``: ``found`` is every buffer, so what is kept of any other list goes."""
        result: dict[int, tuple[int, int]] = {}
        with self._lock:
            for client_id, piece, lists in found:
                parts = [self._hashed(items, n, client_id, piece) for items, n in lists]
                for part in parts:
                    _add(result, part.digests, low, high)
                if len(parts) > 1:
                    _uncount_copies(result, parts, client_id, piece, low, high)
            if whole:
                kept = {id(items) for _, _, lists in found for items, _ in lists}
                self._parts = {k: p for k, p in self._parts.items() if k in kept}
        return {b: d for b, d in result.items() if d[0]}

    def _hashed(self, items: list[Point], n: int, client_id: str, piece: int) -> _Part:
        part = self._parts.get(id(items))
        if part is None or part.items is not items:
            part = self._parts[id(items)] = _Part(items)
        seen, digests = part.seen, part.digests
        for point in items[part.done : n]:
            identity = (ns_of(point), point.location)
            if identity in seen:
                continue  # a copy within the list
            seen.add(identity)
            bucket = identity[0] // HOUR_NS * SPREAD + piece
            count, xor = digests.get(bucket, (0, 0))
            digests[bucket] = (count + 1, xor ^ _hash(client_id, identity))
        part.done = max(part.done, n)
        return part


def _hash(client_id: str, identity: Identity) -> int:
    return hash64(f"{client_id} {identity[0]} {identity[1]}".encode())


def _add(
    into: dict[int, tuple[int, int]], digests: dict[int, tuple[int, int]], low: int, high: int
) -> None:
    for bucket, (count, xor) in digests.items():
        if low <= bucket < high:
            held, held_xor = into.get(bucket, (0, 0))
            into[bucket] = (held + count, held_xor ^ xor)


def _uncount_copies(
    into: dict[int, tuple[int, int]],
    parts: list[_Part],
    client_id: str,
    piece: int,
    low: int,
    high: int,
) -> None:
    """A point in two of a client's lists (a copy the open chunk took after its chunk went
    to the writer) counts once: the rare case, found by disjointness first."""
    if all(a.seen.isdisjoint(b.seen) for i, a in enumerate(parts) for b in parts[i + 1 :]):
        return
    times = collections.Counter(i for part in parts for i in part.seen)
    for identity, k in times.items():
        bucket = identity[0] // HOUR_NS * SPREAD + piece
        if k > 1 and low <= bucket < high:
            count, xor = into[bucket]
            into[bucket] = (
                count - (k - 1),
                xor ^ (_hash(client_id, identity) if k % 2 == 0 else 0),
            )
