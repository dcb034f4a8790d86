"""Simplified trails, with no sockets: the tolerance is metres at any latitude, the ends and
the time order are kept, chunks join, the antimeridian is crossed, memory stays bounded, and
a trail that arrives in pages is simplified as it comes."""

from __future__ import annotations

import math
import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.history import CHUNK_POINTS, Simplifier, metres_per_pixel, simplify

pytestmark = pytest.mark.timeout(120)

METRES_PER_DEGREE = 2 * math.pi * 6_371_008.8 / 360


def shown(lat: float | None, lon: float | None, t: int) -> dict[str, Any]:
    return {"lat": lat, "lon": lon, "client_time": str(1_733_580_000 + t), "attributes": {}}


def east(lat: float, metres: float) -> float:
    """Degrees of longitude that make ``metres`` at ``lat``."""
    return metres / (METRES_PER_DEGREE * math.cos(math.radians(lat)))


def bump(lat: float, offset_m: float, n: int = 21) -> list[dict[str, Any]]:
    """Northward along a meridian, 100 m a point, the middle point ``offset_m`` to the east."""
    step = 100 / METRES_PER_DEGREE
    return [shown(lat + i * step, east(lat, offset_m) * (i == n // 2), i) for i in range(n)]


@pytest.mark.parametrize("lat", [0.0, 45.0, 70.0, -80.0])
def test_the_tolerance_is_metres_at_any_latitude(lat: float) -> None:
    trail = bump(lat, 30.0)
    assert list(simplify(trail, 29.0)) == [trail[0], trail[10], trail[-1]]
    assert list(simplify(trail, 31.0)) == [trail[0], trail[-1]]


def test_ends_order_and_objects_are_kept() -> None:
    rng = random.Random(7)
    trail = [shown(52 + i * 1e-4, 13 + rng.uniform(-1e-4, 1e-4), i) for i in range(500)]
    kept = list(simplify(trail, 5.0))
    assert kept[0] is trail[0] and kept[-1] is trail[-1]
    positions = [next(j for j, p in enumerate(trail) if p is k) for k in kept]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert 2 < len(kept) < len(trail)
    times = [p["client_time"] for p in kept]
    assert times == sorted(times)


def test_chunks_share_their_boundary_point() -> None:
    trail = [shown(10 + i * 1e-5, 20.0, i) for i in range(1000)]  # a straight line
    kept = list(simplify(trail, 1.0, chunk=100))
    # Each chunk of 100 keeps its two ends; consecutive chunks share one: 0, 99, 198, ...
    assert kept == [trail[i] for i in range(0, 1000, 99)] + [trail[-1]]
    assert list(simplify(trail, 1.0)) == [trail[0], trail[-1]]  # one chunk


def test_a_trail_across_the_antimeridian_is_not_a_line_around_the_world() -> None:
    lons = [179.97, 179.98, 179.99, -180.0, -179.99, -179.98]
    trail = [shown(0.0, lon, i) for i, lon in enumerate(lons)]
    assert list(simplify(trail, 1.0)) == [trail[0], trail[-1]]


def test_points_without_a_location_are_left_out() -> None:
    trail = [shown(1.0, 1.0, 0), shown(None, None, 1), shown(float("nan"), 1.0, 2)]
    trail += [shown(1.0, 1.001, 3), {"lat": True, "lon": 1.0}, "not a point"]  # type: ignore[list-item]
    assert list(simplify(trail, 0.0)) == [trail[0], trail[3]]
    assert list(simplify([], 10.0)) == []
    assert list(simplify(trail[:1], 10.0)) == trail[:1]


def test_any_point_type_with_an_accessor() -> None:
    trail = [(0.0, 0.0, "a"), (0.0, 1e-6, "b"), (0.0, 0.01, "c")]
    kept = simplify(trail, 5.0, lat_lon=lambda p: (p[0], p[1]))
    assert [p[2] for p in kept] == ["a", "c"]


@pytest.mark.parametrize("metres", [-1.0, float("nan"), float("inf")])
def test_a_bad_tolerance_is_refused(metres: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        list(simplify([shown(0, 0, 0)], metres))


def test_huge_inputs_stay_in_bounded_memory() -> None:
    def points(n: int) -> Iterator[tuple[float, float]]:
        for i in range(n):
            yield (math.sin(i / 50) * 0.01, i * 1e-4)

    n = 200_000
    tracemalloc.start()
    try:
        kept = sum(1 for _ in simplify(points(n), 10.0, lat_lon=lambda p: p))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 2 < kept < n
    # One chunk of CHUNK_POINTS tuples and their coordinates, not 200,000 of them.
    assert peak < CHUNK_POINTS * 400, f"peak {peak} bytes"


def test_metres_per_pixel() -> None:
    assert metres_per_pixel(0, 0) == pytest.approx(156_543.03, rel=1e-6)
    assert metres_per_pixel(1, 0) == pytest.approx(metres_per_pixel(0, 0) / 2)
    assert metres_per_pixel(0, 60) == pytest.approx(metres_per_pixel(0, 0) / 2)
    assert metres_per_pixel(18, 48.1) == pytest.approx(0.398, abs=0.001)
    assert metres_per_pixel(0, 89.9) == metres_per_pixel(0, 85.05112878)  # the map's edge
    assert metres_per_pixel(0, 0, tile_size=512) == pytest.approx(78_271.52, rel=1e-6)


@pytest.mark.parametrize(
    ("zoom", "lat"), [(-1, 0.0), (31, 0.0), (float("nan"), 0.0), (3, float("inf"))]
)
def test_metres_per_pixel_refuses_nonsense(zoom: float, lat: float) -> None:
    with pytest.raises(ValueError):
        metres_per_pixel(zoom, lat)


@pytest.mark.parametrize("page", [1, 7, 100, 1000])
def test_a_trail_in_pages_keeps_its_ends_and_each_bend_once(page: int) -> None:
    # A straight line north with a bend every 100 points: the bends, the ends, nothing else
    # (and, for pages, at most the last point of a page, where the next one goes on from).
    trail = [shown(10 + i * 1e-4, 20.0 + east(10, 50) * (i % 100 == 50), i) for i in range(1000)]
    bends = [trail[i] for i in range(50, 1000, 100)]
    simplifier = Simplifier(5.0)
    kept: list[dict[str, Any]] = []
    for start in range(0, len(trail), page):
        kept.extend(simplifier.add(trail[start : start + page]))
    kept.extend(simplifier.end())
    assert simplifier.end() == []
    assert kept[0] is trail[0] and kept[-1] is trail[-1]
    assert all(bend in kept for bend in bends)
    assert [p["client_time"] for p in kept] == sorted(p["client_time"] for p in kept)
    assert len({id(p) for p in kept}) == len(kept)  # each once
    assert len(kept) <= 2 + 3 * len(bends) + len(trail) // page


def test_pages_without_a_usable_point_keep_the_trail_going() -> None:
    simplifier = Simplifier(1.0)
    assert simplifier.add([]) == []
    assert simplifier.add([shown(None, None, 0)]) == []
    assert simplifier.add([shown(1.0, 1.0, 1)]) == []  # held: the next page may go on from it
    assert simplifier.add([shown(None, None, 2)]) == []
    assert [p["client_time"] for p in simplifier.end()] == [shown(1.0, 1.0, 1)["client_time"]]
    with pytest.raises(ValueError):
        Simplifier(-1.0)
