"""7. History: one server holding 10 million points, read back and exported; a cut herd repaired.

A lone server's database is written directly (``backend.history.fill``, not through the
herd: ten million IAMATs would take the herd hours) with the data set of
``bench.history_data``: 10,000 clients, one with a 24-hour trail of 8,640 points in the
measured day, one with a million points. Then:

- bytes on disk per point (the database and its write-ahead log; per table in ``extra``);
- restart to listening: spawn ``python -m backend server`` on that data directory until its
  port accepts, a few times (SIGTERM between, as an operator restarts);
- the 24-hour trail read through ``HISTORY <client> <since> <until> 10000`` on one connection
  and through the gateway's ``GET /api/v1/clients/{id}/history``: p99 of every read, each
  checked to hold all 8,640 points;
- the GPX export of the million-point client through the gateway: points/s, and the peak RSS
  growth of the gateway and of the server while it streams;
- partition repair (``bench.partition``): a five-server herd cut in two.

The lone server and the gateway run on the server CPU, the harness on the load CPU, except
during the export, where the gateway and the server work at once and may use either CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import traceback
from collections.abc import Awaitable, Sequence
from pathlib import Path

import aiohttp
import orjson

from backend.history import fill

from ..context import Context, Spec, interleave, summarise
from ..herd import LISTEN_TIMEOUT, Herd
from ..history_data import EXPORT, TRAIL, TRAIL_POINTS, DataSet
from ..load import time_text
from ..net import listening
from ..partition import measure_repair, repair_spec
from ..procs import Proc, rss_bytes
from ..results import Figure, Missing, Target, WorkloadResult, percentile
from ..sizes import Sizes

NAME = "history"
TITLE = "History: a server of 10 million points; trail reads, GPX export, partition repair"
SOLO = "Solo"
HERD, EMPTY = "herd", "empty data directory"  # the restart's rounds: 10M points, and none
ON = "[history]\nenabled = true\n"
HOUR_NS = 3_600 * 1_000_000_000
MB = 1_000_000  # the "100 MB"
BYTES_TARGET = Target("<= 100", "value", lambda v: v <= 100)
LISTEN_TARGET = Target("< 0.5 s", "value", lambda v: v < 0.5)
TCP_TARGET = Target("< 20 ms", "value", lambda v: v < 20.0)
REST_TARGET = Target("< 50 ms", "value", lambda v: v < 50.0)
EXPORT_TARGET = Target(">= 100,000", "value", lambda v: v >= 100_000)
RSS_TARGET = Target("< 100 MB", "value", lambda v: v < 100.0)
# Reads before the timed ones: the first read of a window pulls its pages into the cache.
WARM_READS = 3
# Seconds between two looks at the ports while a server starts: finer than the target's
# 0.5 s by a hundred.
LISTEN_POLL = 0.002
# Seconds between two RSS samples during the export.
RSS_POLL = 0.01
EXPORT_TIMEOUT = aiohttp.ClientTimeout(total=600)
READ_TIMEOUT = 60.0


def _specs(data: DataSet, sizes: Sizes) -> dict[str, Spec]:
    trail, reads = f"24-hour trail ({data.trail:,} points)", sizes.history_reads
    export = f"GPX export of {data.export:,} points through REST"
    return {
        "bytes": Spec(
            f"bytes on disk per point ({data.points:,} points, {data.clients:,} clients)",
            "bytes",
            BYTES_TARGET,
        ),
        "listen": Spec(
            f"restart to listening on {data.points:,} points "
            f"(p50 of {sizes.history_restarts} starts)",
            "s",
            LISTEN_TARGET,
        ),
        "tcp": Spec(f"{trail} through HISTORY: p99 of {reads} reads", "ms", TCP_TARGET),
        "rest": Spec(f"{trail} through REST: p99 of {reads} reads", "ms", REST_TARGET),
        "rate": Spec(f"{export}: points/s", "points/s", EXPORT_TARGET),
        "gateway": Spec(f"{export}: peak RSS growth of the gateway", "MB", RSS_TARGET),
        "server": Spec(f"{export}: peak RSS growth of the server", "MB", RSS_TARGET),
    }


async def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME, TITLE)
    result.notes.append(_load("at the start"))
    sizes = ctx.sizes
    end_ns = time.time_ns() // HOUR_NS * HOUR_NS  # the last whole hour: nothing in the future
    data = DataSet(
        sizes.history_points, sizes.history_clients, sizes.history_export, TRAIL_POINTS, end_ns
    )
    specs = _specs(data, sizes)
    solo = Herd.for_bench(
        ctx.root / "history", ctx.procs, preload=False, names=(SOLO,), links=(), extra=ON
    )
    if await _stage(result, [specs["bytes"]], _fill(result, specs, solo, data)):
        await _stage(result, [specs["listen"]], _restarts(ctx, result, specs, solo, data))
        reads = [specs[k] for k in ("tcp", "rest", "rate", "gateway", "server")]
        await _stage(result, reads, _serve(ctx, result, specs, solo, data))
    else:
        for key in ("listen", "tcp", "rest", "rate", "gateway", "server"):
            result.add(specs[key].figure("no database: it could not be written"))
    await _stage(result, [repair_spec(sizes)], measure_repair(ctx, result, ON))
    result.notes.append(_load("at the end"))
    return result


def _load(when: str) -> str:
    # The machine may be shared: its load says how far to trust the figures.
    one, five, fifteen = os.getloadavg()
    return f"load average {when}: {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


async def _stage(result: WorkloadResult, specs: Sequence[Spec], work: Awaitable[None]) -> bool:
    """Await ``work``; if it fails, each of ``specs`` it did not report is null with the
    reason (and the traceback goes to stderr), and the workload goes on. True if it worked."""
    try:
        await work
        return True
    except Exception as exc:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
        have = {f.name for f in result.figures}
        for spec in specs:
            if spec.name not in have:
                result.add(spec.figure(reason))
        return False


async def _serve(
    ctx: Context, result: WorkloadResult, specs: dict[str, Spec], solo: Herd, data: DataSet
) -> None:
    """The server on its database, then the gateway: the trail read both ways, the export."""
    await solo.start_async(SOLO)
    try:
        ctx.on_server_cpu(solo.servers[SOLO].pid)
        await _trail_tcp(ctx, result, specs["tcp"], solo, data)
        url = await solo.start_gateway_async()
        assert solo.gateway is not None
        ctx.on_server_cpu(solo.gateway.pid)
        async with aiohttp.ClientSession() as session:
            await _trail_rest(ctx, result, specs["rest"], session, url, data)
            ctx.unpin(solo.servers[SOLO].pid, solo.gateway.pid)
            await _export(result, specs, session, url, data, solo)
    finally:
        await solo.stop_async()


async def _fill(result: WorkloadResult, specs: dict[str, Spec], solo: Herd, data: DataSet) -> None:
    directory = solo.root / "data" / SOLO  # the config's [paths] data, per server
    t0 = time.perf_counter()
    written = await asyncio.to_thread(fill, directory, data.rows())
    seconds = time.perf_counter() - t0
    if written != data.points:
        raise RuntimeError(f"fill wrote {written:,} points of {data.points:,}")
    size = sum(p.stat().st_size for p in directory.glob("history.db*"))
    per_table = _per_table(directory / "history.db", written)
    result.add(specs["bytes"].figure([size / written], bytes=size, per_table=per_table))
    result.add(
        summarise("points written directly (backend.history.fill)", "points/s", [written / seconds])
    )


def _per_table(path: Path, points: int) -> dict[str, float] | str:
    """Bytes per point of each table and index (SQLite's dbstat), or why there are none."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            found = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.Error as exc:
        return f"no dbstat in this SQLite: {exc}"
    return {name: round(size / points, 1) for name, size in sorted(found, key=lambda r: -r[1])}


async def _restarts(
    ctx: Context, result: WorkloadResult, specs: dict[str, Spec], solo: Herd, data: DataSet
) -> None:
    """Spawn the server on the filled data directory until it listens, then SIGTERM it; in
    turn with the same server on an empty data directory, the baseline: what starting Python
    and the server costs with no history to open."""
    empty = Herd.for_bench(
        ctx.root / "history-empty", ctx.procs, preload=False, names=(SOLO,), links=(), extra=ON
    )
    herds = {HERD: (solo, data.points), EMPTY: (empty, 0)}

    async def one(target: str, _round: int) -> float:
        herd, points = herds[target]
        return await _start_once(herd, points)

    rounds = await interleave(list(herds), ctx.sizes.history_restarts, one)
    result.add(
        specs["listen"].figure(
            rounds[HERD], {EMPTY: rounds[EMPTY]}, max_s=round(max(rounds[HERD]), 3)
        )
    )


async def _start_once(herd: Herd, points: int) -> float:
    """Seconds from spawning ``SOLO`` of ``herd`` until its port accepts; it must then hold
    ``points`` history points, and is stopped with SIGTERM."""
    port = herd.ports[SOLO]
    t0 = time.perf_counter()
    proc = herd.spawn(SOLO)
    while not listening(port):
        if not proc.alive() or time.perf_counter() - t0 > LISTEN_TIMEOUT:
            raise RuntimeError(f"{SOLO} did not listen on its history: {proc.tail(300)}")
        await asyncio.sleep(LISTEN_POLL)
    seconds = time.perf_counter() - t0
    held = (await herd.status_async(SOLO)).get("history", {}).get("points")
    herd.processes.forget(proc)
    if held != points:
        raise RuntimeError(f"{SOLO} started on {held} points, not {points:,}")
    return seconds


def _window(data: DataSet) -> tuple[str, str]:
    since, until = data.day
    return time_text(since), time_text(until)


async def _trail_tcp(
    ctx: Context, result: WorkloadResult, spec: Spec, solo: Herd, data: DataSet
) -> None:
    since, until = _window(data)
    line = f"HISTORY {TRAIL} {since} {until} 10000\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", solo.ports[SOLO], limit=1 << 24)
    samples: list[float] = []
    try:
        for i in range(WARM_READS + ctx.sizes.history_reads):
            t0 = time.perf_counter()
            writer.write(line)
            async with asyncio.timeout(READ_TIMEOUT):
                answer = await reader.readuntil(b"END ")
                answer += await reader.readuntil(b"\n")
            if i >= WARM_READS:
                samples.append((time.perf_counter() - t0) * 1e3)
            _check_answer(answer, data.trail)
    finally:
        writer.close()
    result.add(_p99(spec, samples))


def _check_answer(answer: bytes, expected: int) -> None:
    lines = answer.count(b"\n") - 1
    end = answer.rsplit(b"\n", 2)[-2] if lines else answer.rstrip(b"\n")
    if lines != expected or end != b"END %d" % expected:
        raise RuntimeError(f"HISTORY answered {lines} lines and {end[:80]!r}, not {expected}")


def _p99(spec: Spec, samples: list[float]) -> Figure:
    try:
        value: list[float] | str = [percentile(samples, 99)]
    except Missing as exc:
        value = str(exc)
    return spec.figure(
        value,
        p50_ms=round(percentile(samples, 50), 3) if samples else None,
        max_ms=round(max(samples), 3) if samples else None,
    )


async def _trail_rest(
    ctx: Context,
    result: WorkloadResult,
    spec: Spec,
    session: aiohttp.ClientSession,
    url: str,
    data: DataSet,
) -> None:
    since, until = _window(data)
    query = {"since": since, "until": until, "limit": "10000"}
    samples: list[float] = []
    for i in range(WARM_READS + ctx.sizes.history_reads):
        t0 = time.perf_counter()
        async with session.get(f"{url}/api/v1/clients/{TRAIL}/history", params=query) as answer:
            body = await answer.read()
        if i >= WARM_READS:
            samples.append((time.perf_counter() - t0) * 1e3)
        if answer.status != 200:
            raise RuntimeError(f"the trail's REST read answered {answer.status}: {body[:200]!r}")
        if i == 0:
            got = await asyncio.to_thread(_json_points, body)
            if got != data.trail:
                raise RuntimeError(f"the trail's REST read gave {got} points, not {data.trail}")
    result.add(_p99(spec, samples))


def _json_points(body: bytes) -> int:
    return len(orjson.loads(body)["points"])


async def _export(
    result: WorkloadResult,
    specs: dict[str, Spec],
    session: aiohttp.ClientSession,
    url: str,
    data: DataSet,
    solo: Herd,
) -> None:
    """The GPX export of EXPORT's whole history, counted as it streams, with both RSSs."""
    assert solo.gateway is not None
    procs = {"gateway": solo.gateway, "server": solo.servers[SOLO]}
    first, last = data.export_window
    query = {"format": "gpx", "since": time_text(first), "until": time_text(last)}
    peaks = {who: rss_bytes(proc.pid) for who, proc in procs.items()}
    before = dict(peaks)
    sampler = asyncio.create_task(_sample_rss(procs, peaks))
    try:
        t0 = time.perf_counter()
        points, problem = await _stream_gpx(
            session, f"{url}/api/v1/clients/{EXPORT}/history", query
        )
        seconds = time.perf_counter() - t0
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    if problem is None and points != data.export:
        problem = f"the GPX held {points:,} track points, not {data.export:,}"
    rate: list[float] | str = problem if problem else [points / seconds]
    result.add(specs["rate"].figure(rate, seconds=round(seconds, 3)))
    for who in procs:
        growth: list[float] | str = problem if problem else [(peaks[who] - before[who]) / MB]
        if not problem and peaks[who] <= before[who]:
            growth = "no measurable RSS growth"
        result.add(specs[who].figure(growth, rss_before_mb=round(before[who] / MB, 1)))


async def _sample_rss(procs: dict[str, Proc], peaks: dict[str, int]) -> None:
    while True:
        for who, proc in procs.items():
            with contextlib.suppress(OSError, RuntimeError):
                peaks[who] = max(peaks[who], rss_bytes(proc.pid))
        await asyncio.sleep(RSS_POLL)


async def _stream_gpx(
    session: aiohttp.ClientSession, url: str, query: dict[str, str]
) -> tuple[int, str | None]:
    """Read the export to its end, counting ``<trkpt`` across chunk boundaries; returns the
    count and None, or 0 and what was wrong with the answer."""
    tag = b"<trkpt "
    points, tail = 0, b""
    async with session.get(url, params=query, timeout=EXPORT_TIMEOUT) as answer:
        kind = answer.headers.get("Content-Type", "")
        if answer.status != 200 or "gpx" not in kind:
            body = (await answer.read())[:200]
            return 0, f"format=gpx answered {answer.status} ({kind}): {body!r}"
        async for chunk in answer.content.iter_chunked(1 << 16):
            joined = tail + chunk
            points += joined.count(tag)
            # Keep what could be the start of a tag cut by the chunk's end, and no whole tag.
            tail = joined[-(len(tag) - 1) :]
    return points, None
