"""A 200,000-point history exported through a gateway process: GPX and GeoJSON stream every
point once (three points share each time, so every page of the herd's HISTORY ends inside a
time) while the gateway's resident memory grows by far less than the document; the trails
route stops at its point limit; and a herd that dies mid-stream cuts the answer short."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from helpers import Herd, poll

from gateway import rules

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIENT = "long-haul"
# Three points at each time, 66,667 times: 200,001 points.
SAME_TIME = 3
TIMES = 66_667
POINTS = SAME_TIME * TIMES
START = int(time.time()) - 30 * 86_400  # a month ago, one time a second
# What the gateway's RSS may grow by while it streams: 45-50 MiB of document go through it;
# holding the points would take 130 MiB as parsed records (measured: 690 bytes each) and
# 240 MiB more as shown points. Two pages of records, as it holds, are about 14 MiB.
MAX_GROWTH = 48 * 1024 * 1024
ATTRIBUTES = b'{"altitude":512.5,"speed":3.25,"battery":80}'


def reports() -> list[bytes]:
    lines = []
    for t in range(TIMES):
        lat = f"{45 + t * 1e-5:.5f}"
        for k in range(SAME_TIME):
            where = f"+{lat}+{7 + k * 1e-4:08.4f}"
            lines.append(
                b"REPORT %s %s %d %s\n" % (CLIENT.encode(), where.encode(), START + t, ATTRIBUTES)
            )
    return lines


async def pipeline(port: int, lines: list[bytes]) -> None:
    """Every line on one connection in big writes, each reply read (an AT line)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)

    async def send() -> None:
        for i in range(0, len(lines), 5000):
            writer.write(b"".join(lines[i : i + 5000]))
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        for _ in lines:
            reply = await reader.readline()
            assert reply.startswith(b"AT "), reply
        await sender
    finally:
        writer.close()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (proc(5): fields 14 and 15, in ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM to the present RSS (proc(5)).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def count(url: str, session: aiohttp.ClientSession, pattern: bytes) -> tuple[int, int, bytes]:
    """Occurrences of ``pattern`` in the body at ``url``, its size and its last bytes."""
    found = size = 0
    carry = last = b""
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        async for chunk in response.content.iter_chunked(1 << 20):
            # The bytes carried over are shorter than the pattern: an occurrence found in
            # them and the chunk ends in the chunk, so it was not counted before.
            text = carry + chunk
            found += text.count(pattern)
            carry = text[-(len(pattern) - 1) :]
            last = (last + chunk)[-64:]
            size += len(chunk)
    return found, size, last


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Herd, str]]:
    """One server holding the points, and a gateway process in front of it."""
    root = tmp_path_factory.mktemp("stream")
    with Herd(root, names=("Riley",), links=(), extra="[history]\nenabled = true\n") as herd:
        started = time.monotonic()
        asyncio.run(pipeline(herd.ports["Riley"], reports()))
        # Acknowledged once journaled; the measures below are of reading, so they start once
        # the history's writer has caught up.
        poll(lambda: herd.status("Riley")["history"]["points"] == POINTS, 300, "the writer")
        print(f"\n{POINTS} points stored in {time.monotonic() - started:.1f} s")
        herd.start_gateway()
        yield herd, f"http://127.0.0.1:{herd.gateway_port}"


async def test_a_200000_point_export_streams_with_bounded_memory(
    loaded: tuple[Herd, str],
) -> None:
    herd, url = loaded
    assert herd.gateway is not None
    pid, server = herd.gateway.popen.pid, herd.servers["Riley"].popen.pid
    export = f"{url}/api/v1/clients/{CLIENT}/history?format="
    async with aiohttp.ClientSession() as session:
        # Every module the export uses is loaded before the measure starts.
        await count(f"{export}gpx&until={START}", session, b"<trkpt ")
        for kind, pattern, end in (
            ("gpx", b"<trkpt ", b"</gpx>\n"),
            ("geojson", b'"type":"Point"', b'"skipped":0}\n'),
        ):
            reset_peak(pid)
            before = memory(pid)["VmRSS"]
            cpu = cpu_seconds(pid), cpu_seconds(server)
            started = time.monotonic()
            found, size, tail = await count(export + kind, session, pattern)
            elapsed = time.monotonic() - started
            growth = memory(pid)["VmHWM"] - before
            gateway_cpu, server_cpu = cpu_seconds(pid) - cpu[0], cpu_seconds(server) - cpu[1]
            print(
                f"{kind}: {POINTS} points, {size / 2**20:.0f} MiB in {elapsed:.2f} s "
                f"({POINTS / elapsed:,.0f} points/s); gateway RSS grew {growth / 2**20:.1f} MiB; "
                f"CPU: gateway {gateway_cpu:.1f} s ({POINTS / gateway_cpu:,.0f} points per "
                f"second of it), server {server_cpu:.1f} s"
            )
            assert found == POINTS  # each point once, none lost at the pages' ends
            assert tail.endswith(end)
            assert size > 40 * 2**20
            assert growth < MAX_GROWTH, f"{kind}: the gateway grew by {growth} bytes"


async def test_the_trails_stop_at_their_point_limit(loaded: tuple[Herd, str]) -> None:
    _, url = loaded
    async with aiohttp.ClientSession() as session:
        trails = f"{url}/api/v1/trails?since={START}&until={START + TIMES}"
        async with session.get(trails) as response:
            body = await response.json()
    assert body["truncated"] is True
    [trail] = body["trails"]
    assert len(trail["points"]) == rules.MAX_TRAIL_POINTS
    assert trail["points"][0][2] == START


async def test_a_herd_that_dies_mid_stream_cuts_the_answer_short(
    loaded: tuple[Herd, str],
) -> None:
    herd, url = loaded
    export = f"{url}/api/v1/clients/{CLIENT}/history?format=gpx"
    async with aiohttp.ClientSession() as session, session.get(export) as response:
        assert response.status == 200
        body = response.content
        assert (await body.readany()).startswith(b"<?xml")
        await herd.kill_async("Riley")
        with pytest.raises(aiohttp.ClientPayloadError):
            while await body.readany():
                pass
