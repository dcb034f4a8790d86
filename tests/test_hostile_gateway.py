"""The gateway against a hostile client: numbers at and past every bound, times in the far
future, records no renderer expected, herd refusals, foreign Host names and cross-site
requests, slow or endless requests, and tokens spelled to slip past the log's redaction.

Pure parts run with no sockets; the rest against a real herd, as tests/test_gateway.py does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from helpers import Herd, until_synced
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backend.config import ConfigError, load_config
from backend.protocol import MAX_TIME_S, Record
from gateway import phones
from gateway.app import create_app
from gateway.keys import FEED

pytestmark = pytest.mark.timeout(60)

READ = "r-read-token-0123456789"
NOW_NS = 1_750_000_000_000_000_000
YEAR_3000_MS = 32503680000000  # 3000-01-01T00:00:00Z in Traccar's milliseconds


def strict_json(text: str | bytes) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are refused, as a browser refuses them."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# -- pure: numbers, times, hosts, origins, redaction ------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", Decimal(10)),
        (" 1.5e3 ", Decimal("1.5e3")),
        ("0e-200000000", Decimal(0)),
        ("1e999999999", Decimal("Infinity")),  # past any range: every range check refuses it
        ("-1e999999999", Decimal("-Infinity")),
        (5e-324, Decimal("5E-324")),  # every double is kept exactly
        (10**60, Decimal(10**60)),
        (Decimal("1." + "0" * 500), Decimal("1")),  # trailing zeros are not digits
    ],
)
def test_bounded_decimal(value: object, expected: Decimal) -> None:
    from gateway.numbers import bounded_decimal

    assert bounded_decimal(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1" * 65,
        "1e-200000000",  # never formatted in two hundred million digits
        Decimal("-1E-401"),
        int("9" * 70),
        Decimal("1." + "1" * 100),
        "nan",
        float("inf"),
        Decimal("NaN"),
        True,
        None,
        "0x10",
        "١٢٣",
    ],
)
def test_bounded_decimal_refuses(value: object) -> None:
    from gateway.numbers import NumberError, bounded_decimal

    with pytest.raises(NumberError):
        bounded_decimal(value)


@pytest.mark.parametrize("text", ["9" * 5000, "1" * 65, "-1", "1.0", "", "1e3"])
def test_whole_numbers_are_short_ascii_digits(text: str) -> None:
    from gateway.numbers import NumberError, whole_number

    with pytest.raises(NumberError):
        whole_number(text)


def test_a_far_future_report_is_refused_in_every_phone_format() -> None:
    ahead = "is more than 600 s ahead of the gateway's clock"
    later = NOW_NS // 10**9 + 601
    with pytest.raises(phones.PhoneError, match=f"time {ahead}"):
        phones.report("kiwi", 1, 1, str(later), NOW_NS, max_future=600)
    with pytest.raises(phones.PhoneError, match=f"timestamp {ahead}"):
        phones.traccar({"id": "t", "lat": "1", "lon": "1", "timestamp": str(YEAR_3000_MS)},
                       "", b"", NOW_NS, max_future=600)  # fmt: skip
    body = b'{"_type":"location","lat":1,"lon":1,"tst":%d}' % YEAR_3000_MS
    with pytest.raises(phones.PhoneError, match=f"tst {ahead}"):
        phones.owntracks(body, {}, {}, NOW_NS, max_future=600)
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [1, 1]},
        "properties": {"timestamp": "3000-01-01T00:00:00Z", "device_id": "o"},
    }
    overland = json.dumps({"locations": [feature]}).encode()
    # In a batch, the entry is skipped and counted, never the batch (the app would resend it).
    [skipped] = phones.overland(overland, {}, {}, NOW_NS, max_future=600)
    assert skipped == phones.Skipped("future", f"location 0: properties.timestamp {ahead}")
    # Within the bound, and with no bound at all, the same times are fine.
    assert phones.report("kiwi", 1, 1, str(later - 1), NOW_NS, max_future=600).time == str(
        later - 1
    )
    assert phones.owntracks(body, {}, {}, NOW_NS)[0].time == str(YEAR_3000_MS // 1000)


def test_the_herd_time_bound_is_mirrored() -> None:
    assert phones.parse_time("9999-12-31T23:59:59Z", NOW_NS) == str(MAX_TIME_S)
    assert phones.parse_time(MAX_TIME_S * 1000, NOW_NS) == str(MAX_TIME_S)  # milliseconds
    for late in (MAX_TIME_S * 1000 + 1, "9999-12-31T23:59:59.5Z", "1e999999999"):
        with pytest.raises(phones.PhoneError, match="after the year 9999"):
            phones.report("kiwi", 1, 1, late, NOW_NS)
    with pytest.raises(phones.PhoneError, match="after the year 9999"):
        phones.Report("kiwi", 1, 1, f"{MAX_TIME_S}.5")


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("127.0.0.1:8131", "127.0.0.1"),
        ("LocalHost.:80", "localhost"),
        ("[::1]:8131", "[::1]"),
        ("[::1]", "[::1]"),
        ("map.example", "map.example"),
    ],
)
def test_host_names(host: str, name: str) -> None:
    from gateway.site import host_name

    assert host_name(host) == name


def test_host_allow_list() -> None:
    from gateway.site import host_allowed

    default = ("localhost", "127.0.0.1", "[::1]")
    assert host_allowed("127.0.0.1:8131", default) and host_allowed("localhost:1", default)
    assert host_allowed(None, default)  # HTTP/1.0 without Host: no browser sends that
    assert not host_allowed("rebind.attacker.example:8131", default)
    assert not host_allowed("127.0.0.1.attacker.example", default)
    assert host_allowed("map.example", (*default, "map.example"))
    assert host_allowed("anything", ("*",))


@pytest.mark.parametrize(
    ("headers", "cross"),
    [
        ({}, False),  # a phone app
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:8131"}, False),
        ({"Sec-Fetch-Site": "none"}, False),  # typed into the address bar
        ({"Sec-Fetch-Site": "cross-site"}, True),  # an <img> on another site
        ({"Sec-Fetch-Site": "same-site"}, True),  # another port of the same host
        ({"Origin": "http://evil.example"}, True),
        ({"Origin": "null"}, True),  # a sandboxed frame or a file:// page
        ({"Origin": "http://127.0.0.1:9999"}, True),
    ],
)
def test_cross_site(headers: dict[str, str], cross: bool) -> None:
    from gateway.site import cross_site

    assert (cross_site(headers, "127.0.0.1:8131") is not None) is cross


@pytest.mark.parametrize(
    "line",
    [
        f'GET /?%74oken={READ} HTTP/1.1" 200',
        f'GET /?id=x&t%6Fken={READ} HTTP/1.1" 200',
        f"GET /?%2574oken={READ} HTTP/1.1",
        f"GET /?TOKEN={READ}",
        f"GET /api/v1/herd;token={READ}",
        f"GET /?to%6ben={READ}&access_token={READ}",
        f"Referer: http://jane:{READ}@127.0.0.1/",
        f"Cookie: herd_token={READ}",
    ],
)
def test_credentials_are_masked_however_they_are_spelled(line: str) -> None:
    from gateway.redact import redact

    masked = redact(line)
    assert READ not in masked and "***" in masked


def test_redaction_keeps_other_parameters() -> None:
    from gateway.redact import redact

    assert redact("GET /?id=kiwi&lat=1 HTTP/1.1") == "GET /?id=kiwi&lat=1 HTTP/1.1"


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ('allowed_hosts = "localhost"', "allowed_hosts"),
        ('allowed_hosts = ["map.example:8131"]', "allowed_hosts"),
        ('allowed_hosts = ["::1"]', "allowed_hosts"),
        ('allowed_hosts = ["a b"]', "allowed_hosts"),
        ('allowed_hosts = [""]', "allowed_hosts"),
        ("header_timeout = 0", "header_timeout"),
        ("body_timeout = -1", "body_timeout"),
    ],
)
def test_bad_gateway_settings_are_config_errors(tmp_path: Path, gateway: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Herd(tmp_path, gateway=gateway).config, env={})


@pytest.mark.parametrize(
    ("settings", "allowed"),
    [
        ("", ("localhost", "127.0.0.1", "[::1]")),
        ('host = "::1"', ("localhost", "127.0.0.1", "[::1]")),
        ('allowed_hosts = ["Map.Example.", "[2001:db8::1]"]', ("map.example", "[2001:db8::1]")),
        (f'host = "herd.example.org"\nread_tokens = ["{READ}"]', ("herd.example.org",)),
        (f'host = "0.0.0.0"\nread_tokens = ["{READ}"]', ("*",)),
        (f'host = "0.0.0.0"\nread_tokens = ["{READ}"]\nallowed_hosts = ["m.example"]', ()),
    ],
)
def test_allowed_hosts_defaults(tmp_path: Path, settings: str, allowed: tuple[str, ...]) -> None:
    hosts = load_config(Herd(tmp_path, gateway=settings).config, env={}).gateway.allowed_hosts
    assert set(allowed) <= set(hosts) and {"localhost", "127.0.0.1", "[::1]"} <= set(hosts)
    if "*" not in allowed:
        assert "*" not in hosts


# -- against a real herd ------------------------------------------------------------------------


HERD_GATEWAY = "max_body_bytes = 4096"  # the module's herd (conftest.py)


async def error(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    message: str = strict_json(await response.text())["error"]["message"]
    return message


async def next_of(ws: Any, kind: str, timeout: float = 10) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(ws.receive(), timeout)
        assert message.type == WSMsgType.TEXT, message
        data: dict[str, Any] = strict_json(message.data)
        if data["type"] == kind:
            return data


UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/clients/kiwi/nearby?radius_km=1e-200000000",
        "/api/v1/clients/kiwi/nearby?radius_km=1e999999999",
        "/api/v1/clients/kiwi/nearby?radius_km=" + "1" * 5000,
        "/api/v1/clients/kiwi/nearby?limit=" + "9" * 5000,
        "/api/v1/clients?offset=" + "9" * 5000,
        "/api/v1/clients?limit=" + "9" * 5000,
        "/api/v1/clients/" + "x" * 257,
        "/api/v1/ws?bbox=1e999999999,0,1,1",
    ],
)
async def test_numbers_and_ids_in_urls_are_bounded(client: TestClient[Any, Any], path: str) -> None:
    await client.post("/api/v1/locations", json={"client_id": "kiwi", "lat": 1, "lon": 1})
    started = time.monotonic()
    await error(await client.get(path), 400)
    assert time.monotonic() - started < 2  # no formatting of a huge exponent


@pytest.mark.parametrize(
    "body",
    [
        b'{"client_id": "kiwi", "lat": 1, "lon": 1, "time": ' + b"1" * 4000 + b"}",
        b'{"client_id": "kiwi", "lat": 1e999999999, "lon": 1}',
        b'{"client_id": "kiwi", "lat": 1, "lon": 1, "time": 1e999999999}',
        b'{"client_id": "kiwi", "lat": 1, "lon": 1, "time": "1e-200000000"}',
        b'{"client_id": "' + "\U0001f600".encode() * 257 + b'", "lat": 1, "lon": 1}',
    ],
)
async def test_numbers_in_json_bodies_are_bounded(
    client: TestClient[Any, Any], body: bytes
) -> None:
    response = await client.post(
        "/api/v1/locations", data=body, headers={"Content-Type": "application/json"}
    )
    await error(response, 400)


async def test_websocket_numbers_are_bounded(client: TestClient[Any, Any]) -> None:
    await client.post("/api/v1/locations", json={"client_id": "kiwi", "lat": 1, "lon": 1})
    async with client.ws_connect("/api/v1/ws") as ws:
        await next_of(ws, "snapshot")
        for i, command in enumerate(
            [
                '{"type": "nearby", "client_id": "kiwi", "radius_km": 1e-200000000}',
                '{"type": "nearby", "client_id": "kiwi", "radius_km": "1e-200000000"}',
                '{"type": "nearby", "client_id": "kiwi", "radius_km": 1e999999999}',
                '{"type": "nearby", "client_id": "kiwi", "limit": ' + "9" * 4000 + "}",
                '{"type": "filter", "bbox": [1e999999999, 0, 1, 1]}',
                '{"type": "report", "client_id": "kiwi", "lat": 1, "lon": 1, "time": '
                + "1" * 5000
                + "}",
            ]
        ):
            await ws.send_str(command[:-1] + f', "id": {i}}}')
            answer = await next_of(ws, "error")
            assert answer["error"]["status"] == 400, (command[:80], answer)


async def test_reports_far_in_the_future_are_refused(client: TestClient[Any, Any]) -> None:
    now = int(time.time())
    ahead = "ahead of the gateway's clock"
    single = {"client_id": "future-1", "lat": 1, "lon": 1, "time": YEAR_3000_MS}
    assert ahead in await error(await client.post("/api/v1/locations", json=single), 400)
    iso = {**single, "time": "3000-01-01T00:00:00Z"}
    assert ahead in await error(await client.post("/api/v1/locations", json=iso), 400)
    batch = [{**single, "time": now}, {**single, "client_id": "future-2"}]
    message = await error(await client.post("/api/v1/locations", json=batch), 400)
    assert message.startswith("report 1: ") and ahead in message
    # Traccar's milliseconds (by GET, as OsmAnd, and as a JSON array), OwnTracks, Overland.
    ms = YEAR_3000_MS
    assert ahead in await error(await client.get(f"/?id=future-3&lat=1&lon=1&timestamp={ms}"), 400)
    array = json.dumps([{"id": "future-3", "lat": 1, "lon": 1, "timestamp": ms}])
    traccar = await client.post(
        "/api/v1/phones/traccar", data=array, headers={"Content-Type": "application/json"}
    )
    # A batch skips and counts the entry, and answers what makes the app drop the batch.
    assert traccar.status == 200, await traccar.text()
    owntracks = {"_type": "location", "lat": 1, "lon": 1, "tst": YEAR_3000_MS}
    assert ahead in await error(await client.post("/pub", json=owntracks), 400)
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [1, 1]},
        "properties": {"timestamp": "3000-01-01T00:00:00Z", "device_id": "future-4"},
    }
    overland = await client.post("/api/v1/phones/overland", json={"locations": [feature]})
    assert overland.status == 200 and await overland.json() == {"result": "ok"}
    metrics = await (await client.get("/metrics")).text()
    for app in ("traccar", "overland"):
        line = f'herd_gateway_phone_entries_skipped_total{{app="{app}",reason="future"}} 1'
        assert line in metrics, metrics
    for client_id in ("future-3", "future-4"):
        assert (await client.get(f"/api/v1/clients/{client_id}")).status == 404
    async with client.ws_connect("/api/v1/ws") as ws:
        await next_of(ws, "snapshot")
        await ws.send_json({"type": "report", "id": 9, **single})
        answer = await next_of(ws, "error")
        assert answer["id"] == 9 and answer["error"]["status"] == 400
        assert ahead in answer["error"]["message"]
    for client_id in ("future-1", "future-2", "future-3", "future-4"):
        assert (await client.get(f"/api/v1/clients/{client_id}")).status == 404
    # A clock a minute fast is fine.
    soon = await client.post("/api/v1/locations", json={**single, "time": now + 60})
    assert soon.status == 200


def extreme(client_id: str, client_time: str, location: str = "+1+1") -> Record:
    """A record as a server from before the herd's time bound could have stored it."""
    line = f"AT Riley +0.000000000 {client_id} {location} {client_time}".encode()
    return Record(
        "Riley", "+0.000000000", client_id, location, client_time, line, (0, "", "", line)
    )


EXTREMES = {
    "inf-time": "1" + "0" * 400,  # float() is inf
    "far-time": "1" + "0" * 200,  # a finite float no Date holds
    "huge-time": "9" * 5000,  # past int()'s digit limit
    "last-time": f"{MAX_TIME_S}.999",
}


async def test_every_renderer_is_safe_for_any_stored_record(client: TestClient[Any, Any]) -> None:
    await until_synced(client)
    feed = client.app[FEED]
    async with client.ws_connect("/api/v1/ws") as ws:
        await next_of(ws, "snapshot")
        for client_id, client_time in EXTREMES.items():
            feed.offer(extreme(client_id, client_time))
            update = await next_of(ws, "update")  # strict JSON
            assert update["record"]["client_id"] == client_id
            assert update["record"]["client_time"] == client_time  # kept exactly
            assert update["record"]["time"] is None
    async with client.ws_connect("/api/v1/ws") as ws:
        snapshot = await next_of(ws, "snapshot")
        shown = {r["client_id"]: r for r in snapshot["records"]}
        assert set(EXTREMES) <= set(shown)
    listing = await client.get("/api/v1/clients", params={"limit": "1000"})
    assert listing.status == 200
    clients = {r["client_id"]: r for r in strict_json(await listing.text())["clients"]}
    assert all(clients[c]["time"] is None for c in EXTREMES)
    assert isinstance(clients["kiwi"]["time"], float | int) if "kiwi" in clients else True


async def test_a_subscription_line_past_int_limits_is_skipped(aiohttp_client: Any) -> None:
    """A record no server of today's herd would send must not end the live feed."""
    from backend.config import ServerAddress
    from gateway.herd_client import Server
    from gateway.live import LiveFeed

    good = b"AT Riley +0.000000000 good +1+1 1700000000\n"
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readline()  # SUBSCRIBE
        writer.write(b"AT Riley +0.000000000 bad +1+1 " + b"9" * 5000 + b"\n" + good)
        writer.write(b"SYNCED 2\n")
        await writer.drain()
        await reader.read()  # until the feed hangs up

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    feed = LiveFeed([Server("Riley", ServerAddress("127.0.0.1", port))], silence=30)
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.synced.wait(), 10)
        assert "good" in feed.records and "bad" not in feed.records
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
        for writer in writers:
            await close(writer)


# -- the herd's refusals: 429, never a 500 or a dropped socket ----------------------------------


async def test_a_herd_refusal_is_429_with_retry_after(tmp_path: Path, aiohttp_client: Any) -> None:
    async with Herd(tmp_path, extra="[limits]\nreports_per_client = 1") as herd:
        await herd.wait_links_async()
        client = await aiohttp_client(create_app(load_config(herd.config, env={})))
        body = {"client_id": "budget", "lat": 1, "lon": 1}
        statuses = []
        for _ in range(6):  # the burst is two reports, refilled at one per second
            response = await client.post("/api/v1/locations", json=body)
            statuses.append(response.status)
            if response.status != 200:
                message = await error(response, 429)
                assert "herd refused the report" in message
                assert response.headers["Retry-After"] == "1"
        assert 429 in statuses and 500 not in statuses, statuses
        traccar = [(await client.get("/?id=budget&lat=1&lon=1")).status for _ in range(4)]
        assert 429 in traccar and 500 not in traccar
        async with client.ws_connect("/api/v1/ws") as ws:
            await next_of(ws, "snapshot")
            answers = []
            for i in range(4):
                await ws.send_json({"type": "report", "id": i, **body})
                answer = await next_of(ws, "error") if i == 3 else None
                answers.append(answer)
            assert answers[-1] is not None and answers[-1]["error"]["status"] == 429
            assert "herd refused" in answers[-1]["error"]["message"]
            # The socket stays open and answers the next command.
            await ws.send_json({"type": "filter", "id": 99, "clients": ["budget"], "bbox": None})
            assert (await next_of(ws, "reply"))["id"] == 99
            assert not ws.closed


# -- Host names and cross-site requests ------------------------------------------------------------


async def test_a_foreign_host_is_refused(
    client: TestClient[Any, Any], herd: Herd, tmp_path: Path, aiohttp_client: Any
) -> None:
    rebound = {"Host": f"rebind.attacker.example:{client.port}"}
    for path in ("/", "/api/v1/clients", "/api/v1/herd", "/api/v1/clients/kiwi"):
        assert "allowed_hosts" in await error(await client.get(path, headers=rebound), 421)
    # The rebinding page's WebSocket: its own name as Host, and a matching Origin.
    pair = {**UPGRADE, **rebound, "Origin": f"http://{rebound['Host']}"}
    assert (await client.get("/api/v1/ws", headers=pair)).status == 421
    # Its report by GET (an <img>), which carries no Sec-Fetch-Site in older browsers.
    fix = "/?id=rebound&lat=1&lon=1"
    assert (await client.get(fix, headers=rebound)).status == 421
    assert (await client.get("/api/v1/clients/rebound")).status == 404
    for name in ("localhost", "127.0.0.1", "LOCALHOST."):
        page = await client.get("/", headers={"Host": f"{name}:{client.port}"})
        assert page.status == 200, name
    # A gateway behind a proxy lists its public name.
    other = Herd(tmp_path, gateway='allowed_hosts = ["map.example"]')
    other.ports = herd.ports
    other.write_config()
    proxied = await aiohttp_client(create_app(load_config(other.config, env={})))
    assert (await proxied.get("/", headers={"Host": "map.example"})).status == 200
    assert (await proxied.get("/", headers=rebound)).status == 421


async def test_cross_site_writes_and_websockets_are_refused(client: TestClient[Any, Any]) -> None:
    evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    # A text/plain POST from a page on another site (no CORS preflight for it).
    body = json.dumps({"client_id": "csrf-1", "lat": 1, "lon": 1})
    plain = {**evil, "Content-Type": "text/plain"}
    message = await error(await client.post("/api/v1/locations", data=body, headers=plain), 403)
    assert "cross-site" in message
    # An <img> (GET with Sec-Fetch-Site only), a form POST to the Traccar endpoints.
    img = {"Sec-Fetch-Site": "cross-site"}
    assert (await client.get("/?id=csrf-2&lat=1&lon=1", headers=img)).status == 403
    form = {**evil, "Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/", "/api/v1/phones/traccar"):
        posted = await client.post(path, data=b"id=csrf-3&lat=1&lon=1", headers=form)
        assert posted.status == 403
    owntracks = {"_type": "location", "lat": 1, "lon": 1, "tst": 1}
    assert (await client.post("/pub", json=owntracks, headers=evil)).status == 403
    # Another port on this very host is another origin.
    other_port = {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}
    assert (await client.get("/?id=csrf-4&lat=1&lon=1", headers=other_port)).status == 403
    for client_id in ("csrf-1", "csrf-2", "csrf-3", "csrf-4"):
        assert (await client.get(f"/api/v1/clients/{client_id}")).status == 404
    # WebSocket upgrades from another site, whatever the Origin says.
    for headers in (evil, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        assert (await client.get("/api/v1/ws", headers={**UPGRADE, **headers})).status == 403
    # The map itself may be opened from a link on any site; its own page may write.
    assert (await client.get("/", headers=img)).status == 200
    own = {"Origin": f"http://127.0.0.1:{client.port}", "Sec-Fetch-Site": "same-origin"}
    ok = await client.post("/api/v1/locations", data=body, headers=own)
    assert ok.status == 200
    async with client.ws_connect("/api/v1/ws", headers=own) as ws:
        await next_of(ws, "snapshot")


# Requests as the phone apps send them (their sources: OkHttp on Android, NSURLSession on iOS,
# OsmAnd's URL template): no Origin, no Sec-Fetch-*, the gateway's address as Host.
PHONE_REQUESTS = [
    (
        "POST /pub HTTP/1.1\r\nAuthorization: Basic amFuZTo=\r\nX-Limit-U: jane\r\n"
        "X-Limit-D: pixel\r\nContent-Type: application/json; charset=utf-8\r\n"
        "Content-Length: {length}\r\nHost: {host}\r\nConnection: Keep-Alive\r\n"
        "Accept-Encoding: gzip\r\nUser-Agent: okhttp/4.12.0\r\n\r\n",
        '{"_type":"location","acc":10,"alt":20,"batt":30,"bs":2,"conn":"w","lat":50.1,'
        '"lon":60.2,"m":1,"t":"u","tid":"ne","tst":1750000000,"vac":1,"vel":5}',
        "owntracks/jane/pixel",
    ),
    (
        "POST /pub HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "X-Limit-U: user\r\nX-Limit-D: iphone\r\nAccept: */*\r\n"
        "User-Agent: OwnTracks/17.3.0 CFNetwork/1496.0.7 Darwin/23.5.0\r\n"
        "Content-Length: {length}\r\nAccept-Language: en-GB,en;q=0.9\r\n"
        "Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n",
        '{"_type":"location","lat":50.2,"lon":60.3,"tst":1750000001,"acc":5,"topic":'
        '"owntracks/user/iphone"}',
        "owntracks/user/iphone",
    ),
    (
        "POST /?id=123456789012345&timestamp=1750000002&lat=37.42&lon=-122.08&speed=0.0"
        "&bearing=0.0&altitude=5.0&accuracy=5.0&batt=87.0 HTTP/1.1\r\n"
        "User-Agent: Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP2A)\r\n"
        "Host: {host}\r\nConnection: Keep-Alive\r\nAccept-Encoding: gzip\r\n"
        "Content-Length: {length}\r\n\r\n",
        "",
        "123456789012345",
    ),
    (
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: {length}\r\nUser-Agent: okhttp/4.12.0\r\n\r\n",
        "id=traccar-10&lat=37.4219983&lon=-122.084&timestamp=1750000003&accuracy=5.0"
        "&altitude=5.0&speed=0.0&bearing=0.0&batt=87&charge=false",
        "traccar-10",
    ),
    (
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Content-Length: {length}\r\nUser-Agent: okhttp/4.9.2\r\n\r\n",
        '{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.42,'
        '"longitude":-122.08,"accuracy":5}},"device_id":"traccar-9"}',
        "traccar-9",
    ),
    (
        "GET /?id=osmand-7&lat=51.5&lon=-0.12&timestamp=1750000004&hdop=1.0&altitude=5"
        "&speed=0 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: OsmAnd~\r\n"
        "Accept-Encoding: gzip\r\n\r\n",
        "",
        "osmand-7",
    ),
    (
        "POST /api/v1/phones/overland HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/json\r\nAccept: */*\r\n"
        "User-Agent: Overland/2024.5 CFNetwork/1496.0.7 Darwin/23.5.0\r\n"
        "Content-Length: {length}\r\n\r\n",
        '{"locations":[{"type":"Feature","geometry":{"type":"Point","coordinates":'
        '[-122.03,37.33]},"properties":{"timestamp":"2025-06-15T13:45:12Z","device_id":'
        '"overland-7","speed":0,"motion":["stationary"]}}],"current":null}',
        "overland-7",
    ),
]


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def raw(port: int, request: bytes, timeout: float = 10) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
        return head
    finally:
        await close(writer)


@pytest.mark.parametrize(("head", "body", "client_id"), PHONE_REQUESTS)
async def test_phone_apps_keep_working(
    client: TestClient[Any, Any], head: str, body: str, client_id: str
) -> None:
    host = f"{client.host}:{client.port}"
    request = head.format(host=host, length=len(body.encode())).encode() + body.encode()
    reply = await raw(client.port, request)
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert (await client.get(f"/api/v1/clients/{client_id}")).status == 200


# -- slow and endless requests --------------------------------------------------------------------


@pytest.fixture
async def hasty(tmp_path: Path, aiohttp_client: Any) -> TestClient[Any, Any]:
    """A gateway with short header and body timeouts (no herd needed: nothing gets that far)."""
    settings = "max_body_bytes = 4096\nheader_timeout = 0.5\nbody_timeout = 0.5"
    config = load_config(Herd(tmp_path, gateway=settings).config, env={})
    client: TestClient[Any, Any] = await aiohttp_client(create_app(config))
    return client


async def drip(writer: asyncio.StreamWriter, piece: bytes, every: float) -> None:
    """Send ``piece`` every ``every`` seconds until the connection breaks."""
    try:
        while not writer.is_closing():
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every)
    except OSError:
        pass


async def hung_up_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """All the server sends until it closes the connection, which it must do in time (a
    reset counts: the server closed with our data unread)."""
    received = b""
    async with asyncio.timeout(seconds):
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


async def test_headers_sent_slowly_are_cut_off(hasty: TestClient[Any, Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hasty.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    sender = asyncio.create_task(drip(writer, b"X-Slow: 1\r\n", 0.05))
    started = time.monotonic()
    try:
        assert await hung_up_within(reader, 5) == b""
        assert time.monotonic() - started < 3
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await close(writer)


@pytest.mark.parametrize(
    ("piece", "every", "status"),
    [
        (b"1\r\n \r\n", 0.05, b"408"),  # never ends, slowly: the time bound
        (b"400\r\n" + b" " * 1024 + b"\r\n", 0.001, b"413"),  # never ends, fast: the size bound
    ],
)
async def test_an_endless_chunked_body_is_cut_off(
    hasty: TestClient[Any, Any], piece: bytes, every: float, status: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hasty.port)
    writer.write(
        b"POST /api/v1/locations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sender = asyncio.create_task(drip(writer, piece, every))
    try:
        answer = await hung_up_within(reader, 8)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b"Connection: close" in answer
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await close(writer)


# -- the token in the log -------------------------------------------------------------------------


async def test_a_percent_encoded_token_name_never_reaches_the_log(
    tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(Herd(tmp_path, gateway=f'read_tokens = ["{READ}"]').config, env={})
    client = await aiohttp_client(create_app(config))
    caplog.set_level(logging.INFO)
    for query in (f"%74oken={READ}", f"t%6Fken={READ}", f"%2574oken={READ}"):
        await client.get(f"/api/v1/openapi.json?{query}")
    assert (await client.get(f"/api/v1/herd?%74oken={READ}")).status == 200  # it authenticates
    async with asyncio.timeout(10):
        while caplog.text.count("oken=***") < 4:
            await asyncio.sleep(0.01)
    assert READ not in caplog.text


# -- the map, in a real browser --------------------------------------------------------------


@contextlib.contextmanager
def gateway_process(config: Path, port: int) -> Iterator[str]:
    """``herd gateway`` for ``config`` (its herd need not run); yields its base URL."""
    import subprocess
    import sys
    import urllib.request

    from helpers import REPO, poll

    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/api/docs", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    with open(config.parent / "gateway.stderr", "wb") as err:
        command = [sys.executable, "-m", "backend", "gateway", "--config", str(config), "--quiet"]
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=REPO)
    try:
        poll(up, 15, "the gateway to answer")
        yield base
    finally:
        proc.kill()
        proc.wait(timeout=10)


def shown(client_id: str, **fields: Any) -> dict[str, Any]:
    now = time.time()
    record = {"client_id": client_id, "lat": 34.07, "lon": -118.44, "location": "+34.07-118.44"}
    record |= {"client_time": str(now), "time": now, "server": "Riley", "time_diff": "+0.1"}
    return record | {"at": f"AT Riley +0.1 {client_id} +34.07-118.44 {now}", **fields}


def test_the_map_shows_every_record_it_can(tmp_path: Path) -> None:
    """One record the map cannot show (a time no Date holds, no position, not a record) is
    skipped; every other record of the snapshot and the updates after it still shows."""
    from playwright.sync_api import expect, sync_playwright
    from test_browser import CHROMIUM, CHROMIUM_ARGS

    odd_times = {"far": 1e200, "null": None, "text": "soon", "past": -1e20, "huge": 1e300}
    unplaceable: list[Any] = [
        shown("no-lat", lat=None),
        None,
        {"client_id": 7},
        shown("x", lon=1e9),
    ]
    records = [
        *(shown(f"time-{name}", time=value) for name, value in odd_times.items()),
        *unplaceable,
        *(shown(f"ok-{i}") for i in range(5)),
    ]

    def fake_feed(ws: Any) -> None:
        ws.send(json.dumps({"type": "snapshot", "records": records}))
        ws.send("{not json")
        ws.send(json.dumps({"type": "update", "record": shown("late-odd", time="x")}))
        ws.send(json.dumps({"type": "update", "record": shown("late-ok")}))

    herd = Herd(tmp_path)  # the page's WebSocket is answered by fake_feed, not by a herd
    problems: list[str] = []
    with gateway_process(herd.config, herd.gateway_port) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.route_web_socket("**/api/v1/ws", fake_feed)
            page.goto(base + "/")
            expect(page.locator("#connection")).to_have_text("live", timeout=5000)
            expected = [*(f"time-{n}" for n in odd_times), *(f"ok-{i}" for i in range(5))]
            expected += ["late-odd", "late-ok"]
            entries = page.locator("#clients li")
            expect(entries).to_have_count(len(expected), timeout=5000)
            ids = entries.evaluate_all("items => items.map(item => item.dataset.clientId)")
            assert sorted(ids) == sorted(expected)
            for name in odd_times:
                entry = page.locator(f'#clients li[data-client-id="time-{name}"]')
                expect(entry.locator(".age")).to_have_text("time unknown")
            expect(page.locator('#clients li[data-client-id="ok-0"] .age')).to_contain_text("ago")
        finally:
            browser.close()
    assert not problems, problems


# -- fuzzing at the bounds: never a 500, never invalid JSON ---------------------------------------

# No example database: the suite must not write files into the tree.
FUZZ = settings(max_examples=200, deadline=None, database=None)
NOW_S = int(time.time())
MAX_FUTURE = 600  # the default [limits] max_future of the fuzzed herd
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

edges = st.sampled_from(
    [
        *("0", "-0", "0e-999999999", "1e-400", "1e-401", "5e-324", "1e308", "1e309"),
        *("NaN", "Infinity", "-Infinity", "1e999999999", "1e-200000000", "9" * 4301, "1" * 65),
        *("90", "-90", "90.0000000000000000001", "180", "-180.0000001", "50", "50.0000001", "0"),
        *("20", "21", "2147483646", "2147483647", str(MAX_TIME_S), f"{MAX_TIME_S}.1"),
        *(str(MAX_TIME_S * 1000), str(MAX_TIME_S * 1000 + 1), "3000-01-01T00:00:00Z"),
        *("9999-12-31T23:59:59Z", "9999-12-31T23:59:59.5Z", " 1.5e3 ", "0x10", "1_000"),
    ]
)
numbers = st.one_of(
    *[edges] * 6,  # half of all numbers sit on a bound
    st.builds(
        "{}e{}".format, st.sampled_from(["1", "-1", "9.99", "0", "5"]), st.integers(-(10**9), 10**9)
    ),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(1, 5000).map(lambda n: "9" * n),
    # Times around max_future, in seconds and in Traccar's milliseconds.
    st.integers(-3 * MAX_FUTURE, 10**7).map(lambda d: str(NOW_S + d)),
    st.integers(-(10**6), 10**6).map(lambda d: str((NOW_S + MAX_FUTURE) * 1000 + d)),
)
client_ids = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["x" * 256, "x" * 257, "é" * 256, "\U0001f600" * 256, "\U0001f600" * 257]),
    st.sampled_from(["", "a b", "fuzz-1", "fuzz/2"]),
)


def as_json(value: str, raw: bool) -> str:
    """``value`` as a JSON number when it reads as one and ``raw``, else as a JSON string."""
    return value if raw and _JSON_NUMBER.fullmatch(value) else json.dumps(value)


@pytest.fixture(scope="module")
def live_gateway(herd: Herd) -> Iterator[str]:
    with gateway_process(herd.config, herd.gateway_port) as base:
        yield base


def http(base: str, method: str, path: str, body: str | None = None) -> tuple[int, bytes, str]:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body.encode() if body else None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Content-Type") or ""
    finally:
        connection.close()


def check(status: int, body: bytes, content_type: str, what: str) -> None:
    assert status < 500, (what[:300], status, body[:300])
    if content_type.startswith("application/json"):
        strict_json(body)


@FUZZ
# The attack report's own cases, always tried first.
@example(endpoint="clients", client_id="f", lat="9" * 5000, lon="1", when="0", raw=False)
@example(endpoint="nearby", client_id="f", lat="1e-200000000", lon="1", when="0", raw=False)
@example(endpoint="nearby", client_id="f", lat="1", lon="9" * 5000, when="0", raw=False)
@example(endpoint="traccar", client_id="f", lat="1", lon="1", when=str(YEAR_3000_MS), raw=True)
@given(
    endpoint=st.sampled_from(
        ["rest", "batch", "traccar", "form", "owntracks", "overland", "nearby", "clients"]
    ),
    client_id=client_ids,
    lat=numbers,
    lon=numbers,
    when=numbers,
    raw=st.booleans(),
)
def test_any_number_at_any_bound_is_a_2xx_or_4xx_answer(
    live_gateway: str, endpoint: str, client_id: str, lat: str, lon: str, when: str, raw: bool
) -> None:
    from urllib.parse import quote, urlencode

    cid = json.dumps(client_id)
    la, lo, t = as_json(lat, raw), as_json(lon, raw), as_json(when, raw)
    report = f'{{"client_id": {cid}, "lat": {la}, "lon": {lo}, "time": {t}}}'
    query = urlencode({"id": client_id, "lat": lat, "lon": lon, "timestamp": when})
    feature = (
        f'{{"type": "Feature", "geometry": {{"type": "Point", "coordinates": [{lo}, {la}]}}, '
        f'"properties": {{"timestamp": {t}, "device_id": {cid}}}}}'
    )
    requests = {
        "rest": ("POST", "/api/v1/locations", report),
        "batch": ("POST", "/api/v1/locations", f"[{report}, {report}]"),
        "traccar": ("GET", f"/?{query}", None),
        "form": ("POST", "/api/v1/phones/traccar", None),
        "owntracks": (
            "POST",
            "/pub?" + urlencode({"u": client_id[:50]}),
            f'{{"_type": "location", "lat": {la}, "lon": {lo}, "tst": {t}}}',
        ),
        "overland": ("POST", "/api/v1/phones/overland", f'{{"locations": [{feature}]}}'),
        "nearby": (
            "GET",
            f"/api/v1/clients/{quote(client_id, safe='')}/nearby?"
            + urlencode({"radius_km": lat, "limit": lon}),
            None,
        ),
        "clients": ("GET", "/api/v1/clients?" + urlencode({"offset": lat, "limit": lon}), None),
    }
    method, path, body = requests[endpoint]
    if endpoint == "form":
        path = f"/api/v1/phones/traccar?{query}"
    check(*http(live_gateway, method, path, body), f"{method} {path} {body}")
    # Whatever was stored, every viewer's client list is still JSON.
    check(*http(live_gateway, "GET", "/api/v1/clients?limit=1000"), "the client list")


@FUZZ
@example(
    command="nearby", client_id="f", a="1e-200000000", b="1", c="1", raw=True, command_id="1e999"
)
@given(
    command=st.sampled_from(["report", "nearby", "filter"]),
    client_id=client_ids,
    a=numbers,
    b=numbers,
    c=numbers,
    raw=st.booleans(),
    command_id=numbers,
)
def test_any_websocket_command_at_any_bound_is_answered(
    live_gateway: str,
    command: str,
    client_id: str,
    a: str,
    b: str,
    c: str,
    raw: bool,
    command_id: str,
) -> None:
    from aiohttp import ClientSession

    cid = json.dumps(client_id)
    x, y, z = as_json(a, raw), as_json(b, raw), as_json(c, raw)
    i = as_json(command_id, raw)  # echoed back in the answer, whatever it is
    text = {
        "report": f'{{"type": "report", "id": {i}, "client_id": {cid}, "lat": {x}, "lon": {y}, '
        f'"time": {z}}}',
        "nearby": f'{{"type": "nearby", "id": {i}, "client_id": {cid}, "radius_km": {x}, '
        f'"limit": {y}}}',
        "filter": f'{{"type": "filter", "id": {i}, "clients": null, "bbox": [{x}, {y}, {z}, {x}]}}',
    }[command]

    async def ask() -> dict[str, Any]:
        async with (
            ClientSession() as session,
            session.ws_connect(f"{live_gateway}/api/v1/ws") as ws,
        ):
            snapshot = await next_of(ws, "snapshot")
            assert isinstance(snapshot["records"], list)
            await ws.send_str(text)
            while True:  # updates from other reports may come first
                message = await asyncio.wait_for(ws.receive(), 30)
                assert message.type == WSMsgType.TEXT, (text[:300], message)
                answer: dict[str, Any] = strict_json(message.data)
                if answer["type"] in ("reply", "error"):
                    return answer

    answer = asyncio.run(ask())
    if answer["type"] == "error":
        assert answer["error"]["status"] < 500, (text[:300], answer)


def test_the_served_schema_bounds_report_times_by_max_future() -> None:
    from gateway.openapi import spec_at

    schema = spec_at(1_750_000_000.5, 600)["components"]["schemas"]["Report"]
    seconds, millis = schema["properties"]["time"]["anyOf"][:2]
    assert seconds["maximum"] == 1_750_000_600 and millis["maximum"] == 1_750_000_600_000
    far = spec_at(1_750_000_000, 1e12)["components"]["schemas"]["Report"]
    assert far["properties"]["time"]["anyOf"][1]["maximum"] == MAX_TIME_S * 1000
