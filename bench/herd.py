"""One launcher for a herd of real server processes, used by the benchmark and by the tests: a
config on ephemeral loopback ports, its servers (and its gateway) started as ``python -m backend
server NAME --config FILE --quiet``, waited for until they listen and link, killed, stopped.

``Herd(root)`` writes the tests' config (places loaded on first use, links that come back
within half a second); ``Herd.for_bench`` the built-in herd's in every respect but the ports
and the directories (every line logged, places embedded, ``cities1000`` preloaded, default
limits and timings). Each waiting method has a blocking form, for plain tests and the
benchmark's set-up, and an ``_async`` one that never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from backend.config import DEFAULT_LINKS, DEFAULT_PORTS
from backend.protocol import IAmAt, Status, WhatsAt, WhereIs, parse_status

from .load import ask as ask_line
from .load import time_text
from .net import ask, converse, free_ports, listening, listening_async, poll, poll_async
from .procs import Proc, Procs, cpu_seconds

# The checkout this launcher belongs to: its servers and gateway run from another directory,
# where a relative PYTHONPATH (or none, with an editable install of another checkout) would
# import some other copy of the code than the one under test.
CHECKOUT = Path(__file__).resolve().parent.parent


def code_path() -> str:
    """PYTHONPATH for what the launcher starts: this checkout first, then the caller's entries
    made absolute."""
    entries = [str(CHECKOUT)]
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and str(Path(entry).resolve()) not in entries:
            entries.append(str(Path(entry).resolve()))
    return os.pathsep.join(entries)


__all__ = ["NAMES", "SECRET", "Herd", "HerdError"]

# A herd secret as strong as the config demands (32+ printable characters).
SECRET = "herd-test-secret-0123456789-abcdefghij"
NAMES: tuple[str, ...] = tuple(DEFAULT_PORTS)
# The tests' places: embedded, the smaller gazetteer, loaded on the first WHATSAT (most tests
# ask none). The tests' links: reconnect within 0.5 s and a heartbeat each second, so that a
# restarted server is linked again within a second.
TEST_PLACES = 'provider = "embedded"\npreload = false\ngazetteer = "cities15000"'
TEST_PEERS = "reconnect_max = 0.5\nheartbeat = 1.0"
# Seconds a server has to listen (the protocol asks for 0.5 s; two busy cores are slower).
LISTEN_TIMEOUT = 20.0
# Seconds for the places data to load (cities1000 takes a few seconds per server, and five
# servers load it at once on two cores).
PLACES_TIMEOUT = 120.0
# Seconds for the herd to finish flooding what a workload left queued before the next starts
# (Riley answers faster than its fellows can take records in, so their queues fill; with
# history on, the points dropped from those queues come back by anti-entropy, which took
# 70-120 s after the IAMAT workload's 750,000 points), and the pause between two looks.
SETTLE_TIMEOUT = 300.0
SETTLE_POLL = 0.25
# Cores a server may use and still count as quiet: equal counts are not enough, since the
# repair's last exchanges, the writers' backlog and the journals' compactions go on for tens
# of seconds after them (0.2-0.45 cores a fellow, measured), and a workload started then
# measures them. Idle, a server takes ~0.01 (heartbeats).
QUIET_CORES = 0.1
# Seconds one STATUS may take while settling: a server still taking a workload's floods in
# answers late, which means "not settled yet", not a failure.
SETTLE_ASK = 2.0


class HerdError(RuntimeError):
    """A server of the herd exited, did not listen, or answered as something else."""


class Herd:
    """Real server processes (five, or any number) of a config written in ``root``.

    ``with Herd(root) as herd`` (or ``async with``) starts every server and kills them all on
    the way out; ``start``, ``kill`` and ``stop`` drive single servers. Each process leads its
    own process group, with its stderr in ``<name>.stderr`` of ``processes``' directory
    (``root`` unless a ``Procs`` is given, as the benchmark does).
    """

    def __init__(
        self,
        root: Path,
        names: Sequence[str] = NAMES,
        links: Iterable[tuple[str, str]] = DEFAULT_LINKS,
        places: str = TEST_PLACES,
        extra: str = "",
        gateway: str = "",
        env: Mapping[str, str] | None = None,
        peers: str = TEST_PEERS,
        processes: Procs | None = None,
    ) -> None:
        """``places``, ``peers``: the bodies of those tables (TOML allows no second table of a
        name in ``extra``); ``gateway``: lines for the ``[gateway]`` table after its port;
        ``extra``: more tables; ``env``: added to the servers' environment."""
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.names = tuple(names)
        self.links = [(a, b) for a, b in links]
        *ports, self.gateway_port = free_ports(len(self.names) + 1)
        self.ports = dict(zip(self.names, ports, strict=True))
        self.env = {**os.environ, "PYTHONPATH": code_path(), **(env or {})}
        self.processes = Procs(root) if processes is None else processes
        self.servers: dict[str, Proc] = {}
        self.gateway: Proc | None = None
        self.preload = False  # places loaded at start (see for_bench), which wait_ready awaits
        # The servers' working directory: the root's anchor, as servers must not depend on it
        # (the benchmark's own: its test finds what it left running by the directory).
        self.cwd = Path(root.anchor)
        self.config = root / "herd.toml"
        self._tables = f"[places]\n{places}\n\n[gateway]\nport = {self.gateway_port}\n{gateway}\n"
        self._extra = extra
        self._peers = peers
        self.write_config()

    @classmethod
    def for_bench(
        cls,
        root: Path,
        processes: Procs,
        preload: bool = True,
        names: Sequence[str] = NAMES,
        links: Sequence[tuple[str, str]] = DEFAULT_LINKS,
        extra: str = "",
    ) -> Herd:
        """The built-in herd but for ports and directories. ``preload=False`` (``--quick``)
        leaves the places unloaded until the first WHATSAT, so only the server that answers
        one spends seconds of CPU loading them. ``extra``: more tables (``[history]``)."""
        places = (
            f'provider = "embedded"\ngazetteer = "cities1000"\npreload = {str(preload).lower()}'
        )
        herd = cls(root, names, links, places=places, extra=extra, peers="", processes=processes)
        herd.preload = preload
        herd.cwd = root
        return herd

    def write_config(self, dial: dict[tuple[str, str], int] | None = None) -> None:
        """(Re)write the config; ``dial`` routes a dialler to a neighbour via a local port."""
        servers = ""
        for name, port in self.ports.items():
            routes = [f'{b} = "127.0.0.1:{p}"' for (a, b), p in (dial or {}).items() if a == name]
            route = f"dial = {{ {', '.join(routes)} }}\n" if routes else ""
            servers += f'[servers.{name}]\nhost = "127.0.0.1"\nport = {port}\n{route}\n'
        peers = f"[peers]\n{self._peers}\n\n" if self._peers else ""
        self.config.write_text(
            f'secret = "{SECRET}"\nlinks = {json.dumps([list(p) for p in self.links])}\n\n'
            f'{servers}[paths]\nlogs = "logs"\ndata = "data"\n\n'
            f"{peers}{self._tables}\n{self._extra}\n"
        )

    def __enter__(self) -> Herd:
        try:
            self.start(*self.names)
        except BaseException:
            self.stop()  # no server outlives a failed start
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Herd:
        try:
            await self.start_async(*self.names)
        except BaseException:
            await self.stop_async()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """Each started server's process, by name."""
        return {name: proc.popen for name, proc in self.servers.items()}

    def _argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "backend", *args, "--config", str(self.config), "--quiet"]

    def spawn(self, name: str) -> Proc:
        """Start server ``name`` and return at once (``start`` waits until it listens)."""
        self._spawn(name)
        return self.servers[name]

    def _spawn(self, *names: str) -> tuple[str, ...]:
        for name in names:
            old = self.servers.get(name)
            if old is not None:
                assert not old.alive(), f"{name} runs"
                self.processes.forget(old, signal.SIGKILL)
            self.servers[name] = self.processes.start(
                name, self._argv("server", name), cwd=self.cwd, env=self.env
            )
        return names

    def start(self, *names: str) -> None:
        """Start servers ``names``; return once each listens as itself."""
        for name in self._spawn(*names):
            poll(functools.partial(self._up, name), LISTEN_TIMEOUT, f"{name} to listen", HerdError)
            self._is(name, self.status(name))

    async def start_async(self, *names: str) -> None:
        for name in self._spawn(*names):

            async def up(name: str = name) -> bool:
                return self._up(name, await listening_async(self.ports[name]))

            await poll_async(up, LISTEN_TIMEOUT, f"{name} to listen", HerdError)
            self._is(name, await self.status_async(name))

    def _up(self, name: str, listens: bool | None = None) -> bool:
        proc = self.servers[name]
        if not proc.alive():
            raise HerdError(f"{name} exited with {proc.popen.returncode}: {self.stderr(name)}")
        return listening(self.ports[name]) if listens is None else listens

    def _is(self, name: str, status: dict[str, Any]) -> None:
        # The port answers as this server, not as something else that took it meanwhile.
        if status.get("server") != name:
            raise HerdError(f"port {self.ports[name]} is not {name}: {status}")

    def start_gateway(self) -> None:
        self.gateway = self.processes.start(
            "gateway", self._argv("gateway"), cwd=self.cwd, env=self.env
        )
        gateway = self.gateway
        poll(lambda: self._gateway_up(gateway), LISTEN_TIMEOUT, "the gateway to listen", HerdError)

    async def start_gateway_async(self) -> str:
        """Start the gateway; return its base URL once it is subscribed to the herd."""
        self.gateway = self.processes.start(
            "gateway", self._argv("gateway"), cwd=self.cwd, env=self.env
        )
        await self.wait_gateway()
        return f"http://127.0.0.1:{self.gateway_port}"

    def _gateway_up(self, proc: Proc) -> bool:
        if not proc.alive():
            raise HerdError(f"gateway exited with {proc.popen.returncode}: {proc.last_line()}")
        return listening(self.gateway_port)

    def restart(self, name: str) -> Proc:
        """Stop ``name`` (SIGTERM, as an operator would) and start it again; returns at once."""
        self.processes.forget(self.servers[name])
        del self.servers[name]
        self._spawn(name)
        return self.servers[name]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to server ``name`` and return its exit code."""
        proc = self.servers[name]
        proc.popen.send_signal(sig)
        code = proc.popen.wait(timeout=10)
        proc.stop(signal.SIGKILL)  # what is left of its group: now, while its id is not reused
        return code

    async def kill_async(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.servers[name]
        proc.popen.send_signal(sig)

        async def exited() -> bool:
            return proc.popen.poll() is not None

        await poll_async(exited, 10, f"{name} to exit")
        proc.stop(signal.SIGKILL)
        return proc.popen.returncode

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.processes.forget(self.gateway, signal.SIGKILL)
            self.gateway = None

    def stop(self) -> None:
        """Kill every server (and the gateway) this herd started, and wait for each."""
        for proc in self.servers.values():
            self.processes.forget(proc, signal.SIGKILL)
        self.stop_gateway()

    async def stop_async(self) -> None:
        procs = [*self.servers.values(), *([self.gateway] if self.gateway else [])]
        for proc in procs:
            if proc.alive():
                proc.popen.kill()

        async def exited() -> bool:
            return not any(p.alive() for p in procs)

        await poll_async(exited, 10, "the herd to exit")
        self.stop()  # each has exited: this only reaps them

    def alive(self) -> list[str]:
        return [n for n in self.names if n in self.servers and self.servers[n].alive()]

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.servers.items()}

    def stderr(self, name: str) -> str:
        path = self.processes.logs / f"{name}.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, name: str) -> str:
        return (self.root / "logs" / f"{name}.log").read_text(errors="replace")

    def neighbours(self, name: str) -> list[str]:
        return [b if a == name else a for a, b in self.links if name in (a, b)]

    def ask(self, name: str, data: bytes) -> bytes:
        return ask(self.ports[name], data)

    async def ask_async(self, name: str, data: bytes) -> bytes:
        return await converse(self.ports[name], data)

    def status(self, name: str) -> dict[str, Any]:
        return _status(name, self.ask(name, Status().encode()))

    async def status_async(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        return _status(name, await ask_line(self.ports[name], Status().encode(), timeout))

    def whereis(self, name: str, client: str) -> bytes:
        return self.ask(name, WhereIs(client).encode())

    async def whereis_async(self, name: str, client: str) -> bytes:
        return await self.ask_async(name, WhereIs(client).encode())

    def wait_record(self, name: str, client: str, record: bytes, timeout: float = 10.0) -> None:
        """Wait until server ``name`` holds exactly ``record`` for ``client``."""
        poll(lambda: self.whereis(name, client) == record, timeout, f"{client} at {name}")

    async def wait_record_async(
        self, name: str, client: str, record: bytes, timeout: float = 10.0
    ) -> None:
        async def holds() -> bool:
            return await self.whereis_async(name, client) == record

        await poll_async(holds, timeout, f"{client} at {name}")

    def wait_links(self, timeout: float = 15.0) -> None:
        """Wait until every link between two running servers is up at both ends."""
        alive = self.alive()
        poll(
            lambda: not self._unready({n: self.status(n) for n in alive}, places=False),
            timeout,
            "links to come up",
        )

    async def wait_links_async(self, timeout: float = 15.0) -> None:
        await self.wait_ready(places=False, timeout=timeout)

    def _unready(self, statuses: dict[str, dict[str, Any]], places: bool) -> str:
        """What is not ready yet among ``statuses``: links between two of them that are not
        up at both ends, and with ``places`` the servers still loading their places."""
        down = [
            f"{name}-{other}"
            for name, status in statuses.items()
            for other in self.neighbours(name)
            if other in statuses and status.get("links", {}).get(other) != "up"
        ]
        places = places and self.preload
        loading = [n for n, s in statuses.items() if places and s.get("places") != "ready"]
        failed = [n for n, s in statuses.items() if s.get("places") == "failed"]
        if failed:
            raise HerdError(f"places failed to load at {', '.join(failed)}")
        return f"links down: {down}; places not ready: {loading}" if down or loading else ""

    async def wait_ready(self, places: bool = True, timeout: float = PLACES_TIMEOUT) -> None:
        """Wait until every link between running servers is up at both ends and, with
        ``places``, every server's places are loaded (the load takes a CPU for seconds:
        nothing is measured before)."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = {name: await self.status_async(name) for name in self.alive()}
            waiting = self._unready(statuses, places)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise HerdError(f"herd not ready after {timeout} s ({waiting})")
            await asyncio.sleep(0.05)

    async def settle(self, timeout: float = SETTLE_TIMEOUT) -> str | None:
        """Wait until every server holds the same number of records and of history points,
        twice in a row, and no server used more than QUIET_CORES in between: the floods of
        the last workload (and the repairs after them) are over. Returns None, or what was
        still unsettled."""
        deadline = time.monotonic() + timeout
        last: dict[str, tuple[int, int] | None] = {}
        cpu = self._cpu()
        while True:
            counts = {n: await self._settling(n) for n in self.alive()}
            cpu, before = self._cpu(), cpu
            busy = {n: round(cores, 2) for n, cores in self._cores(before, cpu).items()}
            agree = counts == last and len(set(counts.values())) == 1 and None not in last.values()
            if agree and max(busy.values(), default=0.0) <= QUIET_CORES:
                return None
            if time.monotonic() > deadline:
                return (
                    f"records (and history points) per server after {timeout:g} s: {counts}; "
                    f"cores: {busy}"
                )
            last = counts
            await asyncio.sleep(SETTLE_POLL)

    def _cpu(self) -> tuple[float, dict[str, float]]:
        """The time now and each running server's CPU seconds so far."""
        return time.monotonic(), {n: cpu_seconds(self.servers[n].pid) for n in self.alive()}

    @staticmethod
    def _cores(
        before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]]
    ) -> dict[str, float]:
        """Each server's cores used between two ``_cpu`` looks."""
        seconds = max(after[0] - before[0], 1e-3)
        return {n: (c - before[1].get(n, c)) / seconds for n, c in after[1].items()}

    async def _settling(self, name: str) -> tuple[int, int] | None:
        """A server's records and history points, or None while it is too busy to answer
        STATUS (still taking the last workload's floods in)."""
        try:
            status = await self.status_async(name, SETTLE_ASK)
        except (OSError, TimeoutError, HerdError):
            return None
        return int(status["records"]), int(status.get("history", {}).get("points", 0))

    async def warm_places(self, name: str) -> None:
        """Have ``name`` load its places now, while other workloads run: with ``preload``
        off they load on the first WHATSAT, which this sends. Failures are left to WHATSAT's
        own workload to find."""
        line = IAmAt("bench-warm", "+0+0", time_text(time.time_ns())).encode()
        line += WhatsAt("bench-warm", Decimal(1), 1).encode()
        with contextlib.suppress(Exception):
            await ask_line(self.ports[name], line, PLACES_TIMEOUT, until=b"\n\n")

    async def wait_gateway(self, timeout: float = 20.0) -> None:
        """Wait until the gateway is subscribed to the herd (``/healthz`` says ok)."""
        import aiohttp

        url = f"http://127.0.0.1:{self.gateway_port}/healthz"
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                gateway = self.gateway
                if gateway is not None and not gateway.alive():
                    code, line = gateway.popen.returncode, gateway.last_line()
                    raise HerdError(f"gateway exited with {code}: {line}")
                try:
                    async with session.get(url) as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await poll_async(healthy, timeout, "the gateway to subscribe to the herd", HerdError)


def _status(name: str, reply: bytes) -> dict[str, Any]:
    status = parse_status(reply)
    if status is None:
        raise HerdError(f"{name} answered STATUS with {reply[:200]!r}")
    return status
