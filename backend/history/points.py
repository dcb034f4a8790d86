"""History's points as rows, their identity, and the buckets anti-entropy compares (pure).

A point is a client's position at a client time: its identity is the client ID, the client
time (to the nanosecond) and the location, so the same client and time at two locations are
two points. Every copy a flood brings of one identity is the same point; a server stores the
first it receives (copies differ only in the server that took the report and its time
difference, when a client sent the same report to two servers).

Anti-entropy compares points by bucket: the UTC day of the client time, and one of
``SPREAD`` slices of the clients (by a hash of the ID that every server computes alike); and
below a day, by *hour bucket*: the hour of the client time and the slice. A bucket's digest
is its point count and the XOR of a 64-bit hash of each point's identity, so adding a point
updates it in O(1) and a whole day leaves with its buckets when it expires.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable
from typing import NamedTuple

from ..protocol import Record, key_to_ns

__all__ = [
    "DAY_NS",
    "HOURS",
    "HOUR_NS",
    "MAX_NS",
    "SPREAD",
    "Digest",
    "Key",
    "Point",
    "Row",
    "as_row",
    "box_of",
    "bucket_of",
    "chunk_keys",
    "chunk_text",
    "day_bucket",
    "day_of",
    "decode_chunk",
    "encode_chunk",
    "hash64",
    "hour_bucket_of",
    "identity_hash",
    "key_of",
    "lat_lng",
    "ns_of",
    "row_of",
    "slice_of",
    "text_holds",
]

DAY_NS = 86_400 * 1_000_000_000
HOUR_NS = 3_600 * 1_000_000_000
HOURS = 24  # hour buckets of a day, times SPREAD
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


# What history is offered: a record as the server holds it (no conversion on the loop), or a
# row (tests, imports, a database's rows).
Point = Record | Row
# A point's identity within its client: its exact client time (seconds, fraction digits) and
# its location.
Key = tuple[int, str, str]


def key_of(point: Point) -> Key:
    if isinstance(point, Row):
        sec, frac = _seconds(point.client_time)
        return (sec, frac, point.location)
    return (point.key[0], point.key[1], point.location)


def _seconds(client_time: str) -> tuple[int, str]:
    seconds, _, fraction = client_time.partition(".")
    return int(seconds), fraction.rstrip("0")


def ns_of(point: Point) -> int:
    ns = point.ns  # a row's; a record's where its maker had it, else -1
    if ns >= 0 or isinstance(point, Row):
        return ns
    key = point.key
    return key_to_ns((key[0], key[1]))


def as_row(point: Point) -> Row:
    return point if isinstance(point, Row) else row_of(point)


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


def box_of(locations: list[str]) -> tuple[float, float, float, float]:
    """South, west, north and east of checked locations (one regex pass over the distinct
    ones: a client standing still repeats one)."""
    numbers = list(map(float, _NUMBER.findall(" ".join(set(locations)))))
    lats, lngs = numbers[0::2], numbers[1::2]
    return min(lats), min(lngs), max(lats), max(lngs)


def day_of(ns: int) -> int:
    """The UTC day (days since 1970-01-01) of a client time."""
    return ns // DAY_NS


def slice_of(client_id: str) -> int:
    return hashlib.blake2b(client_id.encode(), digest_size=2).digest()[1] % SPREAD


def bucket_of(client_id: str, ns: int) -> int:
    """The bucket of a point: its day times ``SPREAD``, plus its client's slice."""
    return day_of(ns) * SPREAD + slice_of(client_id)


def hour_bucket_of(client_id: str, ns: int) -> int:
    """The hour bucket of a point: its hour (since 1970) times ``SPREAD``, plus the slice."""
    return ns // HOUR_NS * SPREAD + slice_of(client_id)


def day_bucket(hour_bucket: int) -> int:
    """The (day) bucket an hour bucket lies in."""
    hour, piece = divmod(hour_bucket, SPREAD)
    return hour // HOURS * SPREAD + piece


# A chunk's text is compressed at zlib's fastest level: ~75 bytes of a point's fields shrink
# to ~25 (its client ID is the chunk's, not repeated), for a fraction of a microsecond each.
_LEVEL = 1


def encode_chunk(rows: Iterable[Row]) -> bytes:
    """A client's points, in (time, location) order, as one compressed blob: a line per point,
    its fields tab-separated (no field of a checked point holds a tab or a newline)."""
    text = "\n".join(
        f"{r.ns}\t{r.client_time}\t{r.location}\t{r.server_id}\t{r.time_diff}\t"
        f"{r.attributes.decode('utf-8', 'surrogateescape')}"
        for r in rows
    )
    return zlib.compress(text.encode("utf-8", "surrogateescape"), _LEVEL)


def decode_chunk(client_id: str, data: bytes) -> list[Row]:
    """The rows of a chunk (``encode_chunk``), in their order."""
    rows = []
    for line in zlib.decompress(data).decode("utf-8", "surrogateescape").split("\n"):
        ns, client_time, location, server_id, time_diff, attributes = line.split("\t")
        rows.append(
            Row(
                client_id,
                int(ns),
                client_time,
                location,
                server_id,
                time_diff,
                attributes.encode("utf-8", "surrogateescape"),
            )
        )
    return rows


def chunk_text(data: bytes) -> str:
    """A chunk's text, a line per point (``encode_chunk``), with a line break before the
    first as well, for ``text_holds``."""
    return "\n" + zlib.decompress(data).decode("utf-8", "surrogateescape")


def text_holds(text: str, ns: int, location: str) -> bool:
    """Whether a chunk's text (``chunk_text``) holds the point at ``ns`` and ``location``:
    a substring search, with no row made (a partition's repair asks it of every point)."""
    prefix = f"\n{ns}\t"
    at = text.find(prefix)
    while at >= 0:
        end = text.find("\n", at + 1)
        if text[at + 1 : len(text) if end < 0 else end].split("\t", 3)[2] == location:
            return True
        at = text.find(prefix, at + 1)
    return False


def chunk_keys(data: bytes) -> set[tuple[int, str]]:
    """The (time, location) of every point of a chunk: what tells whether a point is held."""
    keys = set()
    for line in zlib.decompress(data).decode("utf-8", "surrogateescape").split("\n"):
        ns, _, location, _ = line.split("\t", 3)
        keys.add((int(ns), location))
    return keys
