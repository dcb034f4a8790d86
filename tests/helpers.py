"""Test helpers: a herd of real server processes on ephemeral ports, and blocking clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from backend.config import DEFAULT_LINKS, DEFAULT_PORTS
from backend.protocol import parse_status
from bench.herd import free_ports, listening  # the benchmark launches herds the same way

# A herd secret as strong as the config demands (32+ printable characters).
SECRET = "herd-test-secret-0123456789-abcdefghij"

NAMES = tuple(DEFAULT_PORTS)
REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def ask(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, half-close, and read until the server closes: a whole conversation."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)


def healthy(port: int) -> bool:
    """The gateway on ``port`` answers /healthz with 200 (it is subscribed to the herd)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Herd:
    """Five (or any number of) real server processes from a config in ``root``."""

    def __init__(
        self,
        root: Path,
        names: Sequence[str] = NAMES,
        links: Iterable[tuple[str, str]] = DEFAULT_LINKS,
        places: str = 'provider = "embedded"\npreload = false\ngazetteer = "cities15000"',
        extra: str = "",
        gateway: str = "",
        env: dict[str, str] | None = None,
        peers: str = "reconnect_max = 0.5\nheartbeat = 1.0",
    ) -> None:
        self.root = root
        self.names = tuple(names)
        self.links = [tuple(pair) for pair in links]
        *ports, self.gateway_port = free_ports(len(self.names) + 1)
        self.ports = dict(zip(self.names, ports, strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, **(env or {})}
        self.config = root / "herd.toml"
        self._tables = f"[places]\n{places}\n\n[gateway]\nport = {self.gateway_port}\n{gateway}\n"
        self._extra = extra
        self._peers = peers  # the [peers] table's body: TOML allows no second [peers] in extra
        self.write_config()

    def write_config(self, dial: dict[tuple[str, str], int] | None = None) -> None:
        """(Re)write the config; ``dial`` routes a dialler to a neighbour via a local port."""
        servers = ""
        for name, port in self.ports.items():
            routes = [f'{b} = "127.0.0.1:{p}"' for (a, b), p in (dial or {}).items() if a == name]
            route = f"dial = {{ {', '.join(routes)} }}\n" if routes else ""
            servers += f'[servers.{name}]\nhost = "127.0.0.1"\nport = {port}\n{route}\n'
        self.config.write_text(
            f'secret = "{SECRET}"\nlinks = {json.dumps([list(p) for p in self.links])}\n\n'
            f'{servers}[paths]\nlogs = "logs"\ndata = "data"\n\n'
            f"[peers]\n{self._peers}\n\n{self._tables}\n{self._extra}\n"
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

    def start(self, *names: str) -> None:
        for name in names:
            assert name not in self.procs or self.procs[name].poll() is not None, f"{name} runs"
            err = open(self.root / f"{name}.stderr", "ab")  # noqa: SIM115 - lives with the process
            self.procs[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "backend",
                    "server",
                    name,
                    "--config",
                    str(self.config),
                    "--quiet",
                ],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=self.env,
                cwd=self.root.anchor,  # servers must not depend on the working directory
            )
            err.close()
        for name in names:
            poll(lambda name=name: self._up(name), what=f"{name} to listen")  # type: ignore[misc]
            # The port answers as this server, not as something else that took it meanwhile.
            assert self.status(name)["server"] == name, f"port {self.ports[name]} is not {name}"

    def _up(self, name: str) -> bool:
        code = self.procs[name].poll()
        if code is not None:
            raise AssertionError(f"{name} exited with {code}: {self.stderr(name)}")
        return listening(self.ports[name])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs[name]
        proc.send_signal(sig)
        return proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            proc.wait(timeout=10)

    def alive(self) -> list[str]:
        return [n for n in self.names if n in self.procs and self.procs[n].poll() is None]

    def stderr(self, name: str) -> str:
        path = self.root / f"{name}.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, name: str) -> str:
        return (self.root / "logs" / f"{name}.log").read_text(errors="replace")

    def ask(self, name: str, data: bytes) -> bytes:
        return ask(self.ports[name], data)

    def status(self, name: str) -> dict[str, object]:
        reply = self.ask(name, b"STATUS\n")
        status = parse_status(reply)
        assert status is not None, reply
        return status

    def neighbours(self, name: str) -> list[str]:
        return [b if a == name else a for a, b in self.links if name in (a, b)]

    def wait_links(self, timeout: float = 15.0) -> None:
        """Wait until every link between two running servers is up at both ends."""
        alive = set(self.alive())

        def all_up() -> bool:
            for name in alive:
                links = self.status(name)["links"]
                assert isinstance(links, dict)
                if any(links[n] != "up" for n in self.neighbours(name) if n in alive):
                    return False
            return True

        poll(all_up, timeout, "links to come up")

    def whereis(self, name: str, client: str) -> bytes:
        return self.ask(name, f"WHEREIS {client}\n".encode())

    def wait_record(self, name: str, client: str, record: bytes, timeout: float = 10.0) -> None:
        """Wait until server ``name`` holds exactly ``record`` for ``client``."""
        poll(lambda: self.whereis(name, client) == record, timeout, f"{client} at {name}")


def iamat(client: str, location: str = "+34.068930-118.445127", when: float | None = None) -> bytes:
    stamp = f"{time.time() if when is None else when:.9f}"
    return f"IAMAT {client} {location} {stamp}\n".encode()


async def until_synced(client: Any) -> None:
    """Wait until the gateway under aiohttp's test ``client`` has its herd's snapshot."""
    from gateway.keys import FEED

    await asyncio.wait_for(client.app[FEED].synced.wait(), 10)
