"""A client's points as GeoJSON (RFC 7946), written as a stream of byte chunks: the
companion of :mod:`.export`'s GPX, with the same points, chunks and statistics."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

from .export import (
    ExportStats,
    _attributes,
    _Chunks,
    _location,
    iso_time,
    point_time,
)
from .lines import Point

__all__ = ["GeoJsonWriter", "geojson_chunks"]

# Shown keys a point's GeoJSON properties carry besides its attributes.
_RECORD_KEYS = ("client_time", "server", "time_diff")


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
    return _feature_text(where[0], where[1], properties, _attributes(point))


def _point_feature(point: Point) -> str | None:
    """``_feature`` of a point read from the herd, as ``records.record_json`` shows it."""
    when = point_time(point.client_time)
    if when is None:  # pragma: no cover - the herd takes no time past MAX_TIME_S
        return None
    properties = {
        "time": when,
        "client_time": point.client_time,
        "server": point.server_id,
        "time_diff": point.time_diff,
    }
    return _feature_text(float(point.lat), float(point.lon), properties, point.shown)


def _feature_text(
    lat: float, lon: float, properties: dict[str, Any], attributes: Mapping[str, Any]
) -> str:
    if attributes.keys().isdisjoint(properties):
        properties.update(attributes)
    else:
        for key, value in attributes.items():
            properties.setdefault(key, value)  # a record key wins over an attribute of its name
    return (
        f',\n{{"type":"Feature","properties":{_json(properties)},'
        f'"geometry":{{"type":"Point","coordinates":[{lon!r},{lat!r}]}}}}'
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
        self._check_trail()
        where = _location(point)
        if where is None or iso_time(point) is None:
            return None
        if len(self._first) >= 2:
            return self._out.add(f",{_position(where)}")
        self._begin(_position(where))
        return self._out.full()

    def add_trail_points(self, points: Iterable[Point]) -> bytes | None:
        """The first pass of points read from the herd: what :meth:`add_trail` does with
        each, as ``records.record_json`` shows it. A chunk to send, or None."""
        self._check_trail()
        texts = []
        for point in points:
            if point_time(point.client_time) is None:  # pragma: no cover - never from the herd
                continue
            position = f"[{float(point.lon)!r},{float(point.lat)!r}]"
            if len(self._first) >= 2:
                texts.append(f",{position}")
            else:  # the first two: nothing is in texts yet
                self._begin(position)
        return self._out.add_all(texts)

    def _check_trail(self) -> None:
        if self._trail_ended:
            raise ValueError("the trail is ended: the second pass has begun")

    def _begin(self, position: str) -> None:
        """One of the trail's first two positions; the second begins the LineString."""
        self._first.append(position)
        if len(self._first) < 2:
            return
        self._features = True
        properties = _json({"client_id": self.client_id, "herd": "trail"})
        self._out.put(
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
        return self._add_feature(_feature(point))

    def add_points(self, points: Iterable[Point]) -> bytes | None:
        """The second pass of points read from the herd: what :meth:`add_point` does with
        each, as ``records.record_json`` shows it. A chunk to send, or None."""
        if not self._trail_ended:
            raise ValueError("end_trail() comes before the points")
        texts = [feature for point in points if (feature := _point_feature(point)) is not None]
        if texts and not self._features:  # the first feature has no comma before it
            texts[0], self._features = texts[0][1:], True
        self.stats.written += len(texts)
        return self._out.add_all(texts)

    def _add_feature(self, feature: str | None) -> bytes | None:
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
