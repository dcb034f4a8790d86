"""The live map with 10,000 clients (Debian's Chromium via Playwright): every client is on the
map (in clusters or on its own) and in the list, the list finds one by ID and by the name its
phone gave, and a link /#client=<id> opens the map on it. And 100,000 trail points from history
drawn as they are panned and zoomed, with the frame times printed. Timeouts are generous: this
checks behaviour, not speed (``herd bench --only map`` measures that)."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import Herd, ask, converse, iamat
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright
from test_browser import CHROMIUM, CHROMIUM_ARGS, entry, gateway, marker_of

from backend.protocol import format_attributes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CLIENTS = 10_000
BATCH = 1_000  # reports per POST
NAMED = "phone-named"
NAME = "Kestrel Field Unit"


def post_batch(base: str, reports: list[dict[str, object]]) -> None:
    request = urllib.request.Request(
        f"{base}/api/v1/locations",
        json.dumps(reports).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200


def wait_for(page: Page, expression: str, arg: object = None, timeout: float = 30_000) -> None:
    page.wait_for_function(expression, arg=arg, timeout=timeout, polling=100)


def test_ten_thousand_clients_are_shown_found_and_linked(tmp_path: Path) -> None:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            problems.append(f"console {message.type}: {message.text}")

    rng = random.Random(20261207)
    with Herd(tmp_path, names=("Solo",), links=()) as herd, gateway(herd) as base:
        for start in range(0, CLIENTS - 1, BATCH):
            post_batch(
                base,
                [
                    {
                        "client_id": f"fleet-{i:05d}",
                        "lat": rng.uniform(25, 49),
                        "lon": rng.uniform(-124, -67),
                    }
                    for i in range(start, min(start + BATCH, CLIENTS - 1))
                ],
            )
        # The last one through a phone's REPORT, with the name the phone gives.
        line = f"REPORT {NAMED} +39.7392-104.9903 {time.time():.3f} ".encode()
        assert ask(herd.ports["Solo"], line + format_attributes({"name": NAME}) + b"\n")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("console", on_console)
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                page.goto(base + "/")

                # All of them: counted, listed, and on the map in clusters or on their own.
                expect(page.locator("#client-count")).to_have_text(str(CLIENTS), timeout=30_000)
                wait_for(page, "n => herdMap.shown().total === n", CLIENTS)
                shown = page.evaluate("herdMap.shown()")
                assert shown["clusters"] > 0, shown
                assert shown["listed"] == CLIENTS, shown
                # Only the rows in view are in the page.
                rows = page.locator("#clients li").count()
                assert 0 < rows < 100, rows

                # Search by a part of an ID, any case: the match is listed and selectable.
                search = page.locator("#client-search")
                search.fill("ET-0421")
                expect(page.locator("#clients-matches")).to_have_text(f"10 of {CLIENTS} match")
                expect(page.locator("#clients li")).to_have_count(10)
                page.locator(entry("fleet-04217")).click()
                expect(page.locator(entry("fleet-04217"))).to_contain_class("selected")
                wait_for(page, "id => herdMap.markerOf(id)?.visible", "fleet-04217")
                found = marker_of(page, "fleet-04217")
                assert found is not None and found["selected"], found
                assert page.evaluate("location.hash") == "#client=fleet-04217"

                # By the display name, and selected from the keyboard.
                search.fill("kestrel")
                expect(page.locator("#clients li")).to_have_count(1)
                named = page.locator(entry(NAMED))
                expect(named.locator(".display")).to_have_text(NAME)
                search.press("Enter")
                expect(named).to_contain_class("selected")
                wait_for(page, "id => herdMap.markerOf(id)?.visible", NAMED)
                expect(page.locator("#places-status")).to_contain_text(NAMED)

                # Sorted by last report, the phone that reported last comes first.
                search.fill("")
                page.locator("#client-sort").select_option("recent")
                expect(page.locator("#clients li").first).to_have_attribute("data-client-id", NAMED)

                # A link to a client opens the map on it: selected, in view, centred.
                linked = browser.new_page(viewport={"width": 1280, "height": 800})
                linked.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                linked.goto(base + "/#client=fleet-00042")
                expect(linked.locator(entry("fleet-00042"))).to_contain_class(
                    "selected", timeout=30_000
                )
                wait_for(linked, "id => herdMap.markerOf(id)?.visible", "fleet-00042")
                pin = marker_of(linked, "fleet-00042")
                box = linked.locator("#map").bounding_box()
                assert pin is not None and box is not None
                assert pin["selected"]
                centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                # The pin's head is a pin's height above the centred position.
                assert abs(pin["x"] - centre[0]) < 5 and abs(pin["y"] - centre[1]) < 40, (
                    pin,
                    centre,
                )
            finally:
                browser.close()
    assert not problems, problems


# A fleet's day of trails: 100 clients in a 10 x 10 grid 2 degrees apart, each with 1,000
# points strewn over its 1.5-degree cell (so that a pixel's worth of simplification keeps
# nearly every one of them) and its newest at the cell's centre (the pins 2 degrees apart:
# at the zoom that fits them, 45 px, none in a cluster).
TRAIL_CLIENTS, TRAIL_POINTS = 100, 1_000
# What the page records: every animation frame's interval (``recorded.frames``, emptied
# between phases) and the long tasks (over 50 ms).
RECORD_FRAMES = """() => {
    const frames = [], tasks = [];
    let last = performance.now();
    const tick = (now) => { frames.push(now - last); last = now; requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    new PerformanceObserver((list) => tasks.push(...list.getEntries().map((e) => e.duration)))
        .observe({ type: "longtask" });
    window.recorded = { frames, tasks };
}"""
FRAMES_AFTER = 20  # frames recorded after each move: a third of a second at 60 Hz


def trail_lines(rng: random.Random, now: float) -> bytes:
    lines = []
    for c in range(TRAIL_CLIENTS):
        row, col = divmod(c, 10)
        south, west = 30 + 2 * row, -110 + 2 * col
        for i in range(TRAIL_POINTS):  # oldest first: each the newest when it arrives
            lat, lon = south + rng.uniform(0, 1.5), west + rng.uniform(0, 1.5)
            if i == TRAIL_POINTS - 1:
                lat, lon = south + 0.75, west + 0.75
            when = now - 20 * 3600 + 60 * i
            lines.append(iamat(f"trail-{c:03d}", f"{lat:+.6f}{lon:+.6f}", when))
    return b"".join(lines)


def test_a_hundred_thousand_trail_points_are_drawn_as_the_map_moves(tmp_path: Path) -> None:
    problems: list[str] = []
    rng = random.Random(20261208)
    extra = "[history]\nenabled = true\n"
    with Herd(tmp_path, names=("Solo",), links=(), extra=extra) as herd, gateway(herd) as base:
        replies = asyncio.run(converse(herd.ports["Solo"], trail_lines(rng, time.time()), 120))
        assert replies.count(b"AT Solo ") == TRAIL_CLIENTS * TRAIL_POINTS
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                started = time.monotonic()
                page.goto(base + "/")
                # Every trail loaded and drawn (each pin on its own), nearly every point kept.
                wait_for(
                    page,
                    "n => { const h = herdMap.history(); return h.loads && h.lines === n; }",
                    TRAIL_CLIENTS,
                    timeout=60_000,
                )
                loaded = time.monotonic() - started
                state = page.evaluate("herdMap.history()")
                assert state["error"] is None and not state["truncated"], state
                assert state["points"] >= 0.9 * TRAIL_CLIENTS * TRAIL_POINTS, state
                assert page.evaluate("herdMap.shown().pins") == TRAIL_CLIENTS

                # Panned by keys (animated, then a redraw of every trail) and zoomed in and
                # out: the longest frame of each move.
                page.evaluate(RECORD_FRAMES)
                page.locator("#map").focus()
                moves = []
                for key in ["ArrowRight"] * 4 + ["ArrowDown"] * 2 + ["Equal", "Minus"]:
                    page.evaluate("recorded.frames.length = 0")
                    page.keyboard.press(key)
                    wait_for(page, "n => recorded.frames.length >= n", FRAMES_AFTER)
                    # The trails loaded for the new view, if any, and drawn.
                    wait_for(page, "() => !herdMap.history().loading")
                    wait_for(page, "n => recorded.frames.length >= n", FRAMES_AFTER + 2)
                    moves.append(max(page.evaluate("recorded.frames")))
                # A replay at 1000x from a tenth of the window: every pin moves each frame.
                page.get_by_label("Speed").select_option("1000")
                page.get_by_label("Replay time").fill("100")
                page.get_by_role("button", name="Play").click()
                page.evaluate("recorded.frames.length = 0")
                wait_for(page, "n => recorded.frames.length >= n", 120)
                replay = sorted(page.evaluate("recorded.frames"))
                page.get_by_role("button", name="Pause").click()
                assert page.evaluate("herdMap.history().replay.time") is not None
                tasks = page.evaluate("recorded.tasks")
            finally:
                browser.close()
    print(
        f"\n{state['points']} trail points in {state['lines']} lines, loaded and drawn "
        f"{loaded:.1f} s after navigation; the longest frame of each move "
        f"{', '.join(f'{ms:.0f}' for ms in moves)} ms; replay frames: median "
        f"{statistics.median(replay):.1f} ms, p95 {replay[int(0.95 * (len(replay) - 1))]:.1f} "
        f"ms; {len(tasks)} long tasks, longest {max(tasks, default=0):.0f} ms"
    )
    assert not problems, problems
    # A replay follows the frames: most of them within a few 60 Hz intervals.
    assert statistics.median(replay) < 100, replay
