"""History's reads as the event loop asks them: off the loop, uncommitted points merged in.

Each read hands its question and a copy of what the open chunks hold to a worker thread
(reads.py opens its own connection there), so the loop only gathers lists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable

from .buffers import Buffer, digests_of
from .points import HOURS, SPREAD, Digest, Point, Row, day_bucket
from .reads import Box, Reads

__all__ = ["Asking"]


class Asking:
    """The reads of ``History`` (store.py), over its ``reads`` and open chunks."""

    reads: Reads
    _open: dict[str, Buffer]

    def _uncommitted(self, client_id: str) -> list[Point]:
        buffer = self._open.get(client_id)
        return buffer.every() if buffer is not None else []

    async def read_points(
        self, client_id: str, since_ns: int, until_ns: int, limit: int
    ) -> list[Row]:
        """A client's points with since <= time <= until, oldest first, at most ``limit``."""
        extra = self._uncommitted(client_id)
        return await asyncio.to_thread(
            self.reads.points, client_id, since_ns, until_ns, limit, extra
        )

    async def read_lines(
        self, client_id: str, since_ns: int, until_ns: int, limit: int, points: bool
    ) -> list[str]:
        """HISTORY's answer lines (``Reads.lines``)."""
        extra = self._uncommitted(client_id)
        return await asyncio.to_thread(
            self.reads.lines, client_id, since_ns, until_ns, limit, extra, points
        )

    async def read_area(
        self, box: Box, since_ns: int, until_ns: int, limit: int
    ) -> dict[str, list[Row]]:
        """The clients that were in ``box`` (west, south, east, north) in the window, with
        their points there, at most ``limit`` points in all."""
        extra = {name: b.every() for name, b in self._open.items()}
        return await asyncio.to_thread(self.reads.area, box, since_ns, until_ns, limit, extra)

    async def read_area_clients(
        self, box: Box, since_ns: int, until_ns: int, limit: int
    ) -> list[str]:
        """The clients with a point in ``box`` in the window, by ID, at most ``limit``."""
        extra = {name: b.every() for name, b in self._open.items()}
        found = await asyncio.to_thread(self.reads.area, box, since_ns, until_ns, limit, extra, 1)
        return list(found)

    async def read_digests(self, first_day: int, last_day: int) -> dict[int, Digest]:
        """Every non-empty bucket of the days ``first_day`` to ``last_day``, uncommitted
        points included."""
        low, high = first_day * HOURS * SPREAD, (last_day + 1) * HOURS * SPREAD
        parts = [b.parts() for b in self._open.values()]
        stored, extra = await asyncio.to_thread(
            lambda: (self.reads.digests(first_day, last_day), digests_of(parts, low, high))
        )
        return _merged(stored, ((day_bucket(b), d) for b, d in extra.items()))

    async def read_hours(
        self, day: int, slices: Collection[int] | None = None
    ) -> dict[int, Digest]:
        """Every non-empty hour bucket of a day, uncommitted points included; with ``slices``,
        only the buckets of those slices are exact (the uncommitted points of the others
        are not hashed: a second look at a few leaves costs only theirs)."""
        low, high = day * HOURS * SPREAD, (day + 1) * HOURS * SPREAD
        parts = [b.parts() for b in self._open.values() if slices is None or b.piece in slices]
        stored, extra = await asyncio.to_thread(
            lambda: (self.reads.hours(day), digests_of(parts, low, high))
        )
        return _merged(stored, extra.items())

    async def read_bucket(self, bucket: int) -> list[Row]:
        """Every point of one hour bucket, uncommitted ones included (anti-entropy sends
        these where digests differ)."""
        piece = bucket % SPREAD
        extra = [p for b in self._open.values() if b.piece == piece for p in b.every()]
        return await asyncio.to_thread(self.reads.bucket, bucket, extra)

    async def read_forgotten(self) -> dict[str, int]:
        return await asyncio.to_thread(self.reads.forgotten)


def _merged(
    stored: dict[int, Digest], extra: Iterable[tuple[int, tuple[int, int]]]
) -> dict[int, Digest]:
    """Committed digests with those of uncommitted points added in."""
    merged = {b: (d.points, d.xor) for b, d in stored.items()}
    for b, (count, xor) in extra:
        held, held_xor = merged.get(b, (0, 0))
        merged[b] = (held + count, held_xor ^ xor)
    return {b: Digest(count, xor) for b, (count, xor) in merged.items() if count}
