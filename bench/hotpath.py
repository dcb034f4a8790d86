"""``python -m bench.hotpath``: the CPU one IAMAT costs a server's own Python, in process.

A real ``HerdServer`` (journal and traffic log on disk, two neighbours' links up) takes IAMAT
lines on 64 client connections whose sockets are no-ops: each loop iteration feeds every
connection one line (as ``data_received`` would), then runs the outbox's flush (the replies,
the two links' writes, the journal's write, the traffic log). What it measures is the path of
docs/architecture.md from ``LineTransport.data_received`` to the end of the flush, without the
system calls of the sockets or the event loop's own work: it moves with the code, not with the
kernel, and is steadier than ``herd bench --only iamat`` on a shared machine.

    python -m bench.hotpath                       # CPU µs per IAMAT: min and median of 12 runs
    python -m bench.hotpath --history on
    python -m bench.hotpath --history on --loop   # the event loop's thread only
    py-spy record -r 500 --format raw -o hot.raw -- python -m bench.hotpath
    python -m bench.hotpath --split hot.raw       # that profile's time, stage by stage
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from backend.config import load_config
from backend.protocol import PEER_LINE_LIMIT
from backend.server import HerdServer
from backend.transport import LineTransport

CONNECTIONS = 64  # as the headline figure of the iamat workload
CLIENTS = 1000  # client IDs, taken in turn: each line is newer than its client's last
WARM_ROUNDS = 200  # iterations before measuring: caches, the store's dicts, the log file
ROUND_BATCH = 250  # iterations per measured run (16,000 IAMATs)
RUNS = 12
LOCATION = "+34.068930-118.445127"
GC_YOUNG = 10_000  # as backend.cli sets it for a server

# Functions of the path, each the start of a stage; a sample goes to the innermost one.
STAGES = {
    "LineBuffer.feed": "framing",
    "parse_line": "parse",
    "make_record": "make the AT record",
    "Store.offer": "store (range digest)",
    "Journal.append": "journal",
    "Journal.flush": "journal",
    "PeerManager.flood": "flood to the links",
    "PeerLink._flush_out": "flood to the links",
    "Outbox.log": "traffic log",
    "TrafficLog.flush_soon": "traffic log",
    "ClientSession.send": "reply",
    "ClientSession.flush": "reply",
    "History.add": "history",
    "LineTransport.data_received": "session, commands, accept (the rest)",
    "Outbox.flush": "session, commands, accept (the rest)",
}


class NullSocket(asyncio.Transport):
    """A socket that takes every write and sends nothing."""

    def __init__(self, protocol: asyncio.Protocol, peername: tuple[str, int]) -> None:
        super().__init__()
        self._peername = peername
        protocol.connection_made(self)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._peername if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def _server(root: Path, history: bool) -> HerdServer:
    config = root / "herd.toml"
    servers = "".join(
        f'[servers.{name}]\nhost = "127.0.0.1"\nport = {20000 + i}\n\n'
        for i, name in enumerate(("Riley", "Jaquez", "Juzang"))
    )
    config.write_text(
        'secret = "hotpath-secret-0123456789-abcdefghijklmnop"\n'
        'links = [["Riley", "Jaquez"], ["Riley", "Juzang"]]\n\n'
        f'{servers}[paths]\nlogs = "logs"\ndata = "data"\n\n'
        f"[history]\nenabled = {'true' if history else 'false'}\n"
    )
    server = HerdServer(load_config(config), "Riley")
    server.recover()
    for link in server.peers.links.values():
        conn = LineTransport(PEER_LINE_LIMIT)
        NullSocket(conn, ("127.0.0.1", 1))
        link._conn = conn  # up, as after its handshake
    return server


async def measure(history: bool, clock: Callable[[], float] = time.process_time) -> list[float]:
    """CPU µs per IAMAT of each run, sorted."""
    with tempfile.TemporaryDirectory() as tmp:
        server = _server(Path(tmp), history)
        conns = [server.connection() for _ in range(CONNECTIONS)]
        for i, conn in enumerate(conns):
            NullSocket(conn, ("127.0.0.1", 40000 + i))
        base = time.time_ns()
        made = 0

        def lines(n: int) -> list[list[bytes]]:
            """The lines of ``n`` iterations, made before they are timed."""
            nonlocal made
            batches = []
            for _ in range(n):
                batch = []
                for _ in conns:
                    whole, part = divmod(base + made, 10**9)
                    batch.append(f"IAMAT c{made % CLIENTS} {LOCATION} {whole}.{part:09d}\n")
                    made += 1
                batches.append([line.encode() for line in batch])
            return batches

        async def iterations(batches: list[list[bytes]]) -> None:
            for batch in batches:
                for conn, line in zip(conns, batch, strict=True):
                    conn.data_received(line)
                server.outbox.flush()
                await asyncio.sleep(0)

        await iterations(lines(WARM_ROUNDS))
        per = []
        for _ in range(RUNS):
            batches = lines(ROUND_BATCH)
            start = clock()
            await iterations(batches)
            per.append((clock() - start) / (ROUND_BATCH * CONNECTIONS) * 1e6)
        await server.close()
    return sorted(per)


def split(raw: Path) -> dict[str, float]:
    """A py-spy raw profile of this tool, as the share of each stage (innermost wins)."""
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    for row in raw.read_text().splitlines():
        stack, _, count = row.rpartition(" ")
        frames = [re.sub(r" \(.*\)$", "", f) for f in stack.split(";")]
        if "iterations" not in " ".join(frames):
            continue  # start-up, warm-up's imports, shutdown
        n = int(count)
        total += n
        stage = next((STAGES[f] for f in reversed(frames) if f in STAGES), "loop and harness")
        shares[stage] += n
    return {stage: n / total for stage, n in shares.most_common()} if total else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--history", choices=("on", "off"), default="off")
    parser.add_argument("--split", type=Path, help="a py-spy raw profile of this tool to split")
    parser.add_argument(
        "--loop", action="store_true", help="the event loop thread's CPU only (no writer)"
    )
    args = parser.parse_args(argv)
    if args.split is not None:
        for stage, share in split(args.split).items():
            print(f"{share * 100:5.1f}%  {stage}")
        return 0
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        clock = time.thread_time if args.loop else time.process_time
        per = runner.run(measure(args.history == "on", clock))
    whose = "the loop thread's CPU" if args.loop else "CPU"
    print(
        f"history {args.history}: {whose} µs per IAMAT, min {per[0]:.2f}, "
        f"median {per[len(per) // 2]:.2f} ({RUNS} runs of {ROUND_BATCH * CONNECTIONS:,})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
