"""Each client's points not yet committed: its open chunk, and the chunks with the writer.

The loop appends a record to its client's open chunk as it is, with no conversion, hashing
or sorting (the writer thread does those), so keeping a point costs the loop a list append.
Whether a late point is already here is answered from the last few points (a flood's copy
of a point comes back right after it), else from a set of identities built on first need.
"""

from __future__ import annotations

import collections

from .points import Key, Point, key_of, slice_of
from .writer import Chunk

__all__ = ["Buffer"]

# How many of the newest points a lookup compares before it builds the identity set: a
# flood's copy of a point arrives within a few points of it.
TAIL = 8


class Buffer:
    """One client's uncommitted points."""

    __slots__ = ("client_id", "items", "keys", "piece", "sent")

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.piece = slice_of(client_id)
        self.items: list[Point] = []  # the open chunk, in arrival order (copies possible)
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
        chunk = Chunk(self.client_id, self.items)
        self.items = []
        self.sent.append(chunk)
        return chunk

    def committed(self) -> None:
        """The oldest chunk with the writer is in the database."""
        chunk = self.sent.popleft()
        if self.keys is not None:
            self.keys.difference_update(key_of(p) for p in chunk.items)
            self.keys.update(key_of(p) for p in self.items)  # copies of those, still open

    def empty(self) -> bool:
        return not self.items and not self.sent

    def every(self) -> list[Point]:
        """A copy of every uncommitted point, for a worker thread to read."""
        found = list(self.items)
        for chunk in self.sent:
            found.extend(chunk.items)
        return found

