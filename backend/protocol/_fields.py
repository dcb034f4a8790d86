"""Every field of a line, and its bound: the numbers a record may hold, the checks of a
location, a time and attributes, and the exact sort key of a client time."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

import orjson

MAX_RADIUS_KM = Decimal(50)
MAX_BOUND = 20

# Bounds on every field of a record (docs/protocol.md, "Bounds"). Nothing a server accepts may
# be refused by its peers, so every line the herd makes from a record must stay within what
# every reader takes: with these bounds the longest AT line is MAX_RECORD_LINE bytes, far
# under the peer links' PEER_LINE_LIMIT and the clients' default max_line_bytes (8 KiB).
# A client ID: the course's tests send IDs of 256 bytes; the gateway allows 256 characters,
# which UTF-8 writes in up to 1,024 bytes.
MAX_CLIENT_ID_BYTES = 1024
# A server's name (in the config and in every AT line): names are words, not essays.
MAX_SERVER_ID_BYTES = 64
# A location: two numbers of up to 3 integer digits with up to ~55 decimals each; real
# clients send 6 to 15.
MAX_LOCATION_BYTES = 128
# A client time: the course's tests send 30 decimals (41 bytes in all); 64 leaves room.
MAX_TIME_BYTES = 64
# The latest client time accepted: 9999-12-31T23:59:59Z, as the gateway's phone formats and
# every date library can represent it (a float, a JavaScript Date, ISO 8601).
MAX_TIME_S = 253402300799
# A time difference: a sign, at most 12 digits of seconds (times are bounded above; a server
# clock is not before 1970), a point and nine decimals: 23 bytes; 32 leaves room.
MAX_TIME_DIFF_BYTES = 32
# "AT " + server + diff + client + location + time, with their four separating spaces.
MAX_RECORD_LINE = (
    3
    + MAX_SERVER_ID_BYTES
    + MAX_TIME_DIFF_BYTES
    + MAX_CLIENT_ID_BYTES
    + MAX_LOCATION_BYTES
    + MAX_TIME_BYTES
    + 4
)
# A WHATSAT radius or bound: a number, not a novel ("10", "50.0", "20").
MAX_NUMBER_BYTES = 32
# A point's attributes: a JSON object of the phone apps' kept set (docs/gateway.md) fits in
# a few hundred bytes; a display name of 256 characters can take 1,024 of them.
MAX_ATTRIBUTES_BYTES = 2048
# A POINT line: the record's AT line, less "AT", plus "POINT" and the attributes.
MAX_POINT_LINE = MAX_RECORD_LINE - 2 + 5 + 1 + MAX_ATTRIBUTES_BYTES
# What a peer link reads as one line: the longest record line, and DIGESTS (4,105 bytes),
# with room for the extensions to come. Fixed, not configured: every server must take what
# every other server may send, whatever its [limits] say about clients.
PEER_LINE_LIMIT = 64 * 1024

# ISO 6709 "+34.068930-118.445127": each number carries its own sign; decimals optional.
_LOCATION = re.compile(rb"([+-])([0-9]+(?:\.[0-9]+)?)([+-])([0-9]+(?:\.[0-9]+)?)")
# POSIX seconds with an optional fraction: no sign, no exponent, no nan/inf.
_TIME = re.compile(rb"([0-9]+)(?:\.([0-9]+))?")

_NS_PER_S = 1_000_000_000


class ProtocolError(Exception):
    """The peer sent a line the protocol does not allow; it is answered with ``? <line>``."""


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError("not UTF-8") from None


def parse_location(raw: bytes) -> tuple[float, float]:
    """Latitude and longitude of an ISO 6709 pair; raises ProtocolError if malformed, out of
    range or longer than MAX_LOCATION_BYTES. Ranges are checked exactly (Decimal), so
    ``+90.0000000001`` is refused."""
    if len(raw) > MAX_LOCATION_BYTES:
        raise ProtocolError(f"location over {MAX_LOCATION_BYTES} bytes")
    m = _LOCATION.fullmatch(raw)
    if m is None:
        raise ProtocolError("malformed location")
    lat, lng = float(m[1] + m[2]), float(m[3] + m[4])
    # Rounding to the nearest double is monotonic and 90 and 180 are exact doubles, so a
    # float strictly inside the range means the decimal is inside too; only values that
    # round onto the edge need the exact check.
    if abs(lat) < 90 and abs(lng) < 180:
        return lat, lng
    exact_lat, exact_lng = Decimal((m[1] + m[2]).decode()), Decimal((m[3] + m[4]).decode())
    if not (-90 <= exact_lat <= 90 and -180 <= exact_lng <= 180):
        raise ProtocolError("location out of range")
    return lat, lng


def _time_key(raw: bytes) -> tuple[int, str]:
    """An exact sort key for a POSIX time: whole seconds, then the fraction's digits with
    trailing zeros stripped (for such strings, string order is numeric order). Raises
    ProtocolError for a malformed time, one over MAX_TIME_BYTES, or one after MAX_TIME_S."""
    if len(raw) > MAX_TIME_BYTES:
        # Checked before any conversion: int() of thousands of digits is slow, and past
        # 4,300 digits it raises.
        raise ProtocolError(f"time over {MAX_TIME_BYTES} bytes")
    m = _TIME.fullmatch(raw)
    if m is None:
        raise ProtocolError("malformed time")
    key = _key_of(m[1], m[2])
    if key[0] > MAX_TIME_S:
        raise ProtocolError("time after the year 9999")
    return key


def _key_of(seconds: bytes, fraction: bytes | None) -> tuple[int, str]:
    """The sort key of a time from its digits before and after the point."""
    return int(seconds), fraction.rstrip(b"0").decode() if fraction else ""


def time_to_ns(client_time: str) -> int:
    """Integer nanoseconds of a POSIX time string, rounded to the nearest nanosecond."""
    return _key_ns(*_time_key(client_time.encode()))


def key_to_ns(key: tuple[int, str]) -> int:
    """Integer nanoseconds of a time from its sort key (``IAmAt.time_key``)."""
    return _key_ns(*key)


def _key_ns(seconds: int, fraction: str) -> int:
    """Nanoseconds of a time from its sort key (fraction digits, trailing zeros stripped),
    rounded half up."""
    return seconds * _NS_PER_S + int(fraction[:9].ljust(9, "0")) + (fraction[9:10] >= "5")


def format_time_diff(ns: int) -> str:
    """``+0.263873386``: explicit sign (zero is ``+``) and exactly nine decimals."""
    sign = "-" if ns < 0 else "+"
    seconds, frac = divmod(abs(ns), _NS_PER_S)
    return f"{sign}{seconds}.{frac:09d}"


def _client_id(raw: bytes) -> str:
    if len(raw) > MAX_CLIENT_ID_BYTES:
        raise ProtocolError(f"client ID over {MAX_CLIENT_ID_BYTES} bytes")
    return _text(raw)


def check_attributes(raw: bytes) -> bytes:
    """``raw`` if it is attributes as the herd carries them: one JSON object of at most
    MAX_ATTRIBUTES_BYTES with no white space; raises ProtocolError otherwise. The herd does
    not interpret them (the gateway does), so a key it does not know passes."""
    if len(raw) > MAX_ATTRIBUTES_BYTES:
        raise ProtocolError(f"attributes over {MAX_ATTRIBUTES_BYTES} bytes")
    if not raw.startswith(b"{"):
        raise ProtocolError("attributes must be a JSON object")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("attributes are not valid JSON") from None
    return raw


def format_attributes(attributes: Mapping[str, object]) -> bytes:
    """Attributes as the herd carries them: compact JSON, its spaces (only ever inside
    strings) escaped, so the object is one field of a line. Empty for no attributes."""
    if not attributes:
        return b""
    return orjson.dumps(attributes).replace(b" ", b"\\u0020")
