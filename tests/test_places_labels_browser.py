"""Place labels on the live map in a real browser (Debian's Chromium via Playwright): offline, a
client's view at street zoom is labelled with the gazetteer's places around it, the labels
follow the view, never overlap, never take a click from a pin, and give way to a tile layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import Herd
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright
from test_browser import CHROMIUM, CHROMIUM_ARGS, TILES, click_pin, gateway, post_location

from gateway.labels import MAX_LABELS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

# The built-in herd's gazetteer: it has UCLA's neighbourhoods (cities15000 has none of them).
PLACES = 'provider = "embedded"\ngazetteer = "cities1000"\npreload = false'
UCLA = (34.06893, -118.445127)


def label(page: Page, name: str) -> Any:
    return page.locator(".place-label", has_text=name)


def drawn_labels(page: Page) -> list[dict[str, Any]]:
    """Each label on the map: its text and its box in the page."""
    found: list[dict[str, Any]] = page.evaluate(
        """() => [...document.querySelectorAll('.place-label')].map((node) => {
            const box = node.getBoundingClientRect();
            return {name: node.textContent, left: box.left, right: box.right,
                    top: box.top, bottom: box.bottom};
        })"""
    )
    return found


def overlapping(boxes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (a["name"], b["name"])
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a["left"] < b["right"]
        and b["left"] < a["right"]
        and a["top"] < b["bottom"]
        and b["top"] < a["bottom"]
    ]


def test_street_zoom_is_labelled_with_the_places_around_a_client(tmp_path: Path) -> None:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            problems.append(f"console {message.type}: {message.text}")

    tiles = f"tile_url = {json.dumps(TILES)}"
    herd = Herd(tmp_path, names=("Solo",), links=(), places=PLACES, gateway=tiles)
    with herd, gateway(herd) as base, sync_playwright() as playwright:
        post_location(base, "bruin", *UCLA)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            labelled = []
            page.on(
                "response",
                lambda r: labelled.append(r) if "/api/v1/places?" in r.url else None,
            )
            page.goto(base + "/")
            # One client: the map fits it at zoom 11, where the region's towns are labelled.
            expect(page.locator("#connection")).to_have_text("live", timeout=5000)
            expect(label(page, "Santa Monica")).to_be_visible(timeout=20_000)
            expect(label(page, "Bel Air")).to_have_count(0)
            # The gateway offers 64 here; those that would overlap a bigger one are not drawn.
            crowded = drawn_labels(page)
            assert 10 <= len(crowded) < MAX_LABELS, crowded
            assert not overlapping(crowded), overlapping(crowded)

            # Two steps in with the zoom control: street zoom (13) around the client.
            for _ in range(2):
                with page.expect_response(lambda r: "/api/v1/places?" in r.url):
                    page.locator(".leaflet-control-zoom-in").click()
            bel_air = label(page, "Bel Air")
            expect(bel_air).to_be_visible(timeout=5000)
            assert "zoom=13" in labelled[-1].url and labelled[-1].status == 200
            # Drawn inside the map (Bel Air is 1.6 km north of the client).
            box = bel_air.bounding_box()
            area = page.locator("#map").bounding_box()
            assert box and area
            assert area["x"] < box["x"] < area["x"] + area["width"]
            assert area["y"] < box["y"] < area["y"] + area["height"]
            boxes = drawn_labels(page)
            assert 5 <= len(boxes) <= MAX_LABELS, boxes
            assert not overlapping(boxes), overlapping(boxes)
            assert page.locator(".place-label b, .place-label script").count() == 0

            # Labels take no pointer: a click or a hover goes to what is under them.
            takes = bel_air.evaluate("node => getComputedStyle(node).pointerEvents")
            assert takes == "none"
            click_pin(page, "bruin")
            expect(page.locator("#places-status")).to_contain_text(
                "within 10 km of bruin", timeout=20_000
            )

            # Online tiles bring their own labels: ours give way, and come back after.
            page.locator(".leaflet-control-layers").hover()
            overlay = page.get_by_label("Online map tiles")
            overlay.check()
            expect(page.locator(".place-label")).to_have_count(0, timeout=5000)
            overlay.uncheck()
            expect(page.locator(".place-label").first).to_be_visible(timeout=5000)
            page.screenshot(path=str(tmp_path / "labels.png"))
        finally:
            browser.close()
    assert not problems, problems
