"""GPX and GeoJSON uploads read into a client's points, all or nothing.

:func:`parse_import` takes the body of ``POST /api/v1/clients/{id}/history`` and returns
every point of the file, oldest first, each once (a repeat of the same time and location is
counted in ``duplicates``, not returned), or raises :class:`ImportRefused` and imports
nothing: one bad point (no time, coordinates out of range or unreadable, a time more than
``max_future`` seconds ahead of ``now``) refuses the whole file, and the message names it
(``"track 1 segment 1 point 37: no time (missing, or not ISO 8601)"``).

What is read, from which element or property, and the limits are in
docs/history-formats.md. The herd, not this module, knows which points it already holds; the
REST answer's ``duplicates`` is the file's repeats plus the herd's.
"""

from __future__ import annotations

from ._geojson import parse_geojson_body
from ._gpx import parse_gpx_body
from ._points import MAX_IMPORT_POINTS, Collector, ImportedPoint, ImportRefused, ImportResult

__all__ = [
    "GEOJSON_TYPES",
    "GPX_TYPES",
    "MAX_IMPORT_POINTS",
    "ImportRefused",
    "ImportResult",
    "ImportedPoint",
    "parse_geojson",
    "parse_gpx",
    "parse_import",
]

GPX_TYPES = frozenset({"application/gpx+xml", "application/xml", "text/xml"})
GEOJSON_TYPES = frozenset({"application/geo+json", "application/vnd.geo+json", "application/json"})


def _bounded(body: bytes, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise ImportRefused(f"the file is over {max_bytes} bytes", 413)


def parse_gpx(body: bytes, *, now: float, max_future: float, max_bytes: int) -> ImportResult:
    """Every ``trkpt``, ``rtept`` and ``wpt`` of a GPX 1.0 or 1.1 file (UTF-8), each with a
    ``time``; ``ele`` is the altitude attribute, and speed and heading come from GPX 1.0's
    fields or any extension (Garmin, OsmAnd), the rest of our attributes from the ``herd``
    extension namespace. Raises ImportRefused (400 naming the point, 413 over a limit)."""
    _bounded(body, max_bytes)
    return parse_gpx_body(body, Collector(now, max_future))


def parse_geojson(body: bytes, *, now: float, max_future: float, max_bytes: int) -> ImportResult:
    """Every point of a GeoJSON FeatureCollection or Feature: Point features with a ``time``
    (or ``timestamp``, ``tst``) property, ISO 8601 or POSIX seconds; LineString and
    MultiLineString features with per-position times (``coordTimes``, ``times`` or
    ``coordinateProperties.times``). Our export's trail LineString is skipped (its points are
    the Point features). Raises ImportRefused (400 naming the point, 413 over a limit)."""
    _bounded(body, max_bytes)
    return parse_geojson_body(body, Collector(now, max_future))


def parse_import(
    body: bytes, content_type: str | None, *, now: float, max_future: float, max_bytes: int
) -> ImportResult:
    """A GPX or GeoJSON upload by its media type (``application/gpx+xml``,
    ``application/geo+json``, their XML and JSON generics), or by its first byte (``<`` or
    ``{``) when the type says neither. Raises ImportRefused: 415 for anything else.

    CPU-bound (seconds for a file near the limits): a handler runs it in an executor."""
    _bounded(body, max_bytes)
    kind = (content_type or "").partition(";")[0].strip().lower()
    start = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if kind in GPX_TYPES or (kind not in GEOJSON_TYPES and start == b"<"):
        return parse_gpx_body(body, Collector(now, max_future))
    if kind in GEOJSON_TYPES or start == b"{":
        return parse_geojson_body(body, Collector(now, max_future))
    raise ImportRefused("send GPX (application/gpx+xml) or GeoJSON (application/geo+json)", 415)
