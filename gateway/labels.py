"""Which places to label on a map view: a selection over an index built once, with no I/O.

Offline, the map has no tiles: only country outlines, so at street zoom a trail has no
context. The gateway labels the view with the herd's gazetteer (the GeoNames places of the
herd's ``[places] gazetteer``, and airports; read by ``gateway/place_labels.py``).

The index holds every place in order of importance (its population; an airport with an IATA
code ranks as AIRPORT_RANK people) and its Web Mercator position. A view is what Leaflet
draws: a centre, a zoom and a size in pixels, so every parameter has its own range and none
can contradict another; a view across the antimeridian is one window like any other. The
answer is the places inside the view, above the zoom's population floor, the most important
of each LABEL_CELL of the world's pixel grid, at most MAX_LABELS, most important first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .rules import (
    MAX_LAT,
    MAX_LON,
    MERCATOR_MAX_LAT,
    VIEW_HEIGHT,
    VIEW_LAT,
    VIEW_LON,
    VIEW_WIDTH,
    VIEW_ZOOM,
)

__all__ = [
    "AIRPORT_MIN_ZOOM",
    "AIRPORT_RANK",
    "ATTRIBUTION",
    "LABEL_CELL",
    "MAX_LABELS",
    "LabelIndex",
    "Place",
    "Texts",
    "View",
    "answer",
    "build_index",
    "from_columns",
    "label_json",
    "min_population",
    "parse_view",
    "select",
]

# A full-HD view holds about this many labels of ~100 x 16 px with room between them; more
# would hide the map they explain, and it bounds an answer to a few kilobytes.
MAX_LABELS = 64
# At most one place per cell of the world's pixel grid (width, height in pixels): a short
# label's size, so that the places kept are spread over the view rather than piled on its
# biggest city; the map then drops any label that would still overlap one drawn before it.
LABEL_CELL = (128, 40)
# The smallest population labelled at each whole zoom (index: the zoom, capped at the last).
# At zoom 5 a cell spans ~800 km: a village there is a name nobody can place, and only empty
# land (deserts, tundra) would show one. From zoom 11 (a cell ~10 km) every place counts.
MIN_POPULATION = (
    1_000_000,  # 0
    1_000_000,  # 1
    1_000_000,  # 2
    500_000,  # 3
    250_000,  # 4
    100_000,  # 5
    50_000,  # 6
    20_000,  # 7
    10_000,  # 8
    5_000,  # 9
    2_000,  # 10
    0,  # 11 and closer
)
# Airports are labelled from this zoom on: about 150 m a pixel, so a runway is some 20 px.
AIRPORT_MIN_ZOOM = 10
# An airport with scheduled flights (an IATA code) is a landmark like a town of this size: it
# wins a cell over the villages and suburbs around it, not over the town it is named for.
AIRPORT_RANK = 10_000
ATTRIBUTION = "Place names: GeoNames (CC BY 4.0), airports: mwgg/Airports (MIT)"
TILE_PX = 256  # the world is TILE_PX * 2**zoom pixels wide (Web Mercator, as Leaflet)

FloatArray = npt.NDArray[np.float64]


class Place(NamedTuple):
    """One place of the gazetteer, as read from its files."""

    id: str  # "geonames:<geonameid>" or "airport:<ICAO>", as WHATSAT's place_id
    name: str
    lat: float
    lon: float
    population: int  # 0 for airports
    airport: bool


@dataclass(frozen=True, slots=True, eq=False)
class Texts:
    """Strings packed end to end in one UTF-8 buffer: a few bytes each, where a list of Python
    strings costs some fifty more per string (a gazetteer holds hundreds of thousands)."""

    blob: bytes
    ends: npt.NDArray[np.int64]  # where each string ends in blob

    @classmethod
    def pack(cls, texts: Iterable[str]) -> Texts:
        encoded = [text.encode() for text in texts]
        ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        return cls(b"".join(encoded), ends)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        start = int(self.ends[i - 1]) if i else 0
        return self.blob[start : int(self.ends[i])].decode()


@dataclass(frozen=True, slots=True, eq=False)
class LabelIndex:
    """Every place as parallel arrays, most important first (row 0 ranks highest)."""

    x: FloatArray  # Web Mercator, 0 (180° W) to 1 (180° E)
    y: FloatArray  # Web Mercator, 0 (85.05° N) to 1 (85.05° S)
    rank: npt.NDArray[np.int64]  # non-increasing
    airport: npt.NDArray[np.bool_]
    lat: FloatArray
    lon: FloatArray
    population: npt.NDArray[np.int64]
    ids: Texts
    names: Texts
    by_y: npt.NDArray[np.intp]  # the rows from north to south
    y_sorted: FloatArray  # y[by_y]

    def __len__(self) -> int:
        return len(self.names)

    def at_least(self, population: int) -> int:
        """How many rows (a prefix) rank at ``population`` or more."""
        # rank is non-increasing, so -rank is sorted: the prefix ends where -rank > -population.
        return int(np.searchsorted(-self.rank, -population, side="right"))


def mercator(lat: Any, lon: Any) -> tuple[Any, Any]:
    """Web Mercator ``(x, y)`` in [0, 1] for degrees (scalars or numpy arrays)."""
    clamped = np.clip(lat, -MERCATOR_MAX_LAT, MERCATOR_MAX_LAT)
    x = (np.asarray(lon, dtype=np.float64) + 180.0) / 360.0
    sin = np.sin(np.radians(clamped))
    y = 0.5 - np.log((1 + sin) / (1 - sin)) / (4 * math.pi)
    return x, y


def build_index(places: Iterable[Place]) -> LabelIndex:
    """The index of ``places``: those with a name and a usable position (on the globe, not
    0,0, GeoNames' "unknown"), ordered by rank, ties by ID so that every gateway agrees."""
    usable = [
        p
        for p in places
        if p.name
        and math.isfinite(p.lat)
        and math.isfinite(p.lon)
        and abs(p.lat) <= MAX_LAT
        and abs(p.lon) <= MAX_LON
        and (p.lat, p.lon) != (0, 0)
    ]
    usable.sort(key=lambda p: (-_rank(p), p.id))
    return from_columns(
        lat=np.array([p.lat for p in usable], dtype=np.float64),
        lon=np.array([p.lon for p in usable], dtype=np.float64),
        population=np.array([p.population for p in usable], dtype=np.int64),
        airport=np.array([p.airport for p in usable], dtype=np.bool_),
        ids=Texts.pack([p.id for p in usable]),
        names=Texts.pack([p.name for p in usable]),
    )


def from_columns(
    lat: FloatArray,
    lon: FloatArray,
    population: npt.NDArray[np.int64],
    airport: npt.NDArray[np.bool_],
    ids: Texts,
    names: Texts,
) -> LabelIndex:
    """The index of places already in order (a saved index's columns, or build_index's)."""
    x, y = mercator(lat, lon)
    by_y = np.argsort(y, kind="stable")
    return LabelIndex(
        x=x,
        y=y,
        rank=np.where(airport, AIRPORT_RANK, np.maximum(population, 0)),
        airport=airport,
        lat=lat,
        lon=lon,
        population=population,
        ids=ids,
        names=names,
        by_y=by_y,
        y_sorted=y[by_y],
    )


def _rank(place: Place) -> int:
    return AIRPORT_RANK if place.airport else max(place.population, 0)


@dataclass(frozen=True, slots=True)
class View:
    """A map view as Leaflet draws it: centre, zoom, and size in CSS pixels."""

    lat: float
    lon: float
    zoom: float
    width: int
    height: int


def parse_view(query: Mapping[str, str]) -> View:
    """The view of a request's query (lat, lon, zoom, width, height: each required and within
    its range in ``gateway.rules``); raises ApiError(400) naming the parameter."""
    return View(
        lat=VIEW_LAT.from_text(query.get("lat")),
        lon=VIEW_LON.from_text(query.get("lon")),
        zoom=VIEW_ZOOM.from_text(query.get("zoom")),
        width=VIEW_WIDTH.from_text(query.get("width")),
        height=VIEW_HEIGHT.from_text(query.get("height")),
    )


def min_population(zoom: float) -> int:
    """The smallest population labelled at ``zoom``."""
    return MIN_POPULATION[min(int(zoom), len(MIN_POPULATION) - 1)]


def select(index: LabelIndex, view: View) -> list[int]:
    """The rows to label in ``view``, most important first: at most MAX_LABELS, at most one
    per LABEL_CELL, none below the zoom's population floor, airports from AIRPORT_MIN_ZOOM."""
    world = TILE_PX * 2.0**view.zoom
    cx, cy = mercator(view.lat, view.lon)
    cx, cy = float(cx) * world, float(cy) * world
    rows = index.at_least(min_population(view.zoom))
    # Latitude first, by bisection: a view's band holds a sliver of the world, so the rest is
    # computed on few. Back in row order (of importance), those above the floor.
    half = view.height / 2
    north, south = (cy - half) / world, (cy + half) / world
    start = int(np.searchsorted(index.y_sorted, north, side="left"))
    end = int(np.searchsorted(index.y_sorted, south, side="right"))
    band = index.by_y[start:end]
    band = np.sort(band[band < rows])
    y = index.y[band] * world
    # Each place's horizontal offset from the centre, the shortest way round the world: a view
    # across the antimeridian needs no special case, and one wider than the world shows all.
    dx = (index.x[band] * world - cx + world / 2) % world - world / 2
    inside = np.abs(dx) <= view.width / 2
    if view.zoom < AIRPORT_MIN_ZOOM:
        inside &= ~index.airport[band]
    band, dx, y = band[inside], dx[inside], y[inside]
    if not len(band):
        return []
    # Cells of the world's grid (not the view's), so that panning keeps each cell's winner.
    column = np.floor((cx + dx) / LABEL_CELL[0]).astype(np.int64)
    row = np.floor(y / LABEL_CELL[1]).astype(np.int64)
    cells = column * (1 << 32) + row
    # Rows are in order of importance, so each cell's first row is its most important place.
    _, first = np.unique(cells, return_index=True)
    return [int(r) for r in band[np.sort(first)[:MAX_LABELS]]]


def label_json(index: LabelIndex, row: int) -> dict[str, Any]:
    """One place of an answer."""
    airport = bool(index.airport[row])
    return {
        "id": index.ids[row],
        "name": index.names[row],
        "lat": float(index.lat[row]),
        "lon": float(index.lon[row]),
        "kind": "airport" if airport else "locality",
        "population": None if airport else int(index.population[row]),
    }


def answer(index: LabelIndex, view: View) -> dict[str, Any]:
    """The JSON answer for ``view``: its places, most important first, and their sources."""
    places = [label_json(index, row) for row in select(index, view)]
    return {"places": places, "attribution": ATTRIBUTION}
