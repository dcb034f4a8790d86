"""Simplified trails for the map: Ramer-Douglas-Peucker with a tolerance in metres, over
points of any number in bounded chunks, and the metres a screen pixel covers at a zoom.

A long trail drawn point by point makes a map unusable (owntracks/frontend #146, dawarich
#736); at a given zoom most of its points are closer to the line than a pixel. RDP keeps the
points that bend the line by more than the tolerance, always the first and the last, in
their time order, so a simplified trail is still a replayable trail.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
from simplification.cutil import simplify_coords_idx

__all__ = [
    "CHUNK_POINTS",
    "EARTH_RADIUS_M",
    "MAX_ZOOM",
    "Simplifier",
    "metres_per_pixel",
    "simplify",
]

T = TypeVar("T")

# RDP is O(n log n) to O(n^2) in the points it is given and holds them all: chunks of
# 10,000 points (a day at one fix per 9 s) bound both, at the cost of keeping each chunk's
# boundary point, which is invisible on any map.
CHUNK_POINTS = 10_000
# The mean Earth radius (IUGG): the projection's metres are good to a fraction of a percent
# across a trail, which is all a drawing tolerance needs.
EARTH_RADIUS_M = 6_371_008.8
# Web Mercator: the equator's length at the WGS 84 semi-major axis, and the latitude at which
# the square world map ends.
_MERCATOR_EQUATOR_M = 2 * math.pi * 6_378_137
_MERCATOR_MAX_LAT = 85.05112878
# Tile servers stop at 22-24; 30 is where a pixel is under a millimetre.
MAX_ZOOM = 30


def _shown(point: Any) -> tuple[object, object]:
    """Latitude and longitude of a point as the gateway shows it (``record_json``)."""
    return (point.get("lat"), point.get("lon")) if isinstance(point, Mapping) else (None, None)


def _usable(lat: object, lon: object) -> bool:
    return (
        isinstance(lat, float | int)
        and isinstance(lon, float | int)
        and not isinstance(lat, bool)
        and not isinstance(lon, bool)
        and math.isfinite(lat)
        and math.isfinite(lon)
        and abs(lat) <= 90
        and abs(lon) <= 180
    )


def _kept(coordinates: Sequence[tuple[float, float]], metres: float) -> list[int]:
    """Indices RDP keeps of a chunk of (lat, lon), projected to local metres:
    equirectangular around the chunk's mean latitude, longitudes unwrapped so that a trail
    across the antimeridian is not a line around the world."""
    if len(coordinates) < 3:
        return list(range(len(coordinates)))
    lat_lon = np.radians(np.asarray(coordinates, dtype=np.float64))
    lat, lon = lat_lon[:, 0], np.unwrap(lat_lon[:, 1])
    xy = np.empty_like(lat_lon)
    xy[:, 0] = EARTH_RADIUS_M * lon * math.cos(float(lat.mean()))
    xy[:, 1] = EARTH_RADIUS_M * lat
    return [int(i) for i in simplify_coords_idx(xy, metres)]


def _check(metres: float, chunk: int) -> None:
    if not (math.isfinite(metres) and metres >= 0):
        raise ValueError("the tolerance must be a finite number of metres, 0 or more")
    if chunk < 2:
        raise ValueError("a chunk holds at least 2 points")


def simplify(
    points: Iterable[T],
    metres: float,
    *,
    lat_lon: Callable[[T], tuple[object, object]] = _shown,
    chunk: int = CHUNK_POINTS,
) -> Iterator[T]:
    """The points of ``points`` (in time order) that Ramer-Douglas-Peucker keeps with a
    tolerance of ``metres``: the first and the last always, the order never changed, each
    kept point the same object (its time and attributes with it).

    ``lat_lon`` reads a point's latitude and longitude (default: the ``lat``/``lon`` of a
    shown record); a point without a usable location is left out. Works through ``chunk``
    points at a time, each chunk simplified alone and sharing its last point with the next,
    so memory is bounded whatever the input's length. ``metres`` 0 keeps every point.
    Raises ValueError for a negative or non-finite tolerance or a chunk under 2.
    """
    _check(metres, chunk)
    batch: list[T] = []
    coordinates: list[tuple[float, float]] = []
    for point in points:
        lat, lon = lat_lon(point)
        if not _usable(lat, lon):
            continue
        batch.append(point)
        coordinates.append((float(lat), float(lon)))  # type: ignore[arg-type]
        if len(batch) == chunk:
            kept = _kept(coordinates, metres) if metres else list(range(len(batch)))
            # The chunk's last point is kept (RDP keeps both ends) and starts the next chunk,
            # which yields it; so the trail stays connected across chunks.
            yield from (batch[i] for i in kept[:-1])
            batch, coordinates = batch[-1:], coordinates[-1:]
    kept = _kept(coordinates, metres) if metres else list(range(len(batch)))
    yield from (batch[i] for i in kept)


class Simplifier(Generic[T]):
    """:func:`simplify` for points that arrive in pages (a window read from the herd a page at
    a time): each page goes to :meth:`add`, which returns the points kept so far, and
    :meth:`end` returns the rest. Each page is simplified with the last point kept before it,
    so the trail stays connected and the first and last points are kept; memory is one page
    and that point. Raises ValueError as :func:`simplify` does."""

    def __init__(
        self,
        metres: float,
        *,
        lat_lon: Callable[[T], tuple[object, object]] = _shown,
        chunk: int = CHUNK_POINTS,
    ) -> None:
        _check(metres, chunk)
        self.metres = metres
        self._lat_lon = lat_lon
        self._chunk = chunk
        self._last: list[T] = []  # the last point kept, not yet returned

    def add(self, page: Iterable[T]) -> list[T]:
        """The kept points of ``page`` (and of the pages before it) not yet returned, in
        order; the last one kept is held back, since the next page may continue its line."""
        kept = list(
            simplify(
                itertools.chain(self._last, page),
                self.metres,
                lat_lon=self._lat_lon,
                chunk=self._chunk,
            )
        )
        self._last = kept[-1:]
        return kept[:-1]

    def end(self) -> list[T]:
        """The last point kept (the window's last usable point), if any."""
        last, self._last = self._last, []
        return last


def metres_per_pixel(zoom: float, latitude: float, tile_size: int = 256) -> float:
    """Metres on the ground one screen pixel covers on a Web Mercator map (OSM, Leaflet,
    MapLibre) at ``zoom`` and ``latitude``: a good ``simplify`` tolerance for that view is
    one or two of them. Latitudes past the map's edge (±85.05°) are taken at the edge.
    Raises ValueError for a zoom outside 0..MAX_ZOOM or a non-finite latitude."""
    if not (math.isfinite(zoom) and 0 <= zoom <= MAX_ZOOM):
        raise ValueError(f"zoom must be from 0 to {MAX_ZOOM}")
    if not math.isfinite(latitude):
        raise ValueError("latitude must be a finite number")
    if tile_size < 1:
        raise ValueError("tile_size must be positive")
    lat = max(-_MERCATOR_MAX_LAT, min(_MERCATOR_MAX_LAT, latitude))
    return float(_MERCATOR_EQUATOR_M * math.cos(math.radians(lat)) / (tile_size * 2.0**zoom))
