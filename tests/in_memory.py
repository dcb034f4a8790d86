"""The socket-free tier's helpers: a real ``HerdServer`` that never listens, its connections
on memory transports (``memory_transport.py``), and places that answer at once (or when the
test says)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memory_transport import MemoryTransport

from backend.config import HerdConfig, load_config
from backend.server import HerdServer

SECRET = "herd-unit-test-secret-0123456789-abcdefghij"
LOCATION = "+34.068930-118.445127"


def herd_config(
    root: Path,
    names: tuple[str, ...] = ("Solo",),
    links: tuple[tuple[str, str], ...] = (),
    extra: str = "",
    secret: str = SECRET,
) -> HerdConfig:
    """A herd's config under ``root`` (ports are never opened: nothing listens)."""
    servers = "".join(
        f'[servers.{name}]\nhost = "127.0.0.1"\nport = {20000 + i}\n\n'
        for i, name in enumerate(names)
    )
    path = root / f"herd-{len(list(root.glob('herd-*.toml')))}.toml"
    path.write_text(
        f'secret = "{secret}"\nlinks = {json.dumps([list(p) for p in links])}\n\n'
        f'{servers}[paths]\nlogs = "logs"\ndata = "data"\n\n{extra}\n'
    )
    return load_config(path)


class Places:
    """A places provider that answers every query with ``payload``; while ``hold`` is set,
    queries wait until it is cleared (``release``)."""

    def __init__(self) -> None:
        self.payload: dict[str, Any] = {"html_attributions": [], "results": [], "status": "OK"}
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked = 0

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def start(self) -> None:
        pass

    async def nearby(self, lat: float, lng: float, radius_m: float, limit: int) -> dict[str, Any]:
        self.asked += 1
        await self.gate.wait()
        return self.payload

    async def close(self) -> None:
        pass

    @property
    def state(self) -> str:
        return "ready"


def make_server(config: HerdConfig, name: str = "Solo", places: Places | None = None) -> HerdServer:
    """A server with its journal recovered and open, not listening (``start`` would)."""
    server = HerdServer(config, name, places or Places())
    server.recover()
    return server


def connect(
    server: HerdServer,
    peername: tuple[str, int] = ("127.0.0.1", 40000),
    on_write: Callable[[bytes], None] | None = None,
) -> MemoryTransport:
    """A client connection accepted by ``server``, on a memory transport."""
    return MemoryTransport(server.connection(), peername, on_write)


async def until(condition: Callable[[], object], what: str, turns: int = 1000) -> None:
    """Let the loop run until ``condition()`` holds (no sleeping: each turn is one pass)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"still waiting for {what} after {turns} loop turns")


async def settle(turns: int = 5) -> None:
    """Let the loop run a few passes: the outbox flushes at the end of an iteration."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def ask(transport: MemoryTransport, data: bytes) -> bytes:
    """Feed ``data`` to the connection and return what it wrote once the loop settled."""
    transport.protocol.data_received(data)
    await settle()
    return transport.take()
