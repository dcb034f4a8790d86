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

# Bytes read at once from either side of a relayed link.
CHUNK = 65536


class LinkProxy:
    """A TCP relay standing in for one link's wire, which the harness can cut and heal."""

    def __init__(self) -> None:
        self.target = 0  # the acceptor's port, set once the herd has its ports
        self.is_cut = False
        self.port = 0
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._pipes |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (OSError, RuntimeError):
            pass
        finally:
            self._pipes.discard(writer)
            writer.close()

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

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
