"""Five servers on five hosts: each in its own network namespace, joined by a bridge. Taking
hosts' links down partitions the herd; records acknowledged on every side reach everyone once
the links are back up. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import NAMES, poll

from backend.config import DEFAULT_LINKS

# A herd secret as strong as the config demands (32+ printable characters).
SECRET = "herd-netns-secret-0123456789-abcdefghij"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PORT = 12000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Hosts:
    """A hub namespace with a bridge, and one namespace per server wired to it by a veth."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.hub = f"herd-{tag}-hub"
        self.subnet = f"10.131.{secrets.randbelow(250) + 1}"
        self.ns = {name: f"herd-{tag}-{i}" for i, name in enumerate(NAMES)}
        self.veth = {name: f"h{tag}{i}" for i, name in enumerate(NAMES)}
        self.addr = {name: f"{self.subnet}.{i + 1}" for i, name in enumerate(NAMES)}

    def __enter__(self) -> Hosts:
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "addr", "add", f"{self.subnet}.254/24", "dev", "br0")
        ip("-n", self.hub, "link", "set", "br0", "up")
        ip("-n", self.hub, "link", "set", "lo", "up")
        for name, ns in self.ns.items():
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            hub_end = self.veth[name]
            ip(
                "link",
                "add",
                hub_end,
                "netns",
                self.hub,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            ip("-n", self.hub, "link", "set", hub_end, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.addr[name]}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in [*self.ns.values(), self.hub]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def cut(self, name: str) -> None:
        ip("-n", self.hub, "link", "set", self.veth[name], "down")

    def heal(self, name: str) -> None:
        ip("-n", self.hub, "link", "set", self.veth[name], "up")

    def ask(self, name: str, line: bytes, via: str | None = None) -> bytes:
        """Send one line to server ``name`` from the hub (or from host ``via``); the reply."""
        ns = self.ns[via] if via else self.hub
        code = (
            "import socket,sys\n"
            f"s=socket.create_connection(({self.addr[name]!r},{PORT}),timeout=5)\n"
            "s.sendall(sys.stdin.buffer.read());s.shutdown(1)\n"
            "d=b''\nwhile (c:=s.recv(65536)): d+=c\n"
            "sys.stdout.buffer.write(d)\n"
        )
        result = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            input=line,
            capture_output=True,
            timeout=30,
        )
        return result.stdout if result.returncode == 0 else b""


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0:
        pytest.fail("this test builds network namespaces and needs root (CI runs as root)")
    with Hosts() as h:
        yield h


def test_partitioned_hosts_converge_when_links_return(tmp_path: Path, hosts: Hosts) -> None:
    servers = "".join(f'[servers.{n}]\nhost = "{hosts.addr[n]}"\nport = {PORT}\n' for n in NAMES)
    config = tmp_path / "herd.toml"
    config.write_text(
        f'secret = "{SECRET}"\nlinks = {json.dumps([list(p) for p in DEFAULT_LINKS])}\n{servers}'
        '[places]\npreload = false\ngazetteer = "cities15000"\n'
        '[paths]\nlogs = "logs"\ndata = "data"\n[peers]\nheartbeat = 0.5\nreconnect_max = 0.5\n'
    )
    procs = {
        name: subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                hosts.ns[name],
                sys.executable,
                "-m",
                "backend",
                "server",
                name,
                "--config",
                str(config),
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in NAMES
    }

    def links_up(name: str) -> bool:
        reply = hosts.ask(name, b"STATUS\n")
        return reply.startswith(b"STATUS ") and set(json.loads(reply[7:])["links"].values()) == {
            "up"
        }

    try:
        for name in NAMES:
            poll(lambda name=name: links_up(name), 30, f"{name}'s links")
        # Riley and Jaquez each lose their link: three sides, {Riley}, {Jaquez} and the rest.
        hosts.cut("Riley")
        hosts.cut("Jaquez")
        acked = {
            "west": hosts.ask("Riley", b"IAMAT west +34.07-118.44 1700000001\n", via="Riley"),
            "north": hosts.ask("Jaquez", b"IAMAT north +37.77-122.42 1700000002\n", via="Jaquez"),
            "east": hosts.ask("Campbell", b"IAMAT east +40.71-74.00 1700000003\n"),
        }
        assert all(reply.startswith(b"AT ") for reply in acked.values()), acked
        # While cut off, Riley knows only its own record.
        assert hosts.ask("Riley", b"WHEREIS east\n", via="Riley") == b"? WHEREIS east\n"
        hosts.heal("Riley")
        hosts.heal("Jaquez")
        healed = time.monotonic()
        for name in NAMES:
            for client, reply in acked.items():
                poll(
                    lambda name=name, client=client, reply=reply: (
                        hosts.ask(name, f"WHEREIS {client}\n".encode()) == reply
                    ),
                    60,
                    f"{client} at {name}",
                )
        print(f"\nnetns: converged {time.monotonic() - healed:.2f} s after the links came back")
    finally:
        for proc in procs.values():
            proc.kill()
        for proc in procs.values():
            proc.wait(timeout=10)
