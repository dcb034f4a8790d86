"""Access control of the gateway: tokens, write scopes, rate limits, bind refusal, logs.

Pure parts (the rate limiter, log redaction, config rules) run with no sockets; the rules
that need a request run against a real herd, as tests/test_gateway.py does.
"""

from __future__ import annotations

import asyncio
import logging
from base64 import b64encode
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from helpers import Herd

from backend.cli import main as herd_main
from backend.config import ConfigError, load_config
from gateway.app import create_app
from gateway.auth import COOKIE, RateLimiter, address_key
from gateway.keys import ACCESS, GUARDS
from gateway.redact import redact

pytestmark = pytest.mark.timeout(60)

READ = "r-read-token-0123456789"
KIWI = "w-kiwi-token-0123456789"  # may report for "kiwi"
JANE = "w-jane-token-0123456789"  # may report for OwnTracks' "owntracks/jane/phone"
TRACCAR = "w-trac-token-0123456789"  # may report for "traccar-7"
TOKENS = f'read_tokens = ["{READ}"]'
WRITE_TOKENS = (
    f'[gateway.write_tokens]\n"{KIWI}" = "kiwi"\n"{JANE}" = "owntracks/jane/phone"\n'
    f'"{TRACCAR}" = "traccar-7"\n'
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> str:
    """An ``Authorization`` value as the OwnTracks app sends it."""
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


# -- the rate limiter, with a hand-driven clock ----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 4.0, clock=clock)
    assert [limiter.take(["a"]) for _ in range(4)] == [0.0] * 4
    assert limiter.take(["a"]) == pytest.approx(0.5)  # one token at 2 per second
    assert limiter.take(["b"]) == 0.0  # keys do not share a budget
    clock.now += 0.5
    assert limiter.take(["a"]) == 0.0
    assert limiter.take(["a"]) > 0


def test_a_request_for_several_keys_is_charged_to_all_or_none() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 1.0, clock=clock)
    assert limiter.take(["a"]) == 0.0
    assert limiter.take(["b", "a"]) == pytest.approx(1.0)  # "a" is empty: nothing charged
    assert limiter.take(["b", "b"]) == 0.0  # a key named twice pays once
    assert limiter.take(["b"]) > 0


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # same host, another address
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, "unknown"),
    ],
)
def test_addresses_are_limited_per_ipv4_address_or_ipv6_64(remote: str | None, key: str) -> None:
    assert address_key(remote) == key


def test_idle_buckets_are_forgotten_and_the_table_is_capped() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, 20.0, max_keys=100, clock=clock)
    for i in range(50):
        limiter.take([f"k{i}"])
    assert len(limiter) == 50
    clock.now += 2.0  # burst / rate: every bucket has refilled, so none needs keeping
    limiter.take(["fresh"])
    assert len(limiter) == 1
    for i in range(1000):
        limiter.take([f"flood-{i}"])
    assert len(limiter) == 100


# -- logs --------------------------------------------------------------------------------------


def test_access_log_lines_are_redacted() -> None:
    line = (
        f'127.0.0.1 "GET /?id=7&token={KIWI}&lat=1 HTTP/1.1" 200 "http://h/?token={READ}" '
        f'"Bearer {JANE}" "herd_token={READ}"'
    )
    clean = redact(line)
    assert not any(token in clean for token in (KIWI, READ, JANE))
    assert "/?id=7&token=***&lat=1" in clean and "127.0.0.1" in clean


# -- the bind refusal ---------------------------------------------------------------------------


def config_file(tmp_path: Path, gateway: str, extra: str = "") -> Path:
    return Herd(tmp_path, gateway=gateway, extra=extra).config  # the file only, not started


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "herd.example.org"])
def test_a_reachable_gateway_needs_tokens_or_open_access(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match="not a loopback address"):
        load_config(config_file(tmp_path, f'host = "{host}"'), env={})
    opened = load_config(config_file(tmp_path, f'host = "{host}"\nopen_access = true'), env={})
    assert opened.gateway.open_access and opened.gateway.rate_per_address == 50.0
    guarded = load_config(config_file(tmp_path, f'host = "{host}"\n{TOKENS}'), env={})
    assert guarded.gateway.read_tokens == (READ,)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_a_loopback_gateway_may_run_open(tmp_path: Path, host: str) -> None:
    gateway = load_config(config_file(tmp_path, f'host = "{host}"'), env={}).gateway
    assert gateway.host == host and not gateway.read_tokens
    # Open and local: as before, no rate limits either (local tools only).
    assert gateway.rate_per_client == gateway.rate_per_address == 0.0


def test_herd_gateway_refuses_to_start_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, 'host = "0.0.0.0"')
    assert herd_main(["gateway", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "open_access = true" in err


@pytest.mark.parametrize(
    ("gateway", "extra", "message"),
    [
        ('read_tokens = ["short"]', "", "read_tokens"),
        ('read_tokens = ["has space in it 0123"]', "", "read_tokens"),
        ("", '[gateway.write_tokens]\n"short" = "kiwi"\n', "a token must be"),
        ("", f'[gateway.write_tokens]\n"{KIWI}" = "two words"\n', "client ID"),
        (TOKENS, f'[gateway.write_tokens]\n"{READ}" = "kiwi"\n', "both"),
        (f"{TOKENS}\nopen_access = true", "", "contradicts"),
        ("rate_per_client = -1", "", "rate_per_client"),
        ("rate_per_address = inf", "", "rate_per_address"),
        ('open_access = "yes"', "", "open_access"),
    ],
)
def test_bad_access_settings_are_config_errors(
    tmp_path: Path, gateway: str, extra: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(config_file(tmp_path, gateway, extra), env={})


def test_tokens_stay_out_of_the_config_repr(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, TOKENS, WRITE_TOKENS), env={})
    assert config.gateway.write_tokens[KIWI] == "kiwi"
    assert config.gateway.rate_per_client == 10.0  # tokens configured: limits on
    assert not any(token in repr(config) for token in (READ, KIWI, JANE, TRACCAR))


def test_every_route_has_an_access_rule(tmp_path: Path) -> None:
    # Each route is registered with its need (gateway/app.py ROUTES); none slipped in without.
    app = create_app(load_config(config_file(tmp_path, ""), env={}))
    undeclared = [
        f"{route.method} {resource.canonical}"
        for resource in app.router.resources()
        for route in resource
        if app[GUARDS].declared(route) is None
    ]
    assert not undeclared, undeclared


# -- against a real herd ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def herd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herd]:
    with Herd(tmp_path_factory.mktemp("sec"), gateway=TOKENS, extra=WRITE_TOKENS) as h:
        h.wait_links()
        yield h


def variant(herd: Herd, root: Path, gateway: str, extra: str = "") -> Path:
    """A config for the running ``herd`` with other [gateway] settings."""
    other = Herd(root, gateway=gateway, extra=extra)
    other.ports = herd.ports
    other.write_config()
    return other.config


@pytest.fixture
async def client(herd: Herd, aiohttp_client: Any) -> AsyncIterator[TestClient[Any, Any]]:
    yield await aiohttp_client(create_app(load_config(herd.config, env={})))


async def report(
    client: TestClient[Any, Any], client_id: str, token: str | None, status: int
) -> dict[str, Any]:
    body = {"client_id": client_id, "lat": 1.5, "lon": 2.5}
    headers = bearer(token) if token else {}
    response = await client.post("/api/v1/locations", json=body, headers=headers)
    assert response.status == status, await response.text()
    payload: dict[str, Any] = await response.json()
    return payload


def error_of(payload: dict[str, Any], status: int) -> str:
    assert payload["error"]["status"] == status, payload
    message: str = payload["error"]["message"]
    return message


async def known(client: TestClient[Any, Any], client_id: str) -> bool:
    response = await client.get(f"/api/v1/clients/{client_id}", headers=bearer(READ))
    assert response.status in (200, 404), await response.text()
    return response.status == 200


async def test_a_device_token_reports_for_its_own_client_only(
    client: TestClient[Any, Any],
) -> None:
    assert (await report(client, "kiwi", KIWI, 200))["record"]["client_id"] == "kiwi"
    assert "may not report" in error_of(await report(client, "not-kiwi", KIWI, 403), 403)
    # A batch with one foreign client ID is refused whole: nothing reaches the herd.
    mixed = [{"client_id": c, "lat": 1, "lon": 1} for c in ("kiwi", "kiwi-friend")]
    response = await client.post("/api/v1/locations", json=mixed, headers=bearer(KIWI))
    assert response.status == 403
    assert not await known(client, "kiwi-friend")
    # No token, or one the gateway does not know: 401, with a challenge.
    assert "required" in error_of(await report(client, "kiwi", None, 401), 401)
    assert "unknown" in error_of(await report(client, "kiwi", "w-guess-0123456789abc", 401), 401)
    refused = await client.post("/api/v1/locations", json={})
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="herd"'


async def test_owntracks_authenticates_with_its_basic_auth_password(
    client: TestClient[Any, Any],
) -> None:
    location = b'{"_type":"location","lat":50.1,"lon":60.2,"tst":1700000000}'

    async def pub(user: str, password: str | None) -> int:
        headers = {"X-Limit-U": user, "X-Limit-D": "phone", "Content-Type": "application/json"}
        if password is not None:
            headers["Authorization"] = basic(user, password)
        response = await client.post("/pub", data=location, headers=headers)
        if response.status == 401:
            assert response.headers["WWW-Authenticate"] == 'Basic realm="herd"'
        return response.status

    assert await pub("jane", JANE) == 200
    assert await known(client, "owntracks/jane/phone")
    assert await pub("john", JANE) == 403  # jane's token, john's ID
    assert await pub("jane", None) == 401
    assert await pub("jane", "not-a-configured-token") == 401


async def test_traccar_passes_its_token_in_the_query_string(
    client: TestClient[Any, Any],
) -> None:
    fix = "lat=37.42&lon=-122.08&timestamp=1750000000"
    ok = await client.post(f"/?id=traccar-7&{fix}&token={TRACCAR}")
    assert ok.status == 200 and await ok.read() == b""
    assert await known(client, "traccar-7")
    assert (await client.post(f"/?id=traccar-8&{fix}&token={TRACCAR}")).status == 403
    assert (await client.get(f"/?id=traccar-7&{fix}")).status == 401  # OsmAnd-style GET
    form = f"id=traccar-7&{fix}".encode()
    posted = await client.post(
        f"/api/v1/phones/traccar?token={TRACCAR}",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status == 200


async def test_reads_need_a_read_token(client: TestClient[Any, Any]) -> None:
    for path in ("/", "/api/v1/herd", "/api/v1/clients", "/metrics", "/api/v1/ws"):
        refused = await client.get(path)
        assert refused.status == 401, path
        assert "required" in error_of(await refused.json(), 401)
    assert (await client.get("/api/v1/herd", headers=bearer("r-guess-0123456789abc"))).status == 401
    # A phone's write token does not read.
    assert (await client.get("/api/v1/herd", headers=bearer(KIWI))).status == 403
    # Documentation, liveness and the page's static files need nothing.
    for path in ("/api/docs", "/api/v1/openapi.json", "/static/map.js"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/healthz")).status in (200, 503)


async def test_a_read_token_in_a_header_the_query_or_the_cookie(
    client: TestClient[Any, Any],
) -> None:
    assert (await client.get("/api/v1/herd", headers=bearer(READ))).status == 200
    assert (await client.get("/api/v1/herd", params={"token": READ})).status == 200
    page = await client.get("/", params={"token": READ})
    assert page.status == 200 and "leaflet" in await page.text()
    cookie = page.cookies[COOKIE]
    assert cookie.value == READ
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert page.headers["Referrer-Policy"] == "strict-origin"
    # What the page's own fetch and WebSocket calls then send, with no change to its script.
    sent = {"Cookie": f"{COOKIE}={READ}"}
    assert (await client.get("/api/v1/herd", headers=sent)).status == 200
    async with client.ws_connect("/api/v1/ws", headers=sent) as ws:
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type == WSMsgType.TEXT and '"snapshot"' in message.data
    # The API does not hand out cookies; only the map page does.
    assert COOKIE not in (await client.get("/api/v1/herd", params={"token": READ})).cookies


async def test_a_read_token_cannot_write(client: TestClient[Any, Any]) -> None:
    assert "read token" in error_of(await report(client, "kiwi", READ, 403), 403)
    sent = {"Authorization": basic("jane", READ), "X-Limit-U": "jane"}
    assert (await client.post("/pub", data=b"{}", headers=sent)).status == 403
    # Over the WebSocket, each report carries its own write token.
    async with client.ws_connect(f"/api/v1/ws?token={READ}") as ws:
        await ws.receive()  # the snapshot
        command = {"type": "report", "client_id": "kiwi", "lat": 3, "lon": 4}
        for extra, status in [({}, 403), ({"token": JANE}, 403), ({"token": KIWI}, 0)]:
            await ws.send_json({**command, "id": status, **extra})
            while (answer := await asyncio.wait_for(ws.receive_json(), 10))["type"] == "update":
                pass
            if status:
                assert answer["type"] == "error" and answer["error"]["status"] == status
            else:
                assert answer["type"] == "reply" and answer["record"]["lat"] == 3


async def test_a_cross_origin_websocket_is_refused(client: TestClient[Any, Any]) -> None:
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    evil = await client.get(
        "/api/v1/ws", params={"token": READ}, headers={**upgrade, "Origin": "http://evil.example"}
    )
    assert evil.status == 403
    assert "Access-Control-Allow-Origin" not in evil.headers  # and no CORS anywhere


async def test_with_no_tokens_everything_is_open(
    herd: Herd, tmp_path: Path, aiohttp_client: Any
) -> None:
    config = load_config(variant(herd, tmp_path, ""), env={})
    client = await aiohttp_client(create_app(config))
    assert client.app[ACCESS].per_address is None  # loopback and open: no limits either
    await report(client, "open-client", None, 200)
    assert (await client.get("/api/v1/clients/open-client")).status == 200
    assert (await client.get("/")).status == 200


async def test_reports_for_one_client_are_rate_limited(
    herd: Herd, tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = variant(herd, tmp_path, f"{TOKENS}\nrate_per_client = 0.1", WRITE_TOKENS)
    client = await aiohttp_client(create_app(load_config(config, env={})))
    caplog.set_level(logging.WARNING, "herd.gateway.auth")
    await report(client, "kiwi", KIWI, 200)  # the burst: one report (0.1/s, at least 1)
    response = await client.post(
        "/api/v1/locations", json={"client_id": "kiwi", "lat": 1, "lon": 1}, headers=bearer(KIWI)
    )
    assert response.status == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 10
    assert "too many reports" in error_of(await response.json(), 429)
    # Another client has its own budget.
    traccar = await client.post(f"/?id=traccar-7&lat=1&lon=1&token={TRACCAR}")
    assert traccar.status == 200
    assert "from 127.0.0.1: 429" in caplog.text


async def test_requests_from_one_address_are_rate_limited(
    herd: Herd, tmp_path: Path, aiohttp_client: Any
) -> None:
    config = variant(herd, tmp_path, f"{TOKENS}\nrate_per_address = 0.1", WRITE_TOKENS)
    client = await aiohttp_client(create_app(load_config(config, env={})))
    assert (await client.get("/api/docs")).status == 200  # the burst: one request
    for path in ("/api/docs", "/healthz", "/api/v1/herd"):  # every request counts
        response = await client.get(path, headers=bearer(READ))
        assert response.status == 429, path
        assert response.headers["Retry-After"] == "10"  # a whole token at 0.1 per second
        assert "too many requests" in error_of(await response.json(), 429)


async def test_websocket_commands_count_against_the_address_rate(
    herd: Herd, tmp_path: Path, aiohttp_client: Any
) -> None:
    # A socket is one request to open, but each command on it costs the herd like one (a
    # nearby command may cost a Google query): commands are charged to the address too.
    config = variant(herd, tmp_path, f"{TOKENS}\nrate_per_address = 0.5", WRITE_TOKENS)
    client = await aiohttp_client(create_app(load_config(config, env={})))
    async with client.ws_connect(f"/api/v1/ws?token={READ}") as ws:  # the burst: 1 request
        await ws.receive()  # the snapshot
        await ws.send_json({"type": "nearby", "id": 1, "client_id": "kiwi"})
        while (answer := await asyncio.wait_for(ws.receive_json(), 10))["type"] == "update":
            pass  # other tests' reports, live
        assert answer["type"] == "error" and answer["error"]["status"] == 429
        assert "too many requests" in answer["error"]["message"]
        assert not ws.closed  # refused, not hung up on


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``check`` on the loop until it holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_refusals_are_logged_with_the_address_and_never_the_token(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    guess = "r-guessed-secret-0123456789"
    assert (await client.get("/api/v1/herd", params={"token": guess})).status == 401
    await report(client, "not-kiwi", KIWI, 403)
    assert (await client.get("/api/v1/herd", headers=bearer(KIWI))).status == 403

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "herd.gateway.auth"]

    await until(lambda: len(refusals()) == 3)
    for record in refusals():
        assert "from 127.0.0.1:" in record.getMessage() and "token #" in record.getMessage()
    # The access log line of the query-string request is there, with its token masked.
    await until(lambda: "token=***" in caplog.text)
    assert guess not in caplog.text and KIWI not in caplog.text
