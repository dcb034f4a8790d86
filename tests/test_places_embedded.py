"""The offline places provider and the WHATSAT JSON rendering; no network."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openlocationcode import openlocationcode as olc

from backend.config import PlacesConfig
from backend.places import error_payload, make_provider, render
from backend.places.embedded import EmbeddedPlaces
from backend.places.gazetteer import ATTRIBUTION, PlaceIndex, load_index

KIWI = (34.068930, -118.445127)  # kiwi.cs.ucla.edu in the protocol's example
SMALL = "cities15000"  # the smallest gazetteer, for tests where the exact place set is moot
EARTH_RADIUS_M = 6_371_008.8
RESULT_KEYS = {
    "geometry",
    "icon",
    "name",
    "place_id",
    "plus_code",
    "reference",
    "scope",
    "types",
    "vicinity",
}


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Haversine, written out here so the tests do not trust the code under test."""
    p1, p2, dp, dl = map(math.radians, (lat1, lat2, lat2 - lat1, lng2 - lng1))
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def distances(lat: float, lng: float, payload: dict[str, Any]) -> list[float]:
    return [
        distance_m(lat, lng, r["geometry"]["location"]["lat"], r["geometry"]["location"]["lng"])
        for r in payload["results"]
    ]


@pytest.fixture(scope="module", autouse=True)
def _loaded() -> None:
    # Load both gazetteers once for the module; load_index caches them for the process.
    load_index(PlacesConfig().gazetteer)
    load_index(SMALL)


@pytest.fixture
async def places() -> AsyncIterator[EmbeddedPlaces]:
    provider = EmbeddedPlaces(PlacesConfig().gazetteer)
    provider.start()
    yield provider
    await provider.close()


@pytest.fixture
async def small() -> AsyncIterator[EmbeddedPlaces]:
    provider = EmbeddedPlaces(SMALL)
    provider.start()
    yield provider
    await provider.close()


async def test_kiwi_neighbourhood_nearest_first(places: EmbeddedPlaces) -> None:
    payload = await places.nearby(*KIWI, 10_000, 20)

    assert payload["status"] == "OK"
    assert payload["html_attributions"] == [ATTRIBUTION]
    assert 0 < len(payload["results"]) <= 20
    names = {r["name"] for r in payload["results"]}
    assert {"Bel Air", "Beverly Hills", "Santa Monica Municipal Airport"} <= names
    dist = distances(*KIWI, payload)
    assert all(a <= b + 1e-6 for a, b in itertools.pairwise(dist))
    assert max(dist) <= 10_000 + 1e-6


async def test_results_have_googles_fields(small: EmbeddedPlaces) -> None:
    payload = await small.nearby(*KIWI, 50_000, 20)

    kinds = set()
    for r in payload["results"]:
        assert set(r) == RESULT_KEYS  # no invented rating or business_status
        loc, view = r["geometry"]["location"], r["geometry"]["viewport"]
        lat, lng = loc["lat"], loc["lng"]
        assert isinstance(lat, float) and isinstance(lng, float)
        assert view["southwest"]["lat"] < lat < view["northeast"]["lat"]
        assert view["southwest"]["lng"] < lng < view["northeast"]["lng"]
        assert isinstance(r["name"], str) and r["name"]
        assert r["reference"] == r["place_id"]
        assert r["scope"] == "APP"
        assert isinstance(r["vicinity"], str) and r["vicinity"]
        code = r["plus_code"]
        assert code["global_code"] == olc.encode(lat, lng)
        assert code["compound_code"] == f"{code['global_code'][4:]} {r['vicinity']}"
        kind, _, ident = r["place_id"].partition(":")
        kinds.add(kind)
        if kind == "geonames":
            assert ident.isdigit()
            assert r["types"] == ["locality", "political"]
            assert r["icon"] == "/static/icons/locality.svg"
        else:
            assert kind == "airport"
            assert r["types"] == ["airport", "point_of_interest", "establishment"]
            assert r["icon"] == "/static/icons/airport.svg"
    assert kinds == {"geonames", "airport"}


async def test_us_city_vicinity_names_state_and_country(places: EmbeddedPlaces) -> None:
    payload = await places.nearby(*KIWI, 10_000, 20)
    bel_air = next(r for r in payload["results"] if r["name"] == "Bel Air")
    assert bel_air["vicinity"] == "California, United States"
    assert bel_air["plus_code"]["compound_code"].endswith(" California, United States")


@pytest.mark.parametrize("limit", [1, 5, 20])
async def test_limit_keeps_the_nearest(small: EmbeddedPlaces, limit: int) -> None:
    everything = await small.nearby(*KIWI, 50_000, 1_000)
    assert len(everything["results"]) > 20

    payload = await small.nearby(*KIWI, 50_000, limit)
    assert payload["results"] == everything["results"][:limit]


@pytest.mark.parametrize("radius_m", [1_500, 5_000, 12_345.5])
async def test_radius_is_exact(small: EmbeddedPlaces, radius_m: float) -> None:
    wide = await small.nearby(*KIWI, 50_000, 1_000)
    expected = [
        r["place_id"]
        for r, d in zip(wide["results"], distances(*KIWI, wide), strict=True)
        if d <= radius_m
    ]

    payload = await small.nearby(*KIWI, radius_m, 1_000)
    assert [r["place_id"] for r in payload["results"]] == expected
    assert all(d <= radius_m + 1e-6 for d in distances(*KIWI, payload))


async def test_mid_ocean_is_zero_results(small: EmbeddedPlaces) -> None:
    payload = await small.nearby(0.0, -140.0, 50_000, 20)
    assert payload == {"html_attributions": [ATTRIBUTION], "results": [], "status": "ZERO_RESULTS"}


async def test_nearby_without_start_loads_once() -> None:
    calls: list[str] = []

    def loader() -> PlaceIndex:
        calls.append(SMALL)
        return load_index(SMALL)

    provider = EmbeddedPlaces(SMALL, loader=loader)
    first = await provider.nearby(*KIWI, 10_000, 5)
    second = await provider.nearby(*KIWI, 10_000, 5)
    await provider.close()

    assert first["status"] == "OK" and first == second
    assert calls == [SMALL]


async def test_make_provider_without_preload_answers() -> None:
    provider = make_provider(PlacesConfig(gazetteer=SMALL, preload=False))
    provider.start()
    payload = await provider.nearby(*KIWI, 10_000, 3)
    await provider.close()
    assert payload["status"] == "OK" and len(payload["results"]) == 3


def gated_loader() -> tuple[Callable[[], PlaceIndex], threading.Event, threading.Event, list[int]]:
    """A loader that blocks until released: (loader, started, release, calls)."""
    started, release, calls = threading.Event(), threading.Event(), []

    def loader() -> PlaceIndex:
        calls.append(1)
        started.set()
        release.wait(timeout=30)
        return load_index(SMALL)

    return loader, started, release, calls


@pytest.mark.parametrize("call_start", [True, False])
async def test_concurrent_queries_during_load_all_answer(call_start: bool) -> None:
    loader, started, release, calls = gated_loader()
    provider = EmbeddedPlaces(SMALL, loader=loader)
    try:
        if call_start:
            provider.start()
        tasks = [asyncio.create_task(provider.nearby(*KIWI, 10_000, 5)) for _ in range(5)]
        assert await asyncio.to_thread(started.wait, 10)
        await asyncio.sleep(0)  # one loop turn: every task is now waiting for the load
        assert not any(t.done() for t in tasks)
        # A cancelled WHATSAT must not cancel the load that the others wait for.
        tasks[0].cancel()
    finally:
        release.set()
    answers = await asyncio.gather(*tasks[1:])
    await provider.close()

    assert tasks[0].cancelled()
    assert calls == [1]
    assert all(a["status"] == "OK" and a == answers[0] for a in answers)


async def test_failed_load_answers_unknown_error() -> None:
    calls: list[int] = []

    def loader() -> PlaceIndex:
        calls.append(1)
        raise FileNotFoundError("cities9.json is missing")

    provider = EmbeddedPlaces("cities9", loader=loader)
    provider.start()
    answers = [await provider.nearby(*KIWI, 10_000, 5) for _ in range(2)]
    await provider.close()

    for payload in answers:
        assert payload["status"] == "UNKNOWN_ERROR"
        assert payload["results"] == []
        assert "cities9.json is missing" in payload["error_message"]
    assert calls == [1]


def test_render_matches_googles_style() -> None:
    payload = {"html_attributions": [], "results": [], "status": "ZERO_RESULTS"}
    expected = (
        b'{\n   "html_attributions" : [],\n   "results" : [],\n   "status" : "ZERO_RESULTS"\n}'
    )
    assert render(payload) == expected


async def test_render_round_trips_a_real_answer(small: EmbeddedPlaces) -> None:
    payload = await small.nearby(-23.55, -46.63, 20_000, 20)  # São Paulo: non-ASCII names
    text = render(payload)

    assert json.loads(text) == payload
    assert b"\n\n" not in text
    assert not text.endswith(b"\n")
    assert "São Paulo".encode() in text  # UTF-8, not \u escapes
    assert b'\n   "results" : [\n      {\n         "geometry" : {' in text
    for line in text.split(b"\n")[1:-1]:
        indent = len(line) - len(line.lstrip(b" "))
        assert indent % 3 == 0 and indent > 0


def test_error_payload_shape() -> None:
    assert error_payload("UNKNOWN_ERROR", "boom") == {
        "html_attributions": [],
        "results": [],
        "status": "UNKNOWN_ERROR",
        "error_message": "boom",
    }


def test_the_machine_wide_cache_gives_the_same_index(tmp_path: Path) -> None:
    from backend.places import gazetteer

    built = load_index(SMALL)
    gazetteer._cache.pop(SMALL, None)  # force the cached path in this process
    try:
        cached = load_index(SMALL, tmp_path)
    finally:
        gazetteer._cache[SMALL] = built
    assert gazetteer.cache_file(SMALL, tmp_path).is_file()
    assert cached.place_ids == built.place_ids and cached.names == built.names
    assert cached.vicinities == built.vicinities
    assert (cached.lat == built.lat).all() and (cached.population == built.population).all()
    query = (34.068930, -118.445127, 50_000.0, 20)
    assert gazetteer.search(cached, *query) == gazetteer.search(built, *query)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=30,
)


@given(st.dictionaries(st.text(), json_values, max_size=5))
@settings(max_examples=300, deadline=None)
def test_render_writes_what_json_dumps_writes_in_googles_style(payload: dict[str, Any]) -> None:
    expected = json.dumps(payload, indent=3, separators=(",", " : "), ensure_ascii=False)
    assert render(payload) == re.sub("\n{2,}", "\n", expected).rstrip("\n").encode()


@given(st.dictionaries(st.text(), json_values, max_size=5), st.integers(0, 3))
@settings(max_examples=100, deadline=None)
def test_a_shared_result_renders_as_a_plain_one_at_every_depth(
    place: dict[str, Any], depth: int
) -> None:
    # The embedded provider's results keep their JSON text: it must be what the plain dict
    # would give, wherever it sits, however often it is rendered.
    from backend.places import SharedResult

    shared = SharedResult(place)
    value: dict[str, Any] = shared
    for _ in range(depth):
        value = {"results": [value, value], "status": "OK", "first": shared}
    expected = json.dumps(value, indent=3, separators=(",", " : "), ensure_ascii=False).encode()
    assert render(value) == expected
    assert render(value) == expected
