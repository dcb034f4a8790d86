"""A HISTORY answer rewritten whole into JSON records or GPX ``<trkpt>`` elements by regular
expression templates, with no I/O and no Python work per line.

Reading each line into a :class:`~.lines.Point` and writing it out again costs some 4 us a
point in Python. Most lines need neither: ``re.sub`` with a *template* (not a function)
rewrites every line of an answer in C, the fields copied as the herd wrote them, and what a
template cannot copy is put between NUL markers and filled in after, a list at a time (the
times as floats, written by orjson; a time as ISO 8601 and the attributes' elements, made once
per distinct second and per distinct attributes).

A template takes only lines whose output it writes exactly as the per-line path does
(:func:`~gateway.records.point_json` then orjson, or ``GpxWriter.add_points``): the pattern is
``lines._LINE`` narrowed to

- fields JSON carries unescaped (no quote, backslash, control character or DEL);
- coordinates written as floats print them: a nonzero last decimal, no leading zero, at most
  15 significant digits (so the float prints as those digits, with no exponent), the sign
  dropped if ``+``;
- attributes that orjson writes back as they are (JSON), or that it reads (GPX).

Any other line is left to the per-line path: :func:`json_records` and :func:`gpx_text` return
None for a body with such a line, and the caller reads that body the per-line way
(:mod:`.lines`), which also refuses what no server writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from backend.protocol import MAX_ATTRIBUTES_BYTES, MAX_CLIENT_ID_BYTES, MAX_SERVER_ID_BYTES

from .lines import _LONG_NUMBER, _read_long

__all__ = ["JsonRecords", "gpx_text", "json_records"]

# A field's bytes, as in ``lines._LINE`` (anything but the protocol's white space), and those
# JSON carries as they are: no quote, backslash, control character or DEL (orjson escapes
# those). Other UTF-8 is written as it is; the body is checked to be UTF-8 first.
_F = rb"[^ \t\n\r\f\v]"
_SAFE = rb'[^\x00-\x20"\\\x7f]'


def _coordinate(whole: bytes, name: str) -> bytes:
    """A latitude's or longitude's number, as ``lines._LINE`` takes it and narrowed to those
    a float prints as written: ``<name>_neg`` is the minus sign, ``<name>`` the digits a
    float prints (whole degrees with no leading zero, a point, the decimals to the last
    nonzero one; at most 15 significant digits, which a double holds exactly enough that the
    shortest text that reads back as it is those digits), then zeros up to 58 decimals."""
    return (
        rb"(?:\+|(?P<" + name.encode() + rb"_neg>-))(?P<" + name.encode() + rb">"
        rb"(?:" + whole + rb")\.[0-9]{0,11}[1-9]|0\.[1-9](?:[0-9]{0,10}[1-9])?)0{0,46}"
    )


_LAT = _coordinate(rb"[1-8][0-9]|[1-9]", "lat")
_LON = _coordinate(rb"1[0-7][0-9]|[1-9][0-9]?", "lon")
_ATTRIBUTES = rb"(?(p) (?P<attributes>\{" + _F + rb"{0,%d}))\n" % (MAX_ATTRIBUTES_BYTES - 1)


def _line(field: bytes, time: bytes) -> re.Pattern[bytes]:
    return re.compile(
        rb"^(?:AT|(?P<p>P)OINT) "
        rb"(?P<body>(?P<server>" + field + rb"{1,%d}) " % MAX_SERVER_ID_BYTES + rb""
        rb"(?P<diff>[+-][0-9]{1,15}\.[0-9]{1,15}) "
        rb"(?P<client>" + field + rb"{1,%d}) " % MAX_CLIENT_ID_BYTES + rb""
        rb"(?P<location>" + _LAT + _LON + rb") " + time + rb")" + _ATTRIBUTES,
        re.MULTILINE,
    )


# -- JSON ----------------------------------------------------------------------------------

_JSON_LINE = _line(_SAFE, rb"(?P<time>[0-9]{1,11}(?:\.[0-9]{1,52})?)")
# ``orjson.dumps(point_json(point))`` with a comma after it, as pieces: the constants, and the
# numbers of the pattern's groups (``_GROUPS``) or of what is made of them (``_TIME``: the
# time as a float, ``_SHOWN``: the attributes as shown).
_TIME, _SHOWN = -1, -2
_GROUPS = {name: number - 1 for name, number in _JSON_LINE.groupindex.items()}
_RECORD: list[bytes | int] = [
    b'{"client_id":"',
    _GROUPS["client"],
    b'","lat":',
    _GROUPS["lat_neg"],
    _GROUPS["lat"],
    b',"lon":',
    _GROUPS["lon_neg"],
    _GROUPS["lon"],
    b',"location":"',
    _GROUPS["location"],
    b'","client_time":"',
    _GROUPS["time"],
    b'","time":',
    _TIME,
    b',"server":"',
    _GROUPS["server"],
    b'","time_diff":"',
    _GROUPS["diff"],
    b'","at":"AT ',
    _GROUPS["body"],
    b'","attributes":',
    _SHOWN,
    b"},",
]
_STRIDE = len(_RECORD)


@dataclass(frozen=True, slots=True)
class JsonRecords:
    """The points of a body as JSON, ``_STRIDE`` pieces a point: see :meth:`json`.
    ``times[i]`` is the i-th point's client time as written."""

    pieces: list[bytes]
    times: list[bytes]

    def __len__(self) -> int:
        return len(self.times)

    def json(self, start: int, stop: int) -> bytes:
        """The records of points ``start`` to ``stop`` as the items of a JSON array: what
        ``orjson.dumps`` writes between its brackets for their ``point_json``."""
        return b"".join(self.pieces[start * _STRIDE : stop * _STRIDE])[:-1]


def json_records(body: bytes) -> JsonRecords | None:
    """The records of ``body`` (lines of AT or POINT, each with its newline), or None if some
    line is one a template does not take, or its JSON is not orjson's (an integer past 64
    bits in its attributes): the caller then reads the body the per-line way."""
    if not body.endswith(b"\n") or not _utf8(body):
        return None
    rows = _JSON_LINE.findall(body)
    if len(rows) != body.count(b"\n"):
        return None
    columns = list(zip(*rows, strict=True))
    shown = _lookup(columns[_GROUPS["attributes"]], _shown)
    if shown is None:
        return None
    times = list(columns[_GROUPS["time"]])
    # Every time has at most 11 digits of seconds: none is past the herd's latest (null).
    made = {_TIME: orjson.dumps(list(map(float, times)))[1:-1].split(b","), _SHOWN: shown}
    pieces = [b"" if isinstance(piece, int) else piece for piece in _RECORD] * len(rows)
    for i, piece in enumerate(_RECORD):
        if isinstance(piece, int):
            pieces[i::_STRIDE] = made[piece] if piece < 0 else columns[piece]
    return JsonRecords(pieces, times)


def _shown(raw: bytes) -> bytes | None:
    """Attributes as ``point_json`` shows them, in orjson's JSON (``{}`` for none); None for
    any orjson does not read, or reads to what it cannot write."""
    if not raw:
        return b"{}"
    try:
        shown = orjson.loads(raw)
        if _LONG_NUMBER.search(text := raw.decode()):
            shown = _read_long(text)
        return orjson.dumps(shown)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None


def _lookup(keys: Sequence[bytes], make: Callable[[bytes], Any]) -> list[Any] | None:
    """``make`` of each key, made once per distinct key; None if it is None for one."""
    made = {}
    for key in set(keys):
        value = make(key)
        if value is None:
            return None
        made[key] = value
    return list(map(made.__getitem__, keys))


def _utf8(body: bytes) -> bool:
    if body.isascii():
        return True
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


# -- GPX -----------------------------------------------------------------------------------

# The time's whole seconds, and its decimals to the last nonzero one of the first nine (the
# nanoseconds ``export.point_time`` writes), of up to 52 decimals in all.
_GPX_LINE = _line(
    _F,
    rb"(?P<seconds>[0-9]{1,11})"
    rb"(?:\.(?=[0-9]{1,52}[ \n])(?P<fraction>[0-9]{0,8}[1-9])?[0-9]*)?",
)
# ``<trkpt>``, less what NUL marks: the attributes (made into what goes before the time, and
# after it), the seconds (made into ISO 8601 to the second). An empty fraction leaves ".Z".
_GPX_POINT = (
    rb'<trkpt lat="\g<lat_neg>\g<lat>" lon="\g<lon_neg>\g<lon>">'
    rb"\x00\g<attributes>\x00\g<seconds>\x00.\g<fraction>Z</time>\x00\g<attributes>\x00"
).replace(rb"\x00", b"\x00")
_GPX_STRIDE = 5


def gpx_text(
    body: bytes,
    elements: Callable[[dict[str, Any]], tuple[str, str]],
    stamp: Callable[[int], str],
) -> tuple[bytes, int] | None:
    """The ``<trkpt>`` elements of ``body`` and how many, if a template takes every line, else
    None: ``elements(attributes)`` is what goes before a point's ``<time>`` and after its
    ``</time>``, ``stamp(seconds)`` the ISO 8601 time of a second up to its seconds."""
    if not body or not _utf8(body):
        return None
    text, count = _GPX_LINE.subn(_GPX_POINT, body)
    if count != body.count(b"\n") or not body.endswith(b"\n"):
        return None
    parts = text.split(b"\x00")
    raws = parts[1::_GPX_STRIDE]
    made = _lookup(raws, lambda raw: _elements(raw, elements))
    if made is None:
        return None
    parts[1::_GPX_STRIDE] = [before for before, _ in made]
    parts[4::_GPX_STRIDE] = [after for _, after in made]
    seconds = parts[2::_GPX_STRIDE]
    stamps = _lookup(seconds, lambda second: stamp(int(second)).encode())
    assert stamps is not None  # stamp makes one of every second
    parts[2::_GPX_STRIDE] = stamps
    return b"".join(parts).replace(b".Z</time>", b"Z</time>"), count


def _elements(
    raw: bytes, elements: Callable[[dict[str, Any]], tuple[str, str]]
) -> tuple[bytes, bytes] | None:
    """What goes around the time for these attributes (read as ``lines.read_body`` reads
    them); None for attributes that are not JSON."""
    shown: dict[str, Any] = {}
    if raw:
        try:
            shown = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if _LONG_NUMBER.search(text := raw.decode()):
            shown = _read_long(text)
    before, after = elements(shown)
    return (before + "<time>").encode("utf-8", "replace"), after.encode("utf-8", "replace")
