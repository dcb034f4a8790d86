"""The herd under test: a temporary config on ephemeral loopback ports, its five servers and
its gateway as real processes (``python -m backend server NAME --config FILE --quiet``), and
the baselines beside them.

The config is the built-in herd's in every respect but the ports and the directories: every
line is logged, places are embedded (``cities1000``, preloaded), default limits and timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backend.config import DEFAULT_LINKS, DEFAULT_PORTS
from backend.protocol import parse_status

from .baselines import BASELINES
from .load import ask, time_text
from .procs import Proc, Procs

# A herd secret as strong as the config demands (32+ printable characters).
SECRET = "herd-bench-secret-0123456789-abcdefghij"

__all__ = ["NAMES", "Herd", "free_ports", "start_baseline"]

NAMES: tuple[str, ...] = tuple(DEFAULT_PORTS)
# Seconds a server has to listen (the protocol asks for 0.5 s; two busy cores are slower).
LISTEN_TIMEOUT = 20.0
# Seconds for the places data to load (cities1000 takes a few seconds per server, and five
# servers load it at once on two cores).
PLACES_TIMEOUT = 120.0
# Seconds for the herd to finish flooding what a workload left queued before the next starts
# (Riley answers faster than its fellows can take records in, so their queues fill), and the
# pause between two looks at the record counts.
SETTLE_TIMEOUT = 120.0
SETTLE_POLL = 0.25


def free_ports(n: int) -> list[int]:
    """Ports the kernel just handed out as free (bound and released together, so distinct)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class Herd:
    """The five servers and the gateway of a temporary herd in ``root``."""

    def __init__(
        self,
        root: Path,
        procs: Procs,
        preload: bool = True,
        names: Sequence[str] = NAMES,
        links: Sequence[tuple[str, str]] = DEFAULT_LINKS,
    ) -> None:
        """``preload=False`` (``--quick``) leaves the places unloaded until the first WHATSAT,
        so only the server that answers one spends seconds of CPU loading them. ``names`` and
        ``links`` make another herd (a lone server, for example)."""
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.preload = preload
        self.procs = procs
        *ports, self.gateway_port = free_ports(len(names) + 1)
        self.ports = dict(zip(names, ports, strict=True))
        self.links = [tuple(pair) for pair in links]
        self.servers: dict[str, Proc] = {}
        self.gateway: Proc | None = None
        self.config = root / "herd.toml"
        servers = "\n".join(
            f'[servers.{name}]\nhost = "127.0.0.1"\nport = {port}\n'
            for name, port in self.ports.items()
        )
        self.config.write_text(
            f'secret = "{SECRET}"\nlinks = {json.dumps([list(p) for p in self.links])}\n\n'
            f"{servers}\n"
            '[places]\nprovider = "embedded"\ngazetteer = "cities1000"\n'
            f"preload = {'true' if preload else 'false'}\n\n"
            '[paths]\nlogs = "logs"\ndata = "data"\n\n'
            f"[gateway]\nport = {self.gateway_port}\n"
        )

    def neighbours(self, name: str) -> list[str]:
        return [b if a == name else a for a, b in self.links if name in (a, b)]

    def _argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "backend", *args, "--config", str(self.config), "--quiet"]

    def start(self, names: Sequence[str] | None = None) -> None:
        """Start ``names`` (default: every server) and wait until each listens."""
        names = list(self.ports) if names is None else names
        for name in names:
            self.servers[name] = self.procs.start(name, self._argv("server", name), cwd=self.root)
        for name in names:
            self._wait_listening(self.servers[name], self.ports[name])

    def start_gateway(self) -> None:
        self.gateway = self.procs.start("gateway", self._argv("gateway"), cwd=self.root)
        self._wait_listening(self.gateway, self.gateway_port)

    def _wait_listening(self, proc: Proc, port: int) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not listening(port):
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.name} exited with {proc.popen.returncode}: {proc.last_line()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not listening after {LISTEN_TIMEOUT} s")
            time.sleep(0.02)

    def restart(self, name: str) -> Proc:
        """Stop ``name`` (SIGTERM, as an operator would) and start it again; returns at once."""
        old = self.servers[name]
        self.procs.forget(old)
        self.servers[name] = self.procs.start(name, self._argv("server", name), cwd=self.root)
        return self.servers[name]

    async def status(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        reply = await ask(self.ports[name], b"STATUS\n", timeout)
        status = parse_status(reply)
        if status is None:
            raise RuntimeError(f"{name} answered STATUS with {reply[:200]!r}")
        return status

    async def wait_ready(self, places: bool = True, timeout: float = PLACES_TIMEOUT) -> None:
        """Wait until every link is up at both ends and, with ``places``, every server's
        places are loaded (the load takes a CPU for seconds: nothing is measured before)."""
        deadline = time.monotonic() + timeout
        waiting = "status"
        while time.monotonic() < deadline:
            statuses = {name: await self.status(name) for name in self.servers}
            down = [
                f"{name}-{other}"
                for name, status in statuses.items()
                for other, state in status.get("links", {}).items()
                if state != "up" and other in self.servers
            ]
            places = places and self.preload
            loading = [n for n, s in statuses.items() if places and s.get("places") != "ready"]
            failed = [n for n, s in statuses.items() if s.get("places") == "failed"]
            if failed:
                raise RuntimeError(f"places failed to load at {', '.join(failed)}")
            if not down and not loading:
                return
            waiting = f"links down: {down}; places not ready: {loading}"
            await asyncio.sleep(0.1)
        raise RuntimeError(f"herd not ready after {timeout} s ({waiting})")

    async def settle(self, timeout: float = SETTLE_TIMEOUT) -> str | None:
        """Wait until every server holds the same number of records, twice in a row: the
        floods of the last workload are over. Returns None, or what was still unsettled."""
        deadline = time.monotonic() + timeout
        last: dict[str, int] = {}
        while True:
            counts = {
                name: int((await self.status(name))["records"])
                for name, proc in self.servers.items()
                if proc.alive()
            }
            if counts == last and len(set(counts.values())) == 1:
                return None
            if time.monotonic() > deadline:
                return f"records per server after {timeout:g} s: {counts}"
            last = counts
            await asyncio.sleep(SETTLE_POLL)

    async def warm_places(self, name: str) -> None:
        """Have ``name`` load its places now, while other workloads run: with ``preload``
        off they load on the first WHATSAT, which this sends. Failures are left to WHATSAT's
        own workload to find."""
        line = f"IAMAT bench-warm +0+0 {time_text(time.time_ns())}\nWHATSAT bench-warm 1 1\n"
        with contextlib.suppress(Exception):
            await ask(self.ports[name], line.encode(), PLACES_TIMEOUT, until=b"\n\n")

    async def wait_gateway(self, timeout: float = 20.0) -> None:
        """Wait until the gateway is subscribed to the herd (``/healthz`` says ok)."""
        import aiohttp

        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.gateway_port}/healthz"
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                with_status = 0
                try:
                    async with session.get(url) as response:
                        with_status = response.status
                except aiohttp.ClientError:
                    pass
                if with_status == 200:
                    return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"gateway not subscribed to the herd after {timeout} s")

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.servers.items()}


def start_baseline(procs: Procs, name: str, argv: Sequence[str]) -> tuple[Proc, int]:
    """Start a baseline script and return it with the port it printed."""
    proc = procs.start(name, argv, pipe=True)
    return proc, proc.read_port()


def python_baseline(script: str, *args: str) -> list[str]:
    return [sys.executable, str(BASELINES / script), *args]


def node_baseline(*args: str) -> list[str] | None:
    """The argv of the Node.js echo baseline, or None when ``node`` is not installed."""
    node = shutil.which("node")
    return None if node is None else [node, str(BASELINES / "echo.js"), *args]
