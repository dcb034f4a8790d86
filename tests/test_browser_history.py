"""The map's history in a real browser (Debian's Chromium via Playwright), on a herd that keeps
history and its gateway: a client's trail drawn from history with its late points where they
belong in time, a late point arriving live, the trail still there after a reload, the time
window, a replay that moves the pin along the trail, and a GPX and a GeoJSON download. Access
tokens are on: the page's own authorisation (the cookie /?token= sets) carries its trail loads
and downloads."""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gpxpy
import pytest
from helpers import Herd, ask, iamat
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_browser import CHROMIUM, CHROMIUM_ARGS, entry, gateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLIENT = "van-7"
HOUR = 3600.0
# Two servers: the gateway follows Riley, and a late point reported at Juzang reaches it by
# the herd's replication, as a LATE line.
NAMES = ("Riley", "Juzang")
# A read token for the page, and the van's own write token for its reports.
READ = "map-reader-token-0123456789"
WRITE = "van-7-device-token-0123456789"
GATEWAY = f'read_tokens = ["{READ}"]'
EXTRA = f'[history]\nenabled = true\n\n[gateway.write_tokens]\n"{WRITE}" = "{CLIENT}"\n'

Point = tuple[float, float, float]  # lat, lon, t


def track(now: float) -> list[Point]:
    """Twelve points from three hours ago, ten minutes apart, zigzagging about a kilometre
    either side of a line north: at any zoom the map opens at, simplification keeps each."""
    return [
        (round(34.0 + 0.01 * i, 6), round(-118.3 + 0.01 * (i % 2), 6), now - 3 * HOUR + 600 * i)
        for i in range(12)
    ]


def post(base: str, points: list[Point]) -> None:
    body = [{"client_id": CLIENT, "lat": lat, "lon": lon, "time": t} for lat, lon, t in points]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {WRITE}"}
    request = urllib.request.Request(f"{base}/api/v1/locations", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def trail(page: Page) -> list[Point]:
    found: dict[str, Any] | None = page.evaluate("id => herdMap.trailOf(id)", CLIENT)
    assert found is not None
    return [tuple(p) for p in found["points"]]  # type: ignore[misc]


def expect_trail(page: Page, points: list[Point], timeout: float = 10_000) -> None:
    """Wait until the client's trail on the page is exactly ``points`` (oldest first) and
    drawn."""
    try:
        page.wait_for_function(
            """([id, want]) => {
                const t = herdMap.trailOf(id);
                return t !== null && t.drawn === (want.length > 1) &&
                    JSON.stringify(t.points) === JSON.stringify(want);
            }""",
            arg=[CLIENT, [list(p) for p in points]],
            timeout=timeout,
            polling=50,
        )
    except PlaywrightTimeout:
        shown = page.evaluate("id => [herdMap.trailOf(id), herdMap.history()]", CLIENT)
        raise AssertionError(f"the trail is not {points}: {shown}") from None


def position_at(points: list[Point], t: float) -> tuple[float, float]:
    """Where the trail puts a client at ``t``: on the line between the points around it."""
    if t <= points[0][2]:
        return points[0][:2]
    for (lat0, lon0, t0), (lat1, lon1, t1) in itertools.pairwise(points):
        if t0 <= t < t1:
            f = (t - t0) / (t1 - t0)
            return lat0 + f * (lat1 - lat0), lon0 + f * (lon1 - lon0)
    return points[-1][:2]


def replay_sample(page: Page) -> tuple[float, tuple[float, float]]:
    """The replay's time and the pin's position, read in one go."""
    time_, lat, lon = page.evaluate(
        """id => {
            const m = herdMap.markerOf(id);
            return [herdMap.history().replay.time, m.lat, m.lon];
        }""",
        CLIENT,
    )
    return time_, (lat, lon)


def local(t: float) -> str:
    """A datetime-local field's value for POSIX time ``t`` in UTC."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def next_frames(page: Page) -> None:
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def test_trails_from_history_late_points_replay_and_downloads(tmp_path: Path) -> None:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in {"error", "warning"}:
            problems.append(f"console {message.type}: {message.text}")

    now = time.time()
    points = track(now)
    newest = (34.2, -118.29, now - 60)
    # A phone's queue, delivered after the newest: its point goes between the third and the
    # fourth, well off the line.
    late = (34.025, -118.25, now - 3 * HOUR + 1500)
    links = (("Riley", "Juzang"),)
    with Herd(tmp_path, names=NAMES, links=links, gateway=GATEWAY, extra=EXTRA) as herd:
        herd.wait_links()
        with gateway(herd) as base, sync_playwright() as playwright:
            post(base, [*points, newest])
            post(base, [late])
            expected = sorted([*points, newest, late], key=lambda p: p[2])
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                # UTC: the from/to fields below are in the page's local time.
                page = browser.new_page(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
                page.on("console", on_console)
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                page.goto(f"{base}/?token={READ}")
                expect(page.locator("#connection")).to_have_text("live", timeout=5000)

                # The trail comes from history, the late point in its place in time; the pin
                # shows the newest record.
                expect_trail(page, expected)
                assert expected.index(late) == 3
                marker = page.evaluate("id => herdMap.markerOf(id)", CLIENT)
                assert (marker["lat"], marker["lon"]) == newest[:2]
                expect(page.locator("#trails-status")).to_have_text("1 trail, 14 points")

                # A late point while the page is open, at the other server: in its place, and
                # the pin stays on the newest record.
                live_late = (34.07, -118.26, now - 2 * HOUR + 300)
                location = f"+{live_late[0]:.6f}{live_late[1]:.6f}"
                assert ask(herd.ports["Juzang"], iamat(CLIENT, location, live_late[2]))
                expected = sorted([*expected, live_late], key=lambda p: p[2])
                expect_trail(page, expected)
                marker = page.evaluate("id => herdMap.markerOf(id)", CLIENT)
                assert (marker["lat"], marker["lon"]) == newest[:2]

                # A reload: the page's memory is gone, the trail (both late points) is not.
                page.reload()
                expect(page.locator("#connection")).to_have_text("live", timeout=5000)
                expect_trail(page, expected)
                assert page.evaluate("herdMap.history().loads") >= 1

                # A new record extends the trail and moves the pin.
                newer = (34.21, -118.3, time.time())
                post(base, [newer])
                expected.append(newer)
                expect_trail(page, expected)
                page.wait_for_function(
                    "([id, lat]) => herdMap.markerOf(id).lat === lat", arg=[CLIENT, newer[0]]
                )

                # The window: the last hour holds only the two newest points; back to 24 h.
                window = page.get_by_label("Trails of")
                window.select_option(label="the last hour")
                expect_trail(page, [newest, newer])
                window.select_option(label="the last 6 h")
                expect_trail(page, expected)

                # The replay: scrubbed to the trail's start (3 of the window's 6 hours), then
                # played at 1000x: the pin moves along the trail, where the replay's time puts
                # it, until paused; "Live" puts it back on the newest record.
                page.get_by_label("Speed").select_option("1000")
                page.get_by_label("Replay time").fill("500")
                start, at_start = replay_sample(page)
                assert abs(start - (now - 3 * HOUR)) < 120, start - now
                page.get_by_role("button", name="Play").click()
                page.wait_for_function(
                    "([id, lat]) => herdMap.markerOf(id).lat > lat + 0.02",
                    arg=[CLIENT, at_start[0]],
                    timeout=20_000,
                    polling=50,
                )
                seen = set()
                for _ in range(3):
                    t, position = replay_sample(page)
                    want = position_at(expected, t)
                    assert abs(position[0] - want[0]) < 1e-9 and abs(position[1] - want[1]) < 1e-9
                    seen.add(position)
                    next_frames(page)
                assert len(seen) > 1, seen  # it moves from frame to frame
                page.get_by_role("button", name="Pause").click()
                paused = replay_sample(page)
                next_frames(page)
                assert replay_sample(page) == paused
                assert paused[1] != newer[:2]
                page.get_by_role("button", name="Live").click()
                page.wait_for_function(
                    "([id, lat]) => herdMap.markerOf(id).lat === lat", arg=[CLIENT, newer[0]]
                )
                assert page.evaluate("herdMap.history().replay.time") is None

                # Downloads of the selected client's window: GPX and GeoJSON of every point.
                page.locator(entry(CLIENT)).click()
                with page.expect_download() as download:
                    page.get_by_role("link", name="GPX").click()
                gpx_path = download.value.path()
                with open(gpx_path, encoding="utf-8") as f:
                    gpx = gpxpy.parse(f)
                got = [
                    (p.latitude, p.longitude, p.time.timestamp() if p.time else None)
                    for t in gpx.tracks
                    for s in t.segments
                    for p in s.points
                ]
                assert len(got) == len(expected), got
                for (lat, lon, t), want in zip(got, expected, strict=True):
                    assert abs(lat - want[0]) < 1e-9 and abs(lon - want[1]) < 1e-9
                    assert t is not None and abs(t - want[2]) < 1e-3
                assert download.value.suggested_filename.endswith(".gpx")
                with page.expect_download() as download:
                    page.get_by_role("link", name="GeoJSON").click()
                document = json.loads(Path(download.value.path()).read_text("utf-8"))
                features = document["features"]
                spots = [f for f in features if f["geometry"]["type"] == "Point"]
                assert [f["geometry"]["coordinates"][:2] for f in spots] == [
                    [lon, lat] for lat, lon, _ in expected
                ]

                # A window from/to: the trail and the links hold that window only.
                since, until = int(now - 2.6 * HOUR), int(now - 1.4 * HOUR)
                window.select_option(label="from … to …")
                page.get_by_label("From").fill(local(since))
                page.get_by_label("to", exact=True).fill(local(until))
                page.get_by_role("button", name="Show").click()
                expect_trail(page, [p for p in expected if since <= p[2] <= until])
                href = page.get_by_role("link", name="GPX").get_attribute("href") or ""
                assert f"since={since}.000" in href and f"until={until}.000" in href, href
            finally:
                browser.close()
    assert not problems, problems
