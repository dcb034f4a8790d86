"""A HISTORY answer written whole as JSON records or GPX ``<trkpt>`` elements from its text,
with no I/O and no Python work per line.

Reading each line into a :class:`~.lines.Point` and writing it out again costs some 4-8 us a
point in Python. Most lines need neither: one regular expression takes every line of a slice
at once (``findall``, in C), and the output is put together from its columns (``zip``): a JSON
record by one ``%`` of a point's fields, a ``<trkpt>`` from a template's constants by slice
assignment and one ``bytes.join``, the fields copied as the herd wrote them. What a template
cannot copy is made a list at a time, once per distinct value:
the times as floats (one ``orjson.dumps`` of the list), the attributes as orjson writes them
or as GPX elements, the ISO 8601 text of a minute (``re.sub`` with a template would do it in
one call, but Python 3.11 expands templates in Python, per match).

A template takes only lines whose output it writes exactly as the per-line path does
(:func:`~gateway.records.point_json` then orjson, or ``GpxWriter.add_points``): the pattern is
``lines._LINE`` narrowed to

- fields JSON carries unescaped (no quote, backslash, control character or DEL);
- coordinates written as floats print them: a nonzero last decimal, no leading zero, at most
  15 significant digits (so the float prints as those digits, with no exponent), the sign
  dropped if ``+``;
- attributes orjson reads, and (JSON) can write back.

Any other line is left to the per-line path: :func:`json_records` and :func:`gpx_text` return
None for a body with such a line, and the caller reads that body the per-line way
(:mod:`.lines`), which also refuses what no server writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import floordiv, itemgetter, mod
from typing import Any, TypeVar

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
    """A latitude's or longitude's number as ``lines._LINE`` takes it, narrowed to those a
    float prints as written; the group ``name`` is the text it prints: the number less a
    ``+``, to its last nonzero decimal. Whole degrees have no leading zero and a fraction a
    nonzero decimal; at most 15 significant digits, which a double tells apart from any other
    such decimal, so the shortest text that reads back as the float (what repr and orjson
    print) is those digits; and no exponent, at 0.1 or more. Zeros after, to 58 decimals."""
    return (
        rb"(?:\+(?=[0-9])|(?=-))(?P<" + name.encode() + rb">-?(?:"
        rb"(?:" + whole + rb")\.[0-9]{0,11}[1-9]|0\.[1-9](?:[0-9]{0,10}[1-9])?))0{0,46}"
    )


_LAT = _coordinate(rb"[1-8][0-9]|[1-9]", "lat")
_LON = _coordinate(rb"1[0-7][0-9]|[1-9][0-9]?", "lon")
_ATTRIBUTES = rb"\{" + _F + rb"{0,%d}" % (MAX_ATTRIBUTES_BYTES - 1)
_SERVER = rb"%s{1,%d}" % (_F, MAX_SERVER_ID_BYTES)
_CLIENT = rb"%s{1,%d}" % (_F, MAX_CLIENT_ID_BYTES)


def _line(server: bytes, client: bytes, time: bytes, attributes: bytes) -> re.Pattern[bytes]:
    """``lines._LINE`` with the given fields."""
    diff = rb"(?P<diff>[+-][0-9]{1,15}\.[0-9]{1,15})"
    body = rb"(?P<body>(?P<server>%s) %s (?P<client>%s) (?P<location>%s%s) %s)" % (
        server,
        diff,
        client,
        _LAT,
        _LON,
        time,
    )
    end = rb"(?(p) (?P<attributes>%s))\n" % attributes
    return re.compile(rb"^(?:AT|(?P<p>P)OINT) " + body + end, re.MULTILINE)


# A template: constants, groups of the pattern (by name), and what is made of them, each
# made once per distinct value (by name, in ``_Made``).
_Piece = bytes | str | tuple[str, str]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _rewrite(
    pattern: re.Pattern[bytes],
    template: list[_Piece],
    body: bytes,
    makers: dict[str, Callable[[bytes], bytes | None]],
) -> tuple[list[bytes], dict[str, tuple[bytes, ...]]] | None:
    """The pieces of ``template`` for each line of ``body``, in order (a piece no maker
    makes is left empty), and the pattern's groups, each a column; None if the pattern does
    not take every line, or a maker says None."""
    columns = _columns(pattern, body)
    if columns is None:
        return None
    groups = {name: columns[number - 1] for name, number in pattern.groupindex.items()}
    pieces: list[bytes] = [piece if isinstance(piece, bytes) else b"" for piece in template]
    pieces *= len(columns[0])
    for i, piece in enumerate(template):
        if isinstance(piece, str):
            pieces[i :: len(template)] = groups[piece]
        elif isinstance(piece, tuple) and piece[0] in makers:
            made = _lookup(groups[piece[1]], makers[piece[0]])
            if made is None:
                return None
            pieces[i :: len(template)] = made
    return pieces, groups


def _columns(pattern: re.Pattern[bytes], body: bytes) -> list[tuple[bytes, ...]] | None:
    """The pattern's groups over every line of ``body``, each a column; None unless the body
    is UTF-8 lines, each ending in LF, and the pattern takes every one."""
    if not body.endswith(b"\n") or not _utf8(body):
        return None
    rows = pattern.findall(body)
    if len(rows) != body.count(b"\n"):
        return None
    return list(zip(*rows, strict=True))


def _lookup(keys: Sequence[K], make: Callable[[K], V | None]) -> list[V] | None:
    """``make`` of each key, made once per distinct key; None if it is None for one."""
    made: dict[K, V] = {}
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


def _shown(raw: bytes) -> dict[str, Any] | None:
    """Attributes as ``lines.read_body`` reads them ({} for none), or None if not JSON."""
    if not raw:
        return {}
    try:
        shown: dict[str, Any] = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if _LONG_NUMBER.search(text := raw.decode()):
        shown = _read_long(text)
    return shown


# -- JSON ----------------------------------------------------------------------------------

# The JSON line takes its IDs as any run of bytes but a space and its attributes as the rest
# of the line, which the regular expression engine walks a quarter faster than the exact
# forms; each distinct ID and attribute text is then held to its exact form (``_SAFE_SERVER``
# and the rest, below): an answer names one client and a few servers and attribute sets.
# A match holds one line break (the caller checks there are as many matches as lines), so a
# run of bytes but a space never spans two lines.
_JSON_LINE = _line(rb"[^ ]+", rb"[^ ]+", rb"(?P<time>[0-9]{1,11}(?:\.[0-9]{1,52})?)", rb"\{.*")
_SAFE_SERVER = re.compile(rb"%s{1,%d}" % (_SAFE, MAX_SERVER_ID_BYTES))
_SAFE_CLIENT = re.compile(rb"%s{1,%d}" % (_SAFE, MAX_CLIENT_ID_BYTES))
_ATTRIBUTES_TEXT = re.compile(_ATTRIBUTES)
# ``orjson.dumps(point_json(point))`` and a comma, made by one ``%`` a point from the line's
# fields, the time as a float (made below) and the attributes as orjson writes them.
_RECORD = (
    b'{"client_id":"%s","lat":%s,"lon":%s,"location":"%s","client_time":"%s","time":%s,'
    b'"server":"%s","time_diff":"%s","at":"AT %s","attributes":%s},'
)
# The pattern's groups in the order of the record's fields (the float made of "time").
_FIELDS = ("client", "lat", "lon", "location", "time", "time", "server", "diff", "body")
_COLUMNS = itemgetter(*(_JSON_LINE.groupindex[name] - 1 for name in _FIELDS))
_TIME = _FIELDS.index("time")


@dataclass(frozen=True, slots=True)
class JsonRecords:
    """The points of a body as JSON, a record (and a comma) a point: see :meth:`json`.
    ``times[i]`` is the i-th point's client time as written."""

    records: list[bytes]
    times: list[bytes]

    def __len__(self) -> int:
        return len(self.times)

    def json(self, start: int, stop: int) -> bytes:
        """The records of points ``start`` to ``stop`` as the items of a JSON array: what
        ``orjson.dumps`` writes between its brackets for their ``point_json``."""
        return b"".join(self.items(start, stop))

    def items(self, start: int, stop: int) -> list[bytes]:
        """:meth:`json` as pieces, to join with what goes around them."""
        items = self.records[start:stop]
        if items:
            items[-1] = items[-1][:-1]  # the comma after the last record
        return items


def json_records(body: bytes) -> JsonRecords | None:
    """The records of ``body`` (lines of AT or POINT, each with its newline), or None if some
    line is one a template does not take, or its JSON is not orjson's (an integer past 64
    bits in its attributes): the caller then reads the body the per-line way."""
    groups = _columns(_JSON_LINE, body)
    if groups is None:
        return None
    columns = list(_COLUMNS(groups))
    if not (_exact(_SAFE_SERVER, groups, "server") and _exact(_SAFE_CLIENT, groups, "client")):
        return None
    attributes = _lookup(groups[_JSON_LINE.groupindex["attributes"] - 1], _json)
    if attributes is None:
        return None
    times = list(columns[_TIME])
    # Every time has at most 11 digits of seconds: none is past the herd's latest (null).
    columns[_TIME + 1] = orjson.dumps(list(map(float, times)))[1:-1].split(b",")
    records = list(map(_RECORD.__mod__, zip(*columns, attributes, strict=True)))
    return JsonRecords(records, times)


def _exact(pattern: re.Pattern[bytes], groups: list[tuple[bytes, ...]], name: str) -> bool:
    """Whether every distinct value of a group is of ``pattern``'s form."""
    return all(map(pattern.fullmatch, set(groups[_JSON_LINE.groupindex[name] - 1])))


def _json(raw: bytes) -> bytes | None:
    """Attributes as ``point_json`` shows them, in orjson's JSON; None for any not of the
    line's exact form, any orjson does not read, or reads to what it cannot write."""
    if raw and not _ATTRIBUTES_TEXT.fullmatch(raw):
        return None
    shown = _shown(raw)
    try:
        return None if shown is None else orjson.dumps(shown)
    except orjson.JSONEncodeError:
        return None


# -- GPX -----------------------------------------------------------------------------------

# The time's whole seconds, and its fraction: a point and the decimals to the last nonzero
# one of the first nine (the nanoseconds ``export.point_time`` writes), or nothing; of up to
# 52 decimals in all.
_GPX_LINE = _line(
    _SERVER,
    _CLIENT,
    rb"(?P<seconds>[0-9]{1,11})"
    rb"(?:(?=\.[0-9]{1,52}[ \n])(?P<fraction>\.[0-9]{0,8}[1-9])?\.?[0-9]*)?",
    _ATTRIBUTES,
)
# ``GpxWriter.add_points``' ``<trkpt>``: what goes before the time (made of the attributes,
# with ``<time>``), the time's minute and second (made of its seconds), its fraction, and
# what goes after (made of the attributes too).
_TRKPT: list[_Piece] = [
    b'<trkpt lat="',
    "lat",
    b'" lon="',
    "lon",
    b'">',
    ("before", "attributes"),
    ("minute", "seconds"),
    ("second", "seconds"),
    "fraction",
    b"Z</time>",
    ("after", "attributes"),
]
_GPX_STRIDE = len(_TRKPT)
_BEFORE = _TRKPT.index(("before", "attributes"))
_MINUTE = _TRKPT.index(("minute", "seconds"))
_AFTER = _TRKPT.index(("after", "attributes"))
_SECONDS = [b"%02d" % second for second in range(60)]


def gpx_text(
    body: bytes,
    elements: Callable[[dict[str, Any]], tuple[str, str]],
    minute: Callable[[int], str],
) -> tuple[bytes, int] | None:
    """The ``<trkpt>`` elements of ``body`` and how many, if a template takes every line, else
    None: ``elements(attributes)`` is what goes before a point's ``<time>`` and after its
    ``</time>``, ``minute(n)`` the ISO 8601 time of the n-th minute since 1970 up to its
    seconds (``1970-01-01T00:00:``)."""
    rewritten = _rewrite(_GPX_LINE, _TRKPT, body, {})
    if rewritten is None:
        return None
    pieces, groups = rewritten

    def around(raw: bytes) -> tuple[bytes, bytes] | None:
        shown = _shown(raw)
        if shown is None:
            return None
        before, after = elements(shown)
        return (before + "<time>").encode("utf-8", "replace"), after.encode("utf-8", "replace")

    made = _lookup(groups["attributes"], around)
    if made is None:
        return None
    pieces[_BEFORE::_GPX_STRIDE] = map(itemgetter(0), made)
    pieces[_AFTER::_GPX_STRIDE] = map(itemgetter(1), made)
    seconds = list(map(int, groups["seconds"]))
    minutes = _lookup(list(map(floordiv, seconds, repeat(60))), lambda m: minute(m).encode())
    assert minutes is not None  # minute makes one of each
    pieces[_MINUTE::_GPX_STRIDE] = minutes
    pieces[_MINUTE + 1 :: _GPX_STRIDE] = map(_SECONDS.__getitem__, map(mod, seconds, repeat(60)))
    return b"".join(pieces), len(seconds)
