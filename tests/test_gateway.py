"""The gateway over a real herd: REST API, phone apps, WebSocket, failover, operations."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from helpers import NAMES, Herd, iamat, until_synced

from backend.config import load_config
from gateway.app import create_app

pytestmark = pytest.mark.timeout(60)


HERD_GATEWAY = "max_body_bytes = 4096"  # the module's herd (conftest.py)


async def post(client: TestClient[Any, Any], body: Any, status: int = 200) -> Any:
    response = await client.post("/api/v1/locations", json=body)
    assert response.status == status, await response.text()
    return await response.json()


# -- REST ----------------------------------------------------------------------------------


async def test_report_then_read_it_back_and_find_places(
    client: TestClient[Any, Any], herd: Herd
) -> None:
    body = await post(
        client, {"client_id": "rest-1", "lat": 34.06893, "lon": -118.445127, "time": 1700000000.5}
    )
    record = body["record"]
    assert record["client_id"] == "rest-1" and record["client_time"] == "1700000000.5"
    assert record["server"] in NAMES and record["at"].startswith(f"AT {record['server']} ")
    # The herd holds exactly the AT line the API returned.
    await herd.wait_record_async("Campbell", "rest-1", record["at"].encode() + b"\n")
    got = await client.get("/api/v1/clients/rest-1")
    assert got.status == 200 and (await got.json())["record"] == record
    nearby = await client.get(
        "/api/v1/clients/rest-1/nearby", params={"radius_km": "10", "limit": "3"}
    )
    assert nearby.status == 200
    places = (await nearby.json())["places"]
    assert places["status"] == "OK" and 1 <= len(places["results"]) <= 3


async def test_batches_are_reported_in_order(client: TestClient[Any, Any]) -> None:
    items = [
        {"client_id": f"batch-{i}", "lat": i, "lon": -i, "time": 1700000000 + i} for i in range(3)
    ]
    for body in (items, {"locations": items}):
        records = (await post(client, body))["records"]
        assert [r["client_id"] for r in records] == ["batch-0", "batch-1", "batch-2"]
        assert [r["lat"] for r in records] == [0, 1, 2]


async def test_a_report_without_time_uses_the_gateway_clock(client: TestClient[Any, Any]) -> None:
    record = (await post(client, {"client_id": "no-time", "lat": 1, "lon": 2}))["record"]
    assert abs(record["time"] - __import__("time").time()) < 60


async def test_clients_are_listed_in_pages(client: TestClient[Any, Any]) -> None:
    await post(client, [{"client_id": f"page-{i}", "lat": 1, "lon": 1} for i in range(5)])
    await until_synced(client)
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = await (
            await client.get("/api/v1/clients", params={"offset": offset, "limit": 2})
        ).json()
        assert len(page["clients"]) <= 2
        seen += [c["client_id"] for c in page["clients"]]
        offset = page["next_offset"]
    assert seen == sorted(seen) and len(seen) == page["total"]
    assert {f"page-{i}" for i in range(5)} <= set(seen)


async def test_herd_status_shows_every_server_and_link(
    client: TestClient[Any, Any], herd: Herd
) -> None:
    await until_synced(client)
    status = await (await client.get("/api/v1/herd")).json()
    assert [s["name"] for s in status["servers"]] == list(NAMES)
    for server in status["servers"]:
        assert server["up"] is True and isinstance(server["records"], int)
        assert set(server["links"]) == set(herd.neighbours(server["name"]))
        assert set(server["links"].values()) == {"up"}
    assert len(status["links"]) == 6
    assert status["subscribed_to"] in NAMES


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "JSON"),
        (b'{"client_id": "x", "lat": 1}', 400, "lon"),
        (b'{"client_id": "x y", "lat": 1, "lon": 1}', 400, "white space"),
        (b'{"client_id": "x", "lat": 91, "lon": 1}', 400, "lat"),
        (b'{"client_id": "x", "lat": 1, "lon": 1, "time": "yesterday"}', 400, "time"),
        (b"[]", 400, "empty"),
        (b'["x"]', 400, "report 0"),
        (b'{"client_id": "x", "lat": 1, "lon": 1, "pad": "' + b"x" * 5000 + b'"}', 413, ""),
    ],
)
async def test_bad_reports_get_json_errors(
    client: TestClient[Any, Any], body: bytes, status: int, message: str
) -> None:
    response = await client.post(
        "/api/v1/locations", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == status
    error = (await response.json())["error"]
    assert error["status"] == status and message in error["message"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/clients/nobody-at-all", 404),
        ("/api/v1/clients/nobody-at-all/nearby", 404),
        ("/api/v1/clients/rest-1/nearby?radius_km=0", 400),
        ("/api/v1/clients/rest-1/nearby?radius_km=51", 400),
        ("/api/v1/clients/rest-1/nearby?radius_km=nan", 400),
        ("/api/v1/clients/rest-1/nearby?limit=21", 400),
        ("/api/v1/clients?limit=0", 400),
        ("/api/v1/clients?offset=-1", 400),
        ("/api/v1/nothing-here", 404),
    ],
)
async def test_read_errors(client: TestClient[Any, Any], path: str, status: int) -> None:
    await post(client, {"client_id": "rest-1", "lat": 1, "lon": 1, "time": 1})
    response = await client.get(path)
    assert response.status == status
    assert (await response.json())["error"]["status"] == status


async def test_no_herd_server_answering_is_503(tmp_path: Path, aiohttp_client: Any) -> None:
    dead = Herd(tmp_path)  # a config whose servers were never started
    client = await aiohttp_client(create_app(load_config(dead.config, env={})))
    for method, path, kwargs in [
        ("POST", "/api/v1/locations", {"json": {"client_id": "a", "lat": 1, "lon": 1}}),
        ("GET", "/api/v1/clients/a", {}),
        ("GET", "/api/v1/clients", {}),
        ("GET", "/api/v1/clients/a/nearby", {}),
    ]:
        response = await client.request(method, path, **kwargs)
        assert response.status == 503
        assert (await response.json())["error"]["message"] == "no herd server answered"
    assert (await client.get("/healthz")).status == 503
    status = await (await client.get("/api/v1/herd")).json()
    assert not any(s["up"] for s in status["servers"])


async def test_requests_fail_over_when_a_server_is_down(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    async with Herd(tmp_path, gateway='servers = ["Riley", "Bernard"]') as herd:
        await herd.wait_links_async()
        await herd.kill_async("Riley")
        client = await aiohttp_client(create_app(load_config(herd.config, env={})))
        for i in range(3):
            record = (await post(client, {"client_id": f"fo-{i}", "lat": 1, "lon": 1}))["record"]
            assert record["server"] == "Bernard"
        metrics = await (await client.get("/metrics")).text()
        assert "herd_gateway_herd_failovers_total 0" not in metrics


# -- phone apps ----------------------------------------------------------------------------

OWNTRACKS = (
    b'{"_type":"location","created_at":25,"_id":"dummyTestId","batt":30,"bs":2,"acc":10,"vac":1,'
    b'"lat":50.1,"lon":60.2,"alt":20,"vel":5,"cog":56,"tst":123456789,"m":1,"conn":"TestConn",'
    b'"inregions":["Testregion1","Testregion2"],"BSSID":"12:34:56:78","SSID":"Wifi SSID"}'
)
TRACCAR_B = (
    b'{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,'
    b'"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,'
    b'"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},'
    b'"activity":{"type":"still"},"extras":{},"_":"&id=48241179&lat=37.4219983&lon=-122.084'
    b'&timestamp=2025-06-15T13:45:12.862Z&"},"device_id":"48241179"}'
)
TRACCAR_C_FORM = (
    b"id=48241180&lat=37.4219983&lon=-122.084&timestamp=1750000000&accuracy=5.0&altitude=5.0"
    b"&speed=0.0&bearing=0.0&batt=87&charge=false"
)


async def whereis(client: TestClient[Any, Any], client_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/clients/{client_id}")
    assert response.status == 200, client_id
    record: dict[str, Any] = (await response.json())["record"]
    return record


async def test_owntracks_http_mode(client: TestClient[Any, Any]) -> None:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Limit-U": "Jane",
        "X-Limit-D": "Phone",
    }
    response = await client.post("/pub", data=OWNTRACKS, headers=headers)
    assert response.status == 200 and await response.json() == []
    assert response.content_type == "application/json"
    record = await whereis(client, "owntracks/jane/phone")
    assert (record["lat"], record["lon"], record["client_time"]) == (50.1, 60.2, "123456789")
    # Messages that are not locations are accepted and ignored.
    lwt = await client.post(
        "/api/v1/phones/owntracks", data=b'{"_type":"lwt","tst":1}', headers=headers
    )
    assert lwt.status == 200 and await lwt.json() == []


async def test_traccar_all_generations(client: TestClient[Any, Any]) -> None:
    # Generation A: POST, everything in the query string, empty body.
    a = await client.post(
        "/?id=123456789012345&timestamp=619315200&lat=0.0&lon=0.0&speed=0.0&bearing=0.0&altitude=0.0"
        "&accuracy=0.0&batt=0.0"
    )
    assert a.status == 200 and await a.read() == b""
    assert (await whereis(client, "123456789012345"))["client_time"] == "619315200"
    # Generation B: a JSON object.
    b = await client.post("/", data=TRACCAR_B, headers={"Content-Type": "application/json"})
    assert b.status == 200 and await b.read() == b""
    record = await whereis(client, "48241179")
    assert (record["lat"], record["lon"]) == (37.4219983, -122.084)
    # Generation C: a form body, and a JSON array.
    c = await client.post(
        "/api/v1/phones/traccar",
        data=TRACCAR_C_FORM,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert c.status == 200 and (await whereis(client, "48241180"))["client_time"] == "1750000000"
    array = b'[{"id":"48241181","lat":37.42,"lon":-122.08,"timestamp":1750000000,"batt":87}]'
    d = await client.post(
        "/api/v1/phones/traccar", data=array, headers={"Content-Type": "application/json"}
    )
    assert d.status == 200 and (await whereis(client, "48241181"))["lat"] == 37.42
    # The classic OsmAnd URL template, as a GET on the root.
    e = await client.get(
        "/?id=osmand-1&lat=51.5&lon=-0.12&timestamp=1750000001&hdop=1&altitude=5&speed=0"
    )
    assert e.status == 200 and (await whereis(client, "osmand-1"))["lon"] == -0.12
    # No device ID: 400.
    bad = await client.post("/api/v1/phones/traccar?lat=1&lon=1")
    assert bad.status == 400


async def test_overland_batch(client: TestClient[Any, Any]) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [-122.03 - i / 100, 37.33]},
            "properties": {
                "timestamp": f"2026-01-01T00:00:0{i}Z",
                "device_id": "overland-1",
                "speed": 1,
            },
        }
        for i in range(3)
    ]
    response = await client.post("/api/v1/phones/overland", json={"locations": features})
    assert response.status == 200 and await response.json() == {"result": "ok"}
    record = await whereis(client, "overland-1")
    assert record["lon"] == -122.05 and record["lat"] == 37.33  # GeoJSON is lon, lat


# -- WebSocket -----------------------------------------------------------------------------


async def receive(ws: Any, kind: str, timeout: float = 5) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(ws.receive(), timeout)
        assert message.type == WSMsgType.TEXT, message
        data: dict[str, Any] = json.loads(message.data)
        if data["type"] == kind:
            return data


async def test_websocket_snapshot_then_updates_from_http_and_tcp(
    client: TestClient[Any, Any], herd: Herd
) -> None:
    await post(client, {"client_id": "before-ws", "lat": 1, "lon": 1})
    await until_synced(client)
    async with client.ws_connect("/api/v1/ws") as ws:
        snapshot = await receive(ws, "snapshot")
        assert "before-ws" in {r["client_id"] for r in snapshot["records"]}
        await post(client, {"client_id": "via-http", "lat": 2, "lon": 2})
        assert (await receive(ws, "update"))["record"]["client_id"] == "via-http"
        # A plain TCP client's IAMAT at any server shows up too.
        for name in NAMES:
            reply = await herd.ask_async(name, iamat(f"via-tcp-{name}"))
            update = await receive(ws, "update")
            assert update["record"]["at"] + "\n" == reply.decode()


async def test_websocket_filters(client: TestClient[Any, Any]) -> None:
    await until_synced(client)
    async with client.ws_connect("/api/v1/ws?clients=wanted-1,wanted-2") as ws:
        await receive(ws, "snapshot")
        await post(client, [{"client_id": c, "lat": 5, "lon": 5} for c in ("unwanted", "wanted-2")])
        assert (await receive(ws, "update"))["record"]["client_id"] == "wanted-2"
    async with client.ws_connect("/api/v1/ws?bbox=0,40,10,50") as ws:
        await receive(ws, "snapshot")
        await post(
            client,
            [
                {"client_id": "outside", "lat": 1, "lon": 1},
                {"client_id": "inside", "lat": 45, "lon": 5},
            ],
        )
        assert (await receive(ws, "update"))["record"]["client_id"] == "inside"
        # Filters change over the socket too, with a fresh snapshot.
        await ws.send_json({"type": "filter", "id": 7, "clients": ["outside"], "bbox": None})
        reply = await receive(ws, "reply")
        assert reply["id"] == 7 and [r["client_id"] for r in reply["records"]] == ["outside"]
    bad = await client.get("/api/v1/ws?bbox=1,2,3")
    assert bad.status == 400


async def test_websocket_commands(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/api/v1/ws") as ws:
        await receive(ws, "snapshot")
        await ws.send_json(
            {"type": "report", "id": 1, "client_id": "ws-1", "lat": 34.06893, "lon": -118.445127}
        )
        reply = await receive(ws, "reply")
        assert reply["id"] == 1 and reply["record"]["client_id"] == "ws-1"
        await ws.send_json(
            {"type": "nearby", "id": 2, "client_id": "ws-1", "radius_km": 10, "limit": 2}
        )
        reply = await receive(ws, "reply")
        assert (
            reply["id"] == 2
            and reply["places"]["status"] == "OK"
            and len(reply["places"]["results"]) <= 2
        )
        for bad, status in [
            ({"type": "nearby", "id": 3, "client_id": "nobody-ws"}, 404),
            ({"type": "nearby", "id": 4, "client_id": "ws-1", "radius_km": 99}, 400),
            ({"type": "report", "id": 5, "client_id": "ws-1", "lat": 100, "lon": 0}, 400),
            ({"type": "dance", "id": 6}, 400),
        ]:
            await ws.send_json(bad)
            error = await receive(ws, "error")
            assert error["id"] == bad["id"] and error["error"]["status"] == status
        await ws.send_str("not json")
        assert (await receive(ws, "error"))["error"]["status"] == 400


async def test_cross_origin_websocket_is_refused(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        "/api/v1/ws",
        headers={
            "Origin": "http://evil.example",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert response.status == 403


# -- operations ----------------------------------------------------------------------------


async def test_health_metrics_docs_and_map(client: TestClient[Any, Any]) -> None:
    await until_synced(client)
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["status"] == "ok"
    await post(client, {"client_id": "metered", "lat": 1, "lon": 1})
    metrics = await (await client.get("/metrics")).text()
    assert (
        'herd_gateway_requests_total{method="POST",route="/api/v1/locations",status="200"}'
        in metrics
    )
    assert "herd_gateway_websocket_clients 0" in metrics
    assert "herd_gateway_updates_pushed_total" in metrics
    # The docs page is Swagger UI, vendored, over the served document (the operations it
    # lists are checked in a browser: tests/test_api_docs.py).
    docs = await client.get("/api/docs")
    assert docs.status == 200
    docs_html = await docs.text()
    for script in ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/api-docs.js"):
        assert f'<script src="{script}">' in docs_html
        assert (await client.get(script)).status == 200
    assert 'data-spec-url="/api/v1/openapi.json"' in docs_html
    assert "<script>" not in docs_html  # no inline script: the page's CSP forbids it
    spec = await (await client.get("/api/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert "/api/v1/clients/{client_id}/nearby" in spec["paths"]
    page = await client.get("/")
    assert page.status == 200
    html = await page.text()
    assert "/static/vendor/leaflet/leaflet.js" in html
    assert (await client.get("/static/vendor/leaflet/leaflet.js")).status == 200


async def subscribed_gateway(herd: Herd, aiohttp_client: Any) -> tuple[TestClient[Any, Any], str]:
    """A gateway app for ``herd`` once its feed is synced, and the server it subscribed to."""
    from gateway.keys import FEED

    await herd.wait_links_async()
    client = await aiohttp_client(create_app(load_config(herd.config, env={})))
    await until_synced(client)
    victim = client.app[FEED].subscribed_to
    assert victim is not None
    return client, victim


async def test_subscription_loses_nothing_when_its_server_is_killed(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """Kill the server the gateway is subscribed to while updates flow: all of them arrive."""
    from gateway.keys import FEED

    async with Herd(tmp_path) as herd:
        client, victim = await subscribed_gateway(herd, aiohttp_client)
        others = [n for n in NAMES if n != victim]
        expected: dict[str, str] = {}
        async with client.ws_connect("/api/v1/ws") as ws:
            await receive(ws, "snapshot")
            for i in range(40):
                reply = await herd.ask_async(others[i % len(others)], iamat(f"stream-{i}"))
                expected[f"stream-{i}"] = reply.decode().rstrip("\n")
                if i == 15:
                    await herd.kill_async(victim)
            got: dict[str, str] = {}
            while set(got) != set(expected):
                update = await receive(ws, "update", timeout=15)
                got[update["record"]["client_id"]] = update["record"]["at"]
            assert got == expected
        assert client.app[FEED].subscribed_to not in (None, victim)


async def test_a_frozen_subscription_server_is_left_after_three_silent_heartbeats(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """SIGSTOP keeps the server's connections open but silent, like a host cut off without
    a reset: the gateway must notice (no PING for three heartbeats) and subscribe elsewhere."""
    import signal

    from gateway.keys import FEED

    async with Herd(tmp_path) as herd:
        client, victim = await subscribed_gateway(herd, aiohttp_client)
        herd.procs[victim].send_signal(signal.SIGSTOP)
        try:
            other = next(n for n in NAMES if n != victim and n not in herd.neighbours(victim))
            async with client.ws_connect("/api/v1/ws") as ws:
                await receive(ws, "snapshot")
                reply = await herd.ask_async(other, iamat("after-freeze"))
                update = await receive(ws, "update", timeout=20)  # heartbeat 1 s: ~3 s + retry
                assert update["record"]["at"] + "\n" == reply.decode()
            # Following another server now (allowing for a resubscription in between).
            for _ in range(100):
                if client.app[FEED].subscribed_to not in (None, victim):
                    break
                await asyncio.sleep(0.1)
            assert client.app[FEED].subscribed_to not in (None, victim)
        finally:
            herd.procs[victim].send_signal(signal.SIGCONT)


def test_snapshot_text_is_each_newest_record_encoded_once() -> None:
    """The WebSocket snapshot is the joined JSON of each client's newest record (records_json's
    document); a record is encoded once while newest, and what orjson refuses (an integer past
    64 bits in the attributes) is written by json."""
    from backend.protocol import IAmAt, make_record
    from gateway.live import LiveFeed
    from gateway.records import records_json

    feed = LiveFeed([])
    old = make_record("Riley", 2_000_000_000, IAmAt("a", "+1+1", "1"))
    big = make_record(
        "Riley", 2_000_000_000, IAmAt("b", "+2+2", "1", attributes=b'{"n":' + b"9" * 30 + b"}")
    )
    for record in (old, big):
        assert feed.offer(record)
    first = feed.snapshot_message(lambda r: True)
    assert json.loads(first) == {"type": "snapshot", "records": records_json([old, big])}
    assert feed.record_text(old) is feed.record_text(old)  # cached, not made again
    new = make_record("Riley", 2_000_000_000, IAmAt("a", "+3+3", "2"))
    assert feed.offer(new)
    shown = json.loads(feed.snapshot_message(lambda r: r.client_id == "a"))["records"]
    assert [r["location"] for r in shown] == ["+3+3"]
    assert json.loads(feed.update_message(new) or "")["record"]["location"] == "+3+3"
