"""Which places the map labels in a view (gateway/labels.py), socket-free: bounded, most
important first, one per cell, more and smaller places as the zoom grows, airports only close
up, views across the antimeridian or wider than the world, and the view's parameters refused
with 400 naming the one at fault. The selection is checked against a plain reference written
here with math alone, over random places and views."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from gateway import labels, rules
from gateway.errors import ApiError
from gateway.labels import (
    AIRPORT_MIN_ZOOM,
    AIRPORT_RANK,
    LABEL_CELL,
    MAX_LABELS,
    Place,
    View,
    answer,
    build_index,
    min_population,
    parse_view,
    select,
)
from gateway.openapi import spec_at

UCLA = (34.06893, -118.445127)


def city(name: str, lat: float, lon: float, population: int) -> Place:
    return Place(f"geonames:{name}", name, lat, lon, population, False)


def airport(name: str, lat: float, lon: float) -> Place:
    return Place(f"airport:{name}", name, lat, lon, 0, True)


def names(places: list[Place], view: View) -> list[str]:
    index = build_index(places)
    return [index.names[row] for row in select(index, view)]


# -- a reference: the rule of gateway/labels.py's docstring, one place at a time ---------------


def world_pixels(lat: float, lon: float, zoom: float) -> tuple[float, float]:
    """Web Mercator pixels of 256-pixel tiles, as Leaflet projects (EPSG:3857)."""
    lat = max(-rules.MERCATOR_MAX_LAT, min(rules.MERCATOR_MAX_LAT, lat))
    world = 256 * 2**zoom
    x = (lon + 180) / 360 * world
    y = 1 - math.log(math.tan(math.radians(lat)) + 1 / math.cos(math.radians(lat))) / math.pi
    return x, y / 2 * world


def reference(places: list[Place], view: View) -> list[str]:
    world = 256 * 2**view.zoom
    cx, cy = world_pixels(view.lat, view.lon, view.zoom)
    ranked = sorted(places, key=lambda p: (-(AIRPORT_RANK if p.airport else p.population), p.id))
    chosen: dict[tuple[int, int], str] = {}
    for place in ranked:
        rank = AIRPORT_RANK if place.airport else place.population
        if rank < min_population(view.zoom) or (place.airport and view.zoom < AIRPORT_MIN_ZOOM):
            continue
        x, y = world_pixels(place.lat, place.lon, view.zoom)
        # The copy of the place nearest the centre, round the world either way.
        x = min((x + k * world for k in (-1, 0, 1)), key=lambda copy: abs(copy - cx))
        if abs(x - cx) > view.width / 2 or abs(y - cy) > view.height / 2:
            continue
        cell = (math.floor(x / LABEL_CELL[0]), math.floor(y / LABEL_CELL[1]))
        chosen.setdefault(cell, place.name)
    return list(chosen.values())[:MAX_LABELS]


def random_places(
    rng: random.Random, count: int, around: tuple[float, float], spread: float
) -> list[Place]:
    lat0, lon0 = around
    places = []
    for i in range(count):
        lat = max(-89.0, min(89.0, lat0 + rng.uniform(-spread, spread)))
        lon = (lon0 + rng.uniform(-spread, spread) + 180) % 360 - 180
        if rng.random() < 0.05:
            places.append(airport(f"a{i}", lat, lon))
        else:
            places.append(city(f"c{i}", lat, lon, int(10 ** rng.uniform(2, 7))))
    return places


@pytest.mark.parametrize("trial", range(40))
def test_the_selection_is_the_documented_rule(rng: random.Random, trial: int) -> None:
    # Places scattered around a centre at every scale, and views of every zoom and size
    # around it: the answer is the reference's, place for place and in its order.
    lat0, lon0 = rng.uniform(-80, 80), rng.uniform(-180, 180)
    if trial % 4 == 0:
        lon0 = rng.choice([-179.9, 179.9])  # across the antimeridian
    zoom = rng.choice([rng.randint(0, rules.MAX_ZOOM), rng.uniform(0, rules.MAX_ZOOM)])
    spread = min(60.0, 2000 / 2**zoom)  # a few views' worth around the centre
    places = random_places(rng, rng.randint(1, 3000), (lat0, lon0), spread)
    view = View(lat0, lon0, zoom, rng.randint(1, 3000), rng.randint(1, 2000))
    # Pixel-boundary ties aside (a place exactly on an edge, in floating point), equal.
    assert names(places, view) == reference(places, view), view


def test_a_view_is_bounded_and_biggest_first() -> None:
    # A dense grid of towns (a metropolis of 40,000 places): never more than MAX_LABELS.
    places = [
        city(f"t{i}-{j}", UCLA[0] + i * 0.002, UCLA[1] + j * 0.002, 1000 + 7 * i + j)
        for i in range(-100, 100)
        for j in range(-100, 100)
    ]
    index = build_index(places)
    for zoom in (11, 13, 15):
        rows = select(index, View(*UCLA, zoom, 1920, 1080))
        assert len(rows) == MAX_LABELS
        ranks = [int(index.population[r]) for r in rows]
        assert ranks == sorted(ranks, reverse=True)
    # The biggest place in the view comes first.
    capital = city("Capital", UCLA[0] + 0.01, UCLA[1] - 0.01, 5_000_000)
    assert names([*places, capital], View(*UCLA, 13, 1920, 1080))[0] == "Capital"


def test_each_cell_keeps_its_biggest_place() -> None:
    # Two places a few pixels apart: only the bigger is labelled; far apart, both.
    big, small = city("Big", 34.0, -118.0, 50_000), city("Small", 34.0, -117.9999, 40_000)
    view = View(34.0, -118.0, 13, 1280, 800)
    assert names([small, big], view) == ["Big"]
    far = city("Far", 34.02, -117.96, 40_000)
    assert names([small, big, far], view) == ["Big", "Far"]


def test_smaller_places_appear_as_the_zoom_grows() -> None:
    village = city("Village", 34.1, -118.4, 2_500)
    town = city("Town", 34.3, -118.2, 30_000)
    metropolis = city("Metropolis", 34.05, -118.25, 3_800_000)
    places = [village, town, metropolis]
    at = {zoom: names(places, View(34.1, -118.4, zoom, 1920, 1080)) for zoom in range(20)}
    assert at[2] == ["Metropolis"]
    assert "Town" not in at[6] and "Town" in at[7]  # the floor: 50,000 at 6, 20,000 at 7
    assert "Village" not in at[9] and "Village" in at[11]
    # Close up the metropolis's centre is out of view, and the village alone is left.
    assert at[17] == ["Village"]
    floors = [min_population(zoom) for zoom in range(rules.MAX_ZOOM + 1)]
    assert floors == sorted(floors, reverse=True) and floors[-1] == 0
    assert min_population(10.99) == min_population(10)


def test_airports_are_labelled_only_close_up() -> None:
    lax = airport("Los Angeles International Airport", 33.9425, -118.4081)
    suburb = city("Westchester", 33.9597, -118.4018, 2_000)  # smaller: the airport wins a cell
    view = View(33.9425, -118.4081, AIRPORT_MIN_ZOOM - 1, 1280, 800)
    assert names([lax, suburb], view) == []
    close = View(33.9425, -118.4081, AIRPORT_MIN_ZOOM + 3, 1280, 800)
    assert names([lax, suburb], close) == ["Los Angeles International Airport", "Westchester"]


@pytest.mark.parametrize("centre", [180.0, -180.0, 179.99, -179.99])
def test_a_view_across_the_antimeridian_shows_both_sides(centre: float) -> None:
    # Fiji's Taveuni lies on the antimeridian: places either side of it, and one far away.
    east, west = city("East", -16.8, 179.98, 9_000), city("West", -16.8, -179.97, 8_000)
    away = city("Away", -16.8, 170.0, 1_000_000)
    assert names([east, west, away], View(-16.8, centre, 12, 1280, 800)) == ["East", "West"]


def test_a_view_wider_than_the_world_shows_each_place_once() -> None:
    # At zoom 3 the world is 2,048 px wide: 30° apart, each city has a cell of its own.
    cities = [city(f"c{lon}", 10.0, float(lon), 2_000_000) for lon in range(-180, 180, 30)]
    found = names(cities, View(10.0, 0.0, 3, rules.MAX_VIEW_PX, rules.MAX_VIEW_PX))
    assert sorted(found) == sorted(p.name for p in cities)


def test_places_that_cannot_be_placed_are_left_out() -> None:
    nowhere = [
        city("NaN", math.nan, 0.5, 9_000_000),
        city("Null Island", 0.0, 0.0, 9_000_000),  # GeoNames' "unknown"
        city("Off the globe", 91.0, 0.5, 9_000_000),
        city("", 1.0, 1.0, 9_000_000),
    ]
    real = city("Real", 1.0, 1.0, 10)
    index = build_index([*nowhere, real])
    assert list(index.names) == ["Real"]
    # A pole is at the map's edge: a view there is answered, not refused.
    polar = city("Polar", 89.9, 10.0, 5_000_000)
    assert names([polar], View(90.0, 10.0, 3, 1280, 800)) == ["Polar"]


def test_the_answer_holds_each_place_and_its_sources() -> None:
    index = build_index(
        [city("Bel Air", 34.08334, -118.44869, 8253), airport("SMO", 34.0158, -118.4513)]
    )
    body = answer(index, View(*UCLA, 13, 1280, 800))
    assert body["attribution"] == labels.ATTRIBUTION and "GeoNames" in body["attribution"]
    assert body["places"] == [
        {
            "id": "airport:SMO",
            "name": "SMO",
            "lat": 34.0158,
            "lon": -118.4513,
            "kind": "airport",
            "population": None,
        },
        {
            "id": "geonames:Bel Air",
            "name": "Bel Air",
            "lat": 34.08334,
            "lon": -118.44869,
            "kind": "locality",
            "population": 8253,
        },
    ]


GOOD = {"lat": "34.07", "lon": "-118.44", "zoom": "13", "width": "1280", "height": "800"}


def test_a_view_is_read_from_its_query() -> None:
    assert parse_view(GOOD) == View(34.07, -118.44, 13.0, 1280, 800)
    assert parse_view(GOOD | {"zoom": "12.5", "lat": "-90"}) == View(
        -90.0, -118.44, 12.5, 1280, 800
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lat": None}, "lat is required"),
        ({"lat": "91"}, "lat must be a number in [-90, 90]"),
        ({"lon": "-180.5"}, "lon must be a number in [-180, 180]"),
        ({"lon": "west"}, "lon is not a number"),
        ({"lon": "nan"}, "lon is not a number"),
        ({"zoom": None}, "zoom is required"),
        ({"zoom": "20"}, "zoom must be a number in [0, 19]"),
        ({"zoom": "1e999999"}, "zoom must be a number in [0, 19]"),
        ({"width": "0"}, "width must be in 1..8192"),
        ({"height": "8193"}, "height must be in 1..8192"),
        ({"height": "1.5"}, "height must be a whole number"),
        ({"width": None}, "width is required"),
    ],
)
def test_a_bad_view_is_refused_naming_the_parameter(change: dict[str, Any], message: str) -> None:
    query = {k: v for k, v in (GOOD | change).items() if v is not None}
    with pytest.raises(ApiError) as refused:
        parse_view(query)
    assert refused.value.status == 400
    assert refused.value.message == message


def test_the_documented_view_is_the_rule() -> None:
    # Each parameter's bounds in the OpenAPI document are where parse_view starts refusing.
    operation = spec_at(1_750_000_000, 600)["paths"]["/api/v1/places"]["get"]
    documented = {p["name"]: p for p in operation["parameters"]}
    assert set(documented) == set(GOOD) and all(p["required"] for p in documented.values())
    for name, parameter in documented.items():
        schema = parameter["schema"]
        step = 1 if schema["type"] == "integer" else 1e-9
        for value, ok in (
            (schema["minimum"], True),
            (schema["maximum"], True),
            (schema["minimum"] - step, False),
            (schema["maximum"] + step, False),
        ):
            query = GOOD | {name: repr(value)}
            try:
                parse_view(query)
            except ApiError:
                assert not ok, query
            else:
                assert ok, query
    assert (
        operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"][
            "places"
        ]["maxItems"]
        == MAX_LABELS
    )
