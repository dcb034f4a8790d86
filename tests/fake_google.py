"""A fake Google Places Nearby Search (legacy) endpoint on 127.0.0.1, for tests.

``async with fake_google() as google:`` serves ``google.url`` on an ephemeral port and records
every query it receives in ``google.requests``. Like Google, it answers with HTTP 200 and the
outcome in ``status``, after checking the parameters:

- no ``key`` → REQUEST_DENIED; missing or malformed ``location`` / ``radius`` (radius must be
  in (0, 50000]) → INVALID_REQUEST.

The key chooses the behaviour:

- ``test-...`` (any key starting with "test-") → OK with 20 results and a next_page_token;
- ``over-limit`` → OVER_QUERY_LIMIT;
- ``zero`` → ZERO_RESULTS;
- ``http-500`` → HTTP 500 with an HTML body;
- ``slow`` → no answer until the server shuts down (longer than any client timeout);
- ``not-json`` → HTTP 200 with a body that is not JSON;
- ``huge`` → HTTP 200 with a 2 MB body (Places JSON, but far past any real answer);
- anything else → REQUEST_DENIED, "The provided API key is invalid."
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["NEARBY_PATH", "FakeGoogle", "canned_results", "fake_google"]

NEARBY_PATH = "/maps/api/place/nearbysearch/json"
PAGE_SIZE = 20  # Google's page size for Nearby Search
NO_KEY_MESSAGE = (
    "You must use an API key to authenticate each request to Google Maps Platform APIs."
)


@dataclass
class FakeGoogle:
    url: str
    requests: list[dict[str, str]] = field(default_factory=list)


def canned_results(lat: float, lng: float) -> list[dict[str, Any]]:
    """PAGE_SIZE results shaped like Google's example, spread north of ``lat,lng``."""
    results = []
    for i in range(PAGE_SIZE):
        # Each one about 50 m further north than the last.
        plat, plng = lat + 0.00045 * (i + 1), lng
        place_id = f"ChIJfake{i:04d}R9-c-3O48ykI"
        results.append(
            {
                "business_status": "OPERATIONAL",
                "geometry": {
                    "location": {"lat": plat, "lng": plng},
                    "viewport": {
                        "northeast": {"lat": plat + 0.0013, "lng": plng + 0.0013},
                        "southwest": {"lat": plat - 0.0013, "lng": plng - 0.0013},
                    },
                },
                "icon": "https://maps.gstatic.com/mapfiles/place_api/icons/v1/png_71/bar-71.png",
                "icon_background_color": "#FF9E67",
                "icon_mask_base_uri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/bar_pinlet",
                "name": f"Cruise Bar {i + 1}",
                "opening_hours": {"open_now": i % 2 == 0},
                "place_id": place_id,
                "plus_code": {
                    "compound_code": "46R6+G2 The Rocks, New South Wales",
                    "global_code": "4RRH46R6+G2",
                },
                "price_level": 2,
                "rating": 4,
                "reference": place_id,
                "scope": "GOOGLE",
                "types": ["bar", "restaurant", "food", "point_of_interest", "establishment"],
                "user_ratings_total": 1269 + i,
                "vicinity": "Circular Quay W, The Rocks",
            }
        )
    return results


def _status(status: str, message: str | None = None) -> web.Response:
    body: dict[str, Any] = {"html_attributions": [], "results": [], "status": status}
    if message is not None:
        body["error_message"] = message
    return web.json_response(body)


def _location(text: str) -> tuple[float, float] | None:
    parts = text.split(",")
    try:
        lat, lng = (float(p) for p in parts)
    except ValueError:  # not two numbers
        return None
    ok = math.isfinite(lat) and math.isfinite(lng) and abs(lat) <= 90 and abs(lng) <= 180
    return (lat, lng) if ok else None


def _radius_ok(text: str) -> bool:
    try:
        radius = float(text)
    except ValueError:
        return False
    return 0 < radius <= 50_000


def _handler(
    requests: list[dict[str, str]], stopping: asyncio.Event
) -> Callable[[web.Request], Any]:
    async def nearby(request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        requests.append(query)
        key = query.get("key", "")
        if not key:
            return _status("REQUEST_DENIED", NO_KEY_MESSAGE)
        location = _location(query.get("location", ""))
        if location is None or not _radius_ok(query.get("radius", "")):
            return _status("INVALID_REQUEST", "Invalid request. Missing the 'location' parameter.")
        if key == "over-limit":
            return _status(
                "OVER_QUERY_LIMIT", "You have exceeded your daily request quota for this API."
            )
        if key == "zero":
            return _status("ZERO_RESULTS")
        if key == "http-500":
            return web.Response(
                status=500, text="<html><body>Server Error</body></html>", content_type="text/html"
            )
        if key == "slow":
            await stopping.wait()
            return _status("UNKNOWN_ERROR", "shutting down")
        if key == "not-json":
            return web.Response(text="<html>Service unavailable</html>", content_type="text/html")
        if key == "huge":
            padding = "x" * (2 * 1024 * 1024)
            return web.json_response({"status": "OK", "results": [], "padding": padding})
        if key.startswith("test-"):
            return web.json_response(
                {
                    "html_attributions": [],
                    "next_page_token": "fake-page-2",
                    "results": canned_results(*location),
                    "status": "OK",
                }
            )
        return _status("REQUEST_DENIED", "The provided API key is invalid.")

    return nearby


@asynccontextmanager
async def fake_google() -> AsyncIterator[FakeGoogle]:
    """Run the fake endpoint on 127.0.0.1 for the duration of the ``async with``."""
    stopping = asyncio.Event()
    requests: list[dict[str, str]] = []
    app = web.Application()
    app.router.add_get(NEARBY_PATH, _handler(requests, stopping))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield FakeGoogle(url=f"http://{host}:{port}{NEARBY_PATH}", requests=requests)
    finally:
        stopping.set()  # releases "slow" handlers so cleanup does not wait on them
        await runner.cleanup()
