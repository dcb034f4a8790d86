"""History read over REST on a real herd (history on): who was in an area, the map's trails,
and bad parameters refused with 400 naming them."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import Herd, ask

from backend.protocol import IAmAt
from gateway import rules

pytestmark = pytest.mark.timeout(120)

HERD_EXTRA = "[history]\nenabled = true\n"  # (off by default)
NOW = time.time()


async def post(client: Any, client_id: str, lat: float, lon: float, t: float, **attrs: Any) -> None:
    body = {"client_id": client_id, "lat": lat, "lon": lon, "time": t, "attributes": attrs}
    response = await client.post("/api/v1/locations", json=body)
    assert response.status == 200, await response.text()


async def get(client: Any, path: str, **query: str) -> Any:
    response = await client.get(path, params=query)
    assert response.status == 200, await response.text()
    return await response.json()


def iamats(herd: Herd, lines: list[bytes]) -> None:
    """IAMATs to Riley in one write on one connection; each answered AT."""
    replies = ask(herd.ports["Riley"], b"".join(lines), timeout=60).splitlines()
    assert len(replies) == len(lines) and all(r.startswith(b"AT ") for r in replies)


# -- who was in an area -------------------------------------------------------------------


async def test_area_history_finds_the_clients_in_the_box_with_their_points_there(
    herd: Herd, client: Any
) -> None:
    # A box in the Pacific no other test uses: two clients in it, one passing through.
    t = NOW - 600
    await post(client, "area-in-a", -30.5, -140.5, t)
    await post(client, "area-in-a", -30.6, -140.6, t + 1)
    await post(client, "area-through", -29.0, -140.5, t + 2)  # north of the box
    await post(client, "area-through", -30.5, -140.2, t + 3)  # in it
    await post(client, "area-through", -32.0, -140.5, t + 4)  # south of it
    await post(client, "area-out", -35.0, -145.0, t)
    found = await get(client, "/api/v1/history", bbox="-141,-31,-140,-30", since=f"{t - 1}")
    assert [c["client_id"] for c in found["clients"]] == ["area-in-a", "area-through"]
    a, through = found["clients"]
    assert [(p["lat"], p["lon"]) for p in a["points"]] == [(-30.5, -140.5), (-30.6, -140.6)]
    assert [(p["lat"], p["lon"]) for p in through["points"]] == [(-30.5, -140.2)]
    assert found["truncated"] is False and found["bbox"] == [-141, -31, -140, -30]
    # A window that ends before the points holds none of them.
    before = await get(client, "/api/v1/history", bbox="-141,-31,-140,-30", until=f"{t - 1}")
    assert before["clients"] == []
    # limit counts points: the answer is cut, and says so.
    cut = await get(client, "/api/v1/history", bbox="-141,-31,-140,-30", limit="2")
    assert [len(c["points"]) for c in cut["clients"]] == [2] and cut["truncated"] is True


async def test_a_box_across_the_antimeridian_is_read_as_its_two_halves(
    herd: Herd, client: Any
) -> None:
    t = NOW - 500
    await post(client, "fiji-boat", -17.5, 179.5, t)
    await post(client, "samoa-boat", -17.5, -179.5, t)
    await post(client, "greenwich-boat", -17.5, 0.5, t)
    found = await get(client, "/api/v1/history", bbox="179,-18,-179,-17", since=f"{t - 1}")
    assert [c["client_id"] for c in found["clients"]] == ["fiji-boat", "samoa-boat"]
    trails = await get(client, "/api/v1/trails", bbox="179,-18,-179,-17")
    assert [tr["client_id"] for tr in trails["trails"]] == ["fiji-boat", "samoa-boat"]


# -- the map's trails -----------------------------------------------------------------------


async def test_trails_are_the_whole_simplified_trails_of_the_clients_in_the_box(
    herd: Herd, client: Any
) -> None:
    # trail-van drives north through the box; trail-far stays outside it; trail-old was in
    # it two days ago, before the default window of [gateway] trail_hours (24).
    start = NOW - 3000
    for i in range(50):
        # A straight line north with a 1 m zigzag: simplified at 20 m, only its ends remain.
        await post(client, "trail-van", 10.0 + i * 0.001, 20.0 + (i % 2) * 1e-5, start + i)
    await post(client, "trail-far", 12.0, 22.0, start)
    await post(client, "trail-old", 10.02, 20.0, NOW - 2 * 86_400)
    # A late point (older than the van's newest, sent last) goes where it belongs in time.
    await post(client, "trail-van", 9.999, 20.0, start - 1)
    box = "19.9,10.01,20.1,10.03"  # only the middle of the van's trail
    body = await get(client, "/api/v1/trails", bbox=box)
    assert NOW - 86_400 - 5 < body["since"] < body["until"] < time.time() + 1
    assert body["until"] - body["since"] == pytest.approx(86_400)
    assert [t["client_id"] for t in body["trails"]] == ["trail-van"]
    points = body["trails"][0]["points"]
    assert len(points) == 51  # the whole trail, not only its points in the box
    assert points[0] == [9.999, 20.0, pytest.approx(start - 1)]
    assert [p[2] for p in points] == sorted(p[2] for p in points)
    simple = await get(client, "/api/v1/trails", bbox=box, simplify="20")
    assert [p[:2] for p in simple["trails"][0]["points"]] == [[9.999, 20.0], points[-1][:2]]
    # A window that reaches back two days finds the old one too.
    older = await get(client, "/api/v1/trails", bbox=box, since=f"{NOW - 3 * 86_400:.3f}")
    assert [t["client_id"] for t in older["trails"]] == ["trail-old", "trail-van"]
    assert older["truncated"] is False


async def test_trails_say_truncated_past_the_client_limit(herd: Herd, client: Any) -> None:
    n = rules.MAX_TRAIL_CLIENTS + 1
    t = NOW - 400
    iamats(
        herd,
        [
            IAmAt(f"fleet-{i:04d}", f"+45.{i:04d}+170.{i:04d}", f"{t + i / 1000:.3f}").encode()
            for i in range(n)
        ],
    )
    body = await get(client, "/api/v1/trails", bbox="169.5,44.5,170.5,45.5")
    assert body["truncated"] is True
    ids = [t["client_id"] for t in body["trails"]]
    assert ids == [f"fleet-{i:04d}" for i in range(rules.MAX_TRAIL_CLIENTS)]
    assert all(len(t["points"]) == 1 for t in body["trails"])
    # A box holding fewer is whole.
    some = await get(client, "/api/v1/trails", bbox="169.5,44.5,170.05,45.05")
    assert some["truncated"] is False and len(some["trails"]) == 501  # fleet-0000 to -0500


# -- bad parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "named"),
    [
        ("/api/v1/trails", {"bbox": "1,2,3"}, "bbox"),
        ("/api/v1/trails", {"bbox": "181,0,182,1"}, "bbox"),
        ("/api/v1/trails", {"bbox": "0,-91,1,1"}, "bbox"),
        ("/api/v1/trails", {"bbox": "1e1,0,20,1"}, "bbox"),
        ("/api/v1/trails", {"bbox": ""}, "bbox"),
        ("/api/v1/trails", {"simplify": "0"}, "simplify"),
        ("/api/v1/trails", {"simplify": "-5"}, "simplify"),
        ("/api/v1/trails", {"simplify": "far"}, "simplify"),
        ("/api/v1/trails", {"simplify": "1e7"}, "simplify"),
        ("/api/v1/trails", {"since": "yesterday"}, "since"),
        ("/api/v1/trails", {"until": "-1"}, "until"),
        ("/api/v1/history", {}, "bbox"),
        ("/api/v1/history", {"bbox": "0,0,1,1", "limit": "0"}, "limit"),
        ("/api/v1/history", {"bbox": "0,0,1,1", "limit": "10001"}, "limit"),
        ("/api/v1/history", {"bbox": "0,0,1,1", "since": "1e9"}, "since"),
        ("/api/v1/clients/kiwi/history", {"simplify": "0"}, "simplify"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    client: Any, path: str, query: dict[str, str], named: str
) -> None:
    response = await client.get(path, params=query)
    assert response.status == 400, await response.text()
    message = (await response.json())["error"]["message"]
    assert message.startswith(named), message


async def test_empty_windows_and_boxes_are_empty_answers(client: Any) -> None:
    # As an empty window is an empty answer, so is a box whose south is north of its north.
    for path, query in (
        ("/api/v1/trails", {"since": "10", "until": "5"}),
        ("/api/v1/trails", {"bbox": "0,10,1,5"}),
        ("/api/v1/history", {"bbox": "0,10,1,5"}),
        ("/api/v1/history", {"bbox": "0,0,1,1", "since": "10", "until": "5"}),
    ):
        body = await get(client, path, **query)
        assert body.get("trails", body.get("clients")) == [], (path, query)
