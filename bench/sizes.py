"""How big each workload is: the default run (about three minutes) and ``--quick`` (seconds).

Every workload alternates baseline and herd rounds and reports the median round, so a round
only has to be long enough for its own figure to be steady: most of a second for a rate read
from ``/proc`` CPU ticks (10 ms each), and a thousand samples or more for a p99 (the 99th
percentile of 1,000 samples rests on the 10 slowest).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT", "QUICK", "Sizes"]


@dataclass(frozen=True)
class Sizes:
    # -- all workloads
    rounds: int  # rounds of each target, interleaved; the median is reported
    # Rounds of a figure a target is a ratio for (IAMAT at 64 connections, flood two-hop p50):
    # paired with the baseline's, back to back, so the median ratio outlasts a slow spell.
    target_rounds: int
    warmup: float  # seconds of load before a round's window opens (connections, caches)
    window: float  # seconds a round is measured

    # -- 1. IAMAT throughput at one server
    connections: int  # the "64 connections"
    headline_window: float  # seconds each round of the 64-connection figure is measured
    pipeline_depth: int  # requests in flight on the pipelined connection
    clients_per_connection: int  # distinct client IDs per connection (bounds the store)
    max_rate: int  # IAMAT replies/s the herd will not reach: sizes the lines prepared per round

    # -- 2. Flood latency
    light_rate: int  # the "1,000 updates/s"
    flood_seconds: float  # seconds of updates per round
    ladder_factor: float  # each step of the saturation ladder sends this much faster
    ladder_seconds: float  # seconds of updates per ladder step
    ladder_steps: int  # steps at most (the top one is light_rate * ladder_factor**steps)

    # -- 3. WHATSAT
    whatsat_clients: int  # clients placed at big cities, asked about in turn
    whatsat_connections: int  # concurrent connections for the throughput figure

    # -- 4. Gateway
    ws_clients: int  # the "100 connected WebSocket clients"
    post_interval: float  # seconds between POSTs when timing POST-to-WebSocket
    posts_per_round: int  # POSTs timed per round
    post_concurrency: int  # concurrent POSTs for the throughput figure

    # -- 6. The map in Chromium
    map_clients: int  # the "10,000 clients"
    map_rate: int  # reports/s while the map is open (the 1,000: each client every 10 s)
    map_live_seconds: float  # seconds of those reports

    # -- 5. Convergence
    convergence_clients: int  # clients loaded into the herd (the 100,000)
    convergence_load_seconds: float  # at most this long loading them; fewer are reported
    memory_clients: int  # clients loaded into a fresh lone server to measure memory
    catch_up_limit: float  # seconds a restarted server gets to catch up before it is "never"

    # -- 7. History
    history_points: int  # points in one server's database, written directly (10 million)
    history_clients: int  # over this many clients (the 10,000)
    history_export: int  # points of the client exported as GPX (one million)
    history_reads: int  # reads of the 24-hour trail through each path (p99 of these)
    history_restarts: int  # starts of a server on that database (p50 of these)
    partition_points: int  # new points each half of a cut herd takes (100,000)


DEFAULT = Sizes(
    rounds=3,
    # Eleven: single paired IAMAT ratios spread from 0.40 to 0.69 within one run; the median
    # of eleven moves about 0.38x as far as one round does (0.47x for seven), and a slow
    # spell of the machine in two or three rounds moves it little. Only the herd and the
    # baseline of the ratio take them; other baselines take ``rounds``.
    target_rounds=11,
    warmup=0.15,
    # 70 clock ticks of a busy server: its CPU time to within 1.5%.
    window=0.7,
    connections=64,
    headline_window=1.0,
    # Deep enough to keep the server busy between the client's reads, shallow enough that
    # the latency figures stay meaningful (a reply waits behind at most 128 others).
    pipeline_depth=128,
    clients_per_connection=16,
    # Over twice the herd's best today (~40,000/s pipelined): room for its speed-ups.
    max_rate=100_000,
    light_rate=1_000,
    flood_seconds=1.0,
    # Steps of x1.5 up to x1.5**9 (38,000/s): "near saturation" is within 1.5x of the rate
    # where the herd falls behind; half a second per step is enough for a queue to show.
    ladder_factor=1.5,
    ladder_seconds=0.5,
    ladder_steps=9,
    whatsat_clients=50,
    whatsat_connections=16,
    ws_clients=100,
    # 100 POSTs/s: a light load, so the figure is the path's latency and not a queue's.
    post_interval=0.01,
    posts_per_round=100,
    post_concurrency=16,
    convergence_clients=100_000,
    # Every record costs each of the five servers CPU: at the ~1 ms of CPU per record across
    # the herd measured on this 2-core machine, 100,000 take 50 s of both CPUs. Past this
    # budget the figures are for the clients loaded, and say so.
    convergence_load_seconds=40.0,
    # A fifth of 100,000 (a lone server takes them in a few seconds); memory is linear in it.
    memory_clients=20_000,
    catch_up_limit=30.0,
    history_points=10_000_000,
    history_clients=10_000,
    history_export=1_000_000,
    # A p99 of 100 reads is the second slowest: 50 (the least) would be the slowest.
    history_reads=100,
    history_restarts=5,
    partition_points=100_000,
    map_clients=10_000,
    map_rate=1_000,
    map_live_seconds=10.0,
)

# Every workload end to end with tiny sizes: for CI, where no figure is asserted.
QUICK = Sizes(
    rounds=1,
    target_rounds=1,
    warmup=0.05,
    window=0.2,
    connections=64,
    headline_window=0.2,
    pipeline_depth=32,
    clients_per_connection=4,
    max_rate=100_000,
    light_rate=1_000,
    flood_seconds=0.2,
    ladder_factor=1.5,
    ladder_seconds=0.1,
    ladder_steps=3,
    whatsat_clients=5,
    whatsat_connections=4,
    ws_clients=100,
    post_interval=0.01,
    posts_per_round=20,
    post_concurrency=4,
    convergence_clients=2_000,
    convergence_load_seconds=5.0,
    memory_clients=2_000,
    catch_up_limit=5.0,
    history_points=200_000,
    history_clients=1_000,
    history_export=20_000,
    history_reads=10,
    history_restarts=2,
    partition_points=2_000,
    map_clients=500,
    map_rate=500,
    map_live_seconds=1.0,
)
