"""Places providers: answer WHATSAT with Google Places Nearby Search (legacy) JSON.

Two providers share one interface: ``embedded`` answers offline from GeoNames populated places
and airports shipped inside PyPI packages, ``google`` asks the real Nearby Search endpoint.
Both always return a Google-shaped object, with a non-OK ``status`` and an ``error_message``
instead of raising when data or the upstream fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from backend.config import PlacesConfig

__all__ = ["PlacesProvider", "error_payload", "make_provider", "render"]

_BLANK_LINES = re.compile(r"\n{2,}")


class PlacesProvider(Protocol):
    """Where WHATSAT gets its places; one instance per server process, used on its loop."""

    def start(self) -> None:
        """Begin any slow preparation in the background; returns at once.

        Called from inside the running event loop. A no-op where there is nothing to prepare.
        """
        ...

    async def nearby(self, lat: float, lng: float, radius_m: float, limit: int) -> dict[str, Any]:
        """A Nearby Search (legacy) JSON object with at most ``limit`` results.

        Never raises for data or upstream failures: those come back as a non-OK ``status``
        with an ``error_message``.
        """
        ...

    async def close(self) -> None:
        """Release connections and other resources."""
        ...

    @property
    def state(self) -> str:
        """``idle`` (nothing loaded yet), ``loading``, ``ready`` or ``failed``."""
        ...


def make_provider(config: PlacesConfig, cache_dir: Path | None = None) -> PlacesProvider:
    """The provider that ``config.provider`` names; ``cache_dir`` keeps the offline index."""
    # Imported here so a process loads only the provider it uses: the embedded one pulls in
    # numpy and scipy, the Google one an HTTP client.
    if config.provider == "google":
        from backend.places.google import GooglePlaces

        return GooglePlaces(config)
    from backend.places.embedded import EmbeddedPlaces

    return EmbeddedPlaces(config.gazetteer, preload=config.preload, cache_dir=cache_dir)


def render(payload: dict[str, Any]) -> bytes:
    """The JSON text of ``payload`` as a WHATSAT reply carries it.

    Google's pretty style (3-space indent, ``"key" : value``), UTF-8, every run of two or more
    newlines collapsed to one and no trailing newline (herd-protocol.md section 5).
    """
    text = json.dumps(payload, indent=3, separators=(",", " : "), ensure_ascii=False)
    return _BLANK_LINES.sub("\n", text).rstrip("\n").encode()


def error_payload(status: str, message: str) -> dict[str, Any]:
    """A Google-shaped failure answer with no results."""
    return {"html_attributions": [], "results": [], "status": status, "error_message": message}
