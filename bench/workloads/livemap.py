"""6. The live map in Chromium (Playwright): 10,000 clients at load, then 1,000 updates/s.

The map page of the gateway against a bare Leaflet page that draws the same points as circle
markers on a canvas renderer and nothing else (no list, no clusters, no WebSocket), served by
this workload from the same vendored Leaflet. Each round opens a fresh page and measures, from
navigation: the time until every client is shown (the map's test hook counts the clients in its
clusters and pins, and the list holds them all; the bare page says when it has drawn), the
longest main-thread task (Long Tasks API, observed from before the page's first script), and
the JS heap in use (CDP ``Runtime.getHeapUsage``). Then, the map page still open, every client
reports every ``map_clients / map_rate`` seconds, as REST batches of 100: one client of each
batch is sampled, and the page is asked (every 20 ms) whether it shows that client's new
position yet.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from ..context import Context, interleave, summarise
from ..results import Missing, Target, WorkloadResult, percentile

NAME = "map"
TITLE = "Map: 10,000 clients in Chromium at load, then 1,000 updates/s"
HERD, BARE = "map page", "bare Leaflet canvas page"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
LOAD_TARGET = Target("< 2000 ms", "value", lambda v: v < 2000)
RATIO_TARGET = Target("ratio <= 2", "ratio", lambda r: r <= 2)
TASK_TARGET = Target("< 200 ms", "value", lambda v: v < 200)
HEAP_TARGET = Target("< 200 MB", "value", lambda v: v < 200)
SHOWN_TARGET = Target("100%", "value", lambda v: v >= 100)
POST_BATCH = 1000  # reports per POST while loading the clients
LIVE_BATCH = 100  # reports per POST of the live updates (the issue's)
SHOWN_WITHIN = 1.0  # seconds: an update shown later than this counts as late
LOAD_TIMEOUT = 60.0
# A page that takes longer than this to answer a question has stalled (its main thread stuck
# in a task): the workload says so, rather than waiting for the page to crash, if it ever does.
ANSWER_TIMEOUT = 30.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)

# Installed before any script of the page runs: every long task (over 50 ms) it has.
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""
# True once every client is shown and listed: performance.now() then, else null.
HERD_DONE = "n => (window.herdMap && herdMap.shown().total >= n && herdMap.shown().listed >= n"
HERD_DONE += " && document.getElementById('client-search')) ? performance.now() : null"
BARE_DONE = "n => window.bareDrawn >= n ? performance.now() : null"

BARE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>bare</title>
<link rel="stylesheet" href="/vendor/leaflet/leaflet.css">
<style>html, body, #map { height: 100%; margin: 0; }</style></head>
<body><div id="map"></div>
<script src="/vendor/leaflet/leaflet.js"></script>
<script>
const map = L.map("map").setView([37, -95], 4);
const renderer = L.canvas();
fetch("/points.json").then((r) => r.json()).then((points) => {
  const bounds = L.latLngBounds(points);
  map.fitBounds(bounds);
  for (const p of points) L.circleMarker(p, { renderer, radius: 6 }).addTo(map);
  requestAnimationFrame(() => (window.bareDrawn = points.length));
});
</script></body></html>
"""


@dataclass
class LoadRound:
    load_ms: float
    longest_ms: float
    heap_mb: float


@dataclass
class LiveRound:
    lag_ms: list[float]  # POST sent -> the page shows it, for each sampled update shown
    samples: int
    longest_ms: float
    heap_mb: float
    posted: int
    seconds: float
    notes: list[str] = field(default_factory=list)


async def run(ctx: Context) -> WorkloadResult:
    from playwright.async_api import async_playwright

    result = WorkloadResult(NAME, TITLE)
    sizes = ctx.sizes
    n = sizes.map_clients
    herd = ctx.herd
    herd.start_gateway()
    assert herd.gateway is not None
    gateway = herd.gateway
    rng = random.Random(1207)
    points = [(rng.uniform(25, 49), rng.uniform(-124, -67)) for _ in range(n)]
    bare = await _serve_bare(points)
    try:
        await herd.wait_gateway()
        url = f"http://127.0.0.1:{herd.gateway_port}"
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
            for start in range(0, n, POST_BATCH):
                await _post(session, url, points, range(start, min(n, start + POST_BATCH)), 0)
            # Chromium, the gateway and the herd share every CPU: a browser on one CPU would
            # measure the pinning, not the page.
            ctx.unpin(os.getpid(), gateway.pid, *herd.pids().values())
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                ctx.pin_harness()
                try:
                    targets = {HERD: (url + "/", HERD_DONE), BARE: (bare.url, BARE_DONE)}

                    async def one(target: str, r: int) -> LoadRound:
                        page_url, done = targets[target]
                        page, _ = await _open(browser, page_url, done, n)
                        try:
                            return await _load_figures(page, done, n)
                        finally:
                            await page.close()

                    loads = await interleave([BARE, HERD], sizes.rounds, one)
                    page, _ = await _open(browser, url + "/", HERD_DONE, n)
                    try:
                        live = await _live(ctx, session, url, page, points)
                    finally:
                        await page.close()
                finally:
                    await browser.close()
    finally:
        await bare.cleanup()
        ctx.procs.forget(gateway)
        herd.gateway = None
    result.notes.append(
        f"{n:,} clients; Chromium {CHROMIUM} headless, 1280x800; the browser, the gateway and "
        "the herd on every CPU; the load generator on its own"
    )
    _figures(ctx, result, loads, live)
    return result


@dataclass
class _Bare:
    runner: web.AppRunner
    url: str

    async def cleanup(self) -> None:
        await self.runner.cleanup()


async def _serve_bare(points: list[tuple[float, float]]) -> _Bare:
    from gateway.app import resource_dir

    app = web.Application()
    body = json.dumps(points)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=BARE_PAGE, content_type="text/html")

    async def data(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app.router.add_get("/", page)
    app.router.add_get("/points.json", data)
    app.router.add_static("/vendor", resource_dir("static") / "vendor")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return _Bare(runner, f"http://127.0.0.1:{port}/")


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    points: list[tuple[float, float]],
    which: range | list[int],
    shift: float,
) -> None:
    body = [
        {"client_id": f"map-{i:05d}", "lat": points[i][0] + shift, "lon": points[i][1]}
        for i in which
    ]
    async with session.post(f"{url}/api/v1/locations", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"POST answered {response.status}: {await response.text()}")
        await response.read()


async def _open(browser: Any, url: str, done: str, n: int) -> tuple[Any, float]:
    """A fresh page at ``url``, once ``done`` says every client is shown: (page, ms)."""
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.add_init_script(LONG_TASKS)
    await page.goto(url)
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        shown = await _ask(page, done, n)
        if shown is not None:
            return page, float(shown)
        if time.monotonic() > deadline:
            await page.close()
            raise RuntimeError(f"{url}: not every one of {n:,} clients shown in {LOAD_TIMEOUT} s")
        await asyncio.sleep(0.02)


async def _ask(page: Any, expression: str, arg: Any = None) -> Any:
    """``page.evaluate``, bounded: Playwright waits as long as the page's main thread is busy."""
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            return await page.evaluate(expression, arg)
    except TimeoutError:
        raise RuntimeError(f"the page did not answer in {ANSWER_TIMEOUT:g} s: stalled") from None


async def _heap_mb(page: Any) -> float:
    cdp = await page.context.new_cdp_session(page)
    try:
        usage = await cdp.send("Runtime.getHeapUsage")
    finally:
        await cdp.detach()
    return float(usage["usedSize"]) / 1e6


async def _longest(page: Any, reset: bool = False) -> float:
    tasks = await _ask(page, "window.__longTasks.slice()")
    if reset:
        await _ask(page, "window.__longTasks.length = 0")
    # No task over 50 ms (the Long Tasks API's threshold): the longest was shorter.
    return max(tasks, default=50.0)


async def _load_figures(page: Any, done: str, n: int) -> LoadRound:
    load_ms = float(await _ask(page, done, n))
    return LoadRound(load_ms, await _longest(page, reset=True), await _heap_mb(page))


async def _live(
    ctx: Context,
    session: aiohttp.ClientSession,
    url: str,
    page: Any,
    points: list[tuple[float, float]],
) -> LiveRound:
    """Every client reports in turn at ``map_rate`` reports/s, in batches of 100; the first
    client of each batch is a sample, moved to a position of its own."""
    sizes = ctx.sizes
    n = len(points)
    interval = LIVE_BATCH / sizes.map_rate
    batches = int(sizes.map_live_seconds / interval)
    await _longest(page, reset=True)
    sent: dict[str, tuple[float, float]] = {}  # sample -> (POST sent, latitude it moves to)
    lag_ms: list[float] = []
    posts: list[asyncio.Task[None]] = []
    stop = asyncio.Event()

    async def watch() -> None:
        # Ask the page which samples it shows at their new position.
        check = (
            "s => s.map(([id, lat]) => Math.abs((herdMap.markerOf(id)?.lat ?? 99) - lat) < 1e-6)"
        )
        while not stop.is_set() or sent:
            if sent:
                items = list(sent.items())
                shown = await _ask(page, check, [[c, lat] for c, (_, lat) in items])
                now = time.perf_counter()
                for (client, (t, _)), ok in zip(items, shown, strict=True):
                    if ok:
                        lag_ms.append((now - t) * 1e3)
                        del sent[client]
                    elif now - t > 5.0:
                        del sent[client]  # never shown: counted as late
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    try:
        for b in range(batches):
            await asyncio.sleep(max(0.0, start + b * interval - time.perf_counter()))
            first = (b * LIVE_BATCH) % n
            which = [(first + k) % n for k in range(min(LIVE_BATCH, n))]
            shift = 0.0001 * (b + 1)  # every report a new position
            sample = f"map-{which[0]:05d}"
            sent[sample] = (time.perf_counter(), points[which[0]][0] + shift)
            posts.append(asyncio.create_task(_post(session, url, points, which, shift)))
        await asyncio.gather(*posts)
        seconds = time.perf_counter() - start
        stop.set()
        async with asyncio.timeout(30):
            await watcher
    finally:
        watcher.cancel()
        for task in posts:
            task.cancel()
    return LiveRound(
        lag_ms,
        batches,
        await _longest(page),
        await _heap_mb(page),
        batches * min(LIVE_BATCH, n),
        seconds,
    )


def _figures(
    ctx: Context, result: WorkloadResult, loads: dict[str, list[LoadRound]], live: LiveRound
) -> None:
    n = ctx.sizes.map_clients
    herd, bare = loads[HERD], loads[BARE]
    for target in (LOAD_TARGET, RATIO_TARGET):
        result.add(
            summarise(
                f"load, {n:,} clients: navigation to all shown and listed",
                "ms",
                [r.load_ms for r in herd],
                {BARE: [r.load_ms for r in bare]},
                target,
            )
        )
    result.add(
        summarise(
            f"load, {n:,} clients: longest main-thread task",
            "ms",
            [r.longest_ms for r in herd],
            {BARE: [r.longest_ms for r in bare]},
            TASK_TARGET,
        )
    )
    result.add(
        summarise(
            f"load, {n:,} clients: JS heap used",
            "MB",
            [r.heap_mb for r in herd],
            {BARE: [r.heap_mb for r in bare]},
        )
    )
    rate = live.posted / live.seconds
    within = [lag for lag in live.lag_ms if lag <= SHOWN_WITHIN * 1e3]
    result.add(
        summarise(
            f"live, {rate:,.0f} updates/s: sampled updates shown within {SHOWN_WITHIN:g} s",
            "%",
            [100.0 * len(within) / live.samples] if live.samples else "no sample",
            target=SHOWN_TARGET,
            samples=live.samples,
        )
    )
    for p in (50, 99):
        try:
            lag: list[float] | str = [percentile(live.lag_ms, p)]
        except Missing:
            lag = "no sampled update was shown"
        result.add(summarise(f"live: POST to shown on the map, p{p}", "ms", lag))
    result.add(summarise("live: longest main-thread task", "ms", [live.longest_ms]))
    result.add(summarise("live: JS heap used", "MB", [live.heap_mb], target=HEAP_TARGET))
    result.notes.extend(live.notes)
