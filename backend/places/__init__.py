"""Places providers: answer WHATSAT with Google Places Nearby Search (legacy) JSON.

Two providers share one interface: ``embedded`` answers offline from GeoNames populated places
and airports shipped inside PyPI packages, ``google`` asks the real Nearby Search endpoint.
Both always return a Google-shaped object, with a non-OK ``status`` and an ``error_message``
instead of raising when data or the upstream fails.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from backend.config import PlacesConfig

__all__ = ["PlacesProvider", "SharedResult", "error_payload", "make_provider", "render"]


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
    parts: list[str] = []
    _pretty(payload, "\n", parts)
    # Nothing to collapse or strip: a newline inside a value is escaped (\n), and every
    # newline this writes is followed by an indent and a token, so no blank line can occur.
    return "".join(parts).encode()


class SharedResult(dict[str, Any]):
    """A place's result object that answers many queries unchanged (the embedded provider
    keeps them): ``render`` makes its JSON text once per indent and reuses it, which is most
    of a WHATSAT's cost saved. Must not be modified once rendered."""

    __slots__ = ("texts",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.texts: dict[str, str] = {}


_encode_str = json.encoder.encode_basestring  # the C string escaper, as ensure_ascii=False uses
_SCALARS = {True: "true", False: "false", None: "null"}


def _pretty(value: Any, newline: str, out: list[str]) -> None:
    """Append ``value`` as ``json.dumps(value, indent=3, separators=(",", " : "),
    ensure_ascii=False)`` would write it; ``newline`` is a newline plus the current indent.

    json.dumps takes a slow pure-Python path whenever indent is set; this does the same in a
    fraction of the time, which is most of a WHATSAT's cost (the tests check both agree).
    """
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif type(value) is SharedResult:
        text = value.texts.get(newline)
        if text is None:
            parts: list[str] = []
            _pretty(dict(value), newline, parts)
            text = value.texts[newline] = "".join(parts)
        out.append(text)
    elif isinstance(value, dict):
        members = [
            (_encode_str(k if isinstance(k, str) else _key(k)) + " : ", v) for k, v in value.items()
        ]
        _container("{", "}", members, newline, out)
    elif isinstance(value, list | tuple):
        _container("[", "]", [("", item) for item in value], newline, out)
    elif value is None or isinstance(value, bool):
        out.append(_SCALARS[value])
    elif type(value) is float and math.isfinite(value):
        out.append(float.__repr__(value))  # what json.dumps writes for a finite float
    elif type(value) is int:
        out.append(int.__repr__(value))
    else:
        out.append(json.dumps(value))


def _container(
    opening: str, closing: str, members: list[tuple[str, Any]], newline: str, out: list[str]
) -> None:
    """An object's or an array's members, each after its prefix (a key and " : ", or none),
    one per line at the next indent."""
    if not members:
        out.append(opening + closing)
        return
    inner = newline + "   "
    out.append(opening)
    separator = inner
    for prefix, item in members:
        out.append(separator + prefix)
        _pretty(item, inner, out)
        separator = "," + inner
    out.append(newline + closing)


def _key(key: Any) -> str:
    # JSON object keys are strings; json.dumps turns these scalars into their JSON text.
    return _SCALARS[key] if key is None or isinstance(key, bool) else json.dumps(key)


def error_payload(status: str, message: str) -> dict[str, Any]:
    """A Google-shaped failure answer with no results."""
    return {"html_attributions": [], "results": [], "status": status, "error_message": message}
