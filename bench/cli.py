"""``python -m bench`` (and ``herd bench``): start a herd and its baselines on loopback, run the
workloads, print a table and write the same figures as JSON."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from .context import Context
from .herd import Herd
from .procs import Procs, cpus_available
from .report import machine_info, render_table, write_json
from .results import Figure, WorkloadResult
from .sizes import DEFAULT, QUICK

__all__ = ["build_parser", "main"]

# Bumped when the JSON's layout changes.
SCHEMA = 1


def build_parser() -> argparse.ArgumentParser:
    from .workloads import WORKLOADS

    parser = argparse.ArgumentParser(
        prog="herd bench",
        description=(
            "Benchmark the herd on loopback against bare baselines measured in the same run, "
            "interleaved: every headline figure is a ratio that holds on a noisy machine."
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (seconds, for CI): no figure is reliable"
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        type=Path,
        default=Path("bench-results.json"),
        help="where to write the figures (default: bench-results.json)",
    )
    parser.add_argument(
        "--only",
        metavar="NAME,...",
        help=f"run only these workloads, of: {', '.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary herd directory (config, logs)"
    )
    parser.add_argument(
        "--history",
        choices=("on", "off"),
        help=(
            "[history] enabled for the herd the workloads share (default: the config's "
            "default); the history workload runs servers of its own with history on"
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .workloads import WORKLOADS

    parser = build_parser()
    args = parser.parse_args(argv)
    names = list(WORKLOADS)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = sorted(wanted - set(WORKLOADS))
        if unknown or not wanted:
            parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
        # Always in the canonical order: convergence, which fills the herd, comes last.
        names = [n for n in WORKLOADS if n in wanted]
    if not sys.platform.startswith("linux"):
        print("herd bench needs Linux (/proc, CPU affinity)", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="herd-bench-"))
    try:
        with Procs(root) as procs:
            return _run(args, names, root, procs)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C (asyncio.Runner cancels the run) or SIGTERM (cancels it too, see _run_loop).
        print("\ninterrupted: every process started was stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"herd directory kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def _run(args: argparse.Namespace, names: list[str], root: Path, procs: Procs) -> int:
    from .workloads import WORKLOADS

    sizes = QUICK if args.quick else DEFAULT
    cpus = cpus_available()
    # The server under test on the first CPU, the load generator (this process) on the second.
    server_cpus, load_cpus = ({cpus[0]}, {cpus[1]}) if len(cpus) >= 2 else (None, None)
    started = time.monotonic()
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "mode": "quick" if args.quick else "default",
        "machine": machine_info(),
        "sizes": vars(sizes),
        "places_preload": not args.quick,
        "history": args.history or "default",
        "cpu_layout": {
            "server": sorted(server_cpus) if server_cpus else None,
            "load_generator": sorted(load_cpus) if load_cpus else None,
        },
        "workloads": {},
    }
    print(
        f"herd bench ({document['mode']}): {', '.join(names)}; "
        f"server CPU {document['cpu_layout']['server']}, "
        f"load CPU {document['cpu_layout']['load_generator']}",
        file=sys.stderr,
    )
    # --quick measures nothing that matters: it spares five servers loading places at once.
    extra = ""
    if args.history is not None:
        extra = f"[history]\nenabled = {'true' if args.history == 'on' else 'false'}\n"
    herd = Herd.for_bench(root, procs, preload=not args.quick, extra=extra)
    ctx = Context(sizes, root, procs, herd, server_cpus, load_cpus, set(cpus))
    ctx.pin_harness()
    results = _run_loop(_workloads(ctx, names, WORKLOADS))
    document["elapsed_s"] = round(time.monotonic() - started, 1)
    document["workloads"] = {r.name: r.to_json() for r in results}
    print(render_table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, document)
    print(f"\nfigures written to {args.json} ({document['elapsed_s']} s)")
    return 1 if any(r.error for r in results) else 0


def _run_loop(coro: Coroutine[Any, Any, list[WorkloadResult]]) -> list[WorkloadResult]:
    """Run the workloads on uvloop if it is there. Ctrl-C and SIGTERM cancel them: the
    cancellation unwinds every workload, then the caller stops every process."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop

    async def cancellable() -> list[WorkloadResult]:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        # Not a Python-level handler that raises: raised inside a protocol callback, the
        # exception would be taken for that connection's own error and the run would go on.
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(cancellable())


async def _workloads(
    ctx: Context, names: list[str], workloads: dict[str, tuple[str, Any]]
) -> list[WorkloadResult]:
    results: list[WorkloadResult] = []
    warm: asyncio.Task[None] | None = None
    try:
        t = time.monotonic()
        ctx.herd.start(*ctx.herd.names)
        await ctx.herd.wait_ready()
        print(f"herd ready in {time.monotonic() - t:.1f} s", file=sys.stderr)
        if not ctx.herd.preload and "whatsat" in names:
            # Places load on first use: start now, not when the WHATSAT workload comes.
            warm = asyncio.create_task(ctx.herd.warm_places("Riley"))
    except Exception as exc:
        reason = f"the herd did not start: {exc}"
        for name in names:
            title = workloads[name][0]
            results.append(_failed(name, title, reason))
        return results
    try:
        for name in names:
            title, run = workloads[name]
            print(f"running {name}: {title}", file=sys.stderr)
            t = time.monotonic()
            try:
                unsettled = await ctx.herd.settle()
            except Exception as exc:
                unsettled = f"{type(exc).__name__}: {exc}"
            settled_in = time.monotonic() - t
            if settled_in > 1:
                print(f"  (the herd took {settled_in:.1f} s to settle)", file=sys.stderr)
            try:
                result = await run(ctx)
            except Exception as exc:
                traceback.print_exc()
                result = _failed(name, title, f"{type(exc).__name__}: {exc}")
            if unsettled:
                result.notes.append(f"started before the herd settled: {unsettled}")
            elif settled_in > 1:
                # What the last workload left behind (queues, repairs) took this long to clear.
                result.notes.append(
                    f"started once the herd had settled, {settled_in:.0f} s after the previous "
                    "workload"
                )
            result.seconds = time.monotonic() - t
            print(f"  {name} done in {result.seconds:.1f} s", file=sys.stderr)
            results.append(result)
    finally:
        if warm is not None:
            warm.cancel()
    return results


def _failed(name: str, title: str, reason: str) -> WorkloadResult:
    result = WorkloadResult(name, title, error=reason)
    result.add(Figure(name="(workload)", unit="", value=None, reason=reason))
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
