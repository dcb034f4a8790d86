"""``python -m bench.rest_trail``: the history workload's REST trail read, this checkout's code
against another's, side by side in one run.

Two stacks, each a lone server on the same data (the workload's 24-hour trail of 8,640 points
and a few other clients, ``bench.history_data``) with a gateway in front of it: the other
checkout's code (``--old``, by its ``PYTHONPATH``) and this one's. Both servers and gateways
run on CPU 0 and this harness on CPU 1, as ``herd bench --only history`` places them. The
trail is read through ``GET /api/v1/clients/{id}/history`` from each stack in turn; each
read's wall time, and the CPU its gateway and server spent on it (``/proc/PID/stat``, in
clock ticks: summed over the reads, then divided), are reported, and the two bodies compared.

    python -m bench.rest_trail --old ../main        # 60 reads of each
    python -m bench.rest_trail --old ../main --reads 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from backend.history import fill

from .herd import Herd
from .history_data import TRAIL, TRAIL_POINTS, DataSet
from .load import time_text
from .procs import Procs, pin
from .results import percentile

HOUR_NS = 3_600 * 1_000_000_000
# Reads of each stack before the measured ones: the first pulls the window into the cache.
WARM_READS = 3
# Seconds after each read before its CPU is taken: the server writes a big answer's traffic
# log line at once, but in the loop iteration after its reply.
SETTLE = 0.06
ON = "[history]\nenabled = true\n"


@dataclass
class Stack:
    herd: Herd
    procs: Procs
    url: str
    wall_ms: list[float] = field(default_factory=list)
    gateway_s: float = 0.0
    server_s: float = 0.0
    body: bytes = b""

    @property
    def pids(self) -> tuple[int, int]:
        assert self.herd.gateway is not None
        return self.herd.gateway.pid, self.herd.servers["Solo"].pid


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start(root: Path, data: DataSet, code: str | None) -> Stack:
    """A lone server on ``data`` and a gateway, with ``code`` as PYTHONPATH (None: this one)."""
    procs = Procs(root)
    herd = Herd.for_bench(root, procs, preload=False, names=("Solo",), links=(), extra=ON)
    if code is not None:
        herd.env["PYTHONPATH"] = code
    await asyncio.to_thread(fill, root / "data" / "Solo", data.rows())
    await herd.start_async("Solo")
    return Stack(herd, procs, await herd.start_gateway_async())


async def read(session: aiohttp.ClientSession, stack: Stack, query: dict[str, str]) -> None:
    gateway, server = stack.pids
    gateway_s, server_s = cpu_seconds(gateway), cpu_seconds(server)
    t0 = time.perf_counter()
    async with session.get(f"{stack.url}/api/v1/clients/{TRAIL}/history", params=query) as got:
        stack.body = await got.read()
    stack.wall_ms.append((time.perf_counter() - t0) * 1e3)
    if got.status != 200:
        raise RuntimeError(f"the trail's read answered {got.status}: {stack.body[:200]!r}")
    await asyncio.sleep(SETTLE)
    stack.gateway_s += cpu_seconds(gateway) - gateway_s
    stack.server_s += cpu_seconds(server) - server_s


async def compare(reads: int, old: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="rest-trail-"))
    end_ns = time.time_ns() // HOUR_NS * HOUR_NS
    data = DataSet(TRAIL_POINTS + 3_100, 5, 3_000, TRAIL_POINTS, end_ns)
    stacks: dict[str, Stack] = {}
    try:
        stacks["old"] = await start(root / "old", data, old)
        stacks["this"] = await start(root / "this", data, None)
        for stack in stacks.values():
            for pid in stack.pids:
                pin(pid, [0])
        os.sched_setaffinity(0, {1})
        since, until = (time_text(t) for t in data.day)
        query = {"since": since, "until": until, "limit": "10000"}
        async with aiohttp.ClientSession() as session:
            for i in range(WARM_READS + reads):
                order = list(stacks.values())
                for stack in order if i % 2 else order[::-1]:  # each first in turn
                    if i == WARM_READS:
                        stack.wall_ms, stack.gateway_s, stack.server_s = [], 0.0, 0.0
                    await read(session, stack, query)
        report(stacks, reads)
    finally:
        for stack in stacks.values():
            await stack.herd.stop_async()
            stack.procs.close()


def report(stacks: dict[str, Stack], reads: int) -> None:
    one, _, _ = os.getloadavg()
    same = len({stack.body for stack in stacks.values()}) == 1
    print(f"bodies the same: {same} ({len(stacks['this'].body):,} bytes); load average {one:.2f}")
    for name, stack in stacks.items():
        wall = stack.wall_ms
        print(
            f"{name}: p50 {percentile(wall, 50):.1f} ms, p99 {percentile(wall, 99):.1f} ms, "
            f"max {max(wall):.1f} ms; CPU per read: gateway {stack.gateway_s / reads * 1e3:.1f}"
            f" ms, server {stack.server_s / reads * 1e3:.1f} ms ({reads} reads)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rest_trail", description=__doc__)
    parser.add_argument("--reads", type=int, default=60, help="measured reads of each stack")
    parser.add_argument("--old", required=True, help="the other checkout (its PYTHONPATH)")
    args = parser.parse_args(argv)
    asyncio.run(compare(args.reads, str(Path(args.old).resolve())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
