"""Partition repair: a five-server herd with history on, cut in two, each half taking new
points; then the cut heals and the time until every server holds every point is measured.

The links run through relays (``bench.linkproxy``); the cut is the two links between
Riley-Jaquez and Juzang-Campbell-Bernard (``DEFAULT_LINKS``: Riley-Juzang, Jaquez-Bernard),
so each half stays linked within. Each half takes ``partition_points`` pipelined IAMATs at
one server (Riley, Campbell) for the same clients at interleaved times, so after the heal
half the points of every client are late points at every server. The repair time runs from
the heal until every server's STATUS counts all the points, and includes the servers' own
redial backoff (up to ``reconnect_max``, 2 s).
"""

from __future__ import annotations

import asyncio
import time

from backend.config import DEFAULT_LINKS

from .context import Context, summarise
from .herd import Herd
from .linkproxy import Links
from .load import send_all, time_text
from .results import Target, WorkloadResult

__all__ = ["HALVES", "measure_repair"]

HALVES = (("Riley", "Jaquez"), ("Juzang", "Campbell", "Bernard"))
ENTRIES = ("Riley", "Campbell")  # where each half's points are sent
CLIENTS = 1_000
LOCATION = "+34.068930-118.445127"
REPAIR_TARGET = Target("<= 10 s", "value", lambda v: v <= 10.0)
DEPTH = 256  # IAMATs in flight on each half's connection
# Seconds for the IAMATs to be answered, and for each half to hold its own points: a herd
# with history on takes a few thousand points a second on two cores.
LOAD_LIMIT = 300.0
# Seconds the herd gets to repair before the figure is "never".
REPAIR_LIMIT = 120.0
POLL = 0.05


async def measure_repair(ctx: Context, result: WorkloadResult, extra: str) -> None:
    n = ctx.sizes.partition_points
    name = f"partition repair: every server holds both halves' {2 * n:,} points"
    links = await Links(DEFAULT_LINKS).start()
    herd = Herd.for_bench(ctx.root / "partition", ctx.procs, preload=False, extra=extra)
    links.route(herd)
    try:
        await herd.start_async(*herd.names)
        await herd.wait_ready(places=False)
        ctx.unpin(*herd.pids().values())
        cut = links.between(*HALVES)
        links.cut(*cut)
        await _wait_down(herd, cut)
        load_s = await _load_halves(herd, n)
        for half in HALVES:
            await _wait_points(herd, half, n, LOAD_LIMIT)
        links.heal(*cut)
        t0 = time.monotonic()
        reached, links_up = await _repair(herd, cut, 2 * n, t0)
        value: list[float] | str = (
            [max(reached.values())]
            if len(reached) == len(herd.names)
            else f"not within {REPAIR_LIMIT:g} s: {await _points(herd)}"
        )
        result.add(
            summarise(
                name,
                "s",
                value,
                target=REPAIR_TARGET,
                links_up_after_s=links_up,
                per_server_s={k: round(v, 3) for k, v in reached.items()},
                load_seconds=round(load_s, 2),
            )
        )
    finally:
        await herd.stop_async()
        await links.close()


def _lines(n: int, side: int, base_ns: int) -> list[bytes]:
    # Client k % CLIENTS, at times that interleave the two halves' (even and odd microseconds).
    times = (time_text(base_ns + (2 * k + side) * 1_000) for k in range(n))
    return [f"IAMAT part{k % CLIENTS} {LOCATION} {t}\n".encode() for k, t in enumerate(times)]


async def _load_halves(herd: Herd, n: int) -> float:
    base_ns = time.time_ns() - 3_600 * 1_000_000_000  # an hour ago: new, and not in the future
    t0 = time.perf_counter()
    sent = await asyncio.gather(
        *(
            send_all(herd.ports[entry], _lines(n, side, base_ns), DEPTH, LOAD_LIMIT)
            for side, entry in enumerate(ENTRIES)
        )
    )
    for entry, (replies, _, first) in zip(ENTRIES, sent, strict=True):
        if replies != n or not first.startswith(b"AT "):
            raise RuntimeError(f"{entry}: {replies:,} replies of {n:,}, first {first[:120]!r}")
    return time.perf_counter() - t0


async def _points(herd: Herd) -> dict[str, int]:
    counts = {}
    for name in herd.names:
        status = await herd.status_async(name)
        counts[name] = int(status["history"]["points"])
    return counts


async def _wait_down(herd: Herd, cut: list[tuple[str, str]]) -> None:
    deadline = time.monotonic() + LOAD_LIMIT
    while True:
        statuses = {name: await herd.status_async(name) for name in herd.names}
        if all(statuses[a]["links"].get(b) == "down" for a, b in cut):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cut links {cut} stayed up")
        await asyncio.sleep(POLL)


async def _wait_points(herd: Herd, names: tuple[str, ...], n: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        counts = await _points(herd)
        if all(counts[name] >= n for name in names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{names} did not all hold their {n:,} points: {counts}")
        await asyncio.sleep(POLL)


async def _repair(
    herd: Herd, cut: list[tuple[str, str]], total: int, t0: float
) -> tuple[dict[str, float], float | None]:
    """Seconds from ``t0`` until each server held ``total`` points, and until every cut link
    was up again at its dialler (None if not seen)."""
    reached: dict[str, float] = {}
    links_up: float | None = None
    while len(reached) < len(herd.names) and time.monotonic() - t0 < REPAIR_LIMIT:
        statuses = {name: await herd.status_async(name) for name in herd.names}
        now = time.monotonic() - t0
        for name, status in statuses.items():
            if name not in reached and int(status["history"]["points"]) >= total:
                reached[name] = now
        if links_up is None and all(statuses[a]["links"].get(b) == "up" for a, b in cut):
            links_up = round(now, 3)
        await asyncio.sleep(POLL)
    return reached, links_up
