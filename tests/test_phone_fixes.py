"""The phone-app fixes one by one: names with spaces, batches with unusable entries,
heartbeats without a fix, Overland's default identity, OsmAnd without an ID, OwnTracks without
tst, encrypted OwnTracks, GPSLogger's template (docs/gateway.md, "Phone apps")."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import phones

pytestmark = pytest.mark.timeout(60)

CORPUS = Path(__file__).parent / "payloads"
NOW_NS = 1_800_000_000 * 10**9
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def sample_body(name: str) -> str:
    body: str = json.loads((CORPUS / name).read_text())["request"]["body"]
    return body


# -- pure --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "client_id"),
    [
        ("iPhone 12 Pro", "iPhone%2012%20Pro"),
        ("a%20b", "a%2520b"),  # "%" is encoded too, so it never collides with "a b"
        ("tab\there", "tab%09here"),
        ("plain", "plain"),
    ],
)
def test_device_names_map_one_to_one(name: str, client_id: str) -> None:
    assert phones.device_client_id(name) == client_id


def test_owntracks_ios_device_name_with_spaces_is_mapped_and_kept() -> None:
    body = b'{"_type":"location","lat":1,"lon":2,"tst":3}'
    headers = {"X-Limit-U": "Jane", "X-Limit-D": "iPhone 12 Pro"}
    [report] = phones.owntracks(body, headers, {}, NOW_NS)
    assert isinstance(report, phones.Report)
    assert report.client_id == "owntracks/jane/iphone%2012%20pro"
    assert report.attributes == {"name": "iPhone 12 Pro"}


def test_traccar_and_overland_ids_are_mapped_alike() -> None:
    [r] = phones.traccar({"id": "my phone", "lat": "1", "lon": "2"}, "", b"", NOW_NS)
    assert isinstance(r, phones.Report)
    assert (r.client_id, r.attributes) == ("my%20phone", {"name": "my phone"})
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [2, 1]},
        "properties": {"timestamp": 3, "device_id": "my phone"},
    }
    [o] = phones.overland(json.dumps({"locations": [feature]}).encode(), {}, {}, NOW_NS)
    assert isinstance(o, phones.Report) and o.client_id == "my%20phone"


def test_owntracks_without_tst_is_at_arrival_time() -> None:
    [r] = phones.owntracks(b'{"_type":"location","lat":1,"lon":2}', {}, {}, NOW_NS)
    assert isinstance(r, phones.Report) and r.time == "1800000000.000000000"


def test_owntracks_transition_is_a_report_with_its_event_and_region() -> None:
    body = sample_body("owntracks/033-ios-rec-line03-transition.json").encode()
    [r] = phones.owntracks(body, {}, {}, NOW_NS)
    assert isinstance(r, phones.Report)
    assert r.client_id == "owntracks/test/iPhone%2012%20Pro"  # the topic less "/event"
    assert r.attributes["transition"] == {"event": "leave", "region": "home"}


def test_encrypted_owntracks_is_refused_visibly() -> None:
    with pytest.raises(phones.PhoneError, match="encrypted OwnTracks payloads"):
        phones.owntracks(b'{"_type":"encrypted","data":"x"}', {}, {}, NOW_NS)


def test_attributes_are_bounded() -> None:
    regions = ["r" * 1000] * 40
    body = json.dumps(
        {"_type": "location", "lat": 1, "lon": 2, "tst": 3, "inregions": regions, "t": "\ud800"}
    )
    [r] = phones.owntracks(body.encode(), {}, {}, NOW_NS)
    assert isinstance(r, phones.Report)
    assert r.attributes["trigger"] == "?"
    kept = r.attributes.get("regions")
    assert kept is None or (isinstance(kept, list) and len(kept) <= 16)
    # Out-of-range and unknown values are left out; the point stays.
    body = b'{"_type":"location","lat":1,"lon":2,"tst":3,"vel":-1,"batt":400,"acc":1e400}'
    [r] = phones.owntracks(body, {}, {}, NOW_NS)
    assert isinstance(r, phones.Report) and r.attributes == {}


def test_traccar_heartbeat_without_fix_is_a_heartbeat() -> None:
    form = b"id=48241179&timestamp=1749995112&batt=100&charge=false"
    [h] = phones.traccar({}, FORM["Content-Type"], form, NOW_NS)
    assert h == phones.Heartbeat("48241179", "1749995112", {"battery": 100.0, "charging": False})
    assert h.at(1.0, 2.0).attributes["heartbeat"] is True


# -- through a real herd -----------------------------------------------------------------------


async def record(client: TestClient[Any, Any], client_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/clients/{client_id}")
    assert response.status == 200, await response.text()
    found: dict[str, Any] = (await response.json())["record"]
    return found


async def metric(client: TestClient[Any, Any], line: str) -> bool:
    return line in await (await client.get("/metrics")).text()


async def test_owntracks_name_with_spaces_is_stored(client: TestClient[Any, Any]) -> None:
    headers = {**JSON, "X-Limit-U": "test", "X-Limit-D": "iPhone 12 Pro"}
    body = {"_type": "location", "lat": 52.2, "lon": 13.3, "tst": 1709283789}
    response = await client.post("/pub", json=body, headers=headers)
    assert response.status == 200 and await response.json() == []
    stored = await record(client, "owntracks/test/iphone%252012%2520pro")
    assert (stored["lat"], stored["lon"]) == (52.2, 13.3)


async def test_mixed_overland_batch_stores_the_point_and_skips_the_event(
    client: TestClient[Any, Any],
) -> None:
    body = sample_body("overland/003-dawarich-point-plus-app-event-no-geometry.json")
    response = await client.post("/api/v1/phones/overland", data=body, headers=JSON)
    assert response.status == 200 and await response.json() == {"result": "ok"}
    stored = await record(client, phones.OVERLAND_DEVICE)  # device_id "" and no ?device_id=
    assert (stored["lat"], stored["lon"]) == (37.3318, -122.030581)
    skipped = 'herd_gateway_phone_entries_skipped_total{app="overland",reason="no_position"} 1'
    assert await metric(client, skipped)


async def test_traccar_array_with_a_heartbeat_in_the_middle(client: TestClient[Any, Any]) -> None:
    base = int(time.time()) - 100
    array = [
        {"id": "hb-1", "lat": 10.5, "lon": 20.5, "timestamp": base, "batt": 80},
        {"id": "hb-1", "timestamp": base + 10, "batt": 79, "charge": True},  # no fix
        {"id": "hb-2", "lat": 95, "lon": 1, "timestamp": base},  # invalid: skipped
    ]
    response = await client.post("/", data=json.dumps(array), headers=JSON)
    assert response.status == 200 and await response.read() == b""
    # The heartbeat is a new record at the held position, with its own time.
    stored = await record(client, "hb-1")
    assert (stored["lat"], stored["lon"], stored["client_time"]) == (10.5, 20.5, str(base + 10))
    assert (await client.get("/api/v1/clients/hb-2")).status == 404
    assert await metric(client, 'herd_gateway_phone_heartbeats_stored_total{app="traccar"} 1')
    invalid = 'herd_gateway_phone_entries_skipped_total{app="traccar",reason="invalid"} 1'
    assert await metric(client, invalid)


async def test_traccar_heartbeats_are_answered_200_even_when_dropped(
    client: TestClient[Any, Any],
) -> None:
    base = int(time.time()) - 100
    # No position known for the client: dropped, counted.
    form = f"id=hb-3&timestamp={base}&batt=50"
    response = await client.post("/", data=form, headers=FORM)
    assert response.status == 200
    assert (await client.get("/api/v1/clients/hb-3")).status == 404
    line = (
        'herd_gateway_phone_entries_skipped_total{app="traccar",reason="heartbeat_no_position"} 1'
    )
    assert await metric(client, line)
    # Not newer than the held record: dropped, counted, the record unchanged.
    assert (await client.get(f"/?id=hb-3&lat=1&lon=2&timestamp={base}")).status == 200
    response = await client.post("/", data=f"id=hb-3&timestamp={base}&batt=49", headers=FORM)
    assert response.status == 200
    assert (await record(client, "hb-3"))["client_time"] == str(base)
    line = 'herd_gateway_phone_entries_skipped_total{app="traccar",reason="heartbeat_not_newer"} 1'
    assert await metric(client, line)


async def test_root_url_refuses_a_report_without_id_and_serves_the_map(
    client: TestClient[Any, Any],
) -> None:
    osmand = "/?lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0"
    response = await client.get(osmand)
    assert response.status == 400
    assert "no id" in (await response.json())["error"]["message"]
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"


async def test_encrypted_owntracks_gets_a_visible_error(client: TestClient[Any, Any]) -> None:
    response = await client.post("/pub", data=b'{"_type":"encrypted","data":"x"}', headers=JSON)
    assert response.status == 400
    assert "encrypted" in (await response.json())["error"]["message"]


async def test_gpslogger_documented_template(client: TestClient[Any, Any]) -> None:
    # docs/gateway.md: the custom URL, as GPSLogger fills it in (GET by default).
    url = (
        "/api/v1/phones/gpslogger?id=SRS11&lat=12.193&lon=19.111&timestamp=1457205869"
        "&altitude=45.0&speed=2.5&bearing=359.0&accuracy=8.0&batt=91.0"
    )
    response = await client.get(url)
    assert response.status == 200 and await response.read() == b""
    stored = await record(client, "SRS11")
    assert (stored["lat"], stored["lon"], stored["client_time"]) == (12.193, 19.111, "1457205869")
    [r] = phones.gpslogger(
        {k: v for k, v in (p.split("=") for p in url.split("?")[1].split("&"))}, b"", NOW_NS
    )
    assert isinstance(r, phones.Report)
    assert r.attributes == {
        "accuracy": 8.0,
        "altitude": 45.0,
        "speed": 2.5,  # m/s, as %SPD is
        "heading": 359.0,
        "battery": 91.0,
    }


async def test_rest_batch_says_per_entry_what_was_stored(client: TestClient[Any, Any]) -> None:
    batch = [
        {"client_id": "rest-b1", "lat": 1, "lon": 2},
        {"client_id": "rest-b2", "lat": 3, "lon": 4},
    ]
    response = await client.post("/api/v1/locations", json=batch)
    assert response.status == 200
    body = await response.json()
    assert [r["client_id"] for r in body["records"]] == ["rest-b1", "rest-b2"]
    assert body["results"] == [{"stored": True, "status": 200}] * 2
