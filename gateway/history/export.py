"""A client's points as GPX 1.1 (here) or GeoJSON (:mod:`.export_geojson`), written as a
stream of byte chunks.

Both writers take points as the gateway shows them (``records.record_json``: ``lat``,
``lon``, ``client_time``, ``time``, ``server``, ``time_diff``, ``attributes``), or, a page at
a time, straight from the fields of the points read from the herd (``lines.Point``: the same
output, without the shown record), and yield chunks of about :data:`CHUNK_BYTES`; neither
holds more than one chunk and one page, so an export of any size streams in bounded memory. A
point with no location (``lat``/``lon`` null) or no time a date can show is left out and
counted in :class:`ExportStats`.

The shapes (the ``herd`` extension namespace, the GeoJSON properties) are those of
docs/history-formats.md; :mod:`.imports` reads both back.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from backend.protocol import MAX_TIME_BYTES, MAX_TIME_S

from .lines import Point, read_body
from .templates import gpx_text

__all__ = [
    "CHUNK_BYTES",
    "GPXTPX_NAMESPACE",
    "GPX_NAMESPACE",
    "HERD_NAMESPACE",
    "ExportStats",
    "GpxWriter",
    "gpx_chunks",
    "iso_time",
    "point_time",
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
    return _iso(whole, fraction)


def point_time(client_time: str) -> str | None:
    """``iso_time`` of a point's exact time, one the herd took (``gateway.history.lines``:
    digits, perhaps a point and more digits)."""
    whole, _, fraction = client_time.partition(".")
    return _iso(int(whole), fraction[:_TIME_DECIMALS].rstrip("0"))


def _iso(whole: int, fraction: str) -> str | None:
    if whole > MAX_TIME_S:
        return None
    stamp = _minute(whole // 60) + _SECONDS[whole % 60]
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


_SECONDS = [f"{second:02d}" for second in range(60)]


@functools.lru_cache(maxsize=256)
def _minute(minute: int) -> str:
    """``1970-01-01T00:00:``, the date and time of a minute since 1970 up to its seconds; a
    point a second makes each one 60 times in a row."""
    day, minute = divmod(minute, 1440)
    hour, minute = divmod(minute, 60)
    return f"{_date(day)}T{hour:02d}:{minute:02d}:"


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
        self.put(text)
        return self.full()

    def add_all(self, texts: list[str]) -> bytes | None:
        """Adds each of ``texts``; returns a chunk to yield if they filled one, or None."""
        self.parts += texts
        self.size += sum(map(len, texts))
        return self.full()

    def add_encoded(self, data: bytes) -> bytes:
        """Adds text already encoded, and returns it as a chunk with what was held."""
        return self.take() + data if self.parts else data

    def put(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def full(self) -> bytes | None:
        """A chunk to yield if there is one's worth, else None."""
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
    if type(value) is float:  # the usual kind first
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**1000:
        return None
    number = float(value)
    return repr(number) if math.isfinite(number) else None


def _herd_elements(attributes: Mapping[str, Any]) -> list[str]:
    """``<herd:KEY>`` elements: a scalar as text, a list as one element per item, an object
    (a transition) as the element's XML attributes."""
    out: list[str] = []
    for key, value in attributes.items():
        if not _herd_key(key):
            continue
        kind = type(value)  # the usual kinds first, as _xml_value writes them
        if kind is float:
            if math.isfinite(value):
                out.append(f"<herd:{key}>{value!r}</herd:{key}>")
        elif kind is str:
            out.append(f"<herd:{key}>{_xml_text(value)}</herd:{key}>")
        elif kind is bool:
            out.append(f"<herd:{key}>{'true' if value else 'false'}</herd:{key}>")
        elif isinstance(value, list):
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


@functools.lru_cache(maxsize=256)
def _herd_key(key: object) -> bool:
    """Whether an attribute is written as ``<herd:KEY>``: an XML name, not one of GPX's own
    elements. Points repeat the same few keys."""
    return isinstance(key, str) and key not in _GPX_ELEMENTS and bool(_XML_NAME.fullmatch(key))


@functools.lru_cache(maxsize=1024)
def _xml_text(text: str) -> str:
    """``_xml`` of a text attribute; their values repeat (a trigger, a motion, a region)."""
    return _xml(text)


def _gpx_point(point: Mapping[str, Any]) -> str | None:
    where, when = _location(point), iso_time(point)
    if where is None or when is None:
        return None
    return _trkpt(where[0], where[1], when, _attributes(point))


def _trkpt(lat: float, lon: float, when: str, attributes: Mapping[str, Any]) -> str:
    """A point's ``<trkpt>`` element, with its newline."""
    before, after = around_time(attributes)
    return f'<trkpt lat="{lat!r}" lon="{lon!r}">{before}<time>{when}</time>{after}'


def around_time(attributes: Mapping[str, Any]) -> tuple[str, str]:
    """What a ``<trkpt>`` holds for its attributes: before its ``<time>`` (``<ele>``), and
    from its ``</time>`` on (the extensions, the end tag and a newline)."""
    get = attributes.get
    ele = _number(get("altitude"))
    before = "" if ele is None else f"<ele>{ele}</ele>"
    # TrackPointExtension v2's sequence order: speed before course.
    speed, course = _number(get("speed")), _number(get("heading"))
    ours = _herd_elements(attributes)
    if speed is None and course is None and not ours:
        return before, "</trkpt>\n"
    garmin = ""
    if speed is not None or course is not None:
        garmin = "<gpxtpx:TrackPointExtension>"
        if speed is not None:
            garmin += f"<gpxtpx:speed>{speed}</gpxtpx:speed>"
        if course is not None:
            garmin += f"<gpxtpx:course>{course}</gpxtpx:course>"
        garmin += "</gpxtpx:TrackPointExtension>"
    return before, f"<extensions>{garmin}{''.join(ours)}</extensions></trkpt>\n"


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

    def add_points(self, points: Iterable[Point]) -> bytes | None:
        """Writes points read from the herd (the next oldest), straight from their fields; the
        same elements :meth:`add` writes for them as ``records.record_json`` shows them. A
        chunk to send if they filled one, or None."""
        texts = []
        for point in points:
            when = point_time(point.client_time)
            if when is None:  # pragma: no cover - the herd takes no time past MAX_TIME_S
                self.stats.skipped += 1
                continue
            texts.append(_trkpt(float(point.lat), float(point.lon), when, point.shown))
        self.stats.written += len(texts)
        return self._out.add_all(texts)

    def add_lines(self, body: bytes) -> bytes | None:
        """Writes the points of ``body``, lines of a HISTORY answer (the next oldest), as
        :meth:`add_points` writes them once read: by templates over the whole text
        (:func:`.templates.gpx_text`), or if they do not take every line, read the per-line
        way. Raises BadAnswer for a line that is no point. A chunk to send, or None."""
        made = gpx_text(body, around_time, _minute)
        if made is None:
            return self.add_points(read_body(body))
        text, count = made
        self.stats.written += count
        return self._out.add_encoded(text)

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
