"""The points of a HISTORY or AREA answer, read in bulk, with no I/O.

A page of history is up to 10,000 AT or POINT lines from our own herd, every one written the
same way (``Record.wire``: single spaces, a newline, nothing past a field's bound). Parsing
each with ``backend.protocol.parse_line`` checks every field exactly and builds a Record, some
4-5 us a line; a REST read of a day's trail spent half of its time there. :func:`read_points`
takes the whole answer at once instead: the text is decoded once, and one regular expression
walks it a line at a time, each field held to the same rules as ``parse_line`` (lengths,
locations strictly inside their range, times before the year 10000), so a line it takes is a
line ``parse_line`` takes, with the same fields, in half the time. Any line it does not take
plainly (on the edge of a range, a field past the pattern's simple form, anything malformed)
goes through ``parse_line``, which accepts it or refuses it; a refused line refuses the whole
answer (:class:`BadAnswer`).

A point is a :class:`Point`: the line's fields as text, and its attributes read once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar, overload

import orjson

from backend.protocol import (
    MAX_ATTRIBUTES_BYTES,
    MAX_CLIENT_ID_BYTES,
    MAX_SERVER_ID_BYTES,
    At,
    ProtocolError,
    Record,
    parse_line,
)

Reply = TypeVar("Reply")

__all__ = [
    "BadAnswer",
    "LinePoints",
    "Point",
    "answer_body",
    "answer_lines",
    "from_record",
    "herd_json",
    "point_of",
    "read_body",
    "read_points",
    "reply_as",
]

# A field's characters: anything but the protocol's six white-space characters (those
# ``bytes.split`` splits on; a Unicode space is part of a field).
_F = r"[^ \t\n\r\f\v]"
# One line as servers write it. The lengths are the protocol's bounds in characters (equal to
# bytes for ASCII text; other text is checked in bytes, see ``_within_bounds``): a server ID
# of 64, a time difference of 32 (sign, 15 digits, point, 15 decimals), a client ID of 1,024,
# a location of 125 (two numbers of up to 58 decimals: the bound is 128), a time of 64 (up to
# 11 digits of seconds, which is before MAX_TIME_S, and 52 decimals), attributes of 2,048. A
# latitude's whole degrees are 0 to 89 and a longitude's 0 to 179: strictly inside their
# range, what ``parse_location`` takes without its exact check. A POINT line has attributes
# (group 1 says which word began the line), an AT line none.
_LINE = re.compile(
    r"^(?:AT|(P)OINT) "
    rf"(({_F}{{1,{MAX_SERVER_ID_BYTES}}}) "
    r"([+-][0-9]{1,15}\.[0-9]{1,15}) "
    rf"({_F}{{1,{MAX_CLIENT_ID_BYTES}}}) "
    r"(([+-][0-8]?[0-9](?:\.[0-9]{1,58})?)([+-](?:1[0-7][0-9]|[0-9]?[0-9])(?:\.[0-9]{1,58})?)) "
    r"([0-9]{1,11}(?:\.[0-9]{1,52})?))"
    rf"(?(1) (\{{{_F}{{0,{MAX_ATTRIBUTES_BYTES - 1}}}))\n",
    re.MULTILINE,
)
# A location's two numbers, for a point parse_line read.
_LAT_LON = re.compile(r"([+-][0-9.]+)([+-][0-9.]+)")
# Nineteen digits in a row: perhaps an integer past 64 bits, which orjson reads as a double
# and json as the integer it is.
_LONG_NUMBER = re.compile(r"[0-9]{19}")
# Whether an answer holds nineteen digits in a row anywhere, found as nineteen zeros once its
# digits are zeros: a tenth of the time of _LONG_NUMBER over the whole answer.
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_DIGITS_AS_ZEROS = b"0" * 19


class BadAnswer(ValueError):
    """An answer that is not points then ``END <n>``: a line no server writes."""


class Point(NamedTuple):
    """One point of an answer: its line's fields as text (``Record``'s names and values), the
    numbers of its location as written, and its attributes, read (``attributes_json``)."""

    body: str  # the AT line less its "AT ": "<server> <diff> <client> <location> <time>"
    server_id: str
    time_diff: str
    client_id: str
    location: str
    lat: str  # "+34.068930"
    lon: str  # "-118.445127"
    client_time: str
    attributes: str | None  # as the herd carries them (compact JSON), None for none
    shown: dict[str, Any]  # the attributes as the API shows them; {} for none

    @property
    def lat_lng(self) -> tuple[float, float]:
        return float(self.lat), float(self.lon)

    @property
    def line(self) -> str:
        """The point's AT line, as every server answers WHATSAT with it."""
        return "AT " + self.body


def read_points(reply: bytes) -> list[Point]:
    """The points of a whole answer to HISTORY or AREA (AT or POINT lines, then ``END <n>``),
    in its order; raises BadAnswer for anything else (a line ``parse_line`` refuses or reads
    as another command, or no ``END`` line at the end)."""
    return read_body(answer_body(reply))


def answer_lines(reply: bytes) -> list[bytes]:
    """The lines of a HISTORY or AREA answer before its ``END <n>`` (each with its newline);
    raises BadAnswer if its last line is not ``END``."""
    *lines, end = reply.splitlines(keepends=True) or [b""]
    if not end.startswith(b"END "):
        raise BadAnswer(f"unexpected end of a history: {end[:100]!r}")
    return lines


def answer_body(reply: bytes) -> bytes:
    """The lines of an answer before its ``END <n>``, as one text (``answer_lines``, joined):
    the answer less its last line, when that is a plain ``END <n>`` line after a newline."""
    start = reply.rfind(b"\n", 0, len(reply) - 1) + 1
    end = reply[start:]
    if end.startswith(b"END ") and end.endswith(b"\n") and b"\r" not in end:
        return reply[:start]
    return b"".join(answer_lines(reply))  # the general way decides


def read_body(body: bytes) -> list[Point]:
    """The points of ``body``, lines of AT or POINT (each but perhaps the last with its
    newline), in order: each line the pattern takes read from its fields, each other line
    (and the whole body if it is not UTF-8) by ``parse_line``. Raises BadAnswer for a line
    that is no point. A body cut at line breaks reads as the whole does, a piece at a time."""
    try:
        text = body.decode()
    except UnicodeDecodeError:  # some line is not UTF-8: parse_line says which
        return _general(body)
    ascii_only = text.isascii()
    long_numbers = _DIGITS_AS_ZEROS in body.translate(_ZERO_DIGITS)
    new, loads = tuple.__new__, orjson.loads
    points: list[Point] = []
    append = points.append
    done = 0
    for m in _LINE.finditer(text):
        if m.start() != done:  # lines the pattern does not take: the general way
            points += _general(text[done : m.start()].encode())
        done = m.end()
        groups = m.groups()
        raw = groups[9]
        if not (ascii_only or _within_bounds(groups[2], groups[4], raw)):
            points += _general(m[0].encode())
            continue
        if raw is None:
            shown: dict[str, Any] = {}
        else:
            try:
                shown = loads(raw)
            except orjson.JSONDecodeError:  # not JSON: parse_line refuses the line
                points += _general(m[0].encode())
                continue
            if long_numbers and _LONG_NUMBER.search(raw):
                shown = _read_long(raw)
        append(new(Point, (*groups[1:], shown)))
    if done != len(text):
        points += _general(text[done:].encode())
    return points


def _within_bounds(server: str, client: str, raw: str | None) -> bool:
    """The bounds in bytes of the fields that may be other than ASCII."""
    return (
        len(server.encode()) <= MAX_SERVER_ID_BYTES
        and len(client.encode()) <= MAX_CLIENT_ID_BYTES
        and (raw is None or len(raw.encode()) <= MAX_ATTRIBUTES_BYTES)
    )


def _general(lines: bytes) -> list[Point]:
    return [point_of(line) for line in lines.splitlines(keepends=True)]


def point_of(line: bytes) -> Point:
    """The point of one AT or POINT line, read by ``parse_line``; raises BadAnswer for any
    other line."""
    return from_record(_record(line))


def _record(line: bytes) -> Record:
    return reply_as(line, At).record


def reply_as(line: bytes, kind: type[Reply]) -> Reply:
    """``line`` read by ``parse_line`` as a ``kind`` (At, In); raises BadAnswer for any other
    line."""
    try:
        command = parse_line(line)
    except ProtocolError:
        command = None
    if not isinstance(command, kind):
        raise BadAnswer(f"unexpected reply from the herd: {line[:100]!r}")
    return command


def from_record(record: Record) -> Point:
    """A record's point (its location as parse_line read it: the numbers match)."""
    m = _LAT_LON.fullmatch(record.location)
    if m is None:  # pragma: no cover - a record's location always parses
        raise BadAnswer(f"unexpected location from the herd: {record.location[:100]!r}")
    raw = record.attributes.decode() if record.attributes else None
    shown: dict[str, Any] = {}
    if raw is not None:
        shown = orjson.loads(raw)  # parse_line read them so (check_attributes)
        if _LONG_NUMBER.search(raw):
            shown = _read_long(raw)
    return Point(
        record.line[3:].decode(),
        record.server_id,
        record.time_diff,
        record.client_id,
        record.location,
        m[1],
        m[2],
        record.client_time,
        raw,
        shown,
    )


class LinePoints(Sequence[Point]):
    """The lines of an answer's ``body`` (``answer_body``) as a sequence of points, each line
    read (:func:`point_of`) only when asked for: paging a GPX export looks at the points at
    either end of a page, and writes the rest from the text. Raises BadAnswer for a line
    read that is no point."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._count = body.count(b"\n") + (not body.endswith(b"\n") and bool(body))
        self._starts = [0]  # where lines 0, 1, ... start, found from the front
        self._ends = [len(body)]  # where lines n-1, n-2, ... end, found from the back
        self._read: dict[int, Point] = {}

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> Point: ...

    @overload
    def __getitem__(self, i: slice) -> list[Point]: ...

    def __getitem__(self, i: int | slice) -> Point | list[Point]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._count))]
        start, end = self._span(i)
        if start not in self._read:
            self._read[start] = point_of(self.body[start:end])
        return self._read[start]

    def line(self, i: int) -> bytes:
        """The i-th line, with its newline."""
        start, end = self._span(i)
        return self.body[start:end]

    def lines_from(self, i: int) -> bytes:
        """The lines from the i-th on."""
        return self.body[self._span(i)[0] :] if i < self._count else b""

    def _span(self, i: int) -> tuple[int, int]:
        n = self._count
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        if i < n - i:  # nearer the front
            starts = self._starts
            while len(starts) <= i + 1:
                starts.append(self.body.find(b"\n", starts[-1]) + 1 or len(self.body))
            return starts[i], starts[i + 1]
        ends, k = self._ends, n - 1 - i
        while len(ends) <= k + 1:
            ends.append(self.body.rfind(b"\n", 0, ends[-1] - 1) + 1)
        return ends[k + 1], ends[k]


# -- attributes ----------------------------------------------------------------------------


def herd_json(text: bytes | str) -> Any:
    """JSON from the herd, read as JSON: NaN, Infinity and numbers past a double's range
    (which Python's json accepts, and would write back out) become null, so nothing the herd
    sends makes the gateway's own answers invalid JSON. Raises ValueError if it is not JSON
    (or holds an integer past Python's digit limit)."""
    return json.loads(text, parse_constant=lambda _: None, parse_float=_finite)


def _finite(text: str) -> float | None:
    value = float(text)  # 1e400 reads as inf
    return value if math.isfinite(value) else None


def _read_long(raw: str | bytes) -> dict[str, Any]:
    """Attributes with nineteen digits in a row, which orjson read (so they are a JSON object),
    as ``herd_json`` reads them: an integer past 64 bits stays the integer it is."""
    try:
        value = herd_json(raw)
    except ValueError:  # pragma: no cover - 2,048 bytes hold no integer past the digit limit
        return {}
    return value if isinstance(value, dict) else {}
