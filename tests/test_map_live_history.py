"""The live map under a steady live load with history on (Debian's Chromium via Playwright):
every client reporting in turn, 500 updates a second, while the map's trails load from
history is on its way. The page keeps answering and its pins keep moving once the load
comes back, and the trails hold what came meanwhile (live records and a late point).

The load's answer is held back (Playwright routes it) until updates have come in behind it:
a trails load is always on its way when a page opens on a busy herd, but how long it takes
is the machine's business, and the test wants updates to land inside it every time. The
async API, so that a page whose main thread is stuck fails the test in seconds: Playwright's
own timeouts wait for the page.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import Herd, poll_async
from playwright.async_api import ConsoleMessage, Page, Route, async_playwright
from test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLIENTS = 500
BATCH = 100  # reports per POST, as herd bench --only map's live phase sends them
RATE = 500  # reports/s
SAMPLE_INDEX = 7
SAMPLE = f"live-{SAMPLE_INDEX:05d}"  # the client watched: its pin, its trail
ANSWER_S = 5.0  # the page answers a question within this, or it has stalled
MOVE_S = 10.0  # a posted position is on the map within this
HISTORY = "[history]\nenabled = true\n"

Point = tuple[float, float, float]  # lat, lon, t

# The client's trail holds a point of time t; the trails are loaded (the page's history state).
HAS_POINT_AT = "([id, t]) => herdMap.trailOf(id)?.points.some((p) => Math.abs(p[2] - t) < 1e-3)"
LOADED = "() => { const h = herdMap.history(); return !h.loading && h.loads >= 1 && h; }"


def position(i: int, step: int) -> tuple[float, float]:
    """Client ``i``'s position at its ``step``-th report: a grid over the United States, each
    report a little further north."""
    return round(30.0 + (i % 25) * 0.7 + step * 0.001, 6), round(-120.0 + (i // 25) * 2.5, 6)


def report(i: int, step: int, t: float) -> dict[str, Any]:
    lat, lon = position(i, step)
    return {"client_id": f"live-{i:05d}", "lat": lat, "lon": lon, "time": t}


async def post(session: aiohttp.ClientSession, base: str, reports: list[dict[str, Any]]) -> None:
    async with session.post(f"{base}/api/v1/locations", json=reports) as response:
        assert response.status == 200, await response.text()


@asynccontextmanager
async def live_load(
    session: aiohttp.ClientSession, base: str, sent: list[Point]
) -> AsyncIterator[None]:
    """Every client reports in turn, ``RATE`` reports/s in batches of ``BATCH``, until the
    block ends; ``sent`` gets the sample's reports (lat, lon, t), each once posted."""

    async def run() -> None:
        interval = BATCH / RATE
        start = time.monotonic()
        for b in itertools.count():
            # Paced in time, as a fleet reports: batch b is due at start + b * interval.
            await asyncio.sleep(max(0.0, start + b * interval - time.monotonic()))
            step = 1 + b * BATCH // CLIENTS  # every client's reports so far
            which = [(b * BATCH + k) % CLIENTS for k in range(BATCH)]
            now = round(time.time(), 3)
            await post(session, base, [report(i, step, now) for i in which])
            if SAMPLE_INDEX in which:
                sent.append((*position(SAMPLE_INDEX, step), now))

    task = asyncio.create_task(run())
    try:
        yield
        assert not task.done(), task  # a POST failed: the load stopped
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task  # a failed POST's error, if that is what ended it


async def answers(page: Page, expression: str, arg: object = None, within: float = ANSWER_S) -> Any:
    """``expression`` evaluated in the page once it is truthy; a page that does not answer
    within ``within`` seconds (its main thread stuck) fails the test."""
    try:
        async with asyncio.timeout(within):
            handle = await page.wait_for_function(expression, arg=arg, polling=50)
            return await handle.json_value()
    except TimeoutError:
        raise AssertionError(f"the page did not answer {expression!r} in {within} s") from None


async def next_report(page: Page, sent: list[Point]) -> Point:
    """The sample's next report, once it is posted (the page asked meanwhile: a stuck page
    fails here too)."""
    n = len(sent)

    async def posted() -> bool:
        return bool(await answers(page, "() => true")) and len(sent) > n

    await poll_async(posted, MOVE_S, "the sample's next report")
    return sent[n]


async def expect_pin(page: Page, at: Point) -> None:
    """The sample's pin shows ``at`` (or a later report: each is further north) within
    ``MOVE_S``."""
    expression = "([id, lat]) => (herdMap.markerOf(id)?.lat ?? -99) > lat - 1e-6"
    await answers(page, expression, [SAMPLE, at[0]], within=MOVE_S)


def same(a: list[float], b: Point) -> bool:
    return abs(a[0] - b[0]) < 1e-6 and abs(a[1] - b[1]) < 1e-6 and abs(a[2] - b[2]) < 1e-3


async def test_the_map_stays_live_while_trails_load_under_live_load(tmp_path: Path) -> None:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            problems.append(f"console {message.type}: {message.text}")

    held: list[Route] = []
    sent: list[Point] = []
    async with (
        Herd(tmp_path, names=("Solo",), links=(), extra=HISTORY) as herd,
        aiohttp.ClientSession() as session,
    ):
        base = await herd.start_gateway_async()
        start = round(time.time(), 3)
        for first in range(0, CLIENTS, BATCH):
            await post(session, base, [report(i, 0, start) for i in range(first, first + BATCH)])
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("console", on_console)
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                await page.route("**/api/v1/trails?*", lambda route: held.append(route))
                await page.goto(base + "/")
                await answers(page, f"() => window.herdMap && herdMap.shown().total >= {CLIENTS}")
                # The first trails load is on its way, and held.
                await answers(page, "() => herdMap.history().loading", within=10)

                async with live_load(session, base, sent):
                    # The pins move while the load is out.
                    await expect_pin(page, await next_report(page, sent))
                    # A late point of the sample (from a phone's queue: an hour old, far off
                    # its line) reaches its trail while the load is out, by the WebSocket.
                    lat, lon = position(SAMPLE_INDEX, 0)
                    late = (lat + 1.0, lon + 1.0, round(start - 3600, 3))
                    body = {"client_id": SAMPLE, "lat": late[0], "lon": late[1], "time": late[2]}
                    await post(session, base, [body])
                    await answers(page, HAS_POINT_AT, [SAMPLE, late[2]])
                    assert len(held) == 1, [route.request.url for route in held]
                    # The load comes back, updates still coming in behind it.
                    await held.pop().continue_()
                    loaded = await answers(page, LOADED, within=10)
                    assert loaded["error"] is None, loaded
                    # The page still answers and the pins still move: the next two reports
                    # are shown.
                    for _ in range(2):
                        await expect_pin(page, await next_report(page, sent))
                # The sample's trail, from history with what came meanwhile: oldest first, the
                # late point in its place, its newest report at the end.
                newest = sent[-1]
                await answers(
                    page,
                    "([id, t]) => Math.abs(herdMap.trailOf(id)?.points.at(-1)[2] - t) < 1e-3",
                    [SAMPLE, newest[2]],
                )
                points = await answers(page, "id => herdMap.trailOf(id).points", SAMPLE)
                times = [p[2] for p in points]
                assert times == sorted(times), times
                assert same(points[0], late), points[:3]
                assert same(points[-1], newest), points[-3:]
            finally:
                await browser.close()
    assert not problems, problems
