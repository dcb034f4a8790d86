"""History by area: ``GET /api/v1/history?bbox=`` (who was in a box in a window, with their
points there: AREA ... POINTS) and ``GET /api/v1/trails`` (the map's simplified trails of the
clients in a box: AREA ... CLIENTS, then HISTORY per client, a few at a time).

The herd's AREA takes a box with west <= east; a box across the antimeridian (west after
east, as the WebSocket's filter reads it) is asked as its two halves. The trails' work is
bounded by ``rules.MAX_TRAIL_CLIENTS``, ``MAX_TRAIL_READ`` and ``MAX_TRAIL_POINTS``; past any
of them the answer says ``"truncated": true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from backend.protocol import MAX_HISTORY_LIMIT

from . import rules
from .errors import ApiError
from .herd_client import HerdClient, HerdRefused
from .history import Simplifier
from .history.reading import group_by_client, merge_areas, trail_point
from .history_api import LATEST_NS, history_off
from .keys import CONFIG, HERD
from .records import point_json, records_response

__all__ = ["TRAIL_READERS", "get_area_history", "get_trails"]

# Clients' histories read at once for the trails: enough to keep the herd server's reader
# threads busy while the gateway parses the pages before; each holds two pages.
TRAIL_READERS = 4

TrailPoint = tuple[float, float, float]


def _seconds(ns: int) -> float:
    return ns / 1_000_000_000


async def get_area_history(request: web.Request) -> web.Response:
    """The clients that were in ``bbox`` in the window, each with its points there (oldest
    first), by client ID; at most ``limit`` points in all."""
    query = request.query
    box = rules.bbox(query.get("bbox"))
    if box is None:
        raise ApiError(400, "bbox is required: west,south,east,north in degrees")
    since_ns = min(rules.seconds_ns("since", query.get("since"), 0), LATEST_NS)
    until_ns = min(rules.seconds_ns("until", query.get("until"), LATEST_NS), LATEST_NS)
    limit = rules.AREA_PAGE.from_text(query.get("limit"))
    # One more than asked tells a full answer from a cut one.
    ask = min(limit + 1, MAX_HISTORY_LIMIT)
    herd = request.app[HERD]
    answers = []
    for part in box.parts() if since_ns <= until_ns else ():
        try:
            records = await herd.area(part, since_ns, until_ns, ask)
        except HerdRefused as exc:
            raise history_off(exc) from None
        answers.append((records, len(records) == ask))
    found, cut = merge_areas(answers)
    clients = [
        {"client_id": client_id, "points": [point_json(p) for p in points]}
        for client_id, points in group_by_client(found[:limit])
    ]
    return records_response(
        {
            "bbox": box.shown(),
            "since": _seconds(since_ns),
            "until": _seconds(until_ns),
            "clients": clients,
            "truncated": cut or len(found) > limit,
        }
    )


async def get_trails(request: web.Request) -> web.Response:
    """The trails of the clients that were in ``bbox`` (default: the world) in the window
    (default: the last ``[gateway] trail_hours``), oldest first, simplified with ``simplify``
    metres: ``{"since", "until", "trails": [{"client_id", "points": [[lat, lon, time],
    ...]}], "truncated"}``."""
    query = request.query
    box = rules.bbox(query.get("bbox")) or rules.WORLD
    metres = rules.simplify_m(query.get("simplify"))
    hours = request.app[CONFIG].gateway.trail_hours
    until_ns = min(rules.seconds_ns("until", query.get("until"), time.time_ns()), LATEST_NS)
    earliest = max(0, until_ns - hours * 3600 * 10**9)
    since_ns = min(rules.seconds_ns("since", query.get("since"), earliest), LATEST_NS)
    herd = request.app[HERD]
    trails: list[dict[str, object]] = []
    truncated = False
    if since_ns <= until_ns:
        try:
            clients, truncated = await _clients_in(herd, box, since_ns, until_ns)
            trails, cut = await _read_trails(herd, clients, since_ns, until_ns, metres)
        except HerdRefused as exc:
            raise history_off(exc) from None
        truncated = truncated or cut
    body = {
        "since": _seconds(since_ns),
        "until": _seconds(until_ns),
        "trails": trails,
        "truncated": truncated,
    }
    # orjson: a tenth of json's time for 100,000 points; every number in it is finite.
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _clients_in(
    herd: HerdClient, box: rules.Box, since_ns: int, until_ns: int
) -> tuple[list[str], bool]:
    """The first MAX_TRAIL_CLIENTS clients (by ID) with a point in the box in the window,
    and whether there were more."""
    ask = rules.MAX_TRAIL_CLIENTS + 1  # one more than kept tells whether there were more
    found: set[str] = set()
    for part in box.parts():
        found.update(await herd.area_clients(part, since_ns, until_ns, ask))
    clients = sorted(found)
    return clients[: rules.MAX_TRAIL_CLIENTS], len(clients) > rules.MAX_TRAIL_CLIENTS


@dataclass(slots=True)
class _Budget:
    """What a trails request may still do: points to read from the herd, points to answer."""

    read: int = rules.MAX_TRAIL_READ
    points: int = rules.MAX_TRAIL_POINTS

    @property
    def spent(self) -> bool:
        return self.read <= 0 or self.points <= 0


async def _read_trails(
    herd: HerdClient, clients: list[str], since_ns: int, until_ns: int, metres: float
) -> tuple[list[dict[str, object]], bool]:
    """Each client's trail, TRAIL_READERS at a time, in client order; cut where the budget
    ran out (and whether it did)."""
    budget = _Budget()
    read: list[tuple[list[TrailPoint], bool] | None] = [None] * len(clients)
    queue = iter(range(len(clients)))  # shared: each reader takes the next client

    async def reader() -> None:
        for i in queue:
            if budget.spent:
                return
            read[i] = await _trail(herd, clients[i], since_ns, until_ns, metres, budget)

    tasks = [asyncio.create_task(reader()) for _ in range(TRAIL_READERS)]
    try:
        await asyncio.gather(*tasks)
    finally:  # one reader's failure stops the others
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    trails: list[dict[str, object]] = []
    left = rules.MAX_TRAIL_POINTS
    cut = False
    for client_id, trail in zip(clients, read, strict=True):
        if trail is None or left <= 0:
            cut = True
            break
        points, whole = trail
        cut = cut or not whole or len(points) > left
        trails.append({"client_id": client_id, "points": points[:left]})
        left -= len(points)
    return trails, cut


async def _trail(
    herd: HerdClient, client_id: str, since_ns: int, until_ns: int, metres: float, budget: _Budget
) -> tuple[list[TrailPoint], bool]:
    """A client's points in the window as (lat, lon, seconds), simplified, and whether the
    whole window was read (the budget may run out first)."""
    simplifier: Simplifier[TrailPoint] = Simplifier(metres, lat_lon=lambda p: (p[0], p[1]))
    points: list[TrailPoint] = []
    whole = True
    # AT lines: a trail needs no attributes.
    pages = herd.history_pages(client_id, since_ns, until_ns, points=False)
    async with contextlib.aclosing(pages):
        async for page in pages:
            if budget.spent:
                whole = False
                break
            budget.read -= len(page)
            kept = simplifier.add(p for r in page if (p := trail_point(r)) is not None)
            budget.points -= len(kept)
            points.extend(kept)
    points.extend(simplifier.end())
    return points, whole
