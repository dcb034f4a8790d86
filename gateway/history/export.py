"""A client's points as GPX 1.1 or GeoJSON, written as a stream of byte chunks.

Both writers take points as the gateway shows them (``records.record_json``: ``lat``,
``lon``, ``client_time``, ``time``, ``server``, ``time_diff``, ``attributes``) and yield
chunks of about :data:`CHUNK_BYTES`; neither holds more than one chunk and one point, so an
export of any size streams in bounded memory. A point with no location (``lat``/``lon`` null)
or no time a date can show is left out and counted in :class:`ExportStats`.

The shapes (the ``herd`` extension namespace, the GeoJSON properties) are those of
docs/history-formats.md; :mod:`.imports` reads both back.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson

from backend.protocol import MAX_TIME_BYTES, MAX_TIME_S

__all__ = [
    "CHUNK_BYTES",
    "GPXTPX_NAMESPACE",
    "GPX_NAMESPACE",
    "HERD_NAMESPACE",
    "ExportStats",
    "GeoJsonWriter",
    "GpxWriter",
    "geojson_chunks",
    "gpx_chunks",
    "iso_time",
]

# A chunk is one write to the HTTP response: 64 KiB amortises the per-write cost (a few
# microseconds) over hundreds of points while staying far below any memory budget.
CHUNK_BYTES = 64 * 1024
GPX_NAMESPACE = "http://www.topografix.com/GPX/1/1"
# Garmin's TrackPointExtension v2 has speed (m/s) and course (degrees); Garmin Connect,
# Strava, GPSLogger and gpxpy users read them, so speed and heading go there.
GPXTPX_NAMESPACE = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
# Our own namespace for every other attribute. ".invalid" (RFC 2606) can never resolve:
# it names the vocabulary, it is not a schema location.
HERD_NAMESPACE = "https://herd.invalid/gpx/1"

_EPOCH = date(1970, 1, 1)
# Fraction digits written in a time: nanoseconds, the finest a phone's clock gives.
_TIME_DECIMALS = 9
_POSIX = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
# XML 1.0 forbids these characters even as references; they become U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})
# An attribute becomes <herd:KEY>: KEY must be an XML name; any other key is left out of
# GPX (GeoJSON carries every key).
_XML_NAME = re.compile(r"(?!xml)[A-Za-z_][A-Za-z0-9_.-]{0,63}", re.IGNORECASE)
# Written in <ele> and Garmin's extension rather than ours.
_GPX_ELEMENTS = {"altitude", "speed", "heading"}
# Shown keys a point's GeoJSON properties carry besides its attributes.
_RECORD_KEYS = ("client_time", "server", "time_diff")


@dataclass(slots=True)
class ExportStats:
    """What an export wrote: ``written`` points, and ``skipped`` ones with no location or no
    time. Filled in as the chunks are consumed."""

    written: int = 0
    skipped: int = 0


def iso_time(point: Mapping[str, Any]) -> str | None:
    """The point's time as ISO 8601 UTC (``2026-12-07T15:17:10.25Z``): from its exact
    ``client_time`` (the fraction kept to nanoseconds, trailing zeros dropped), else from its
    ``time`` in seconds; None if neither is a time from 1970 to 9999."""
    text = point.get("client_time")
    if isinstance(text, str) and len(text) <= MAX_TIME_BYTES and (m := _POSIX.fullmatch(text)):
        whole, fraction = int(m[1]), (m[2] or "")[:_TIME_DECIMALS].rstrip("0")
    else:
        seconds = point.get("time")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return None
        if not math.isfinite(seconds) or seconds < 0:
            return None
        whole = math.floor(seconds)
        micro = round((seconds - whole) * 1_000_000)  # a double holds microseconds
        if micro == 1_000_000:
            whole, micro = whole + 1, 0
        fraction = f"{micro:06d}".rstrip("0")
    if whole > MAX_TIME_S:
        return None
    day, second = divmod(whole, 86_400)
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    stamp = f"{_date(day)}T{hour:02d}:{minute:02d}:{second:02d}"
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


@functools.lru_cache(maxsize=64)
def _date(day: int) -> str:
    """The date of a day since 1970; a history spans few days, so it is made once per day."""
    d = _EPOCH + timedelta(days=day)
    # Formatted by hand: strftime's %Y does not pad years before 1000 on every platform.
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _location(point: Mapping[str, Any]) -> tuple[float, float] | None:
    lat, lon = point.get("lat"), point.get("lon")
    if type(lat) is not float or type(lon) is not float:  # shown records hold floats
        if isinstance(lat, bool) or isinstance(lon, bool):
            return None
        if not isinstance(lat, int | float) or not isinstance(lon, int | float):
            return None
        if abs(lat) > 90 or abs(lon) > 180:  # before float(), which overflows on huge ints
            return None
        lat, lon = float(lat), float(lon)
    # NaN fails every comparison, infinity the range.
    if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
        return lat, lon
    return None


def _attributes(point: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = point.get("attributes")
    return attributes if isinstance(attributes, Mapping) else {}


class _Chunks:
    """Text gathered into chunks of about CHUNK_BYTES."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def add(self, text: str) -> bytes | None:
        """Adds ``text``; returns a full chunk to yield, or None."""
        self.parts.append(text)
        self.size += len(text)
        return self.take() if self.size >= CHUNK_BYTES else None

    def take(self) -> bytes:
        chunk = "".join(self.parts).encode("utf-8", "replace")
        self.parts.clear()
        self.size = 0
        return chunk


# -- GPX -------------------------------------------------------------------------------------


def _xml(value: object) -> str:
    """Text fit for XML character data and attribute values."""
    return _NOT_XML.sub("\ufffd", str(value)).translate(_XML_ESCAPES)


def _xml_value(value: object) -> str | None:
    """A scalar attribute as XML text, or None for one GPX cannot carry."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, int | str):
        return _xml(value)
    return None


def _number(value: object) -> str | None:
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**1000:
            return None
        value = float(value)
    return repr(value) if math.isfinite(value) else None


def _herd_elements(attributes: Mapping[str, Any]) -> list[str]:
    """``<herd:KEY>`` elements: a scalar as text, a list as one element per item, an object
    (a transition) as the element's XML attributes."""
    out: list[str] = []
    for key, value in attributes.items():
        if key in _GPX_ELEMENTS or not isinstance(key, str) or not _XML_NAME.fullmatch(key):
            continue
        if isinstance(value, list):
            items = (_xml_value(item) for item in value)
            out.extend(f"<herd:{key}>{text}</herd:{key}>" for text in items if text is not None)
        elif isinstance(value, Mapping):
            pairs = [
                f' {name}="{text}"'
                for name, item in value.items()
                if isinstance(name, str) and _XML_NAME.fullmatch(name)
                if (text := _xml_value(item)) is not None
            ]
            out.append(f"<herd:{key}{''.join(pairs)}/>")
        elif (text := _xml_value(value)) is not None:
            out.append(f"<herd:{key}>{text}</herd:{key}>")
    return out


def _gpx_point(point: Mapping[str, Any]) -> str | None:
    where, when = _location(point), iso_time(point)
    if where is None or when is None:
        return None
    attributes = _attributes(point)
    parts = [f'<trkpt lat="{where[0]!r}" lon="{where[1]!r}">']
    if (ele := _number(attributes.get("altitude"))) is not None:
        parts.append(f"<ele>{ele}</ele>")
    parts.append(f"<time>{when}</time>")
    garmin = []
    # TrackPointExtension v2's sequence order: speed before course.
    if (speed := _number(attributes.get("speed"))) is not None:
        garmin.append(f"<gpxtpx:speed>{speed}</gpxtpx:speed>")
    if (course := _number(attributes.get("heading"))) is not None:
        garmin.append(f"<gpxtpx:course>{course}</gpxtpx:course>")
    ours = _herd_elements(attributes)
    if garmin or ours:
        parts.append("<extensions>")
        if garmin:
            parts.append(
                f"<gpxtpx:TrackPointExtension>{''.join(garmin)}</gpxtpx:TrackPointExtension>"
            )
        parts.extend(ours)
        parts.append("</extensions>")
    parts.append("</trkpt>\n")
    return "".join(parts)


def _gpx_header(client_id: str) -> str:
    name = _xml(client_id)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<gpx version="1.1" creator="herd" xmlns="{GPX_NAMESPACE}"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        f' xmlns:gpxtpx="{GPXTPX_NAMESPACE}" xmlns:herd="{HERD_NAMESPACE}"'
        f' xsi:schemaLocation="{GPX_NAMESPACE} http://www.topografix.com/GPX/1/1/gpx.xsd'
        f' {GPXTPX_NAMESPACE} https://www8.garmin.com/xmlschemas/TrackPointExtensionv2.xsd">\n'
        f"<metadata><name>{name}</name></metadata>\n"
        f"<trk><name>{name}</name><trkseg>\n"
    )


class GpxWriter:
    """A GPX 1.1 document written a point at a time (what :func:`gpx_chunks` writes), for a
    caller whose points arrive in pages: each :meth:`add` may return a chunk of about
    CHUNK_BYTES to send, and :meth:`close` returns the last one."""

    def __init__(self, client_id: str, stats: ExportStats | None = None) -> None:
        self.stats = stats if stats is not None else ExportStats()
        self._out = _Chunks()
        self._out.add(_gpx_header(client_id))

    def add(self, point: Mapping[str, Any]) -> bytes | None:
        """Writes one point (the next oldest); a full chunk to send, or None."""
        text = _gpx_point(point)
        if text is None:
            self.stats.skipped += 1
            return None
        self.stats.written += 1
        return self._out.add(text)

    def close(self) -> bytes:
        """The document's last chunk, which closes it."""
        self._out.add("</trkseg></trk>\n")
        if self.stats.skipped:
            self._out.add(
                f"<!-- herd: points left out (no location or time): {self.stats.skipped} -->\n"
            )
        self._out.add("</gpx>\n")
        return self._out.take()


def gpx_chunks(
    client_id: str, points: Iterable[Mapping[str, Any]], stats: ExportStats | None = None
) -> Iterator[bytes]:
    """``points`` (oldest first) as one GPX 1.1 document: one ``trk`` named after the client
    with one ``trkseg``, a ``trkpt`` per point (``ele`` from altitude, ``time`` in UTC, speed
    and heading in Garmin's TrackPointExtension v2, every other attribute as ``<herd:KEY>``).

    Yields UTF-8 chunks of about CHUNK_BYTES, the last one closing the document; a point
    that cannot be shown is left out (``stats.skipped``, and a comment at the end)."""
    writer = GpxWriter(client_id, stats)
    for point in points:
        if (chunk := writer.add(point)) is not None:
            yield chunk
    yield writer.close()


# -- GeoJSON ---------------------------------------------------------------------------------


def _json(value: object) -> str:
    try:
        return orjson.dumps(value).decode()  # NaN and infinity become null
    except orjson.JSONEncodeError:
        # An integer past 64 bits or a lone surrogate: json writes both.
        return json.dumps(_finite(value), default=str, allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _position(where: tuple[float, float]) -> str:
    return f"[{where[1]!r},{where[0]!r}]"  # GeoJSON is longitude first (RFC 7946, 3.1.1)


def _feature(point: Mapping[str, Any]) -> str | None:
    where, when = _location(point), iso_time(point)
    if where is None or when is None:
        return None
    properties: dict[str, Any] = {"time": when}
    properties.update((key, point[key]) for key in _RECORD_KEYS if key in point)
    for key, value in _attributes(point).items():
        properties.setdefault(key, value)  # a record key wins over an attribute of its name
    return (
        f',\n{{"type":"Feature","properties":{_json(properties)},'
        f'"geometry":{{"type":"Point","coordinates":{_position(where)}}}}}'
    )


class GeoJsonWriter:
    """A GeoJSON FeatureCollection written a point at a time (what :func:`geojson_chunks`
    writes), in two passes over the same points, oldest first: each one to
    :meth:`add_trail`, then :meth:`end_trail`, then each one again to :meth:`add_point`, then
    :meth:`close`. Each call may return a chunk of about CHUNK_BYTES to send."""

    def __init__(self, client_id: str, stats: ExportStats | None = None) -> None:
        self.client_id = client_id
        self.stats = stats if stats is not None else ExportStats()
        self._out = _Chunks()
        self._out.add(f'{{"type":"FeatureCollection","client_id":{_json(client_id)},"features":[')
        # The trail's first positions, held until there are two (RFC 7946: a LineString has
        # two or more positions); then the LineString feature is begun.
        self._first: list[str] = []
        self._trail_ended = False
        self._features = False  # a feature was begun: the next one follows a comma

    def add_trail(self, point: Mapping[str, Any]) -> bytes | None:
        """The first pass: the point's position in the LineString (if it can be shown)."""
        if self._trail_ended:
            raise ValueError("the trail is ended: the second pass has begun")
        where = _location(point)
        if where is None or iso_time(point) is None:
            return None
        if len(self._first) >= 2:
            return self._out.add(f",{_position(where)}")
        self._first.append(_position(where))
        if len(self._first) < 2:
            return None
        self._features = True
        properties = _json({"client_id": self.client_id, "herd": "trail"})
        return self._out.add(
            f'\n{{"type":"Feature","properties":{properties},'
            f'"geometry":{{"type":"LineString","coordinates":[{",".join(self._first)}'
        )

    def end_trail(self) -> bytes | None:
        """Between the passes: closes the LineString, if one was begun."""
        self._trail_ended = True
        return self._out.add("]}}") if len(self._first) >= 2 else None

    def add_point(self, point: Mapping[str, Any]) -> bytes | None:
        """The second pass: the point's Point feature, with its properties."""
        if not self._trail_ended:
            raise ValueError("end_trail() comes before the points")
        feature = _feature(point)
        if feature is None:
            self.stats.skipped += 1
            return None
        if not self._features:  # the first feature has no comma before it
            feature, self._features = feature[1:], True
        self.stats.written += 1
        return self._out.add(feature)

    def close(self) -> bytes:
        """The document's last chunk, which closes it."""
        self._out.add(f'\n],"skipped":{self.stats.skipped}}}\n')
        return self._out.take()


def geojson_chunks(
    client_id: str,
    points: Callable[[], Iterable[Mapping[str, Any]]],
    stats: ExportStats | None = None,
) -> Iterator[bytes]:
    """The points as one GeoJSON FeatureCollection (RFC 7946): first a LineString feature of
    the whole trail (properties ``{"client_id", "herd": "trail"}``), then one Point feature
    per point with its properties (``time`` in ISO 8601 UTC, ``client_time``, ``server``,
    ``time_diff``, then its attributes); the collection's foreign members ``client_id`` and,
    at the end, ``skipped``.

    ``points`` returns a fresh iterator of the same points (oldest first) each time it is
    called; it is called twice, once for the LineString and once for the Points, because the
    LineString comes first and holding every coordinate for it would not be bounded memory.
    Yields UTF-8 chunks of about CHUNK_BYTES."""
    writer = GeoJsonWriter(client_id, stats)
    first = points()
    for point in first:
        if (chunk := writer.add_trail(point)) is not None:
            yield chunk
    if (chunk := writer.end_trail()) is not None:
        yield chunk
    second = points()
    if second is first and not isinstance(first, list | tuple):
        raise ValueError("points() must return a fresh iterator each time it is called")
    for point in second:
        if (chunk := writer.add_point(point)) is not None:
            yield chunk
    yield writer.close()
