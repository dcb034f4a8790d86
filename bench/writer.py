"""``python -m bench.writer``: the CPU history's writer thread spends per point, in process.

A real ``Writer`` on a fresh database takes chunks of a server's own records (as
``make_record`` makes them for IAMATs) or of records read from a neighbour's AT lines (their
nanoseconds not carried), ``--clients`` clients with ``--points`` points each, three times
over, and reports the thread CPU of ``Writer.apply`` per point. It moves with the writer's
code (sorting, hashing, packing, SQLite), not with the event loop or the machine's other load.

    python -m bench.writer                           # 100-point chunks, own records
    python -m bench.writer --points 12 --clients 2000 --peer
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from backend.history.schema import connect, create
from backend.history.writer import Chunk, Writer
from backend.protocol import At, IAmAt, Record, make_record, parse_line

ROUNDS = 3
LOCATION = "+34.068930-118.445127"


def record(client: str, ns: int, peer: bool) -> Record:
    seconds, fraction = divmod(ns, 1_000_000_000)
    when = f"{seconds}.{fraction:09d}"
    if not peer:
        return make_record("Riley", ns + 12_345_678, IAmAt(client, LOCATION, when))
    command = parse_line(f"AT Riley +0.012345678 {client} {LOCATION} {when}".encode())
    assert isinstance(command, At)
    return command.record


def per_point(clients: int, points: int, peer: bool) -> float:
    """Thread CPU µs per point of ``Writer.apply`` over ROUNDS batches of chunks."""
    base = time.time_ns() - 3_600_000_000_000
    with tempfile.TemporaryDirectory() as directory:
        conn = connect(Path(directory) / "history.db", durable=False)
        create(conn)
        writer = Writer(conn, 1_000_000, lambda *_: None)
        cpu = 0.0
        for r in range(ROUNDS):
            chunks = [
                Chunk(
                    f"c{c}.r{r}",
                    [
                        record(f"c{c}.r{r}", base + (r * points + i) * 1_000_003, peer)
                        for i in range(points)
                    ],
                )
                for c in range(clients)
            ]
            start = time.thread_time()
            for i in range(0, len(chunks), 2_000):
                writer.apply(list(chunks[i : i + 2_000]))
            cpu += time.thread_time() - start
        stored = writer.stored
        conn.close()
    if stored != ROUNDS * clients * points:  # the figure would be of work not done
        raise RuntimeError(f"the writer stored {stored} of {ROUNDS * clients * points} points")
    return cpu / (ROUNDS * clients * points) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.writer", description=__doc__)
    parser.add_argument("--clients", type=int, default=1024)
    parser.add_argument("--points", type=int, default=100, help="points per chunk")
    parser.add_argument("--peer", action="store_true", help="records from AT lines")
    args = parser.parse_args()
    kind = "a neighbour's AT lines" if args.peer else "a server's own records"
    cost = per_point(args.clients, args.points, args.peer)
    print(f"{args.clients} chunks of {args.points} points, {kind}: {cost:.2f} µs per point")


if __name__ == "__main__":
    main()
