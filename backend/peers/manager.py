"""All of one server's links: dialling, taking over accepted handshakes, flooding, closing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from ..config import HerdConfig
from ..outbox import Outbox
from ..protocol import Peer, ProtocolError, Record, derive_peer_key
from ..replicas import Replica
from ..store import Store
from ..transport import LineTransport
from .handshake import HandshakeError
from .link import PeerLink, RecordHandler

__all__ = ["PeerManager"]

log = logging.getLogger("herd.peers")


class PeerManager:
    """All of one server's links; floods records to them."""

    def __init__(
        self,
        config: HerdConfig,
        local: str,
        on_record: RecordHandler,
        store: Store,
        outbox: Outbox,
        replicas: Mapping[str, Replica] | None = None,
    ) -> None:
        self.local = local
        # Derived once, here (some 35 ms): the handshakes then cost an HMAC each.
        key = derive_peer_key(config.secret)
        self.links = {
            name: PeerLink(config, local, name, on_record, store, outbox, key, replicas)
            for name in config.neighbours(local)
        }
        self._all = list(self.links.values())
        self._tasks: list[asyncio.Task[None]] = []
        self._accepting: set[asyncio.Task[None]] = set()  # handshakes and links accepted

    def start(self) -> None:
        for link in self.links.values():
            if link.dialer:
                self._tasks.append(
                    asyncio.create_task(link.dial_forever(), name=f"dial-{link.name}")
                )

    def flood(self, record: Record, line: bytes, source: str | None) -> None:
        """Send ``record`` (``line``: its line with the newline) to every neighbour but the
        one it came from and its origin."""
        origin = record.server_id
        for link in self._all:
            name = link.name
            if name != source and name != origin:
                link.send(line)

    def flood_put(self, line: bytes, source: str | None) -> None:
        """Send a replicated object's ``PUT`` line to every neighbour but ``source``."""
        for link in self._all:
            if link.name != source:
                link.send(line)

    def accept(self, hello: Peer, conn: LineTransport) -> None:
        """Take over a connection that opened with ``PEER`` (the server checked that the
        sender is a neighbour): finish the handshake and serve the link, in a task."""
        link = self.links[hello.server_id]
        task = asyncio.create_task(self._accept(link, hello, conn), name=f"accept-{link.name}")
        self._accepting.add(task)
        task.add_done_callback(self._accepting.discard)

    async def _accept(self, link: PeerLink, hello: Peer, conn: LineTransport) -> None:
        try:
            await link.accept(hello, conn)
        except (HandshakeError, ProtocolError, OSError, ValueError) as exc:
            log.warning("refused peer connection from %s: %s", conn.peer, exc or type(exc).__name__)
        finally:
            conn.close()

    async def close(self) -> None:
        for link in self.links.values():
            link.say_goodbye()
        tasks = [*self._tasks, *self._accepting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in self.links.values():
            link.close()
