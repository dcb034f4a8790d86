"""Google Places Nearby Search (legacy) over aiohttp.

Every failure (HTTP error, timeout, unreachable host, a body that is not Places JSON) becomes a
Google-shaped answer with a non-OK ``status`` and an ``error_message``. The API key goes only
into the request's query string: it is never logged nor put in an answer.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from backend.config import PlacesConfig
from backend.places import error_payload

if TYPE_CHECKING:
    import aiohttp

__all__ = ["GooglePlaces"]

log = logging.getLogger(__name__)

# Real answers are about 20 KB; a body past this is not Places JSON and is not read on.
MAX_BODY = 1024 * 1024

# Statuses that are answers, not failures: they need no error_message.
_ANSWER_STATUSES = frozenset({"OK", "ZERO_RESULTS"})


class GooglePlaces:
    """The PlacesProvider that asks Google; one HTTP session per instance, opened lazily."""

    def __init__(self, config: PlacesConfig) -> None:
        self._url = config.google_url
        self._key = config.google_api_key
        self._timeout = config.timeout
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Nothing to prepare: the session opens on the first query, inside the loop."""

    async def nearby(self, lat: float, lng: float, radius_m: float, limit: int) -> dict[str, Any]:
        # Imported on first use so a server starts listening without waiting for aiohttp.
        import aiohttp

        if not self._key:
            return error_payload("REQUEST_DENIED", "no Google Places API key is configured")
        params = {
            "location": f"{plain(lat)},{plain(lng)}",
            "radius": plain(radius_m),
            "key": self._key,
        }
        try:
            async with self._client().get(self._url, params=params) as response:
                status, body = response.status, await _read_capped(response)
        except TimeoutError:
            log.warning("places: %s did not answer within %g s", self._url, self._timeout)
            return error_payload(
                "UNKNOWN_ERROR", f"Google Places timed out after {self._timeout:g} s"
            )
        except aiohttp.ClientError as exc:
            # The exception text can hold the request URL, and with it the key: name only
            # its type.
            log.warning("places: cannot reach %s: %s", self._url, type(exc).__name__)
            return error_payload(
                "UNKNOWN_ERROR", f"could not reach Google Places ({type(exc).__name__})"
            )
        payload = _places_json(body)
        if payload is None:
            log.warning("places: %s answered HTTP %d without Places JSON", self._url, status)
            message = f"Google Places answered HTTP {status}"
            if status == 200:
                message += " with a body that is not Places JSON"
            return error_payload("UNKNOWN_ERROR", message)
        return _trimmed(payload, limit, status)

    @property
    def state(self) -> str:
        return "ready"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        # Created here rather than in __init__ because a session must be made inside the
        # running loop, and the provider is built before the loop starts.
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The body, or b"" (not Places JSON) if it is larger than MAX_BODY."""
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY:
            return b""
        chunks.append(chunk)
    return b"".join(chunks)


def plain(value: float) -> str:
    """A decimal with no exponent and no spurious ``.0``: 10000, 12500.5, -118.445127."""
    # Seven decimals are a centimetre of latitude, finer than any client sends.
    text = f"{value:.7f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _places_json(body: bytes) -> dict[str, Any] | None:
    """The decoded body if it is a Places JSON object (one with a string status), else None."""
    try:
        payload = json.loads(body)
    except ValueError:  # also covers bytes that are not UTF-8
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("status"), str):
        return None
    return payload


def _trimmed(payload: dict[str, Any], limit: int, http_status: int) -> dict[str, Any]:
    """Google's answer with ``results`` cut to ``limit``; failures keep Google's status."""
    status = payload["status"]
    results = payload.get("results")
    if status == "OK" and http_status == 200 and isinstance(results, list):
        return {**payload, "results": results[:limit]}
    if status == "OK":  # "OK" on an HTTP error, or without a results list: not a real answer
        return error_payload("UNKNOWN_ERROR", f"Google Places answered HTTP {http_status}")
    answer = {"html_attributions": [], **payload, "results": []}
    if status not in _ANSWER_STATUSES and not answer.get("error_message"):
        answer["error_message"] = f"Google Places answered {status}"
    return answer
