"""History read over REST on a real herd (history on): a client's history exported as GPX
(read back by gpxpy) and GeoJSON, simplified trails, who was in an area, the map's trails,
and bad parameters refused with 400 naming them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import gpxpy
import pytest
from helpers import Herd, ask

from backend.protocol import IAmAt
from gateway import rules
from gateway.history import GPXTPX_NAMESPACE, HERD_NAMESPACE

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


# -- exports ------------------------------------------------------------------------------

VAN = "van/7"  # a "/" in the ID: the download is named van_7.gpx
VAN_START = int(NOW) - 3600 + 0.25


def van_attributes(i: int) -> dict[str, Any]:
    return {
        "altitude": 500.0 + i,
        "speed": 3.25,
        "heading": float(i * 10 % 360),
        "battery": 80.0,
        "charging": i % 2 == 0,
        "motion": ["driving"],
    }


@pytest.fixture(scope="module")
def van_points() -> list[tuple[float, float, float]]:
    """The van's points as (lat, lon, time): sent out of order (the last two are late)."""
    points = [(48.0 + i * 1e-3, 11.0 + i * 1e-3, VAN_START + i) for i in range(30)]
    return points[2:] + points[:2]


async def send_van(client: Any, points: list[tuple[float, float, float]]) -> None:
    body = await get(client, f"/api/v1/clients/{VAN}/history")
    if body["points"]:
        return  # sent by an earlier test of the module
    for lat, lon, t in points:
        await post(client, VAN, lat, lon, t, **van_attributes(round(t - VAN_START)))


def extension(point: Any, namespace: str, name: str) -> str | None:
    """The text of element {namespace}name among a gpxpy point's extensions, at any depth."""
    for element in point.extensions:
        for found in element.iter(f"{{{namespace}}}{name}"):
            return str(found.text)
    return None


async def test_a_gpx_export_reads_back_with_gpxpy_as_the_same_points(
    herd: Herd, client: Any, van_points: list[tuple[float, float, float]]
) -> None:
    await send_van(client, van_points)
    shown = (await get(client, f"/api/v1/clients/{VAN}/history"))["points"]
    response = await client.get(f"/api/v1/clients/{VAN}/history", params={"format": "gpx"})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/gpx+xml"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="van_7.gpx"'), disposition
    gpx = gpxpy.parse(await response.text())
    [track] = gpx.tracks
    assert track.name == VAN
    [segment] = track.segments
    assert len(segment.points) == len(shown) == len(van_points)
    for point, record in zip(segment.points, shown, strict=True):
        i = round(record["time"] - VAN_START)
        assert (point.latitude, point.longitude) == (record["lat"], record["lon"])
        assert point.time == datetime.fromtimestamp(VAN_START + i, UTC)
        assert point.elevation == 500.0 + i
        assert float(extension(point, GPXTPX_NAMESPACE, "speed") or "nan") == 3.25
        assert float(extension(point, GPXTPX_NAMESPACE, "course") or "nan") == (i * 10 % 360)
        assert extension(point, HERD_NAMESPACE, "battery") == "80.0"
        assert extension(point, HERD_NAMESPACE, "charging") == str(i % 2 == 0).lower()
        assert extension(point, HERD_NAMESPACE, "motion") == "driving"
    # The late points are where they belong in time.
    assert [p.time for p in segment.points] == sorted(p.time for p in segment.points)
    # A window: only its points; limit and cursor page JSON only (an export is the window).
    since, until = f"{VAN_START + 10}", f"{VAN_START + 19}"
    response = await client.get(
        f"/api/v1/clients/{VAN}/history",
        params={"format": "gpx", "since": since, "until": until, "limit": "3"},
    )
    assert len(gpxpy.parse(await response.text()).tracks[0].segments[0].points) == 10
    # A client with no history: an empty track, still a GPX document.
    response = await client.get("/api/v1/clients/nobody/history", params={"format": "gpx"})
    assert response.status == 200
    assert gpxpy.parse(await response.text()).get_track_points_no() == 0


async def test_a_geojson_export_is_one_linestring_then_the_points(
    herd: Herd, client: Any, van_points: list[tuple[float, float, float]]
) -> None:
    await send_van(client, van_points)
    shown = (await get(client, f"/api/v1/clients/{VAN}/history"))["points"]
    response = await client.get(f"/api/v1/clients/{VAN}/history", params={"format": "geojson"})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/geo+json"
    assert 'filename="van_7.geojson"' in response.headers["Content-Disposition"]
    document = json.loads(await response.read())
    assert document["type"] == "FeatureCollection" and document["client_id"] == VAN
    trail, *features = document["features"]
    assert trail["geometry"]["type"] == "LineString"
    assert trail["properties"] == {"client_id": VAN, "herd": "trail"}
    assert trail["geometry"]["coordinates"] == [[p["lon"], p["lat"]] for p in shown]
    assert len(features) == len(shown) and document["skipped"] == 0
    for feature, record in zip(features, shown, strict=True):
        assert feature["geometry"] == {
            "type": "Point",
            "coordinates": [record["lon"], record["lat"]],
        }
        properties = feature["properties"]
        assert properties["client_time"] == record["client_time"]
        assert properties["server"] == record["server"]
        expected = datetime.fromtimestamp(record["time"], UTC).isoformat()
        assert properties["time"] == expected.replace("+00:00", "Z").replace(".250000", ".25")
        assert {k: properties[k] for k in record["attributes"]} == record["attributes"]


async def test_simplify_reduces_a_zigzag_and_keeps_its_ends_in_every_format(
    herd: Herd, client: Any
) -> None:
    # North along a meridian with a 1 m zigzag, and one detour of about 1 km east.
    t = NOW - 2000
    zigzag = [(50.0 + i * 1e-3, 8.0 + (i % 2) * 1e-5) for i in range(40)]
    zigzag[20] = (zigzag[20][0], 8.015)
    for i, (lat, lon) in enumerate(zigzag):
        await post(client, "zig", lat, lon, t + i)
    path = "/api/v1/clients/zig/history"
    every = (await get(client, path))["points"]
    assert len(every) == 40
    kept = (await get(client, path, simplify="10"))["points"]
    where = [(p["lat"], p["lon"]) for p in kept]
    assert where[0] == zigzag[0] and where[-1] == zigzag[-1] and zigzag[20] in where
    assert len(where) <= 5, where  # the ends, the detour and its two corners
    assert kept == [p for p in every if (p["lat"], p["lon"]) in where]  # the same records
    response = await client.get(path, params={"simplify": "10", "format": "gpx"})
    gpx = gpxpy.parse(await response.text())
    assert [(p.latitude, p.longitude) for p in gpx.walk(only_points=True)] == where
    response = await client.get(path, params={"simplify": "10", "format": "geojson"})
    trail, *features = json.loads(await response.read())["features"]
    assert trail["geometry"]["coordinates"] == [[lon, lat] for lat, lon in where]
    assert [f["geometry"]["coordinates"] for f in features] == [[lon, lat] for lat, lon in where]
    # The JSON page's simplification leaves its cursor as it was: the next page follows it.
    first = await get(client, path, simplify="10", limit="20")
    rest = await get(client, path, simplify="10", limit="20", cursor=first["next_cursor"])
    assert len(first["points"]) + len(rest["points"]) < 40
    assert rest["points"][-1]["lat"] == zigzag[-1][0]


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
        ("/api/v1/clients/kiwi/history", {"format": "kml"}, "format"),
        ("/api/v1/clients/kiwi/history", {"format": "gpx", "cursor": "x"}, "cursor"),
        ("/api/v1/clients/kiwi/history", {"format": "gpx", "until": "soon"}, "until"),
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
        # Corners a float would write as 1e-05, which the herd's AREA does not read.
        ("/api/v1/history", {"bbox": "0.00001,0.00001,0.00002,0.00002"}),
        ("/api/v1/trails", {"bbox": "0.00001,0.00001,0.00002,0.00002"}),
    ):
        body = await get(client, path, **query)
        assert body.get("trails", body.get("clients")) == [], (path, query)
