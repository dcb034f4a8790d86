"""``python -m bench.repair``: only the history workload's partition repair (``bench.partition``),
as often as asked, with its timeline: when each server's count changed after the heal, what
the servers logged about links and anti-entropy, and (``--profile DIR``) what each server
spent its CPU on during the repair, sampled by py-spy.

    python -m bench.repair                      # 100,000 points a half, twice
    python -m bench.repair --points 20000 --runs 1 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .context import Context
from .herd import Herd
from .partition import Timeline, measure_repair
from .procs import Procs, cpu_seconds, cpus_available
from .results import WorkloadResult
from .sizes import DEFAULT

__all__ = ["main"]

ON = "[history]\nenabled = true\n"
# The server log lines that tell the repair's story: links coming and going, what the digest
# exchanges sent.
STORY = re.compile(r"link to|sync with|replicat", re.IGNORECASE)
# Samples per second py-spy takes of each server (its default).
PROFILE_RATE = 100
# Frames shown of each server's profile.
TOP = 12
# The harness's own line in the CPU figures.
HARNESS = "harness"
# Seconds between two looks (py-spy dump) at what each server's event loop is doing.
DUMP_S = 0.5
# Seconds a look may take (a paused process answers slowly).
DUMP_WAIT = 5.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.repair", description=__doc__)
    parser.add_argument("--points", type=int, default=DEFAULT.partition_points)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--profile", type=Path, help="py-spy every server during the repair")
    parser.add_argument(
        "--dumps", action="store_true", help="what each event loop does, every DUMP_S seconds"
    )
    parser.add_argument("--json", type=Path, help="write the figures and timelines here")
    parser.add_argument("--keep", action="store_true", help="keep the herd's directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="herd-repair-"))
    try:
        with Procs(root) as procs:
            runs = asyncio.run(_runs(args, root, procs))
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1))
    values = [r["value"] for r in runs]
    cpu = [_herd_cpu(r["cpu_s"]) for r in runs]  # type: ignore[arg-type]
    print(f"repair seconds: {values}; herd CPU seconds: {cpu}; load average {os.getloadavg()}")
    return 0 if all(v is not None for v in values) else 1


async def _runs(args: argparse.Namespace, root: Path, procs: Procs) -> list[dict[str, object]]:
    sizes = dataclasses.replace(DEFAULT, partition_points=args.points)
    cpus = cpus_available()
    server, load = ({cpus[0]}, {cpus[1]}) if len(cpus) >= 2 else (None, None)
    runs = []
    for run in range(args.runs):
        where = root / f"run{run}"
        herd = Herd.for_bench(where / "shared", procs, preload=False)  # never started
        ctx = Context(sizes, where, procs, herd, server, load, set(cpus))
        ctx.pin_harness()
        watcher = Watcher(args.profile, run, args.dumps)
        timeline = Timeline(on_heal=watcher.healed, on_done=watcher.done)
        result = WorkloadResult("repair", "partition repair")
        print(f"run {run}: load average {os.getloadavg()}", file=sys.stderr)
        try:
            await measure_repair(ctx, result, ON, timeline)
        finally:
            watcher.done()
        figure = result.figures[-1]
        report: dict[str, object] = {
            "value": figure.value,
            "figure": {"value": figure.value, "reason": figure.reason, **figure.extra},
            "load": os.getloadavg(),
            "timeline": timeline.samples,
            "looks": watcher.looks,
            "cpu_s": watcher.cpu,
        }
        runs.append(report)
        _print(run, report, timeline, _story(where / "partition" / "logs", timeline.healed_at))
        total = _herd_cpu(watcher.cpu)
        print(f"CPU seconds from heal to done: {watcher.cpu} (the servers: {total:.1f})")
        for t, what in watcher.looks:
            print(f"{t:7.3f} " + " | ".join(f"{k}: {v}" for k, v in what.items()))
        if args.profile is not None:
            for name in watcher.spies:
                print(_summary(args.profile / f"run{run}-{name}.txt", name))
    return runs


class Watcher:
    """What watches the servers from the heal until every one holds every point: py-spy
    recording each (into ``profile``), and with ``dumps`` a look at each event loop every
    DUMP_S."""

    def __init__(self, profile: Path | None, run: int, dumps: bool) -> None:
        self.profile = profile
        self.run = run
        self.dumps = dumps
        self.spies: dict[str, subprocess.Popen[bytes]] = {}
        self.looks: list[tuple[float, dict[str, str]]] = []
        # CPU seconds each server spent from heal to done, and the harness (this process: its
        # relays carry every link's bytes, and it asks every server's STATUS every POLL).
        self.cpu: dict[str, float] = {}
        self._pids: dict[str, int] = {}
        self._lookers: list[asyncio.Task[None]] = []

    def healed(self, pids: dict[str, int]) -> None:
        self._pids = {**pids, HARNESS: os.getpid()}
        self.cpu = {name: -cpu_seconds(pid) for name, pid in self._pids.items()}
        self.spies.update(_spy(self.profile, self.run, pids))
        if self.dumps:
            self._lookers.append(asyncio.create_task(_look(pids, self.looks)))

    def done(self) -> None:
        for name, pid in self._pids.items():
            self.cpu[name] = round(self.cpu[name] + cpu_seconds(pid), 2)
        self._pids = {}
        _stop(self.spies)
        for task in self._lookers:
            task.cancel()


def _spy(
    directory: Path | None, run: int, pids: dict[str, int]
) -> dict[str, subprocess.Popen[bytes]]:
    if directory is None:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    return {
        name: subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(PROFILE_RATE),
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(directory / f"run{run}-{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    }


async def _look(pids: dict[str, int], looks: list[tuple[float, dict[str, str]]]) -> None:
    """Every DUMP_S, each server's main thread's innermost frames in the backend."""
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    t0 = asyncio.get_running_loop().time()
    while True:
        found = {}
        for name, pid in pids.items():
            proc = await asyncio.create_subprocess_exec(
                py_spy,
                "dump",
                "--pid",
                str(pid),
                "--nonblocking",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                async with asyncio.timeout(DUMP_WAIT):
                    out, _ = await proc.communicate()
            except TimeoutError:
                proc.kill()
                out = b""
            found[name] = _main_frames(out.decode(errors="replace"))
        looks.append((round(asyncio.get_running_loop().time() - t0, 2), found))
        await asyncio.sleep(DUMP_S)


def _main_frames(dump: str) -> str:
    """The main thread's (the first listed) three innermost frames, shortened."""
    threads = dump.split("\nThread ")
    if len(threads) < 2:
        return "?"
    frames = [f.strip().split(" (")[0] for f in threads[1].splitlines()[1:] if f.strip()]
    return "<".join(frames[:3]) or "?"


def _stop(spies: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGINT makes py-spy write what it sampled."""
    for spy in spies.values():
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
    for spy in spies.values():
        spy.wait(30)


def _story(logs: Path, healed_at: float) -> list[str]:
    """The servers' log lines about links and anti-entropy from the heal on, with the
    seconds since the heal."""
    found = []
    for log in sorted(logs.glob("*.log*")):
        for line in log.read_text(errors="replace").splitlines():
            if not STORY.search(line) or " << " in line or " >> " in line:
                continue
            try:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
            except ValueError:
                continue
            if stamp >= healed_at - 0.5:
                found.append((stamp - healed_at, f"{log.name.split('.')[0]:>9} {line[24:200]}"))
    return [f"{t:7.3f} {text}" for t, text in sorted(found)]


def _herd_cpu(cpu: dict[str, float]) -> float:
    return round(sum(v for name, v in cpu.items() if name != HARNESS), 1)


def _print(run: int, report: dict[str, object], timeline: Timeline, story: list[str]) -> None:
    print(f"\n== run {run}: {report['figure']}")
    print("seconds since the heal, points per server, cut links:")
    for t, counts, links in timeline.samples:
        print(f"{t:7.3f} {counts} {links}")
    print("server logs since the heal:")
    print("\n".join(story))


def _summary(path: Path, name: str) -> str:
    """Where ``name`` spent its samples: the functions most often on the stack (inclusive),
    and at the top of it (self)."""
    if not path.exists():
        return f"{name}: no profile"
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        leaf[frames[-1]] += count
    lines = [f"-- {name}: {total} samples ({total / PROFILE_RATE:.1f} s busy)"]
    for title, counter in (("inclusive", inclusive), ("self", leaf)):
        lines.append(f"   {title}:")
        lines += [f"   {100 * c / max(total, 1):5.1f}% {f}" for f, c in counter.most_common(TOP)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
