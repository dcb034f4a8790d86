"""History's points as rows, their identity, and the buckets anti-entropy compares (pure).

A point is a client's position at a client time: its identity is the client ID, the client
time (to the nanosecond) and the location, so the same client and time at two locations are
two points. Every copy a flood brings of one identity is the same point; a server stores the
first it receives (copies differ only in the server that took the report and its time
difference, when a client sent the same report to two servers).

Anti-entropy compares points by bucket: the UTC day of the client time, and one of
``SPREAD`` slices of the clients (by a hash of the ID that every server computes alike). A
bucket's digest is its point count and the XOR of a 64-bit hash of each point's identity, so
adding a point updates it in O(1) and a whole day leaves with its buckets when it expires.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from ..protocol import Record, key_to_ns

__all__ = [
    "DAY_NS",
    "MAX_NS",
    "SPREAD",
    "Digest",
    "Row",
    "bucket_of",
    "day_of",
    "hash64",
    "identity_hash",
    "lat_lng",
    "row_of",
]

DAY_NS = 86_400 * 1_000_000_000
# The latest client time history keeps: SQLite's integers are 64-bit, and nanoseconds reach
# that in 2262. A record may be dated up to 9999 (the protocol's bound, from a peer, which
# never refuses for max_future); such a record is the newest as ever, but no history point.
MAX_NS = 2**63 - 1
# 64 slices a day: with 10,000 clients a bucket holds some 160 clients' points of one day, so
# one missing point costs a day's points of ~160 clients, not of all of them; a day's 64
# digests are one 1.5 KB line.
SPREAD = 64


class Row(NamedTuple):
    """A point as history stores it: what rebuilds its AT (or POINT) line exactly."""

    client_id: str
    ns: int  # client time in POSIX nanoseconds: the order, the windows, the identity
    client_time: str  # the client's time exactly as sent
    location: str
    server_id: str
    time_diff: str
    attributes: bytes  # b"" when none

    def at_line(self) -> bytes:
        return (
            f"AT {self.server_id} {self.time_diff} {self.client_id} {self.location} "
            f"{self.client_time}"
        ).encode()

    def wire(self) -> bytes:
        """The AT line, or the POINT line when the point has attributes (``Record.wire``)."""
        line = self.at_line()
        if not self.attributes:
            return line
        return b"POINT" + line[2:] + b" " + self.attributes


class Digest(NamedTuple):
    points: int
    xor: int


def row_of(record: Record) -> Row:
    sec, frac = record.key[0], record.key[1]
    return Row(
        record.client_id,
        key_to_ns((sec, frac)),
        record.client_time,
        record.location,
        record.server_id,
        record.time_diff,
        record.attributes,
    )


def hash64(data: bytes) -> int:
    """A signed 64-bit hash, the same on every server (SQLite integers are signed)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def identity_hash(client_id: str, ns: int, location: str) -> int:
    """The hash of a point's identity, which bucket digests XOR together."""
    return hash64(f"{client_id} {ns} {location}".encode())


# A location's two signed numbers (its format was checked where the point was parsed).
_NUMBER = re.compile(r"[+-][0-9.]+")


def lat_lng(location: str) -> tuple[float, float]:
    """A checked location's latitude and longitude, without parse_location's exact checks."""
    lat, lng = _NUMBER.findall(location)
    return float(lat), float(lng)


def day_of(ns: int) -> int:
    """The UTC day (days since 1970-01-01) of a client time."""
    return ns // DAY_NS


def slice_of(client_id: str) -> int:
    return hashlib.blake2b(client_id.encode(), digest_size=2).digest()[1] % SPREAD


def bucket_of(client_id: str, ns: int) -> int:
    """The bucket of a point: its day times ``SPREAD``, plus its client's slice."""
    return day_of(ns) * SPREAD + slice_of(client_id)
