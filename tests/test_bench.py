"""``python -m bench --quick`` runs every workload end to end and reports every figure.

No timing is asserted: --quick's sizes are far too small for its figures to mean anything, and
the machine is shared. What is checked is that the harness starts everything, measures
something for every figure (or says why not), prints the table, writes the JSON, and leaves no
process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import writer as writer_tool

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = ("map", "iamat", "flood", "whatsat", "gateway", "history", "convergence")


def _running_in(directory: Path) -> list[str]:
    """Command lines of the processes whose working directory is in ``directory``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == str(directory) or cwd.startswith(f"{directory}/"):
            found.append(cmdline)
    return found


def _quick(tmp_path: Path, *args: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """``python -m bench --quick ARGS``: its table and its JSON document, once it succeeded."""
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out), *args],
        # Not the repository: the harness must not depend on the working directory. Every
        # process it starts runs in tmp_path (baselines) or below it (the herd's TMPDIR).
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"
    return run.stdout, json.loads(out.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness needs /proc")
@pytest.mark.slow
@pytest.mark.timeout(260)
def test_quick_bench_reports_every_workload(tmp_path: Path) -> None:
    # The shared herd with the config's own [history] (on), as a herd runs by default.
    table, document = _quick(tmp_path, timeout=240)
    assert document["history"] == "default"
    assert document["mode"] == "quick"
    machine = document["machine"]
    for key in ("nproc", "cpu_model", "python", "uvloop", "node", "git_commit", "timestamp"):
        assert key in machine
    assert set(document["workloads"]) == set(WORKLOADS)
    for name, workload in document["workloads"].items():
        assert workload["error"] is None, f"{name}: {workload['error']}"
        assert workload["figures"], f"{name} has no figures"
        for figure in workload["figures"]:
            where = f"{name}: {figure['name']}"
            if figure["value"] is None:
                assert figure["reason"], f"{where} is null with no reason"
            else:
                assert isinstance(figure["value"], int | float), where
                assert figure["value"] > 0, where
            for baseline, value in figure["baselines"].items():
                if value is None:
                    assert baseline in figure["extra"].get("missing", {}), (where, baseline)
                else:
                    assert value > 0, (where, baseline)

    # The headline figures of the issue are there, each with its target.
    targets = [
        f for w in document["workloads"].values() for f in w["figures"] if f["target"] is not None
    ]
    assert len(targets) >= 5, [f["name"] for f in targets]

    for name in WORKLOADS:
        assert f"== {name}:" in table, f"the table does not name {name}"
    for word in ("asyncio echo", "uvloop echo", "relay chain", "bare aiohttp fan-out"):
        assert word in table
    # Everything the harness started is gone.
    assert _running_in(tmp_path) == []


# The history workload's figures (bench/workloads/history.py, bench/partition.py), each with
# the target: the start of its name, its unit and its target.
HISTORY_FIGURES = (
    ("bytes on disk per point (200,000 points, 1,000 clients)", "bytes", "<= 100"),
    ("restart to listening on 200,000 points", "s", "< 0.5 s"),
    ("24-hour trail (8,640 points) through HISTORY: p99", "ms", "< 20 ms"),
    ("24-hour trail (8,640 points) through REST: p99", "ms", "< 50 ms"),
    ("GPX export of 20,000 points through REST: points/s", "points/s", ">= 100,000"),
    ("GPX export of 20,000 points through REST: peak RSS growth of the gateway", "MB", "< 100 MB"),
    ("GPX export of 20,000 points through REST: peak RSS growth of the server", "MB", "< 100 MB"),
    ("partition repair: every server holds both halves' 4,000 points", "s", "<= 10 s"),
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness needs /proc")
@pytest.mark.slow
@pytest.mark.timeout(200)
def test_quick_history_workload_measures_every_figure(tmp_path: Path) -> None:
    """``--only history --quick``: a server on a database written directly (200,000 points),
    read back and exported, and a herd cut in two and healed; every figure measured, with
    its target and a verdict, and nothing left running."""
    table, document = _quick(tmp_path, "--only", "history", "--history", "on", timeout=180)
    assert document["history"] == "on"
    workload = document["workloads"]["history"]
    assert workload["error"] is None, workload["error"]
    figures = {f["name"]: f for f in workload["figures"]}
    for start, unit, target in HISTORY_FIGURES:
        found = [f for name, f in figures.items() if name.startswith(start)]
        assert len(found) == 1, (start, sorted(figures))
        figure = found[0]
        assert figure["value"] is not None, (start, figure["reason"])
        assert figure["value"] > 0, start
        assert (figure["unit"], figure["target"]) == (unit, target), start
        assert figure["pass"] in (True, False), start
        assert f"{figure['name'][:40]}" in table
    # A start on the big database runs in turn with one on an empty data directory.
    restart = next(f for f in figures.values() if f["name"].startswith("restart"))
    assert restart["baselines"]["empty data directory"] > 0
    # Every table of the database is accounted for in the bytes per point.
    bytes_per_point = next(f for f in figures.values() if f["unit"] == "bytes")
    per_table = bytes_per_point["extra"]["per_table"]
    assert sum(per_table.values()) <= bytes_per_point["value"] + 0.5, per_table
    assert max(per_table.values()) > 0, per_table
    assert _running_in(tmp_path) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the ticker is a timerfd")
def test_open_loop_sender_keeps_its_rate_and_sleeps_between_lines() -> None:
    """At 1,000 lines/s the flood's sender takes a second per thousand lines, delivers them in
    order, and sleeps between them. It runs on uvloop, as the harness does: uvloop rounds a
    sleep to whole milliseconds, so the 0.5 ms sleeps it used to pace with spun a CPU."""
    import asyncio
    import time

    import uvloop

    from bench.load import Sink, send_open_loop

    n = 300
    lines = [b"line %d\n" % i for i in range(n)]
    received = bytearray()

    async def main() -> tuple[float, float]:
        got_all = asyncio.Event()

        class Receiver(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                received.extend(data)
                if received.count(b"\n") == n:
                    got_all.set()

        loop = asyncio.get_running_loop()
        server = await loop.create_server(Receiver, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, sink = await loop.create_connection(Sink, "127.0.0.1", port)
        try:
            cpu = time.process_time()
            seconds = await send_open_loop(sink, lines, 1000, [0] * n)
            cpu = time.process_time() - cpu
            await asyncio.wait_for(got_all.wait(), 10)
        finally:
            assert sink.transport is not None
            sink.transport.close()
            server.close()
        return seconds, cpu

    seconds, cpu = uvloop.run(main())
    assert bytes(received) == b"".join(lines)
    assert seconds >= (n - 1) / 1000
    # A spinning sender burns as much CPU as wall time; a sleeping one a small part of it.
    assert cpu < seconds / 2, f"{cpu:.3f} s of CPU in {seconds:.3f} s: the sender spins"


def test_writer_tool_measures_every_point_written() -> None:
    """``python -m bench.writer``'s figure is of points the writer really stored (it checks
    the count), for a server's own records and for a neighbour's."""
    for peer in (False, True):
        assert 0 < writer_tool.per_point(clients=30, points=12, peer=peer) < 10_000
