"""Records at every bound the herd accepts, through the gateway's JSON and onto the map: every
document parses, and every record is listed and drawn (Debian's Chromium via Playwright)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import Herd, ask
from playwright.sync_api import ConsoleMessage, expect, sync_playwright
from test_browser import CHROMIUM, CHROMIUM_ARGS, gateway

from backend.protocol import (
    MAX_CLIENT_ID_BYTES,
    MAX_LOCATION_BYTES,
    MAX_TIME_BYTES,
    MAX_TIME_S,
    format_attributes,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def extreme_reports() -> dict[str, bytes]:
    """Client ID -> an IAMAT at or next to a bound, each one the herd accepts."""
    decimals = (MAX_LOCATION_BYTES - len("+89.-179.")) // 2
    longest_location = f"+89.{'9' * decimals}-179.{'9' * decimals}"
    assert len(longest_location) <= MAX_LOCATION_BYTES
    latest = f"{MAX_TIME_S}.{'9' * (MAX_TIME_BYTES - len(str(MAX_TIME_S)) - 1)}"
    reports = {
        "x" * MAX_CLIENT_ID_BYTES: "+0+0 1700000000",
        "é" * (MAX_CLIENT_ID_BYTES // 2): "+1+1 1700000000",
        "latest-time": f"+2+2 {latest}",
        "epoch": "+3+3 0",
        "zeros": f"+4+4 {'0' * (MAX_TIME_BYTES - 10)}1700000000",
        "north-east-edge": "+90+180 1700000000",
        "south-west-edge": "-90.000-180.000 1700000000",
        "longest-location": f"{longest_location} 1700000000",
        "<img/src=x/onerror=alert(1)>": "+5+5 1700000000",
    }
    return {client: f"IAMAT {client} {rest}\n".encode() for client, rest in reports.items()}


def entry(client_id: str) -> str:
    return f"#clients li[data-client-id={json.dumps(client_id, ensure_ascii=False)}]"


def strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_every_record_at_the_bounds_is_served_as_json_and_drawn(tmp_path: Path) -> None:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console {message.type}: {message.text}")

    reports = extreme_reports()
    # Times up to the year 9999 are storable when the servers allow them ahead of their clock.
    with Herd(tmp_path, names=("Solo",), links=(), extra="[limits]\nmax_future = 1e12\n") as herd:
        for client, line in reports.items():
            assert ask(herd.ports["Solo"], line).startswith(b"AT Solo "), client
        with gateway(herd) as base, sync_playwright() as playwright:
            url = f"{base}/api/v1/clients?limit=1000"
            with urllib.request.urlopen(url, timeout=10) as response:
                listed = strict_json(response.read().decode())
            assert isinstance(listed, dict)
            assert {c["client_id"] for c in listed["clients"]} == set(reports)
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("console", on_console)
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                page.goto(base + "/")
                expect(page.locator("#connection")).to_have_text("live", timeout=5000)
                for client in reports:
                    expect(page.locator(entry(client))).to_be_attached(timeout=5000)
                    # Drawn: on its own or counted in a cluster.
                    page.wait_for_function("id => herdMap.markerOf(id)?.drawn", arg=client)
                assert page.locator("#clients img").count() == 0
            finally:
                browser.close()
    assert not problems, problems


def test_the_map_shows_a_clients_attributes_and_its_alarm(tmp_path: Path) -> None:
    problems: list[str] = []
    attributes = {"name": "iPhone 12 Pro", "battery": 87, "accuracy": 5, "alarm": "sos"}
    with Herd(tmp_path, names=("Solo",), links=()) as herd:
        line = f"REPORT phone +34.1-118.3 {time.time():.3f} ".encode()
        assert ask(herd.ports["Solo"], line + format_attributes(attributes) + b"\n")
        with gateway(herd) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                page.goto(base + "/")
                phone = page.locator(entry("phone"))
                expect(phone.locator(".display")).to_have_text("iPhone 12 Pro", timeout=5000)
                expect(phone.locator(".details")).to_have_text("battery 87% · ±5 m · ALARM sos")
                expect(phone).to_contain_class("alarm")
            finally:
                browser.close()
    assert not problems, problems
