"""1. IAMAT throughput at one server (Riley), against the bare echo servers.

Three ways of sending: one connection request-response, 64 connections request-response,
and one pipelined connection. Riley runs on the server CPU with its four fellows running and
flooding on the other CPU (their CPU time is reported apart, not counted in the ratio); each
baseline runs on the server CPU too. Every round sends each target the same prepared bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from backend.protocol import format_attributes

from ..baselines import node_baseline, python_baseline, start_baseline
from ..context import Context, interleave, summarise
from ..load import ClosedLoopRound, iamat_lines, run_closed_loop
from ..procs import Proc, get_nice, set_nice
from ..results import Missing, Target, WorkloadResult, percentile

NAME = "iamat"
TITLE = "IAMAT throughput at one server"
SERVER = "Riley"
LOCATION = "+34.068930-118.445127"
HERD = "herd"
FELLOWS_NICE = 19  # the lowest priority, for Riley's four fellows while Riley is measured
# The target: the herd's replies per CPU-second at least half the bare asyncio echo's.
TARGET = Target("ratio >= 0.5", "ratio", lambda r: r >= 0.5)
# What a phone's report typically carries besides its position (106 bytes as the herd carries
# them): the "REPORT with attributes" mode sends these on every line.
PHONE_ATTRIBUTES = format_attributes(
    {
        "accuracy": 5.0,
        "altitude": 71.0,
        "speed": 1.4,
        "heading": 270.0,
        "battery": 87.0,
        "charging": False,
        "trigger": "p",
    }
)


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    connections: int
    depth: int
    rounds: int
    window: float
    attributes: bytes = b""  # REPORT lines carrying these, instead of IAMAT


async def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME, TITLE)
    sizes = ctx.sizes
    herd = ctx.herd
    baselines: dict[str, Proc] = {}
    ports: dict[str, int] = {}
    missing: dict[str, str] = {}
    for name, argv in (
        ("asyncio echo", python_baseline("echo.py")),
        ("uvloop echo", python_baseline("echo.py", "--uvloop")),
        ("node echo", node_baseline()),
    ):
        if argv is None:
            missing[name] = "node is not installed"
            continue
        try:
            baselines[name], ports[name] = start_baseline(ctx.procs, name.replace(" ", "-"), argv)
        except RuntimeError as exc:
            missing[name] = str(exc)
    ports[HERD] = herd.ports[SERVER]
    pids = {name: proc.pid for name, proc in baselines.items()}
    pids[HERD] = herd.servers[SERVER].pid
    neighbours = {n: p.pid for n, p in herd.servers.items() if n != SERVER}
    ctx.on_server_cpu(*pids.values())
    ctx.on_load_cpu(*neighbours.values())
    ctx.pin_harness()
    # The fellows share the load CPU with the load generator. Flooding every reply keeps all
    # four busy, and at equal priority the generator would get a fifth of its CPU and starve
    # Riley; at the lowest priority they take only what the generator leaves.
    niceness = {pid: get_nice(pid) for pid in neighbours.values()}
    for pid in niceness:
        set_nice(pid, FELLOWS_NICE)

    modes = [
        Mode("single", "1 connection", 1, 1, sizes.rounds, sizes.window),
        Mode(
            "conns",
            f"{sizes.connections} connections",
            sizes.connections,
            1,
            sizes.target_rounds,
            sizes.headline_window,
        ),
        Mode(
            "pipelined",
            f"pipelined (depth {sizes.pipeline_depth})",
            1,
            sizes.pipeline_depth,
            sizes.rounds,
            sizes.window,
        ),
        Mode(
            "attributes",
            f"{sizes.connections} connections, REPORT with attributes",
            sizes.connections,
            1,
            sizes.rounds,
            sizes.window,
            PHONE_ATTRIBUTES,
        ),
    ]
    targets = [*baselines, HERD]
    if ctx.server_cpus is not None:
        result.notes.append(
            f"CPUs: Riley and each baseline on {sorted(ctx.server_cpus)}; Riley's four "
            f"fellows (at nice {FELLOWS_NICE}) and the load generator on "
            f"{sorted(ctx.load_cpus or ())}"
        )
    try:
        for mode in modes:
            # Attributes: the herd against the asyncio echo only (the figure, not a target).
            these = (
                [t for t in targets if t in (HERD, "asyncio echo")] if mode.attributes else targets
            )
            await _mode(ctx, result, mode, these, ports, pids, neighbours, missing)
    finally:
        for proc in baselines.values():
            ctx.procs.forget(proc)
        try:
            for pid, nice in niceness.items():
                set_nice(pid, nice)
        except PermissionError:
            result.notes.append(
                f"could not restore the fellows' priority (nice {FELLOWS_NICE}): "
                "later workloads run them at low priority"
            )
    return result


async def _mode(
    ctx: Context,
    result: WorkloadResult,
    mode: Mode,
    targets: list[str],
    ports: dict[str, int],
    pids: dict[str, int],
    neighbours: dict[str, int],
    missing: dict[str, str],
) -> None:
    sizes = ctx.sizes
    # Enough prepared lines for max_rate replies/s over the whole round, with room to spare.
    # The herd's connections stop when they run out (which ends the window early, and says
    # so), because a line sent twice is not newer and would be neither stored nor flooded;
    # the baselines, faster than any herd, send them again from the first.
    per_conn = int(sizes.max_rate * (sizes.warmup + mode.window) * 1.5 / mode.connections) + 1
    per_conn = max(per_conn, 2 * mode.depth)
    prepared: dict[int, list[list[bytes]]] = {}

    async def one(target: str, r: int) -> ClosedLoopRound:
        if r not in prepared:
            # One set of lines per round, sent to every target: the same bytes for all.
            # Client IDs are per connection, so every line is newer for its client.
            base = time.time_ns()
            prepared.clear()
            prepared[r] = [
                iamat_lines(
                    f"{mode.key}{r}.{j}.",
                    sizes.clients_per_connection,
                    per_conn,
                    base,
                    LOCATION,
                    mode.attributes,
                )
                for j in range(mode.connections)
            ]
        watch = {target: pids[target], **(neighbours if target == HERD else {})}
        return await run_closed_loop(
            ports[target],
            prepared[r],
            mode.depth,
            sizes.warmup,
            mode.window,
            watch,
            cycle=target != HERD,
        )

    # The target's ratio pairs each herd round with an asyncio echo round run next to it.
    # Those two take the mode's rounds; the other baselines, reported for comparison and
    # not paired, take the plain number of rounds.
    pair = (HERD, "asyncio echo") if "asyncio echo" in targets else None
    if pair is not None and mode.rounds > sizes.rounds:
        rounds = await interleave(list(pair), mode.rounds, one, pair=pair)
        rounds |= await interleave([t for t in targets if t not in pair], sizes.rounds, one)
    else:
        rounds = await interleave(targets, mode.rounds, one, pair=pair)
    _check(rounds)
    result.notes.extend(
        f"{mode.label}: {t}: {note}" for t in targets for r in rounds[t] for note in r.notes
    )

    def per_target(metric: str) -> dict[str, list[float] | str]:
        values: dict[str, list[float] | str] = dict(missing)
        for t in targets:
            try:
                values[t] = [_metric(r, metric, t) for r in rounds[t]]
            except Missing as exc:
                values[t] = str(exc)
        return values

    label = mode.label
    for metric, unit, name in (
        ("rate", "replies/s", f"{label}: replies/s"),
        ("per_cpu", "replies/CPU-s", f"{label}: replies per CPU-second of the server"),
        ("p50", "ms", f"{label}: p50 latency"),
        ("p99", "ms", f"{label}: p99 latency"),
    ):
        values = per_target(metric)
        herd_values = values.pop(HERD)
        # asyncio echo first: it is the baseline the target and the ratio refer to.
        order = ["asyncio echo", "uvloop echo", "node echo"]
        ordered = {b: values[b] for b in order if b in values}
        target = TARGET if (mode.key == "conns" and metric == "per_cpu") else None
        extra: dict[str, Any] = {}
        if metric == "per_cpu":
            extra["server_cpu_utilisation"] = {
                t: [round(r.cpu[t] / r.seconds, 3) for r in rounds[t]] for t in targets
            }
            extra["generator_cpu_utilisation"] = {
                t: [round(r.generator_cpu / r.seconds, 3) for r in rounds[t]] for t in targets
            }
            extra["reply_bytes"] = {
                t: [round(r.reply_bytes / r.replies, 1) if r.replies else None for r in rounds[t]]
                for t in targets
            }
        result.add(summarise(name, unit, herd_values, ordered, target, **extra))
    # The neighbours' CPU while Riley serves: flooding's cost elsewhere, not in the ratio.
    result.add(
        summarise(
            f"{label}: CPU of Riley's four fellows (cores)",
            "cores",
            [sum(r.cpu[n] for n in neighbours) / r.seconds for r in rounds[HERD]],
            per_server={
                n: [round(r.cpu[n] / r.seconds, 3) for r in rounds[HERD]] for n in neighbours
            },
        )
    )


def _metric(r: ClosedLoopRound, metric: str, target: str) -> float:
    if not r.replies:
        raise Missing(f"{target}: no reply within the {r.seconds:.2f} s window")
    if metric == "rate":
        return r.rate
    if metric == "per_cpu":
        cpu = r.cpu[target]
        if cpu <= 0:
            raise Missing(f"{target} used no measurable CPU in the window")
        return r.replies / cpu
    return percentile(r.latencies_ns, 50 if metric == "p50" else 99) / 1e6


def _check(rounds: dict[str, list[ClosedLoopRound]]) -> None:
    """Every target must have answered as expected: AT lines from the herd, echoes from the
    baselines, and every request answered by the end of the round."""
    for target, results in rounds.items():
        for r in results:
            expected = b"AT Riley " if target == HERD else b"AT Echo "
            if not r.first_reply.startswith(expected):
                raise RuntimeError(f"{target} answered {r.first_reply[:120]!r}")
            if r.undrained:
                raise RuntimeError(f"{target}: {r.undrained} requests never answered")
