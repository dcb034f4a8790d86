"""5. Convergence: load 100,000 clients at Riley, then measure the records every server
holds, the memory they cost, and how long a restarted server takes to hold them all again.

Memory is each server's resident set growth over the load, per 100,000 clients (scaled when
``--quick`` loads fewer). The restart is an operator's: SIGTERM, then the same command again;
the catch-up time runs from that command until the server's STATUS counts every record the
others hold, or is reported as null if it has not within the limit.
"""

from __future__ import annotations

import asyncio
import os
import time

from ..context import Context, summarise
from ..herd import Herd
from ..load import send_all, time_text
from ..net import listening
from ..procs import rss_bytes
from ..results import Figure, WorkloadResult

NAME = "convergence"
TITLE = "Convergence: records, memory, restart catch-up"
ENTRY, RESTARTED = "Riley", "Campbell"
LOCATION = "+34.068930-118.445127"
# Requests in flight while loading: a deep pipeline, so the load is quick and the herd busy.
DEPTH = 256
# Seconds for every server to hold every loaded record, after the last reply from Riley.
CONVERGE_LIMIT = 60.0
PER = 100_000  # the "memory per 100,000 clients"
SOLO = "Solo"  # the lone server whose memory is measured
# Seconds for a server's log queue to drain before its RSS is read.
SETTLE = 0.5


async def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME, TITLE)
    herd, sizes = ctx.herd, ctx.sizes
    n = sizes.convergence_clients
    # The whole herd works on every record: it gets both CPUs (as in the flood workload).
    ctx.unpin(*herd.pids().values(), os.getpid())
    result.notes.append("CPUs: the herd and the harness unpinned; the lone server pinned")

    before = await _records(ctx)
    rss0 = {name: rss_bytes(pid) for name, pid in herd.pids().items()}
    base = time.time_ns()
    lines = [f"IAMAT cv{i} {LOCATION} {time_text(base + i)}\n".encode() for i in range(n)]
    t0 = time.perf_counter()
    budget = sizes.convergence_load_seconds
    replies, seconds, first = await send_all(
        herd.ports[ENTRY], lines, DEPTH, budget + CONVERGE_LIMIT, budget
    )
    if not replies or not first.startswith(b"AT "):
        raise RuntimeError(f"loading: {replies} replies, first {first[:120]!r}")
    result.add(
        summarise("load rate of IAMATs at Riley (pipelined)", "IAMAT/s", [replies / seconds])
    )
    if replies < n:
        result.notes.append(
            f"only {replies:,} of {n:,} clients loaded in the {budget:g} s allowed: the figures "
            f"are for {replies:,} clients (memory scaled to {PER:,})"
        )
    n = replies

    expected = {name: count + n for name, count in before.items()}
    deadline = time.monotonic() + CONVERGE_LIMIT
    counts = await _records(ctx)
    while any(counts[s] < expected[s] for s in counts) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        counts = await _records(ctx)
    converged = all(counts[s] >= expected[s] for s in counts)
    result.add(
        summarise(
            f"time until every server holds the {n:,} new records",
            "s",
            [time.perf_counter() - t0]
            if converged
            else f"not within {CONVERGE_LIMIT:g} s: {_short(counts, expected)}",
        )
    )
    result.add(
        Figure(
            name="records held, fewest at any server",
            unit="records",
            value=float(min(counts.values())),
            extra={"per_server": counts, "expected": max(expected.values())},
        )
    )
    rss1 = {name: rss_bytes(pid) for name, pid in herd.pids().items()}
    growth = {name: round((rss1[name] - rss0[name]) * PER / n / 2**20, 1) for name in rss1}
    await _restart(ctx, result, max(counts.values()))
    await _memory(ctx, result, growth)
    return result


async def _memory(ctx: Context, result: WorkloadResult, herd_growth: dict[str, float]) -> None:
    """Memory per client, measured on a fresh lone server (same config, no links).

    The herd's own servers are no good for this: they reuse memory that earlier workloads
    freed (records replaced, log records queued in bursts), so their RSS hardly grows. A
    fresh process grows by what the records cost, plus only its own log queue's transient.
    """
    n = ctx.sizes.memory_clients
    solo = Herd.for_bench(ctx.root / "solo", ctx.procs, preload=False, names=(SOLO,), links=())
    solo.start(SOLO)
    proc = solo.servers[SOLO]
    try:
        ctx.on_server_cpu(proc.pid)
        port = solo.ports[SOLO]
        base = time.time_ns()
        warm = [f"IAMAT warm{i} {LOCATION} {time_text(base + i)}\n".encode() for i in range(100)]
        # Every code path once, then a pause for the log queue to drain: the start line.
        await send_all(port, warm, DEPTH, CONVERGE_LIMIT)
        await asyncio.sleep(SETTLE)
        rss0 = rss_bytes(proc.pid)
        base = time.time_ns()
        lines = [f"IAMAT mem{i} {LOCATION} {time_text(base + i)}\n".encode() for i in range(n)]
        await send_all(port, lines, DEPTH, CONVERGE_LIMIT)
        await asyncio.sleep(SETTLE)
        held = int((await solo.status_async(SOLO))["records"])
        rss1 = rss_bytes(proc.pid)
    finally:
        ctx.procs.forget(proc)
    if held != n + len(warm):
        value: list[float] | str = f"the lone server holds {held:,} records, not {n + len(warm):,}"
    elif rss1 <= rss0:
        value = "no measurable RSS growth"
    else:
        value = [(rss1 - rss0) * PER / n / 2**20]
    result.add(
        summarise(
            f"memory per {PER:,} clients (RSS growth of a fresh server, {n:,} loaded)",
            "MiB",
            value,
            herd_rss_growth_per_100k_mib=herd_growth,
        )
    )


async def _records(ctx: Context) -> dict[str, int]:
    return {name: int((await ctx.herd.status_async(name))["records"]) for name in ctx.herd.servers}


def _short(counts: dict[str, int], expected: dict[str, int]) -> str:
    return ", ".join(f"{s} {counts[s]:,}/{expected[s]:,}" for s in counts)


async def _restart(ctx: Context, result: WorkloadResult, total: int) -> None:
    herd = ctx.herd
    limit = ctx.sizes.catch_up_limit
    proc = herd.restart(RESTARTED)
    t0 = time.monotonic()
    port = herd.ports[RESTARTED]
    while not listening(port):
        if not proc.alive() or time.monotonic() - t0 > limit:
            result.add(
                Figure(
                    name=f"restarted {RESTARTED}: catch-up to {total:,} records",
                    unit="s",
                    value=None,
                    reason=f"{RESTARTED} did not listen again: {proc.tail(300)}",
                )
            )
            return
        await asyncio.sleep(0.01)
    listen_s = time.monotonic() - t0
    ctx.unpin(proc.pid)
    held = 0
    while time.monotonic() - t0 < limit:
        held = int((await herd.status_async(RESTARTED))["records"])
        if held >= total:
            break
        await asyncio.sleep(0.05)
    caught_up = held >= total
    result.add(
        summarise(
            f"restarted {RESTARTED}: catch-up to {total:,} records",
            "s",
            [time.monotonic() - t0]
            if caught_up
            else f"held {held:,} of {total:,} records {limit:g} s after the restart",
            listening_after_s=round(listen_s, 3),
        )
    )
    # Leave the herd whole for whatever runs next.
    await herd.wait_ready(places=False)
