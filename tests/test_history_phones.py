"""Phone uploads keep every point: recorded payloads of OwnTracks, Traccar Client and Overland
(tests/payloads, sources in its README) against a real herd with history on. Each point of a
batch or queue reaches history with its attributes, late ones included, while the newest
record stays the newest; and each app's attributes come back out of history as GeoJSON and
GPX (the REST exports, read back by the gateway's import parser).
"""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from test_phone_corpus import CORPUS, attribute_problems, client_id, expected_attributes, load

from gateway.history import parse_import

pytestmark = pytest.mark.timeout(120)

# The recorded payloads are years old: keep a century of history.
HERD_EXTRA = "[history]\nenabled = true\nkeep_days = 36500\n"
ENDPOINTS = {"owntracks": "/pub", "traccar": "/", "overland": "/api/v1/phones/overland"}

Point = tuple[Decimal, float, float]


async def send(client: TestClient[Any, Any], sample: dict[str, Any], query: str = "") -> None:
    """A sample's request as its app sends it; the app's 200."""
    request = sample["request"]
    path = ENDPOINTS[sample["family"]] + (f"?{query}" if query else "")
    response = await client.request(
        request["method"], path, data=request["body"].encode(), headers=request["headers"]
    )
    assert response.status == 200, (sample["name"], await response.text())


def expected(samples: list[dict[str, Any]], cid: str | None) -> dict[Point, dict[str, Any]]:
    """The points the samples hold for client ``cid`` (None: all), each with its attributes
    in the gateway's units (tests/test_phone_corpus.py's reading of each sample's
    ``expect``)."""
    points = {}
    for sample in samples:
        for position in sample["expect"]["positions"]:
            if cid is not None and client_id(sample, position["device"]) != cid:
                continue
            key = (Decimal(str(position["time"])), position["lat"], position["lon"])
            points[key] = expected_attributes(sample["app"], position.get("attributes") or {})
    return points


async def history(client: TestClient[Any, Any], cid: str) -> list[dict[str, Any]]:
    path = f"/api/v1/clients/{quote(cid, safe='/')}/history"
    response = await client.get(path, params={"limit": "10000"})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["next_cursor"] is None
    points: list[dict[str, Any]] = body["points"]
    return points


def key_of(point: dict[str, Any]) -> Point:
    return Decimal(point["client_time"]), point["lat"], point["lon"]


def same_place(a: Point, b: Point) -> bool:
    return (
        a[0] == b[0]
        and math.isclose(a[1], b[1], abs_tol=1e-7)
        and math.isclose(a[2], b[2], abs_tol=1e-7)
    )


async def holds_every_point(
    client: TestClient[Any, Any], cid: str, want: dict[Point, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The client's history is exactly ``want``'s points, each with its attributes, and its
    newest record is the newest of them."""
    points = await history(client, cid)
    assert len(points) == len(want), (cid, [key_of(p) for p in points], list(want))
    for point in points:
        match = [k for k in want if same_place(k, key_of(point))]
        assert match, (cid, key_of(point), list(want))
        assert attribute_problems(want[match[0]], point["attributes"]) == [], point
    record = (await (await client.get(f"/api/v1/clients/{quote(cid, safe='/')}")).json())["record"]
    assert Decimal(record["client_time"]) == max(t for t, _, _ in want)
    return points


async def round_trips(client: TestClient[Any, Any], cid: str, points: list[dict[str, Any]]) -> None:
    """The client's history exported as GPX and as GeoJSON (GET .../history?format=) and read
    back by the import parser carries the same times, places and attributes."""
    shown = sorted((key_of(p), p["attributes"]) for p in points)
    path = f"/api/v1/clients/{quote(cid, safe='/')}/history"
    for kind in ("gpx", "geojson"):
        response = await client.get(path, params={"format": kind})
        assert response.status == 200, await response.text()
        document = await response.read()
        read = parse_import(
            document,
            response.headers["Content-Type"],
            now=time.time(),
            max_future=600,
            max_bytes=len(document),
        )
        back = sorted(((p.seconds, p.lat, p.lon), p.attributes) for p in read.points)
        assert len(back) == len(shown), (kind, back, shown)
        for (was, attributes), (got, again) in zip(shown, back, strict=True):
            assert same_place(was, got), (kind, was, got)
            assert again == attributes, (kind, was)


async def test_an_owntracks_queue_and_array_arrive_late_and_are_all_kept(
    client: TestClient[Any, Any],
) -> None:
    # A phone's recorded track (dawarich's .rec, ten messages; two pairs share a time, one
    # pair of them also its place) delivered newest first, as a queue flushed out of order.
    track = [
        load(CORPUS / f"owntracks/0{n}-android-rec-line{n - 40:02d}.json") for n in range(41, 51)
    ]
    for sample in reversed(track):
        await send(client, sample)
    pixel = "owntracks/pixel6/pixel99"
    await round_trips(client, pixel, await holds_every_point(client, pixel, expected(track, pixel)))
    # OwnTracks' array of two locations, older than the client's newest record.
    newer = load(CORPUS / "owntracks/007-android-valid-location-tid-xx.json")
    array = load(CORPUS / "owntracks/012-android-array-two-locations.json")
    await send(client, newer)
    await send(client, array)
    phone = "owntracks/owntracks/phone"
    await round_trips(
        client, phone, await holds_every_point(client, phone, expected([newer, array], phone))
    )


async def test_a_traccar_json_array_older_than_the_newest_is_kept(
    client: TestClient[Any, Any],
) -> None:
    # Traccar Client's generation B report of a fix, then a generation C array holding the
    # same device's fix 0.444 s older and a heartbeat without a fix.
    newest = load(CORPUS / "traccar/004-genb-moving-jakarta-battery079.json")
    batch = load(CORPUS / "traccar/034-genc-json-array-fix-and-nofix.json")
    await send(client, newest)
    await send(client, batch)
    points = await holds_every_point(client, "8737767034", expected([newest, batch], "8737767034"))
    await round_trips(client, "8737767034", points)
    # The heartbeat is no newer than the held record: dropped, and counted.
    metrics = await (await client.get("/metrics")).text()
    assert (
        'herd_gateway_phone_entries_skipped_total{app="traccar",reason="heartbeat_not_newer"} 1'
        in metrics
    )


async def test_an_overland_batch_keeps_every_point(client: TestClient[Any, Any]) -> None:
    # One batch of recorded Overland features, newest first: geojson-collector's (2026) and
    # dawarich's (2015, with an app event that has no geometry), their device_id emptied so
    # that ?device_id= names one client.
    samples = [
        load(CORPUS / "overland/004-geojson-collector-3d-coords-current-trip.json"),
        load(CORPUS / "overland/003-dawarich-point-plus-app-event-no-geometry.json"),
    ]
    features = [f for s in samples for f in json.loads(s["request"]["body"])["locations"]]
    for feature in features:
        feature["properties"]["device_id"] = ""
    request = {**samples[0]["request"], "body": json.dumps({"locations": features})}
    await send(client, {**samples[0], "request": request}, "device_id=van-3")
    want = expected(samples, None)
    assert len(want) == 2
    await round_trips(client, "van-3", await holds_every_point(client, "van-3", want))
