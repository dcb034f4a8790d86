"""4. Gateway: an HTTP POST of a location until its WebSocket push has reached each of 100
connected WebSocket clients, and POST throughput with those clients connected.

The path: POST -> gateway -> IAMAT at Riley -> Riley's SUBSCRIBE stream -> gateway -> 100
sockets. The baseline is a bare aiohttp app that pushes each POST body straight to its
sockets (``baselines/fanout.py``). The gateway, the herd and the baseline run on the server
CPU; the HTTP and WebSocket clients on the load CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ..baselines import python_baseline, start_baseline
from ..context import Context, interleave, summarise
from ..procs import cpu_seconds
from ..results import Missing, Target, WorkloadResult, percentile

NAME = "gateway"
TITLE = "Gateway: POST to WebSocket push, POST throughput"
HERD, FANOUT = "herd", "bare aiohttp fan-out"
P99_TARGET = Target("< 20 ms", "value", lambda v: v < 20.0)
# Seconds for every push to arrive before the missing ones count as lost.
ARRIVAL_TIMEOUT = 10.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)

# The load generator parses every push of 100 sockets: a fast parser keeps it from being
# what the latency measures.
loads: Any = orjson.loads


@dataclass
class GatewayRound:
    push_ms: list[float]  # POST sent -> update received, for every (POST, socket) pair
    missing: int  # pushes that never came
    posts: int  # POSTs completed in the throughput window
    seconds: float
    post_ms: list[float]  # POST round trips in the throughput window
    cpu: dict[str, float]  # CPU seconds in the throughput window, by process
    generator_cpu: float
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.posts / self.seconds


class Sockets:
    """The WebSocket clients of one round and the arrival time of each timed update."""

    def __init__(self, n_sockets: int, n_posts: int, prefix: str) -> None:
        self.prefix = prefix
        self.arrived = [[0] * n_posts for _ in range(n_sockets)]
        self.remaining = n_sockets * n_posts
        self.done = asyncio.Event()
        self.timing = True  # parse updates (latency phase) or only let them flow

    async def read(self, ws: aiohttp.ClientWebSocketResponse, k: int) -> None:
        arrived, prefix = self.arrived[k], self.prefix
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT or not self.timing:
                continue
            t = time.perf_counter_ns()
            data = loads(msg.data)
            if data.get("type") != "update":
                continue
            client = data["record"]["client_id"]
            if client.startswith(prefix):
                i = int(client[len(prefix) :])
                if not arrived[i]:
                    arrived[i] = t
                    self.remaining -= 1
                    if not self.remaining:
                        self.done.set()


async def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME, TITLE)
    herd = ctx.herd
    herd.start_gateway()
    assert herd.gateway is not None
    gateway = herd.gateway
    fanout = None
    try:
        await herd.wait_gateway()
        fanout, fanout_port = start_baseline(ctx.procs, "fanout", python_baseline("fanout.py"))
        urls = {
            HERD: f"http://127.0.0.1:{herd.gateway_port}",
            FANOUT: f"http://127.0.0.1:{fanout_port}",
        }
        # The gateway's CPU is what its figure per CPU-second counts; the herd's is reported
        # beside it.
        pids = {HERD: {"gateway": gateway.pid, **herd.pids()}, FANOUT: {"fan-out": fanout.pid}}
        ctx.on_server_cpu(gateway.pid, fanout.pid, *herd.pids().values())
        ctx.pin_harness()
        if ctx.server_cpus is not None:
            result.notes.append(
                f"CPUs: the gateway, the herd and the fan-out on {sorted(ctx.server_cpus)}; "
                f"the HTTP and WebSocket clients on {sorted(ctx.load_cpus or ())}"
            )
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:

            async def one(target: str, r: int) -> GatewayRound:
                return await _round(ctx, session, urls[target], pids[target], r)

            rounds = await interleave([FANOUT, HERD], ctx.sizes.rounds, one)
    finally:
        ctx.procs.forget(gateway)
        herd.gateway = None
        if fanout is not None:
            ctx.procs.forget(fanout)
    _figures(ctx, result, rounds)
    return result


async def _round(
    ctx: Context, session: aiohttp.ClientSession, url: str, pids: dict[str, int], r: int
) -> GatewayRound:
    sizes = ctx.sizes
    n = sizes.posts_per_round
    # Each round reports from its own spot in the South Pacific and its sockets watch only
    # that spot (bbox): a socket's snapshot would otherwise carry every client the earlier
    # workloads left in the herd, thousands of records times 100 sockets per round.
    lat, lon = -50.0 + r, -130.0
    bbox = f"{lon - 1},{lat - 0.4},{lon + 1},{lat + 0.4}"
    prefix = f"gw{r}-{time.time_ns()}-"
    sockets = Sockets(sizes.ws_clients, n, prefix)
    conns: list[aiohttp.ClientWebSocketResponse] = []
    readers: list[asyncio.Task[None]] = []
    try:
        for k in range(sizes.ws_clients):
            ws = await session.ws_connect(f"{url}/api/v1/ws?bbox={bbox}", max_msg_size=0)
            first = await ws.receive_json(timeout=10)
            if first.get("type") != "snapshot":
                raise RuntimeError(f"{url}: WebSocket opened with {first!r}")
            conns.append(ws)
            readers.append(asyncio.create_task(sockets.read(ws, k)))

        # POST-to-push latency at a light, steady rate.
        sent = [0] * n

        async def post(i: int, client: str) -> None:
            body = json.dumps({"client_id": client, "lat": lat, "lon": lon})
            sent[i] = time.perf_counter_ns()
            async with session.post(
                f"{url}/api/v1/locations", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"POST answered {response.status}: {await response.text()}")
                await response.read()

        start = time.perf_counter()
        posts = []
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i * sizes.post_interval - time.perf_counter()))
            posts.append(asyncio.create_task(post(i, f"{prefix}{i}")))
        await asyncio.gather(*posts)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sockets.done.wait(), ARRIVAL_TIMEOUT)
        push_ms = [
            (a - s) / 1e6
            for column in sockets.arrived
            for s, a in zip(sent, column, strict=True)
            if a and s
        ]
        missing = sockets.remaining

        # POST throughput: closed loop, the sockets still connected and pushed to.
        sockets.timing = False
        done = 0
        post_ms: list[float] = []
        recording = False
        stop = False

        async def worker(w: int) -> None:
            nonlocal done
            k = 0
            while not stop:
                t = time.perf_counter_ns()
                await post(0, f"{prefix}t{w}.{k}")
                k += 1
                if recording:
                    done += 1
                    post_ms.append((time.perf_counter_ns() - t) / 1e6)

        workers = [asyncio.create_task(worker(w)) for w in range(sizes.post_concurrency)]
        try:
            await asyncio.sleep(sizes.warmup)
            gen0 = cpu_seconds(os.getpid())
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            t0 = time.perf_counter()
            recording = True
            await asyncio.sleep(sizes.window)
            recording = False
            seconds = time.perf_counter() - t0
            cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
            gen = cpu_seconds(os.getpid()) - gen0
            stop = True
            async with asyncio.timeout(30):
                await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
        return GatewayRound(push_ms, missing, done, seconds, post_ms, cpu, gen)
    finally:
        for task in readers:
            task.cancel()
        for ws in conns:
            with contextlib.suppress(Exception):
                await ws.close()


def _figures(ctx: Context, result: WorkloadResult, rounds: dict[str, list[GatewayRound]]) -> None:
    def pct(rs: list[GatewayRound], p: float, what: str) -> list[float] | str:
        try:
            return [percentile(getattr(r, what), p) for r in rs]
        except Missing:
            return "no sample"

    herd, fan = rounds[HERD], rounds[FANOUT]
    clients = ctx.sizes.ws_clients
    for p, target in ((50, None), (99, P99_TARGET)):
        result.add(
            summarise(
                f"POST to WebSocket push at {clients} clients: p{p}",
                "ms",
                pct(herd, p, "push_ms"),
                {FANOUT: pct(fan, p, "push_ms")},
                target,
            )
        )
    result.add(
        summarise(
            f"POST throughput ({ctx.sizes.post_concurrency} concurrent, {clients} sockets)",
            "POSTs/s",
            [r.rate for r in herd],
            {FANOUT: [r.rate for r in fan]},
            generator_cpu_utilisation={
                name: [round(r.generator_cpu / r.seconds, 3) for r in rs]
                for name, rs in rounds.items()
            },
        )
    )

    def per_cpu(rs: list[GatewayRound], process: str) -> list[float] | str:
        if any(r.cpu[process] <= 0 for r in rs):
            return f"{process} used no measurable CPU in the window"
        return [r.posts / r.cpu[process] for r in rs]

    result.add(
        summarise(
            "POSTs per CPU-second of the gateway",
            "POSTs/CPU-s",
            per_cpu(herd, "gateway"),
            {FANOUT: per_cpu(fan, "fan-out")},
            herd_cpu_per_post_ms={
                name: [round(r.cpu[name] / r.posts * 1e3, 3) if r.posts else None for r in herd]
                for name in herd[0].cpu
            },
        )
    )
    for p in (50, 99):
        result.add(
            summarise(
                f"POST round trip under that load: p{p}",
                "ms",
                pct(herd, p, "post_ms"),
                {FANOUT: pct(fan, p, "post_ms")},
            )
        )
    for name, rs in rounds.items():
        lost = sum(r.missing for r in rs)
        if lost:
            result.notes.append(f"{name}: {lost} pushes never arrived within {ARRIVAL_TIMEOUT} s")
