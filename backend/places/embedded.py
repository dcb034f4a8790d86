"""The offline PlacesProvider: answers from the gazetteer, loaded in a worker thread.

numpy, scipy and the place data are imported only inside that thread (``gazetteer``), so a
server process starts listening without waiting for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.places import error_payload

if TYPE_CHECKING:
    from backend.places.gazetteer import PlaceIndex

__all__ = ["DEFAULT_GAZETTEER", "EmbeddedPlaces"]

log = logging.getLogger(__name__)

DEFAULT_GAZETTEER = "cities1000"  # figures beside its twin in gazetteer.py


def _load_index(gazetteer: str, cache_dir: Path | None) -> PlaceIndex:
    from backend.places.gazetteer import load_index

    return load_index(gazetteer, cache_dir)


def _search(
    index: PlaceIndex, lat: float, lng: float, radius_m: float, limit: int
) -> dict[str, Any]:
    from backend.places.gazetteer import search

    return search(index, lat, lng, radius_m, limit)


class EmbeddedPlaces:
    """The offline PlacesProvider.

    ``start()`` loads the data in a worker thread; ``nearby()`` waits for that load (starting
    it if needed) and answers ``UNKNOWN_ERROR`` if it failed. An instance belongs to the event
    loop that first starts it; the loaded data is shared process-wide.
    """

    def __init__(
        self,
        gazetteer: str = DEFAULT_GAZETTEER,
        *,
        preload: bool = True,
        loader: Callable[[], PlaceIndex] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        """``preload=False`` makes ``start()`` a no-op, so the first query loads the data.

        ``loader`` replaces ``load_index(gazetteer)``, e.g. in tests; ``cache_dir`` holds the
        built index for every server of the machine (see ``gazetteer.load_index``).
        """
        self._gazetteer = gazetteer
        self._preload = preload
        self._loader = loader or (lambda: _load_index(gazetteer, cache_dir))
        self._loading: asyncio.Future[PlaceIndex] | None = None

    def start(self) -> None:
        if self._preload:
            self._load()

    async def nearby(self, lat: float, lng: float, radius_m: float, limit: int) -> dict[str, Any]:
        try:
            # Shielded: one cancelled WHATSAT must not cancel the load the others wait for.
            index = await asyncio.shield(self._load())
        except Exception as exc:
            return error_payload(
                "UNKNOWN_ERROR", f"the offline place data ({self._gazetteer}) failed to load: {exc}"
            )
        return _search(index, lat, lng, radius_m, limit)

    @property
    def state(self) -> str:
        loading = self._loading
        if loading is None:
            return "idle"
        if not loading.done():
            return "loading"
        return "failed" if loading.cancelled() or loading.exception() else "ready"

    async def close(self) -> None:
        # Nothing to release: a load still running finishes in its thread and is cached.
        return None

    def _load(self) -> asyncio.Future[PlaceIndex]:
        if self._loading is None:
            loop = asyncio.get_running_loop()
            self._loading = loop.run_in_executor(None, self._loader)
            self._loading.add_done_callback(self._loaded)
        return self._loading

    def _loaded(self, future: asyncio.Future[PlaceIndex]) -> None:
        if future.cancelled():
            return
        # A failed load stays failed for this provider: every WHATSAT then answers at once
        # with UNKNOWN_ERROR instead of each retrying a load that is bound to fail again.
        exc = future.exception()
        if exc is not None:
            log.error("places: loading %s failed: %s", self._gazetteer, exc, exc_info=exc)
        else:
            log.info("places: %s loaded, %d places", self._gazetteer, len(future.result()))
