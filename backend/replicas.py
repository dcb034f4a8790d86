"""Replicated objects: the one mechanism every kind uses to reach every server (docs/history.md).

A kind (points and deletions today; fences, shares and tokens to come) gives a ``Replica``:
what to do with a neighbour's ``PUT <kind> <payload>``, and a tree of digests (a scope's
children, each a count and an XOR of hashes) whose leaves hold the objects. A link floods new
objects as PUT lines; on link-up and every ``sync_interval`` it sends each kind's top scope as
``HAVE`` lines, answers a ``HAVE`` whose children differ with the children's own ``HAVE``
(or, at the leaves, with its objects as PUT lines), so only what differs travels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from .history.points import HOURS, SPREAD, Row, day_of, hash64, identity_hash
from .protocol import MAX_HAVE_ENTRIES, Forget, Have

if TYPE_CHECKING:
    from .history import History

# Seconds a leaf's objects, once listed, answer further asks: a leaf of 300,000 points comes
# back as 100 IDS lines, each asking for the same leaf; listing it afresh for each (a read
# and a hash of every point) made an exchange quadratic. A point that came meanwhile is
# already on its way by the flood, or in the next exchange.
LEAF_LINGER_S = 5.0

__all__ = [
    "TOP",
    "Children",
    "Deletions",
    "Points",
    "PutHandler",
    "Replica",
    "Shared",
    "differing",
    "have_lines",
]

TOP = "*"
T = TypeVar("T")
# What applies a neighbour's object: its payload and the neighbour's name.
PutHandler = Callable[[bytes, str], object]


@dataclass(frozen=True, slots=True)
class Children:
    """A scope's children ``first..last`` with their digests (empty ones left out); ``leaves``
    says whether each child holds objects rather than more digests."""

    first: int
    last: int
    digests: dict[int, tuple[int, int]]
    leaves: bool


class Replica(Protocol):
    def put(self, payload: bytes, source: str) -> object:
        """Applies a neighbour's object: new here, it is kept and flooded on; else nothing."""

    async def children(self, scope: str, only: Collection[int] | None = None) -> Children | None:
        """The digests under ``scope`` (None for a scope this kind does not have); with
        ``only``, those children's are exact and the others' may be left out."""

    async def identities(self, scope: str, child: int) -> list[tuple[int, bytes]]:
        """The objects of one leaf, by identity: each one's identity hash (unsigned 64 bits,
        the one its leaf's digest XORs) and its payload, in ascending order of identity."""


def have_lines(kind: str, scope: str, children: Children) -> Iterator[bytes]:
    """``children`` as HAVE lines of at most MAX_HAVE_ENTRIES digests each, whose ranges
    together cover ``first..last``."""
    items = sorted(children.digests.items())
    first = children.first
    for start in range(0, max(len(items), 1), MAX_HAVE_ENTRIES):
        chunk = items[start : start + MAX_HAVE_ENTRIES]
        final = start + MAX_HAVE_ENTRIES >= len(items)
        last = children.last if final else chunk[-1][0]
        yield Have(kind, scope, first, last, dict(chunk)).encode()
        first = last + 1


def differing(mine: Children, theirs: Have) -> list[int]:
    """The children in ``theirs``' range whose digests differ from ``mine``."""
    indices = set(theirs.digests) | {i for i in mine.digests if theirs.first <= i <= theirs.last}
    return sorted(i for i in indices if mine.digests.get(i) != theirs.digests.get(i))


def _xor(values: Iterator[tuple[int, int]]) -> tuple[int, int]:
    count = xor = 0
    for c, x in values:
        count, xor = count + c, xor ^ x
    return count, xor


class Points:
    """History's points: ``*`` -> the days within retention; a day -> its HOURS * SPREAD
    hour buckets (leaves: an hour of a slice of the clients); a bucket's objects are its
    points' AT or POINT lines. Leaves of an hour keep what a difference costs small: the
    points of one hour of one slice travel, not a day's."""

    def __init__(self, history: History, on_put: PutHandler) -> None:
        self.history = history
        self._on_put = on_put
        self._asked: Shared[Children | None] = Shared()
        self._leaves: Shared[list[tuple[int, bytes]]] = Shared(LEAF_LINGER_S)

    def put(self, payload: bytes, source: str) -> object:
        # A flood brings each point by every path, and a partition's repair by both ends of
        # the cut: a copy of a point held here is dropped before it is parsed as a record.
        if self.history.holds_line(payload):
            return None
        return self._on_put(payload, source)

    async def children(self, scope: str, only: Collection[int] | None = None) -> Children | None:
        if only is not None and scope.isdigit():
            return await self._hours(int(scope), {c % SPREAD for c in only})
        return await self._asked.get(scope, lambda: self._children(scope))

    async def _children(self, scope: str) -> Children | None:
        history = self.history
        if scope == TOP:
            # From the day after the oldest kept (servers may disagree about that one for a
            # moment around midnight) to tomorrow (clients may be up to max_future ahead).
            first, last = history.first_day + 1, day_of(history.now_ns()) + 1
            buckets = await history.read_digests(first, last)
            days: dict[int, list[tuple[int, int]]] = {}
            for b, digest in buckets.items():
                days.setdefault(b // SPREAD, []).append(digest)
            digests = {day: _xor(iter(found)) for day, found in days.items()}
            return Children(first, last, digests, leaves=False)
        if not scope.isdigit():
            return None
        return await self._hours(int(scope), None)

    async def _hours(self, day: int, slices: set[int] | None) -> Children:
        first = day * HOURS * SPREAD
        hours = await self.history.read_hours(day, slices)
        digests = {b - first: (d.points, d.xor) for b, d in hours.items()}
        if slices is not None:
            digests = {c: d for c, d in digests.items() if c % SPREAD in slices}
        return Children(0, HOURS * SPREAD - 1, digests, leaves=True)

    async def identities(self, scope: str, child: int) -> list[tuple[int, bytes]]:
        if not 0 <= child < HOURS * SPREAD:
            return []
        return await self._leaves.get(f"{scope} {child}", lambda: self._leaf(scope, child))

    async def _leaf(self, scope: str, child: int) -> list[tuple[int, bytes]]:
        rows = await self.history.read_bucket(int(scope) * HOURS * SPREAD + child)
        # Off the loop: the current hour's leaf may hold hundreds of thousands of points, and
        # hashing them on the loop held it for seconds (every reply and flood waited).
        return await asyncio.to_thread(_identified, rows)


class Shared(Generic[T]):
    """Asks for one scope's digests (or one leaf's objects) that come while one is being
    answered share its answer: a day's HAVE comes in four lines at once, and two links may
    ask together, while the digests of uncommitted points cost a pass over them. With
    ``linger``, an answer also serves asks that come within that many seconds after it."""

    def __init__(self, linger: float = 0.0) -> None:
        self.linger = linger
        self._running: dict[str, asyncio.Future[T]] = {}

    async def get(self, key: str, work: Callable[[], Coroutine[object, object, T]]) -> T:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(work())
            running.add_done_callback(lambda done: self._done(key, done))
        # One asker cancelled (its link went down) leaves the others their answer.
        return await asyncio.shield(running)

    def _done(self, key: str, done: asyncio.Future[T]) -> None:
        if self.linger > 0 and not done.cancelled() and done.exception() is None:
            loop = asyncio.get_running_loop()
            loop.call_later(self.linger, self._forget, key, done)
        else:
            self._forget(key, done)

    def _forget(self, key: str, done: asyncio.Future[T]) -> None:
        if self._running.get(key) is done:
            del self._running[key]


class Deletions:
    """History's deletions: ``*`` -> one leaf holding every deletion (``<client> <until>``)."""

    def __init__(self, history: History, on_put: PutHandler) -> None:
        self.history = history
        self._on_put = on_put

    def put(self, payload: bytes, source: str) -> object:
        return self._on_put(payload, source)

    async def children(self, scope: str, only: Collection[int] | None = None) -> Children | None:
        if scope != TOP:
            return None
        found = await self.history.read_forgotten()
        digests = {0: _xor((1, hash64(p)) for p in _payloads(found))} if found else {}
        return Children(0, 0, digests, leaves=True)

    async def identities(self, scope: str, child: int) -> list[tuple[int, bytes]]:
        found = await self.history.read_forgotten()
        return sorted(((_unsigned(hash64(p)), p) for p in _payloads(found)), key=lambda x: x[0])


def _identified(rows: list[Row]) -> list[tuple[int, bytes]]:
    """Each point's identity hash (as the digests count it) and its line, by identity."""
    found = [(_unsigned(identity_hash(r.client_id, r.ns, r.location)), r.wire()) for r in rows]
    found.sort(key=lambda pair: pair[0])
    return found


def _unsigned(value: int) -> int:
    return value & (2**64 - 1)


def _payloads(forgotten: dict[str, int]) -> Iterator[bytes]:
    for client, until in sorted(forgotten.items()):
        yield Forget(client, until).payload()
