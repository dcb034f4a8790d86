"""2. Flood latency: an IAMAT at Riley until its record shows at Campbell (two hops: Riley,
Juzang, Campbell) and at every server, seen through a live SUBSCRIBE at each one.

The baseline is a bare relay chain of three processes, as long as Riley -> Juzang ->
Campbell, with a subscriber at its last hop. Both get the same lines at the same rate: the
issue's light load (1,000 updates/s), then near saturation: the highest rate of a ladder
(x1.5 per step) at which the herd kept up, so within 1.5x of the rate where it falls behind.
Nothing is pinned: the herd's five servers and the harness share both CPUs, as do the relays.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

from ..baselines import python_baseline, start_baseline
from ..context import Context, interleave, summarise
from ..herd import NAMES
from ..load import Sink, Subscriber, Tracker, iamat_lines, send_open_loop
from ..procs import Proc
from ..results import Missing, Target, WorkloadResult, percentile

NAME = "flood"
TITLE = "Flood latency (IAMAT at Riley, seen by subscribers)"
ENTRY = "Riley"
TWO_HOPS = "Campbell"
LOCATION = "+34.068930-118.445127"
HERD, RELAY = "herd", "relay chain"
# The herd again, with a subscriber at every server (for the "every server" figures): the
# two-hop rounds subscribe at Campbell alone, as the relay rounds do at their last hop, so
# that both carry the same measuring load (each subscriber wakes the harness per update).
EVERYWHERE = "herd, every server watched"
# Clients the updates are spread over: each update is newer for its client, so all flood.
CLIENTS = 100
# Seconds for the last update to arrive everywhere before the missing ones count as lost.
ARRIVAL_TIMEOUT = 10.0
# Updates in a ladder step at least, so that its quarters hold enough to compare.
MIN_STEP_UPDATES = 40
P99_TARGET = Target("< 5 ms", "value", lambda v: v < 5.0)
P50_TARGET = Target("ratio <= 3", "ratio", lambda r: r <= 3.0)


@dataclass
class FloodRound:
    tracker: Tracker
    sent: int
    send_seconds: float
    two_hop: str  # the subscriber that stands for "two hops away"

    def latencies_ms(self, server: str) -> list[float]:
        return [ns / 1e6 for ns in self.tracker.latencies_ns(server)]

    def everywhere_ms(self) -> list[float]:
        return [ns / 1e6 for ns in self.tracker.everywhere_ns()]


@dataclass
class FloodTarget:
    name: str
    entry: int
    subscribe: dict[str, int]  # subscriber name -> port
    two_hop: str


async def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME, TITLE)
    herd = ctx.herd
    relays: list[Proc] = []
    try:
        # Started from the last hop back, each hop connects to the next as it starts.
        port2 = _relay(ctx, relays, "relay-2")
        port1 = _relay(ctx, relays, "relay-1", "--next", str(port2))
        port0 = _relay(ctx, relays, "relay-0", "--next", str(port1), "--reply")
        # Five servers and the harness cannot each have a CPU of their own on two: every
        # process of this workload (herd or relays, and the harness) may run on every CPU.
        ctx.unpin(*(p.pid for p in relays), *herd.pids().values(), os.getpid())
        result.notes.append("CPUs: nothing pinned, every process on every CPU")
        targets = {
            HERD: FloodTarget(HERD, herd.ports[ENTRY], {TWO_HOPS: herd.ports[TWO_HOPS]}, TWO_HOPS),
            RELAY: FloodTarget(RELAY, port0, {"relay-2": port2}, "relay-2"),
            EVERYWHERE: FloodTarget(EVERYWHERE, herd.ports[ENTRY], dict(herd.ports), TWO_HOPS),
        }
        sizes = ctx.sizes
        light = await _phase(ctx, targets, sizes.light_rate, "light", sizes.target_rounds)
        _figures(result, light, f"{sizes.light_rate:,}/s", primary=True)

        rate, ladder = await _saturation(ctx, targets[EVERYWHERE])
        result.add(
            summarise(
                "highest rate the herd keeps up with (ladder)",
                "updates/s",
                [rate] if rate else f"it falls behind at {ladder[0]['rate']:,}/s already",
                ladder=ladder,
            )
        )
        rate = rate or sizes.light_rate
        saturated = await _phase(ctx, targets, rate, "saturated", sizes.rounds)
        _figures(result, saturated, f"near saturation ({rate:,}/s)", primary=False)
        for label, rounds in (("light", light), ("saturated", saturated)):
            for name, rs in rounds.items():
                lost = sum(r.tracker.missing(r.two_hop) for r in rs)
                if lost:
                    result.notes.append(
                        f"{label}: {name}: {lost} updates never reached {rs[0].two_hop} "
                        f"within {ARRIVAL_TIMEOUT} s"
                    )
    finally:
        for proc in relays:
            ctx.procs.forget(proc)
    return result


def _relay(ctx: Context, relays: list[Proc], name: str, *args: str) -> int:
    # On uvloop, like the herd: the chain is the herd's path minus the herd's own work.
    proc, port = start_baseline(ctx.procs, name, python_baseline("relay.py", "--uvloop", *args))
    relays.append(proc)
    return port


async def _phase(
    ctx: Context, targets: dict[str, FloodTarget], rate: int, label: str, rounds: int
) -> dict[str, list[FloodRound]]:
    """``rounds`` rounds of the herd and the relay chain, back to back in pairs (the two-hop
    ratio is taken round by round), and ``sizes.rounds`` with every server watched."""
    n = max(1, int(rate * ctx.sizes.flood_seconds))

    async def one(name: str, r: int) -> FloodRound:
        return await _round(targets[name], f"{label[0]}{r}.", rate, n)

    paired = await interleave([HERD, RELAY], rounds, one, pair=(HERD, RELAY))
    watched = await interleave([EVERYWHERE], min(rounds, ctx.sizes.rounds), one)
    return {**paired, **watched}


async def _round(target: FloodTarget, prefix: str, rate: float, n: int) -> FloodRound:
    """Subscribe everywhere, send ``n`` updates at ``rate``, wait for them to arrive."""
    loop = asyncio.get_running_loop()
    base = time.time_ns()
    lines = iamat_lines(prefix, CLIENTS, n, base, LOCATION)
    tracker = Tracker(base, n, list(target.subscribe))
    subscribers: list[Subscriber] = []
    sink: Sink | None = None
    try:
        for name, port in target.subscribe.items():
            _, sub = await loop.create_connection(
                lambda name=name: Subscriber(name, tracker),  # type: ignore[misc]
                "127.0.0.1",
                port,
            )
            subscribers.append(sub)
        async with asyncio.timeout(ARRIVAL_TIMEOUT):
            await asyncio.gather(*(s.synced.wait() for s in subscribers))
        _, sink = await loop.create_connection(Sink, "127.0.0.1", target.entry)
        seconds = await send_open_loop(sink, lines, rate, tracker.sent_ns)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.all_arrived.wait(), ARRIVAL_TIMEOUT)
        expected = b"AT Echo " if target.name == RELAY else b"AT Riley "
        if not sink.first_reply.startswith(expected):
            raise RuntimeError(f"{target.name} answered {sink.first_reply[:120]!r}")
        return FloodRound(tracker, n, seconds, target.two_hop)
    finally:
        for sub in subscribers:
            sub.close()
        if sink is not None and sink.transport is not None:
            sink.transport.close()


async def _saturation(ctx: Context, target: FloodTarget) -> tuple[int, list[dict[str, Any]]]:
    """The highest rate of a ladder (the light rate times 1.5, 1.5**2, ...) that the herd
    keeps up with, and what each step saw.

    A step is kept up with when every update reaches every server and its queues do not grow
    over the step: the median latency of its last quarter of updates is within twice that of
    its first quarter (plus a millisecond, for noise). Past its capacity a server's backlog,
    and so the latency, grows with every update sent.
    """
    sizes = ctx.sizes
    best, steps = 0, []
    for k in range(1, sizes.ladder_steps + 1):
        rate = int(sizes.light_rate * sizes.ladder_factor**k)
        n = max(MIN_STEP_UPDATES, int(rate * sizes.ladder_seconds))
        r = await _round(target, f"ladder{k}.", rate, n)
        everywhere = r.tracker.everywhere_by_index()
        q = n // 4
        head = [x for x in everywhere[:q] if x is not None]
        tail = [x for x in everywhere[-q:] if x is not None]
        kept = len(head) == len(tail) == q and (
            statistics.median(tail) <= 2 * statistics.median(head) + 1e6
        )
        steps.append(
            {
                "rate": rate,
                "kept_up": kept,
                "missing": sum(x is None for x in everywhere),
                "first_quarter_p50_ms": round(statistics.median(head) / 1e6, 3) if head else None,
                "last_quarter_p50_ms": round(statistics.median(tail) / 1e6, 3) if tail else None,
            }
        )
        if not kept:
            break
        best = rate
    return best, steps


def _pct(rounds: list[FloodRound], p: float, server: str | None) -> list[float] | str:
    try:
        return [
            percentile(r.latencies_ms(server) if server else r.everywhere_ms(), p) for r in rounds
        ]
    except Missing:
        return "no update arrived"


def _figures(
    result: WorkloadResult, rounds: dict[str, list[FloodRound]], load: str, primary: bool
) -> None:
    herd, relay, everywhere = rounds[HERD], rounds[RELAY], rounds[EVERYWHERE]
    result.add(
        summarise(
            f"{load}: two hops (Campbell) p50",
            "ms",
            _pct(herd, 50, TWO_HOPS),
            {RELAY: _pct(relay, 50, "relay-2")},
            P50_TARGET if primary else None,
        )
    )
    result.add(
        summarise(
            f"{load}: two hops (Campbell) p99",
            "ms",
            _pct(herd, 99, TWO_HOPS),
            {RELAY: _pct(relay, 99, "relay-2")},
            P99_TARGET if primary else None,
        )
    )
    result.add(summarise(f"{load}: every server p50", "ms", _pct(everywhere, 50, None)))
    result.add(summarise(f"{load}: every server p99", "ms", _pct(everywhere, 99, None)))
    result.add(
        summarise(
            f"{load}: updates sent per second (achieved)",
            "updates/s",
            [r.sent / r.send_seconds for r in herd],
            {RELAY: [r.sent / r.send_seconds for r in relay]},
            per_server_p50_ms={
                name: _pct(everywhere, 50, name)
                for name in NAMES
                if name in everywhere[0].tracker.arrived
            },
        )
    )
