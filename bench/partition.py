"""Partition repair: a five-server herd with history on, cut in two, each half taking new
points; then the cut heals and the time until every server holds every point is measured.

The links run through relays (``bench.linkproxy``); the cut is the two links between
Riley-Jaquez and Juzang-Campbell-Bernard (``DEFAULT_LINKS``: Riley-Juzang, Jaquez-Bernard),
so each half stays linked within. Each half takes ``partition_points`` pipelined IAMATs at
one server (Riley, Campbell) for the same clients at interleaved times, so after the heal
half the points of every client are late points at every server. The repair time runs from
the heal until every server's STATUS counts exactly all the points, and includes the
servers' own redial backoff (up to ``reconnect_max``, 2 s); then every server's HISTORY of
every client must hold them all (STATUS may count a copy not yet written), or the figure is
null.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.config import DEFAULT_LINKS

from .context import Context, Spec
from .herd import Herd
from .linkproxy import Links
from .load import send_all, time_text
from .results import Figure, Target, WorkloadResult
from .sizes import Sizes

__all__ = ["HALVES", "Timeline", "measure_repair", "repair_spec"]

HALVES = (("Riley", "Jaquez"), ("Juzang", "Campbell", "Bernard"))
ENTRIES = ("Riley", "Campbell")  # where each half's points are sent
CLIENTS = 1_000
LOCATION = "+34.068930-118.445127"
REPAIR_TARGET = Target("<= 10 s", "value", lambda v: v <= 10.0)
DEPTH = 256  # IAMATs in flight on each half's connection
# Seconds for the IAMATs to be answered, and for each half to hold its own points: a herd
# with history on takes a few thousand points a second on two cores.
LOAD_LIMIT = 300.0
# Seconds the herd gets to repair before the figure is "never": the target's 10 s thirty
# times over, so that a slow repair is still measured (on a loaded 2-CPU machine it took
# two minutes).
REPAIR_LIMIT = 300.0
POLL = 0.05
# Seconds a STATUS may take while the herd repairs before that look counts as "not yet".
STATUS_WAIT = 30.0


@dataclass
class Timeline:
    """What the repair stage saw, for a run that wants more than its figure (``bench.repair``):
    ``on_heal`` is called with the servers' pids as the cut heals, ``on_done`` once every
    server holds every point (or the limit passed); ``samples`` are the seconds since the heal
    at which a server's STATUS count or a cut link's state changed, with what it was then."""

    on_heal: Callable[[dict[str, int]], None] | None = None
    on_done: Callable[[], None] | None = None
    healed_at: float = 0.0  # time.time() at the heal, to place the servers' log lines
    samples: list[tuple[float, dict[str, int | None], dict[str, str | None]]] = field(
        default_factory=list
    )

    def see(self, now: float, counts: dict[str, int | None], links: dict[str, str | None]) -> None:
        last = self.samples[-1] if self.samples else None
        if last is None or (last[1], last[2]) != (counts, links):
            self.samples.append((round(now, 3), counts, links))


def repair_spec(sizes: Sizes) -> Spec:
    total = 2 * sizes.partition_points
    return Spec(
        f"partition repair: every server holds both halves' {total:,} points", "s", REPAIR_TARGET
    )


async def measure_repair(
    ctx: Context, result: WorkloadResult, extra: str, timeline: Timeline | None = None
) -> None:
    """Cut a herd in two (its config's ``extra`` turns history on), load both halves, heal,
    and add the repair time to ``result``; ``timeline`` records the repair as it goes."""
    links = await Links(DEFAULT_LINKS).start()
    herd = Herd.for_bench(ctx.root / "partition", ctx.procs, preload=False, extra=extra)
    links.route(herd)
    try:
        await herd.start_async(*herd.names)
        await herd.wait_ready(places=False)
        ctx.unpin(*herd.pids().values())
        result.add(await _cut_load_heal(herd, links, ctx.sizes, timeline or Timeline()))
    finally:
        await herd.stop_async()
        await links.close()


async def _cut_load_heal(herd: Herd, links: Links, sizes: Sizes, timeline: Timeline) -> Figure:
    n = sizes.partition_points
    cut = links.between(*HALVES)
    links.cut(*cut)
    watch = Watch(herd)
    await _wait_down(watch, cut)
    base_ns, load_s = await _load_halves(herd, n)
    for half in HALVES:
        await _wait_points(watch, half, n, LOAD_LIMIT)
    if timeline.on_heal is not None:
        timeline.on_heal(herd.pids())
    links.heal(*cut)
    timeline.healed_at = time.time()
    watch.slowest = 0.0
    t0 = time.monotonic()
    reached, links_up = await _repair(watch, cut, 2 * n, t0, timeline)
    if timeline.on_done is not None:
        timeline.on_done()
    value: list[float] | str = f"not within {REPAIR_LIMIT:g} s: {await watch.points()}"
    if len(reached) == len(herd.names):
        # STATUS's count may include a copy of a point not yet written: HISTORY must agree.
        wrong = await _verify(herd, base_ns, 2 * n)
        while wrong and time.monotonic() - t0 < REPAIR_LIMIT:
            await asyncio.sleep(POLL)
            wrong = await _verify(herd, base_ns, 2 * n)
        value = [max(reached.values())] if not wrong else f"HISTORY disagrees: {wrong}"
    return repair_spec(sizes).figure(
        value,
        links_up_after_s=links_up,
        per_server_s={k: round(v, 3) for k, v in reached.items()},
        checked_after_s=round(time.monotonic() - t0, 3),
        load_seconds=round(load_s, 2),
        slowest_status_s=round(watch.slowest, 3),
    )


async def _verify(herd: Herd, base_ns: int, total: int) -> str:
    """What differs between each server's HISTORY of every client and both halves' points
    (``""`` when nothing does)."""
    each = total // CLIENTS
    since, until = time_text(base_ns), time_text(base_ns + total * 1_000)

    async def counts(name: str) -> dict[str, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", herd.ports[name], limit=1 << 24)
        found = {}
        try:
            async with asyncio.timeout(LOAD_LIMIT):
                for c in range(CLIENTS):
                    writer.write(f"HISTORY part{c} {since} {until} 10000\n".encode())
                    await reader.readuntil(b"END ")
                    found[f"part{c}"] = int(await reader.readuntil(b"\n"))
        finally:
            writer.close()
        return found

    held = await asyncio.gather(*(counts(name) for name in herd.names))
    wrong = {
        name: {c: k for c, k in found.items() if k != each}
        for name, found in zip(herd.names, held, strict=True)
    }
    return "; ".join(
        f"{name}: {len(bad)} clients not at {each} points, e.g. {sorted(bad.items())[:3]}"
        for name, bad in wrong.items()
        if bad
    )


def _lines(n: int, side: int, base_ns: int) -> list[bytes]:
    # Client k % CLIENTS, at times that interleave the two halves' (even and odd microseconds).
    times = (time_text(base_ns + (2 * k + side) * 1_000) for k in range(n))
    return [f"IAMAT part{k % CLIENTS} {LOCATION} {t}\n".encode() for k, t in enumerate(times)]


async def _load_halves(herd: Herd, n: int) -> tuple[int, float]:
    """Both halves' IAMATs at once; returns their first time (ns) and the seconds taken."""
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
    return base_ns, time.perf_counter() - t0


class Watch:
    """STATUS of every server at once, each within STATUS_WAIT seconds or None (a server
    busy repairing may answer late: that is a figure too, the slowest answer seen)."""

    def __init__(self, herd: Herd) -> None:
        self.herd = herd
        self.slowest = 0.0

    async def statuses(self) -> dict[str, dict[str, Any] | None]:
        found = await asyncio.gather(*(self._one(name) for name in self.herd.names))
        return dict(zip(self.herd.names, found, strict=True))

    async def _one(self, name: str) -> dict[str, Any] | None:
        t0 = time.monotonic()
        try:
            return await self.herd.status_async(name, timeout=STATUS_WAIT)
        except TimeoutError:
            return None
        finally:
            self.slowest = max(self.slowest, time.monotonic() - t0)

    async def points(self) -> dict[str, int | None]:
        return {name: _points(s) for name, s in (await self.statuses()).items()}


def _points(status: dict[str, Any] | None) -> int | None:
    return None if status is None else int(status["history"]["points"])


def _link(statuses: dict[str, dict[str, Any] | None], a: str, b: str) -> str | None:
    status = statuses[a]
    return None if status is None else status["links"].get(b)


async def _wait_down(watch: Watch, cut: list[tuple[str, str]]) -> None:
    deadline = time.monotonic() + LOAD_LIMIT
    while True:
        statuses = await watch.statuses()
        if all(_link(statuses, a, b) == "down" for a, b in cut):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cut links {cut} stayed up")
        await asyncio.sleep(POLL)


async def _wait_points(watch: Watch, names: tuple[str, ...], n: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        counts = await watch.points()
        if all((counts[name] or 0) >= n for name in names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{names} did not all hold their {n:,} points: {counts}")
        await asyncio.sleep(POLL)


async def _repair(
    watch: Watch, cut: list[tuple[str, str]], total: int, t0: float, timeline: Timeline
) -> tuple[dict[str, float], float | None]:
    """Seconds from ``t0`` until each server held ``total`` points, and until a STATUS first
    showed every cut link up again at its dialler (None if none did; late by as much as a
    busy server's STATUS is)."""
    names = watch.herd.names
    reached: dict[str, float] = {}
    links_up: float | None = None
    while len(reached) < len(names) and time.monotonic() - t0 < REPAIR_LIMIT:
        statuses = await watch.statuses()
        now = time.monotonic() - t0
        for name, status in statuses.items():
            if name not in reached and _points(status) == total:
                reached[name] = now
        if links_up is None and all(_link(statuses, a, b) == "up" for a, b in cut):
            links_up = round(now, 3)
        counts = {name: _points(status) for name, status in statuses.items()}
        timeline.see(now, counts, {f"{a}-{b}": _link(statuses, a, b) for a, b in cut})
        await asyncio.sleep(POLL)
    return reached, links_up
