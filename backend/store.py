"""The records a server holds: the newest AT record of every client it has heard of, and
digests of record ranges for anti-entropy.

Clients fall into ``BUCKETS`` ranges by a hash of their ID that every server computes alike.
Each range has a digest: the XOR of a 64-bit hash of every record line in it, brought up to
date when asked for (a record replaced a hundred times between two exchanges is hashed once).
Two servers hold the same records in a range exactly when (barring a 2**-64 collision) their
digests for it agree, so comparing 256 digests finds the ranges to exchange without looking
at a single record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from .protocol import Record

__all__ = ["BUCKETS", "Store", "bucket_of"]

# 256 ranges: one DIGESTS line is 4 KiB, and with 100,000 clients a range holds ~400 records,
# so one differing record costs ~400 records of traffic, not 100,000.
BUCKETS = 256


def bucket_of(client_id: str) -> int:
    """The range of a client: the same on every server (Python's hash() is per process)."""
    return hashlib.blake2b(client_id.encode(), digest_size=2).digest()[0] % BUCKETS


_blake2b = hashlib.blake2b  # a line's 64-bit hash: its blake2b digest of 8 bytes
# Clients whose newest record is not yet counted in its range's digest, at most: a digest is
# brought up to date when asked for (a neighbour's exchange, every sync_interval), so a client
# that reports a hundred times between two exchanges is hashed once, not a hundred times; past
# this many the store counts them at once, so no request for the digests holds the loop for
# more than about a millisecond (4,096 hashes of ~0.3 us).
PENDING_MAX = 4096


def _hash(line: bytes) -> int:
    return int.from_bytes(_blake2b(line, digest_size=8).digest(), "big")


class Store:
    """Client ID → newest record, under the herd's total order (``Record.newer_than``)."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        # client ID -> (hash of the line its range's digest counts, 0 for none; its range),
        # so a client's ID is hashed only once.
        self._meta: dict[str, tuple[int, int]] = {}
        self._buckets: list[dict[str, Record]] = [{} for _ in range(BUCKETS)]
        self._digests: list[int] = [0] * BUCKETS
        # Clients whose record changed since their range's digest last counted it.
        self._pending: set[str] = set()

    @property
    def digests(self) -> list[int]:
        """Each range's digest: the XOR of the 64-bit hash of every record line in it."""
        if self._pending:
            self._count()
        return self._digests

    def get(self, client_id: str) -> Record | None:
        return self._records.get(client_id)

    def offer(self, record: Record) -> bool:
        """Keep ``record`` if it is newer than the one held; say whether it was kept."""
        client_id = record.client_id
        held = self._records.get(client_id)
        # Record.newer_than, inline: this runs for every record.
        if held is not None and not record.key > held.key:
            return False
        meta = self._meta.get(client_id)
        if meta is None:
            meta = self._meta[client_id] = (0, bucket_of(client_id))
        self._records[client_id] = record
        self._buckets[meta[1]][client_id] = record
        pending = self._pending
        pending.add(client_id)
        if len(pending) > PENDING_MAX:
            self._count()
        return True

    def _count(self) -> None:
        """Bring the digests of the clients whose record changed up to date."""
        records, meta, digests = self._records, self._meta, self._digests
        for client_id in self._pending:
            counted, b = meta[client_id]
            record = records.get(client_id)
            if record is None:
                del meta[client_id]
                digests[b] ^= counted
            else:
                h = _hash(record.line)
                meta[client_id] = (h, b)
                digests[b] ^= counted ^ h
        self._pending.clear()

    def remove(self, client_id: str) -> None:
        if self._records.pop(client_id, None) is None:
            return
        del self._buckets[self._meta[client_id][1]][client_id]
        self._pending.add(client_id)

    def expire(self, oldest_second: int) -> int:
        """Drop every record whose client time is before ``oldest_second``; return how many."""
        stale = [cid for cid, r in self._records.items() if r.key[0] < oldest_second]
        for client_id in stale:
            self.remove(client_id)
        return len(stale)

    def bucket(self, index: int) -> list[Record]:
        return list(self._buckets[index].values())

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records.values())
