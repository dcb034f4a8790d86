"""The live map in a real browser: a herd, the gateway, and Debian's Chromium via Playwright."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import Herd, ask, iamat, poll
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A tile layer offered on the map, off by default (any image from the gateway will do as a
# tile). The attribution tries to break out of the JSON <script> block and to inject markup.
TILES = "/static/icons/locality.svg?tile={z}/{x}/{y}"
ATTRIBUTION = "</script><i>Tiles</i> & co"
# Near UCLA; the cities15000 gazetteer has these within 10 km.
UCLA = "+34.068930-118.445127"
EXPECTED_NEARBY = {"Beverly Hills", "Santa Monica", "Brentwood"}
# A client ID is any run of non-space characters, HTML included.
HTML_ID = "<b>bold</b>"


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:  # refused while starting, or 503 until subscribed (HTTPError)
        return False


@contextmanager
def gateway(herd: Herd) -> Iterator[str]:
    """The gateway for ``herd`` as a process; yields its base URL once /healthz says ok."""
    herd.start_gateway()
    base = f"http://127.0.0.1:{herd.gateway_port}"
    try:
        poll(lambda: healthy(base), 15, "the gateway to be healthy")
        yield base
    finally:
        herd.stop_gateway()


def post_location(base: str, client_id: str, lat: float, lon: float) -> None:
    body = json.dumps({"client_id": client_id, "lat": lat, "lon": lon}).encode()
    request = urllib.request.Request(
        f"{base}/api/v1/locations", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def marker_of(page: Page, client_id: str) -> dict[str, Any] | None:
    """A client's pin as the map's test hook sees it (static/map.js, ``herdMap.markerOf``):
    ``shown`` (on its own, not in a cluster), ``visible`` (and inside the map's view),
    ``selected``, and ``x``/``y``, where to click its head in the page."""
    found: dict[str, Any] | None = page.evaluate("id => herdMap.markerOf(id)", client_id)
    return found


def expect_pin(page: Page, client_id: str, timeout: float = 5000) -> None:
    """Wait until ``client_id``'s pin is drawn on its own inside the map's view."""
    page.wait_for_function(
        "id => herdMap.markerOf(id)?.visible", arg=client_id, timeout=timeout, polling=50
    )


def click_pin(page: Page, client_id: str) -> None:
    expect_pin(page, client_id)
    found = marker_of(page, client_id)
    assert found is not None
    page.mouse.click(found["x"], found["y"])


def entry(client_id: str) -> str:
    return f"#clients li[data-client-id={json.dumps(client_id)}]"


def test_live_map(tmp_path: Path) -> None:
    requests: list[str] = []
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            problems.append(f"console {message.type}: {message.text}")

    gateway_config = f"tile_url = {json.dumps(TILES)}\ntile_attribution = {json.dumps(ATTRIBUTION)}"
    with Herd(tmp_path, gateway=gateway_config) as herd:
        herd.wait_links()
        with gateway(herd) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("request", lambda request: requests.append(request.url))
                page.on("websocket", lambda ws: requests.append(ws.url))
                page.on("console", on_console)
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                page.goto(base + "/")
                expect(page.locator("#connection")).to_have_text("live", timeout=5000)
                # The basemap is drawn from the vendored TopoJSON.
                expect(page.locator("path.land").first).to_be_attached(timeout=5000)

                # A location over HTTP, then one as a raw IAMAT to a herd server: both within 1 s.
                post_location(base, "http-phone", 34.0522, -118.2437)
                expect_pin(page, "http-phone", timeout=1000)
                ask(herd.ports["Campbell"], iamat("tcp-phone", UCLA))
                expect_pin(page, "tcp-phone", timeout=1000)
                tcp = page.locator(entry("tcp-phone"))
                expect(tcp).to_contain_text("via Campbell")
                expect(tcp).to_contain_text(" s ago")

                # Clicking a client's marker lists the places near it and puts them on the map.
                click_pin(page, "http-phone")
                places = page.locator("#places li.place")
                status = page.locator("#places-status")
                # The herd loads its gazetteer on this first lookup: allow for a busy machine.
                expect(places.first).to_be_visible(timeout=20_000)
                expect(status).to_have_text("10 places within 10 km of http-phone")
                downtown = set(page.locator("#places li.place .name").all_text_contents())
                assert downtown and not downtown & EXPECTED_NEARBY, downtown
                expect(page.locator(entry("http-phone"))).to_contain_class("selected")
                assert (marker_of(page, "http-phone") or {}).get("selected")

                # Selecting another client (by its list entry this time) replaces them.
                tcp.click()
                expect(status).to_have_text("10 places within 10 km of tcp-phone", timeout=10_000)
                expect(places).to_have_count(10)
                names = set(page.locator("#places li.place .name").all_text_contents())
                assert names & EXPECTED_NEARBY and not names & downtown, names
                expect(places.first.locator(".distance")).to_have_text(re.compile(r"^\d+\.\d km$"))
                expect(page.locator(".place-marker")).to_have_count(10)
                expect(tcp).to_contain_class("selected")
                expect(page.locator(entry("http-phone"))).not_to_contain_class("selected")

                # The herd panel: five servers up, and the one the gateway follows marked.
                herd_items = page.locator("#herd li[data-server]")
                expect(herd_items).to_have_count(5, timeout=5000)
                expect(page.locator("#herd li.up")).to_have_count(5)
                expect(page.locator("#herd li.subscribed")).to_have_count(1)
                expect(page.locator('#herd li[data-server="Juzang"] .link.up')).to_have_count(3)

                # Client data is text, never markup.
                post_location(base, HTML_ID, 34.1, -118.33)
                html = page.locator(entry(HTML_ID))
                expect(html.locator(".name")).to_have_text(HTML_ID, timeout=1000)
                assert page.locator("#clients b").count() == 0
                page.wait_for_function("id => herdMap.markerOf(id)?.id === id", arg=HTML_ID)
                # The configured tile layer reaches the page intact, is off until chosen, and its
                # attribution is shown as text too.
                config = json.loads(page.locator("#config").text_content() or "")
                assert config == {"tile_url": TILES, "tile_attribution": ATTRIBUTION}
                assert not [url for url in requests if "tile=" in url]
                attribution = page.locator(".leaflet-control-attribution")
                expect(attribution).not_to_contain_text(ATTRIBUTION)
                page.locator(".leaflet-control-layers").hover()
                overlay = page.get_by_label("Online map tiles")
                with page.expect_request(lambda request: "tile=" in request.url):
                    overlay.check()
                expect(attribution).to_contain_text(ATTRIBUTION)
                assert attribution.locator("i").count() == 0
                overlay.uncheck()
                page.mouse.move(400, 400)

                page.screenshot(path="/tmp/map.png")
            finally:
                browser.close()

    assert not problems, problems
    assert requests, "no requests were recorded"
    hosts = {urlsplit(url).hostname for url in requests}
    assert hosts == {"127.0.0.1"}, [u for u in requests if urlsplit(u).hostname != "127.0.0.1"]
    assert any(url.startswith("ws://127.0.0.1") for url in requests), requests
