"""3. WHATSAT with the embedded places, at 10 km/5 and 50 km/20, at Riley.

Clients are placed at big cities (where a 50 km search finds the most places, the worst case),
then asked about in turn: on one connection request-response (the latency a lone client
sees; the issue's p99 target applies here) and on several at once (throughput). The bare
asyncio echo server answers the same request lines, as the floor of the request path; its
replies are one line, not a page of JSON, so its ratio shows what the places cost.
"""

from __future__ import annotations

import time

from ..baselines import python_baseline, start_baseline
from ..context import Context, interleave, summarise
from ..herd import PLACES_TIMEOUT
from ..load import ClosedLoopRound, ask, run_closed_loop, send_all, time_text
from ..results import Missing, Target, WorkloadResult, percentile

NAME = "whatsat"
TITLE = "WHATSAT with the embedded places"
SERVER = "Riley"
HERD, ECHO = "herd", "asyncio echo"
P99_TARGET = Target("< 5 ms", "value", lambda v: v < 5.0)
# (latitude, longitude) of big cities on every continent: dense places within 50 km.
CITIES = (
    (34.0522, -118.2437),  # Los Angeles
    (40.7128, -74.0060),  # New York
    (51.5074, -0.1278),  # London
    (48.8566, 2.3522),  # Paris
    (35.6762, 139.6503),  # Tokyo
    (-33.8688, 151.2093),  # Sydney
    (19.4326, -99.1332),  # Mexico City
    (-23.5505, -46.6333),  # Sao Paulo
    (28.6139, 77.2090),  # Delhi
    (30.0444, 31.2357),  # Cairo
    (-1.2921, 36.8219),  # Nairobi
    (55.7558, 37.6173),  # Moscow
    (39.9042, 116.4074),  # Beijing
    (1.3521, 103.8198),  # Singapore
    (52.5200, 13.4050),  # Berlin
    (41.8781, -87.6298),  # Chicago
)
CONFIGS = ((10, 5), (50, 20))


async def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME, TITLE)
    sizes, herd = ctx.sizes, ctx.herd
    await _place_clients(ctx)
    echo, echo_port = start_baseline(ctx.procs, "whatsat-echo", python_baseline("echo.py"))
    try:
        ports = {HERD: herd.ports[SERVER], ECHO: echo_port}
        pids = {HERD: herd.servers[SERVER].pid, ECHO: echo.pid}
        ctx.on_server_cpu(*pids.values())
        ctx.on_load_cpu(*(p.pid for n, p in herd.servers.items() if n != SERVER))
        ctx.pin_harness()
        if ctx.server_cpus is not None:
            result.notes.append(
                f"CPUs: Riley and the echo on {sorted(ctx.server_cpus)}; the other servers "
                f"and the load generator on {sorted(ctx.load_cpus or ())}"
            )
        for radius, bound in CONFIGS:
            lines = [
                f"WHATSAT w{k} {radius} {bound}\n".encode() for k in range(sizes.whatsat_clients)
            ]
            # With --quick the places are not preloaded: this first WHATSAT waits for them.
            reply = await ask(ports[HERD], lines[0], PLACES_TIMEOUT, until=b"\n\n")
            if b'"status" : "OK"' not in reply:
                raise RuntimeError(f"WHATSAT {radius} km/{bound}: {reply[:300]!r}")
            places = reply.count(b'"place_id"')
            result.notes.append(
                f"{radius} km/{bound}: a herd reply is {len(reply):,} bytes ({places} places)"
            )
            for conns in (1, sizes.whatsat_connections):
                await _mode(ctx, result, radius, bound, conns, lines, ports, pids)
    finally:
        ctx.procs.forget(echo)
    return result


async def _place_clients(ctx: Context) -> None:
    """IAMAT every client at Riley, each at a city (spread over a few hundred metres)."""
    base = time.time_ns()
    lines = [
        f"IAMAT w{k} {_location(k)} {time_text(base + k)}\n".encode()
        for k in range(ctx.sizes.whatsat_clients)
    ]
    replies, _, first = await send_all(ctx.herd.ports[SERVER], lines, 16, 30.0)
    if replies != len(lines) or not first.startswith(b"AT "):
        raise RuntimeError(f"placing clients: {first[:120]!r}")


def _location(k: int) -> str:
    lat, lng = CITIES[k % len(CITIES)]
    lat += (k // len(CITIES)) * 0.003
    return f"{lat:+.6f}{lng:+.6f}"


async def _mode(
    ctx: Context,
    result: WorkloadResult,
    radius: int,
    bound: int,
    conns: int,
    lines: list[bytes],
    ports: dict[str, int],
    pids: dict[str, int],
) -> None:
    sizes = ctx.sizes
    # Each connection starts at another client, all cycling through every one of them.
    per_conn = [lines[j % len(lines) :] + lines[: j % len(lines)] for j in range(conns)]

    async def one(target: str, r: int) -> ClosedLoopRound:
        return await run_closed_loop(
            ports[target],
            per_conn,
            1,
            sizes.warmup,
            sizes.window,
            {target: pids[target]},
            # The herd's reply ends with an empty line; the echo's is one line.
            terminator=b"\n\n" if target == HERD else b"\n",
            cycle=True,
        )

    rounds = await interleave([ECHO, HERD], sizes.rounds, one)
    for target, rs in rounds.items():
        for r in rs:
            if r.undrained or not r.first_reply.startswith(b"AT "):
                raise RuntimeError(f"{target}: WHATSAT answered {r.first_reply[:120]!r}")
    label = f"{radius} km/{bound}, {conns} connection{'s' if conns > 1 else ''}"

    def pct(rs: list[ClosedLoopRound], p: float) -> list[float] | str:
        try:
            return [percentile(r.latencies_ns, p) / 1e6 for r in rs]
        except Missing as exc:
            return str(exc)

    def rate(rs: list[ClosedLoopRound]) -> list[float] | str:
        if any(not r.replies for r in rs):
            return "no reply within a round's window"
        return [r.rate for r in rs]

    result.add(
        summarise(
            f"{label}: replies/s",
            "replies/s",
            rate(rounds[HERD]),
            {ECHO: rate(rounds[ECHO])},
            server_cpu_utilisation=[round(r.cpu[HERD] / r.seconds, 3) for r in rounds[HERD]],
        )
    )
    goal = P99_TARGET if (radius, bound) == (50, 20) and conns == 1 else None
    result.add(
        summarise(f"{label}: p50", "ms", pct(rounds[HERD], 50), {ECHO: pct(rounds[ECHO], 50)})
    )
    result.add(
        summarise(f"{label}: p99", "ms", pct(rounds[HERD], 99), {ECHO: pct(rounds[ECHO], 99)}, goal)
    )
