"""GPX uploads read into points: a safe streaming scan first, then gpxpy.

gpxpy parses with ElementTree (or lxml) from one string, and some of what it does is unsafe
on hostile input, so :func:`_scan` reads the bytes with expat first, holding nothing:

- a DTD is refused outright (GPX has none), so no entity is ever declared: no "billion
  laughs" expansion, no external entity, whatever parser gpxpy uses;
- nesting is bounded, and points are counted, before gpxpy builds a single object;
- gpxpy runs regular expressions over the whole text for ``xmlns`` and ``schemaLocation``
  that go quadratic when the text repeats those words, so they may appear a few times only;
- each point's coordinates and numeric fields are checked, so that a bad one is refused
  naming the point rather than with gpxpy's message, which does not say which.
"""

from __future__ import annotations

import pyexpat
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from typing import Any

import gpxpy
import gpxpy.gpx

from ..numbers import NumberError, bounded_decimal
from ..phones import API_FLAGS, API_LISTS
from ._points import MAX_IMPORT_POINTS, Collector, ImportRefused, ImportResult, time_text
from .export import HERD_NAMESPACE

# The deepest real GPX is gpx/trk/trkseg/trkpt/extensions/TrackPointExtension/speed: 7.
MAX_XML_DEPTH = 32
# Real files declare under ten namespaces and one schemaLocation; gpxpy's regular
# expressions cost the text's length once per occurrence.
MAX_NAMESPACE_WORDS = 64
# A point's children gpxpy converts to numbers, which fail the whole parse if malformed.
_FLOATS = frozenset({"ele", "magvar", "geoidheight", "hdop", "vdop", "pdop", "ageofdgpsdata"})
_INTS = frozenset({"sat", "dgpsid"})
_GPX10_FLOATS = frozenset({"speed", "course"})  # point children in GPX 1.0 only
# Extension elements of other vocabularies that carry attributes we keep: Garmin's
# TrackPointExtension v2 (speed, course), OsmAnd (speed, heading), GPX 1.0 style names.
_FOREIGN = {"speed": "speed", "course": "heading", "heading": "heading"}


class _Scan:
    """expat handlers: labels each point as gpxpy will number it, checks what gpxpy would
    fail on without naming the point."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.numbers = _FLOATS | _INTS | _GPX10_FLOATS
        self.track = self.segment = self.route = self.waypoint = self.index = 0
        self.points = 0
        self.label = ""
        self.point_depth = -1
        self.field: str | None = None
        self.text: list[str] = []

    def start(self, name: str, attributes: dict[str, str]) -> None:
        depth, parent = len(self.stack), self.stack[-1] if self.stack else ""
        self.stack.append(name)
        if depth >= MAX_XML_DEPTH:
            raise ImportRefused(f"XML nested deeper than {MAX_XML_DEPTH} elements")
        if depth == 0:
            if name != "gpx":
                raise ImportRefused(f"not a GPX file: its root element is <{name[:64]}>")
            if attributes.get("version") == "1.1":
                self.numbers = _FLOATS | _INTS
        label = self._label(depth, parent, name)
        if label:
            self.points += 1
            if self.points > MAX_IMPORT_POINTS:
                raise ImportRefused(
                    f"more than {MAX_IMPORT_POINTS} points; import the history in several files",
                    413,
                )
            self.label, self.point_depth = label, depth
            for key, what in (("lat", "latitude"), ("lon", "longitude")):
                self._number(attributes.get(key), what)
        elif depth == self.point_depth + 1 and name in self.numbers:
            self.field, self.text = name, []

    def _label(self, depth: int, parent: str, name: str) -> str:
        """The point's name if this element is one, counting as gpxpy's lists do."""
        if depth == 1 and name == "trk":
            self.track, self.segment = self.track + 1, 0
        elif depth == 2 and parent == "trk" and name == "trkseg":
            self.segment, self.index = self.segment + 1, 0
        elif depth == 3 and parent == "trkseg" and name == "trkpt":
            self.index += 1
            return f"track {self.track} segment {self.segment} point {self.index}"
        elif depth == 1 and name == "rte":
            self.route, self.index = self.route + 1, 0
        elif depth == 2 and parent == "rte" and name == "rtept":
            self.index += 1
            return f"route {self.route} point {self.index}"
        elif depth == 1 and name == "wpt":
            self.waypoint += 1
            return f"waypoint {self.waypoint}"
        return ""

    def _number(self, text: str | None, what: str) -> None:
        if text is None:
            raise ImportRefused(f"{self.label}: no {what}")
        try:
            bounded_decimal(text)
        except NumberError:
            raise ImportRefused(f"{self.label}: {what} is not a number") from None

    def data(self, text: str) -> None:
        if self.field is not None:
            self.text.append(text)

    def end(self, name: str) -> None:
        self.stack.pop()
        if self.field is not None and len(self.stack) == self.point_depth + 1:
            text = "".join(self.text).strip()
            if text or self.text:  # gpxpy converts any text, blank included
                self._number(text, f"<{self.field}>")
            self.field = None
        if len(self.stack) == self.point_depth:
            self.point_depth = -1


def _refuse_dtd(*_: object) -> None:
    raise ImportRefused("a GPX file has no DTD; DOCTYPE and entity declarations are refused")


def _scan(body: bytes) -> None:
    for word in (b"xmlns", b"schemaLocation"):
        if body.count(word) > MAX_NAMESPACE_WORDS:
            raise ImportRefused(f"more than {MAX_NAMESPACE_WORDS} {word.decode()} in the file")
    scan = _Scan()
    parser = pyexpat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.StartElementHandler = scan.start
    parser.EndElementHandler = scan.end
    parser.CharacterDataHandler = scan.data
    try:
        parser.Parse(body, True)
    except pyexpat.ExpatError as exc:
        reason = pyexpat.errors.messages[exc.code]
        raise ImportRefused(
            f"not well-formed XML: {reason}, line {exc.lineno} column {exc.offset}"
        ) from None


def _parse(text: str) -> gpxpy.gpx.GPX:
    # gpxpy registers every namespace prefix of the file in ElementTree's global prefix map;
    # put it back, so that uploads cannot grow it (or rename prefixes) for the process.
    prefixes: dict[str, str] | None = getattr(ElementTree, "_namespace_map", None)
    saved = dict(prefixes) if prefixes is not None else {}
    try:
        return gpxpy.parse(text)
    except Exception as exc:  # gpxpy raises its own, ValueError, or the XML parser's errors
        raise ImportRefused(f"not a GPX file gpxpy reads: {str(exc)[:200]}") from None
    finally:
        if prefixes is not None:
            prefixes.clear()
            prefixes.update(saved)


def _points(gpx: gpxpy.gpx.GPX) -> Iterator[tuple[str, Any]]:
    for t, track in enumerate(gpx.tracks, 1):
        for s, segment in enumerate(track.segments, 1):
            for p, track_point in enumerate(segment.points, 1):
                yield f"track {t} segment {s} point {p}", track_point
    for r, route in enumerate(gpx.routes, 1):
        for p, route_point in enumerate(route.points, 1):
            yield f"route {r} point {p}", route_point
    for w, waypoint in enumerate(gpx.waypoints, 1):
        yield f"waypoint {w}", waypoint


def _split(tag: object) -> tuple[str, str]:
    if not isinstance(tag, str):  # a comment or processing instruction under lxml
        return "", ""
    namespace, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return namespace, local


def _extension(element: Any, found: dict[str, object], depth: int) -> None:
    namespace, local = _split(element.tag)
    text = (element.text or "").strip()
    if namespace == HERD_NAMESPACE:
        if local in API_LISTS:
            items = found.setdefault(local, [])
            if isinstance(items, list) and text:
                items.append(text)
        elif local == "transition":
            found.setdefault(local, dict(element.attrib))
        elif local in API_FLAGS:
            found.setdefault(local, {"true": True, "false": False}.get(text, text))
        elif text:
            found.setdefault(local, text)
    elif len(element) and depth < 2:  # a container such as gpxtpx:TrackPointExtension
        for child in element:
            _extension(child, found, depth + 1)
    elif local.lower() in _FOREIGN and text:
        found.setdefault(_FOREIGN[local.lower()], text)


def _attributes(point: Any) -> dict[str, object]:
    found: dict[str, object] = {}
    for element in point.extensions:  # in document order: the first of a key wins
        _extension(element, found, 0)
    if point.elevation is not None:
        found["altitude"] = point.elevation
    for name, key in (("speed", "speed"), ("course", "heading")):
        value = getattr(point, name, None)  # GPX 1.0's point fields
        if value is not None:
            found.setdefault(key, value)
    return found


def parse_gpx_body(body: bytes, collector: Collector) -> ImportResult:
    """Every trkpt, rtept and wpt of a GPX 1.0 or 1.1 file, all or nothing."""
    _scan(body)
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused("the GPX file is not UTF-8") from None
    for label, point in _points(_parse(text)):
        if point.time is None:
            raise ImportRefused(f"{label}: no time (missing, or not ISO 8601)")
        client_time = time_text(label, point.time)
        collector.add(label, point.latitude, point.longitude, client_time, _attributes(point))
    return collector.result("gpx")
