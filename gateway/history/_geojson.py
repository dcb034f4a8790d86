"""GeoJSON uploads read into points: Point features with a time property, and LineString or
MultiLineString features with per-position times as converters write them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..phones import API_FLAGS, API_LISTS, API_NUMBERS, API_TEXTS, PhoneError, load_json
from ..phones import parse_time as phone_time
from ._points import Collector, ImportRefused, ImportResult

# A Point's time, in the first of these properties it has: ``time`` (ours, GPSLogger,
# togeojson), ``timestamp`` (Overland, Dawarich), ``tst`` (OwnTracks).
TIME_KEYS = ("time", "timestamp", "tst")
# A LineString's per-position times: togeojson's ``coordTimes``, @tmcw/togeojson's
# ``coordinateProperties.times``, and ``times``.
TIMES_KEYS = ("coordTimes", "times")
# Properties taken as attributes: the herd's own names, and the usual aliases.
_ALIASES = {"ele": "altitude", "elevation": "altitude", "course": "heading"}
_ATTRIBUTES = {key: key for key in (*API_NUMBERS, *API_TEXTS, *API_LISTS, *API_FLAGS)}
_ATTRIBUTES |= {"transition": "transition", **_ALIASES}


def _time(label: str, value: object) -> str:
    """Protocol text of an ISO 8601 date-time or POSIX seconds (milliseconds from 2**31 - 1
    up, the phones' rule: no plausible seconds are that large)."""
    if value is None or value == "":
        raise ImportRefused(f"{label}: no time")
    try:
        return phone_time(value, 0)
    except PhoneError as exc:
        raise ImportRefused(f"{label}: {exc.message}") from None


def _position(label: str, value: object) -> tuple[object, object, object]:
    """(lat, lon, elevation or None) of a GeoJSON position, longitude first."""
    if not isinstance(value, list) or not 2 <= len(value) <= 4:
        raise ImportRefused(f"{label}: a position must be [longitude, latitude] or with elevation")
    return value[1], value[0], value[2] if len(value) > 2 else None


def _attributes(properties: Mapping[str, Any], elevation: object) -> dict[str, object]:
    found: dict[str, object] = {}
    for name, value in properties.items():
        key = _ATTRIBUTES.get(name)
        if key is not None and value is not None:
            found.setdefault(key, value)
    if elevation is not None:
        found.setdefault("altitude", elevation)
    return found


def _times(properties: Mapping[str, Any]) -> object:
    for key in TIMES_KEYS:
        if key in properties:
            return properties[key]
    nested = properties.get("coordinateProperties")
    return nested.get("times") if isinstance(nested, Mapping) else None


def _line(label: str, positions: object, times: object) -> Iterator[tuple[str, object, object]]:
    """(label, position, time) of each position of one line."""
    if not isinstance(positions, list):
        raise ImportRefused(f"{label}: coordinates must be a list of positions")
    if not isinstance(times, list) or len(times) != len(positions):
        where = f"{label} point 1" if positions else label
        raise ImportRefused(
            f"{where}: no time (a line needs coordTimes or times, one per position)"
        )
    for index, (position, when) in enumerate(zip(positions, times, strict=True), 1):
        yield f"{label} point {index}", position, when


def _feature_points(
    label: str, feature: object
) -> Iterator[tuple[str, object, object, Mapping[str, Any]]]:
    """(label, position, time, properties) of every point a feature holds."""
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise ImportRefused(f"{label}: not a GeoJSON Feature")
    properties = feature.get("properties") or {}
    geometry = feature.get("geometry")
    if not isinstance(properties, Mapping) or not isinstance(geometry, Mapping):
        raise ImportRefused(f"{label}: a feature needs a geometry and an object of properties")
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        when = next((properties[k] for k in TIME_KEYS if properties.get(k) not in (None, "")), None)
        yield label, coordinates, when, properties
    elif kind == "LineString":
        if properties.get("herd") == "trail":
            return  # our export's drawing of its Point features: the points come with them
        for name, position, when in _line(label, coordinates, _times(properties)):
            yield name, position, when, {}
    elif kind == "MultiLineString":
        if not isinstance(coordinates, list):
            raise ImportRefused(f"{label}: coordinates must be a list of lines")
        times = _times(properties)
        if not isinstance(times, list) or len(times) != len(coordinates):
            times = [None] * len(coordinates)  # each line is refused naming its first point
        for number, (line, line_times) in enumerate(zip(coordinates, times, strict=True), 1):
            for name, position, when in _line(f"{label} line {number}", line, line_times):
                yield name, position, when, {}
    else:
        raise ImportRefused(f"{label}: a {kind} is not a point or a track")


def _features(document: object) -> list[Any]:
    if isinstance(document, Mapping) and document.get("type") == "FeatureCollection":
        features = document.get("features")
        if isinstance(features, list):
            return features
    elif isinstance(document, Mapping) and document.get("type") == "Feature":
        return [document]
    raise ImportRefused("expected a GeoJSON FeatureCollection or Feature")


def parse_geojson_body(body: bytes, collector: Collector) -> ImportResult:
    """Every point of a GeoJSON FeatureCollection (or single Feature), all or nothing."""
    try:
        document = load_json(body.removeprefix(b"\xef\xbb\xbf"))  # a BOM, as Windows writes
    except PhoneError as exc:
        raise ImportRefused(f"not GeoJSON: {exc.message}") from None
    for number, feature in enumerate(_features(document), 1):
        for label, position, when, properties in _feature_points(f"feature {number}", feature):
            lat, lon, elevation = _position(label, position)
            client_time = _time(label, when)
            collector.add(label, lat, lon, client_time, _attributes(properties, elevation))
    return collector.result("geojson")
