"""The Google places provider against a fake Google endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fake_google import PAGE_SIZE, FakeGoogle, fake_google

from backend.config import PlacesConfig
from backend.places import make_provider, render
from backend.places.embedded import EmbeddedPlaces
from backend.places.google import GooglePlaces, plain

KIWI = (34.068930, -118.445127)


@pytest.fixture
async def google() -> AsyncIterator[FakeGoogle]:
    async with fake_google() as fake:
        yield fake


async def ask(
    url: str, key: str, *, radius_m: float = 10_000, limit: int = 5, timeout: float = 5.0
) -> dict[str, Any]:
    provider = make_provider(
        PlacesConfig(provider="google", google_api_key=key, google_url=url, timeout=timeout)
    )
    try:
        provider.start()
        return await provider.nearby(*KIWI, radius_m, limit)
    finally:
        await provider.close()


def assert_unknown_error(payload: dict[str, Any], key: str) -> None:
    assert payload["status"] == "UNKNOWN_ERROR"
    assert payload["results"] == []
    assert payload["html_attributions"] == []
    assert payload["error_message"]
    assert key not in render(payload).decode()


async def test_ok_answer_is_cut_to_limit(google: FakeGoogle) -> None:
    payload = await ask(google.url, "test-secret-key", limit=5)

    assert payload["status"] == "OK"
    assert [r["name"] for r in payload["results"]] == [f"Cruise Bar {i}" for i in range(1, 6)]
    # Google's other keys come through untouched.
    assert payload["html_attributions"] == []
    assert payload["next_page_token"] == "fake-page-2"
    assert "test-secret-key" not in render(payload).decode()


async def test_limit_above_a_page_returns_the_page(google: FakeGoogle) -> None:
    payload = await ask(google.url, "test-k", limit=20)
    assert len(payload["results"]) == PAGE_SIZE


@pytest.mark.parametrize(("radius_m", "sent"), [(10_000, "10000"), (12_500.5, "12500.5")])
async def test_request_carries_location_radius_and_key(
    google: FakeGoogle, radius_m: float, sent: str
) -> None:
    await ask(google.url, "test-k", radius_m=radius_m)
    assert google.requests == [
        {"location": "34.06893,-118.445127", "radius": sent, "key": "test-k"}
    ]


@pytest.mark.parametrize(
    ("key", "status"),
    [("over-limit", "OVER_QUERY_LIMIT"), ("unknown-key", "REQUEST_DENIED")],
)
async def test_google_errors_pass_through(google: FakeGoogle, key: str, status: str) -> None:
    payload = await ask(google.url, key)

    assert payload["status"] == status
    assert payload["results"] == []
    assert payload["error_message"]
    assert key not in render(payload).decode()


async def test_invalid_request_passes_through(google: FakeGoogle) -> None:
    # Google rejects a radius over 50 km; the provider forwards what it is given.
    payload = await ask(google.url, "test-k", radius_m=60_000)
    assert payload["status"] == "INVALID_REQUEST"
    assert payload["error_message"]


async def test_zero_results_is_an_answer_not_an_error(google: FakeGoogle) -> None:
    payload = await ask(google.url, "zero")
    assert payload == {"html_attributions": [], "results": [], "status": "ZERO_RESULTS"}


async def test_http_500_is_unknown_error(google: FakeGoogle) -> None:
    payload = await ask(google.url, "http-500")
    assert_unknown_error(payload, "http-500")
    assert "HTTP 500" in payload["error_message"]


async def test_timeout_is_unknown_error_within_bound(google: FakeGoogle) -> None:
    began = time.monotonic()
    payload = await ask(google.url, "slow", timeout=0.3)
    elapsed = time.monotonic() - began

    assert_unknown_error(payload, "slow")
    assert "timed out after 0.3 s" in payload["error_message"]
    assert elapsed < 3


async def test_not_json_is_unknown_error(google: FakeGoogle) -> None:
    payload = await ask(google.url, "not-json")
    assert_unknown_error(payload, "not-json")


async def test_an_oversized_body_is_not_read_on(google: FakeGoogle) -> None:
    payload = await ask(google.url, "huge")
    assert_unknown_error(payload, "huge")


async def test_connection_refused_is_unknown_error() -> None:
    with socket.socket() as s:  # a port that was just free and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = "test-never-sent"
    payload = await ask(f"http://127.0.0.1:{port}/maps/api/place/nearbysearch/json", key)
    assert_unknown_error(payload, key)


async def test_session_is_reused_and_closed(google: FakeGoogle) -> None:
    provider = GooglePlaces(
        PlacesConfig(provider="google", google_api_key="test-k", google_url=google.url)
    )
    answers = [await provider.nearby(*KIWI, 1_000, 3) for _ in range(3)]
    session = provider._session
    await provider.close()

    assert all(len(a["results"]) == 3 for a in answers)
    assert len(google.requests) == 3
    assert session is not None and session.closed


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"location": "1,2", "radius": "100", "key": "test-k"}, "OK"),
        ({"location": "1,2", "radius": "100"}, "REQUEST_DENIED"),
        ({"radius": "100", "key": "test-k"}, "INVALID_REQUEST"),
        ({"location": "91,0", "radius": "100", "key": "test-k"}, "INVALID_REQUEST"),
        ({"location": "1,2", "radius": "fifty", "key": "test-k"}, "INVALID_REQUEST"),
    ],
)
async def test_fake_google_checks_parameters(
    google: FakeGoogle, params: dict[str, str], status: str
) -> None:
    # The tests above rely on the fake rejecting what Google rejects, with HTTP 200.
    async with aiohttp.ClientSession() as session, session.get(google.url, params=params) as resp:
        assert resp.status == 200
        assert json.loads(await resp.read())["status"] == status


@pytest.mark.parametrize(
    ("value", "text"),
    [(10_000.0, "10000"), (12_500.5, "12500.5"), (-118.445127, "-118.445127"), (-0.0, "0")],
)
def test_plain_numbers(value: float, text: str) -> None:
    assert plain(value) == text


def test_make_provider_picks_by_config() -> None:
    assert isinstance(make_provider(PlacesConfig()), EmbeddedPlaces)
    google = make_provider(PlacesConfig(provider="google", google_api_key="k"))
    assert isinstance(google, GooglePlaces)
