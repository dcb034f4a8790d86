"""Peer links through relays that can be cut and healed: a partition without root.

A server dials each neighbour whose name sorts after its own (``backend.peers``), so routing
every dialler to its neighbour through a ``LinkProxy`` (the config's ``dial`` table, which
``Herd.write_config`` writes) puts every link's wire in the harness's hands. A cut link
refuses new connections and aborts the open ones, as a dead route would; the servers'
heartbeats and redials see exactly that, and a healed link is dialled again by the server's
own backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .herd import Herd

__all__ = ["LinkProxy", "Links", "dialler_pairs"]

class _Side(asyncio.Protocol):
    """One end of a relayed connection: what it receives is written to the other end, and
    reading pauses while the other end's socket is backed up (the kernel's buffers then
    push back to the sender, as a plain link's would). Protocol callbacks rather than
    streams: the relays carry every link's bytes, and the harness's CPU must not pace the
    herd it measures."""

    def __init__(self, proxy: LinkProxy, other: _Side | None = None) -> None:
        self.proxy = proxy
        self.other = other
        self.transport: asyncio.Transport | None = None
        self._early: list[bytes] = []  # bytes that came before the other end was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy.sides.add(self)
        other = self.other
        if other is not None:  # the acceptor's end, dialled for a dialler's end
            if self.proxy.is_cut or other.transport is None or other.transport.is_closing():
                transport.close()  # cut meanwhile, or the dialler gave up
                return
            other.other = self
            other.connected(self)
        elif self.proxy.is_cut:
            transport.close()
        else:
            self.proxy.dial_for(self)

    def connected(self, other: _Side) -> None:
        assert other.transport is not None
        if self._early:
            other.transport.write(b"".join(self._early))
            self._early.clear()

    def data_received(self, data: bytes) -> None:
        other = self.other
        if other is None or other.transport is None:
            self._early.append(data)
        else:
            other.transport.write(data)

    def pause_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.sides.discard(self)
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class LinkProxy:
    """A TCP relay standing in for one link's wire, which the harness can cut and heal."""

    def __init__(self) -> None:
        self.target = 0  # the acceptor's port, set once the herd has its ports
        self.is_cut = False
        self.port = 0
        self.sides: set[_Side] = set()
        self._server: asyncio.Server | None = None
        self._dials: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Side(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def dial_for(self, side: _Side) -> None:
        task = asyncio.get_running_loop().create_task(self._dial(side))
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _dial(self, side: _Side) -> None:
        """Connect ``side`` (a dialler's end) to the acceptor, or close it."""
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Side(self, side), "127.0.0.1", self.target)
        except OSError:
            if side.transport is not None:
                side.transport.close()

    def cut(self) -> None:
        self.is_cut = True
        for side in list(self.sides):
            side.abort()
        self.sides.clear()

    def heal(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


def dialler_pairs(links: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each link as (dialler, acceptor): the name that sorts first dials."""
    return [(min(a, b), max(a, b)) for a, b in links]


class Links:
    """A relay on every one of ``links``, started before the herd is made (``Herd`` picks
    its ports when made: relays listening first can never take one of them), then given the
    herd with ``route``; ``close`` stops them all."""

    def __init__(self, links: Iterable[tuple[str, str]]) -> None:
        self.proxies = {pair: LinkProxy() for pair in dialler_pairs(links)}

    async def start(self) -> Links:
        for proxy in self.proxies.values():
            await proxy.start()
        return self

    def route(self, herd: Herd) -> None:
        """Rewrite ``herd``'s config so that every dialler dials through its link's relay."""
        for (_, acceptor), proxy in self.proxies.items():
            proxy.target = herd.ports[acceptor]
        herd.write_config({pair: proxy.port for pair, proxy in self.proxies.items()})

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()

    def between(self, group: Iterable[str], others: Iterable[str]) -> list[tuple[str, str]]:
        """The links with one end in ``group`` and the other in ``others``."""
        a, b = set(group), set(others)
        return [p for p in self.proxies if (p[0] in a and p[1] in b) or (p[0] in b and p[1] in a)]

    def cut(self, *pairs: tuple[str, str]) -> None:
        for pair in pairs:
            self.proxies[pair].cut()

    def heal(self, *pairs: tuple[str, str]) -> None:
        for pair in pairs:
            self.proxies[pair].heal()
