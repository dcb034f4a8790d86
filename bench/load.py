"""Load generators: asyncio protocols that send prepared lines and time the replies.

They run in the harness process, pinned to its own CPU, on uvloop when it is there. Lines are
made before a round starts, so the hot path only writes bytes, counts replies and reads the
clock; the same prepared bytes go to the herd and to the baselines.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import cast

from .procs import cpu_seconds
from .ticker import Ticker

__all__ = [
    "ClosedLoopRound",
    "LineClient",
    "Meter",
    "Sink",
    "Subscriber",
    "Tracker",
    "ask",
    "iamat_lines",
    "run_closed_loop",
    "send_all",
    "send_open_loop",
    "time_text",
]

now_ns = time.perf_counter_ns
# The shortest tick of an open-loop sender: a wake-up per line costs the harness ~60 us of
# CPU on this VM (60% of a CPU at 10,000 lines/s, measured), so faster rates send a few lines
# a tick rather than take the whole CPU the herd shares.
MIN_TICK = 0.0001


def time_text(ns: int) -> str:
    """POSIX nanoseconds as the protocol's client time, ``seconds.nanoseconds``."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def iamat_lines(
    prefix: str, clients: int, count: int, base_ns: int, location: str, attributes: bytes = b""
) -> list[bytes]:
    """``count`` IAMAT lines for ``clients`` client IDs ``<prefix><k>`` taken in turn.

    Line i carries client time ``base_ns + i`` nanoseconds, so every line is newer than the
    one before for its client (each is stored and flooded, none dropped as old) and the time
    field identifies line i. With ``base_ns`` taken from the clock just before a round, the
    herd's time difference stays under 10 s, so its AT reply is exactly 16 bytes longer than
    the IAMAT line, the length of the baselines' prefix. With ``attributes`` the lines are
    REPORTs carrying them (the herd's reply is the same AT line).
    """
    if attributes:
        return [
            f"REPORT {prefix}{i % clients} {location} {time_text(base_ns + i)} ".encode()
            + attributes
            + b"\n"
            for i in range(count)
        ]
    return [
        f"IAMAT {prefix}{i % clients} {location} {time_text(base_ns + i)}\n".encode()
        for i in range(count)
    ]


async def ask(port: int, line: bytes, timeout: float = 10.0, until: bytes = b"\n") -> bytes:
    """One request on a fresh connection; returns the reply up to and including ``until``."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        try:
            writer.write(line)
            return await reader.readuntil(until)
        finally:
            writer.close()


class Meter:
    """Counts of one round, shared by its connections; latencies only while ``recording``."""

    def __init__(self) -> None:
        self.recording = False
        self.replies = 0
        self.reply_bytes = 0
        self.latencies_ns: list[int] = []
        self.exhausted = asyncio.Event()


class LineClient(asyncio.Protocol):
    """One connection that keeps ``depth`` requests outstanding (1: request-response).

    Each reply ends with ``terminator`` (``\\n`` for one-line replies, ``\\n\\n`` for WHATSAT,
    whose JSON never holds an empty line and whose replies never start with a newline). Every
    burst of replies is answered with as many new requests, in one write. With ``cycle`` the
    lines are sent again from the first when they run out (for a baseline, whose replies do
    not depend on what it saw before); without, the connection stops and ends the window.
    """

    def __init__(
        self,
        lines: Sequence[bytes],
        depth: int,
        terminator: bytes,
        meter: Meter,
        cycle: bool = False,
    ) -> None:
        self.lines = lines
        self.cycle = cycle
        self.depth = depth
        self.terminator = terminator
        self.meter = meter
        self.next = 0
        self.sent_at: deque[int] = deque()
        self.stopping = False
        self.first_reply = b""
        self.drained = asyncio.Event()
        self.closed = asyncio.Event()
        self._last = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def start(self) -> None:
        self._send(self.depth)

    def stop(self) -> None:
        """Send nothing more; ``drained`` is set once every reply has come."""
        self.stopping = True
        if not self.sent_at:
            self.drained.set()

    def _send(self, n: int) -> None:
        if self.stopping or self._transport is None or self._transport.is_closing():
            return
        lines, i = self.lines, self.next
        end = i + n
        if end <= len(lines):
            chunk = lines[i:end]
        elif self.cycle:
            end -= len(lines)
            chunk = [*lines[i:], *lines[:end]]
        else:
            end = len(lines)
            chunk = lines[i:end]
            if not chunk:
                self.meter.exhausted.set()
                return
        self.sent_at.extend(repeat(now_ns(), len(chunk)))
        self._transport.write(b"".join(chunk))
        self.next = end

    def data_received(self, data: bytes) -> None:
        t = now_ns()
        if not self.first_reply:
            self.first_reply = data[:200]
        if self.terminator == b"\n":
            n = data.count(b"\n")
        else:
            n = (self._last + data).count(self.terminator)
            self._last = data[-1:]
        if not n:
            return
        meter = self.meter
        meter.replies += n
        meter.reply_bytes += len(data)
        sent_at = self.sent_at
        if meter.recording:
            latencies = meter.latencies_ns
            for _ in range(n):
                latencies.append(t - sent_at.popleft())
        else:
            for _ in range(n):
                sent_at.popleft()
        if self.stopping:
            if not sent_at:
                self.drained.set()
        else:
            self._send(n)

    def connection_lost(self, exc: Exception | None) -> None:
        self.drained.set()
        self.closed.set()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass
class ClosedLoopRound:
    """What one closed-loop round measured over its window."""

    replies: int
    seconds: float
    cpu: dict[str, float]  # CPU seconds used in the window, by process name
    generator_cpu: float  # CPU seconds of the harness itself in the window
    latencies_ns: list[int]
    reply_bytes: int
    first_reply: bytes
    undrained: int = 0  # requests still unanswered when the round was abandoned
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.replies / self.seconds if self.seconds > 0 else 0.0


async def run_closed_loop(
    port: int,
    lines: Sequence[Sequence[bytes]],
    depth: int,
    warmup: float,
    duration: float,
    pids: Mapping[str, int],
    terminator: bytes = b"\n",
    drain_timeout: float = 10.0,
    cycle: bool = False,
) -> ClosedLoopRound:
    """One round: a connection per entry of ``lines``, each keeping ``depth`` requests
    outstanding; measured for ``duration`` seconds after ``warmup``, or until a connection runs
    out of lines (never, with ``cycle``). CPU time of each process in ``pids`` is read at
    both ends of the window."""
    loop = asyncio.get_running_loop()
    meter = Meter()
    clients: list[LineClient] = []
    try:
        for conn_lines in lines:
            _, client = await loop.create_connection(
                lambda conn_lines=conn_lines: LineClient(
                    conn_lines, depth, terminator, meter, cycle
                ),  # type: ignore[misc]
                "127.0.0.1",
                port,
            )
            clients.append(client)
        for client in clients:
            client.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(meter.exhausted.wait(), warmup)
        if meter.exhausted.is_set():
            raise RuntimeError("ran out of prepared lines during the warm-up: raise the cap")
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        gen0 = cpu_seconds(os.getpid())
        replies0, bytes0, t0 = meter.replies, meter.reply_bytes, time.perf_counter()
        meter.recording = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(meter.exhausted.wait(), duration)
        meter.recording = False
        t1 = time.perf_counter()
        replies, reply_bytes = meter.replies - replies0, meter.reply_bytes - bytes0
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        generator_cpu = cpu_seconds(os.getpid()) - gen0
        for client in clients:
            client.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.drained.wait() for c in clients)), drain_timeout
            )
        undrained = sum(len(c.sent_at) for c in clients)
        notes = []
        if meter.exhausted.is_set():
            notes.append(f"window cut to {t1 - t0:.2f} s: a connection ran out of lines")
        return ClosedLoopRound(
            replies=replies,
            seconds=t1 - t0,
            cpu=cpu,
            generator_cpu=generator_cpu,
            latencies_ns=meter.latencies_ns,
            reply_bytes=reply_bytes,
            first_reply=clients[0].first_reply if clients else b"",
            undrained=undrained,
            notes=notes,
        )
    finally:
        for client in clients:
            client.close()


async def send_all(
    port: int,
    lines: Sequence[bytes],
    depth: int,
    timeout: float,
    budget: float | None = None,
) -> tuple[int, float, bytes]:
    """Send the lines on one connection, ``depth`` in flight, and wait for their replies.

    With ``budget`` (seconds), sending stops when it is spent, and only the lines sent so far
    are waited for. Returns (replies, seconds, start of the first reply); raises TimeoutError
    past ``timeout``.
    """
    loop = asyncio.get_running_loop()
    meter = Meter()
    _, client = await loop.create_connection(
        lambda: LineClient(lines, depth, b"\n", meter), "127.0.0.1", port
    )
    try:
        t0 = time.perf_counter()
        async with asyncio.timeout(timeout):
            client.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(meter.exhausted.wait(), budget)
            client.stop()
            await client.drained.wait()
        return meter.replies, time.perf_counter() - t0, client.first_reply
    finally:
        client.close()


class Sink(asyncio.Protocol):
    """A connection whose replies are only counted (the sender of an open-loop workload)."""

    def __init__(self) -> None:
        self.replies = 0
        self.first_reply = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.first_reply:
            self.first_reply = data[:200]
        self.replies += data.count(b"\n")


class Tracker:
    """Arrival times of updates 0..n-1 at each subscribed server.

    Update i is the one whose client time is ``base_ns + i`` nanoseconds: its AT line (herd)
    or prefixed IAMAT line (relay) ends with that time, so the index comes from the last field
    with no lookup table.
    """

    def __init__(self, base_ns: int, n: int, servers: Sequence[str]) -> None:
        self.base_ns = base_ns
        self.n = n
        self.sent_ns = [0] * n
        self.arrived: dict[str, list[int]] = {name: [0] * n for name in servers}
        self.remaining = len(servers) * n
        self.all_arrived = asyncio.Event()
        if not self.remaining:
            self.all_arrived.set()

    def stamp(self, server: str, last_field: bytes, t: int) -> None:
        sec, _, frac = last_field.partition(b".")
        try:
            i = int(sec) * 1_000_000_000 + int(frac.ljust(9, b"0")) - self.base_ns
        except ValueError:
            return
        if 0 <= i < self.n:
            arrived = self.arrived[server]
            if not arrived[i]:
                arrived[i] = t
                self.remaining -= 1
                if not self.remaining:
                    self.all_arrived.set()

    def latencies_ns(self, server: str) -> list[int]:
        """Send-to-arrival times at ``server`` of the updates that were sent and arrived."""
        return [a - s for s, a in zip(self.sent_ns, self.arrived[server], strict=True) if s and a]

    def everywhere_ns(self) -> list[int]:
        """Send-to-arrival at the last of the servers, for updates that arrived at every one."""
        out = []
        columns = list(self.arrived.values())
        for i, s in enumerate(self.sent_ns):
            if not s:
                continue
            last = max(col[i] for col in columns)
            if all(col[i] for col in columns):
                out.append(last - s)
        return out

    def everywhere_by_index(self) -> list[int | None]:
        """For each update in send order: send-to-arrival at the last server, or None if it
        was not sent or has not arrived everywhere."""
        columns = list(self.arrived.values())
        out: list[int | None] = []
        for i, s in enumerate(self.sent_ns):
            arrivals = [col[i] for col in columns]
            out.append(max(arrivals) - s if s and all(arrivals) else None)
        return out

    def missing(self, server: str) -> int:
        return sum(
            1 for s, a in zip(self.sent_ns, self.arrived[server], strict=True) if s and not a
        )


class Subscriber(asyncio.Protocol):
    """A ``SUBSCRIBE`` connection: skips the snapshot, then stamps each line's arrival."""

    def __init__(self, server: str, tracker: Tracker) -> None:
        self.server = server
        self.tracker = tracker
        self.synced = asyncio.Event()
        self._buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(b"SUBSCRIBE\n")

    def data_received(self, data: bytes) -> None:
        t = now_ns()
        data = self._buffer + data
        end = data.rfind(b"\n") + 1
        self._buffer = data[end:]
        lines = data[:end].split(b"\n")
        lines.pop()  # the empty string after the last newline
        if not self.synced.is_set():
            for k, line in enumerate(lines):
                if line.startswith(b"SYNCED "):
                    self.synced.set()
                    lines = lines[k + 1 :]
                    break
            else:
                return
        stamp, server = self.tracker.stamp, self.server
        for line in lines:
            stamp(server, line[line.rfind(b" ") + 1 :], t)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def send_open_loop(
    sink: Sink, lines: Sequence[bytes], rate: float, sent_ns: list[int]
) -> float:
    """Write ``lines`` at ``rate`` per second on ``sink``'s connection, stamping each in
    ``sent_ns``, and return the seconds it took.

    A tick comes every ``1 / rate`` seconds (at most every ``MIN_TICK``) and writes every line
    that is due by then, so at 1,000/s each line goes alone, a millisecond after the one
    before. Between ticks the harness sleeps: its CPU stays free for the processes under
    test. An infinite rate writes everything at once (a burst).
    """
    transport = sink.transport
    assert transport is not None
    start = time.perf_counter()
    n = len(lines)
    if math.isinf(rate):
        sent_ns[:] = repeat(now_ns(), n)
        transport.write(b"".join(lines))
        return time.perf_counter() - start
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    ticker = Ticker(max(1 / rate, MIN_TICK))
    i = 0

    def tick() -> None:
        nonlocal i
        ticker.expirations()
        due = min(n, int((time.perf_counter() - start) * rate) + 1)
        if due > i:
            t = now_ns()
            transport.write(b"".join(lines[i:due]))
            sent_ns[i:due] = repeat(t, due - i)
            i = due
        if i == n and not done.done():
            done.set_result(None)

    tick()  # the first line goes at once
    loop.add_reader(ticker.fd, tick)
    try:
        await done
    finally:
        loop.remove_reader(ticker.fd)
        ticker.close()
    return time.perf_counter() - start
