"""One herd server: its parts (store, journal, outbox, links, places, live state), its
lifecycle (recover, start, close) and ``accept``, where every record enters the store.

The path of one IAMAT: ``LineTransport.data_received`` (backend/transport.py) splits the chunk
into lines, ``ClientSession.lines_received`` (backend/session.py) answers each: ``parse_line``
makes an ``IAmAt``, ``Commands.on_IAMAT`` (backend/commands.py) makes the record, ``accept``
stores it, journals it and floods it to the neighbours, and the reply is queued; at the end of
the loop iteration the outbox writes the peer links and subscribers, then the journal, then the
replies.
"""

from __future__ import annotations

import asyncio
import logging
import time

from . import places as places_mod
from .commands import Commands
from .config import HerdConfig
from .journal import Journal
from .outbox import Outbox, TrafficLog
from .peers import PeerManager
from .protocol import At, ProtocolError, Record, parse_line
from .session import ClientSession
from .state import ServerState
from .store import Store
from .subscription import STALLED_HEARTBEATS
from .tls import server_context
from .transport import LineTransport

__all__ = ["HerdServer"]

log = logging.getLogger("herd.server")


class HerdServer:
    """A herd server named ``name`` in ``config``. ``start`` opens the port; ``close`` stops."""

    def __init__(
        self, config: HerdConfig, name: str, places: places_mod.PlacesProvider | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.address = config.server(name)
        self.limits = config.limits
        self.outbox = Outbox(TrafficLog(config.logs_dir / f"{name}.log", config.log_rotation))
        self.store = Store()
        self.journal = Journal(config.data_dir / name, fsync=config.durability.fsync)
        self.retention = config.durability.retention
        self.peers = PeerManager(config, name, self.accept, self.store, self.outbox)
        self.places = places or places_mod.make_provider(config.places, config.data_dir / "places")
        neighbours = len(config.neighbours(name))
        self.state = ServerState(
            self.limits, self.outbox, neighbours, config.peers.handshake_timeout
        )
        self._streams = self.state.subscribers.streams  # (read for every record)
        tls = server_context(config.tls) if config.tls is not None else None
        self.commands = Commands(self, tls)
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def dropped(self) -> int:
        """Journal lines dropped by the last ``recover``."""
        return self.state.dropped

    def connection(self) -> LineTransport:
        """A new client connection's transport, its session attached (the protocol factory)."""
        return ClientSession(self).transport

    def recover(self) -> int:
        """Load every record from the journal (before accepting connections).

        A line that is not a record within the protocol's bounds (a torn last line, or a
        record an earlier version accepted past today's bounds) is dropped with one log line.
        Returns the number of records loaded; ``self.dropped`` counts the lines dropped.
        """
        count = 0
        state = self.state
        state.dropped = 0
        for line in self.journal.recover():
            try:
                command = parse_line(line)
            except ProtocolError as exc:
                command = None
                reason = str(exc)
            else:
                reason = "not a record"
            if isinstance(command, At):
                if not self._expired(command.record):
                    count += self.store.offer(command.record)
            elif line.strip():
                state.dropped += 1
                log.warning("journal: dropped a line (%s): %r", reason, line[:100])
        self.journal.open()
        return count

    async def start(self) -> None:
        recovered = self.recover()
        log.info("%s recovered %d records from %s", self.name, recovered, self.journal.directory)
        if self.dropped:
            # Rewrite the journal without the dropped lines, so they are gone from the disk.
            self.journal.compact(r.wire() + b"\n" for r in self.store)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.connection,
            self.address.host,
            self.address.port,
            reuse_address=True,
            backlog=1024,
        )
        log.info("%s listening on %s:%d", self.name, self.address.host, self.address.port)
        self.peers.start()
        if self.config.places.preload:
            self.places.start()
        if self.retention:
            self._tasks.append(asyncio.create_task(self._expire_forever(), name="expire"))
        self._tasks.append(asyncio.create_task(self._close_idle(), name="close-idle"))
        self._tasks.append(asyncio.create_task(self._ping_subscribers(), name="ping-subscribers"))

    async def close(self) -> None:
        """Shut down in order: stop accepting; close idle connections and let those in the
        middle of a reply finish it (up to ``limits.shutdown_grace`` seconds); close links;
        flush the journal to disk."""
        state = self.state
        state.closing = True
        log.info("%s stopping: no new connections", self.name)
        if self._server is not None:
            self._server.close()
        for session in list(state.subscribers.streams):
            session.hang_up()
        busy = []
        for session in list(state.clients):
            if session.task is not None:
                busy.append(session.task)
            else:
                session.hang_up()
        if busy:
            log.info("%s: finishing %d replies in flight", self.name, len(busy))
            await asyncio.wait(busy, timeout=self.limits.shutdown_grace)
        cancelled = []
        for session in list(state.clients):
            if session.task is not None:
                session.task.cancel()
                cancelled.append(session.task)
            session.hang_up()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*cancelled, *self._tasks, return_exceptions=True)
        log.info("%s: closing its links (BYE to each neighbour)", self.name)
        await self.peers.close()
        await self.places.close()
        self.outbox.flush()
        log.info("%s: journal to disk", self.name)
        await self.journal.close()
        self.outbox.traffic.close()
        log.info("%s stopped", self.name)

    # -- the store ---------------------------------------------------------------------------

    def accept(self, record: Record, source: str | None) -> bool:
        """Store ``record`` if newer, then flood it and push it to subscribers.

        ``source`` is the neighbour it came from (None for a client's IAMAT): it is never
        sent back there. Returns whether the record was newer.
        """
        if self._expired(record) or not self.store.offer(record):
            return False
        line = record.line + b"\n"
        # What travels between servers and into the journal: the AT line, or with the
        # record's attributes a POINT line.
        wire = record.wire() + b"\n" if record.attributes else line
        # Into the kernel before its client has the reply (the journal's stage of the outbox
        # comes before the replies'): an acknowledged record survives kill -9.
        if self.journal.append(wire):
            self.outbox.later(Outbox.JOURNAL, self.journal.flush)
        if self.journal.appended > max(self.config.durability.compact_min, 2 * len(self.store)):
            self.journal.compact(r.wire() + b"\n" for r in self.store)
        self.peers.flood(record, wire, source)
        if self._streams:
            # With the peer links: subscribers pass records on too (the gateway's map).
            self.state.subscribers.queue(line, wire)
        return True

    def _expired(self, record: Record) -> bool:
        return bool(self.retention) and record.key[0] < time.time() - self.retention

    async def _expire_forever(self) -> None:
        # Sweep often enough that a record outlives its retention by at most a tenth of it.
        interval = min(max(self.retention / 10, 1.0), 60.0)
        while True:
            await asyncio.sleep(interval)
            dropped = self.store.expire(int(time.time() - self.retention))
            if dropped:
                log.info("retention: dropped %d records older than %g s", dropped, self.retention)

    # -- client connections ------------------------------------------------------------------

    async def _ping_subscribers(self) -> None:
        """Each heartbeat, a PING to every subscriber and the cut-off of those that read
        nothing for STALLED_HEARTBEATS (``Subscribers.heartbeat``)."""
        heartbeat = self.config.peers.heartbeat
        limit = STALLED_HEARTBEATS * heartbeat
        while True:
            await asyncio.sleep(heartbeat)
            self.state.subscribers.heartbeat(time.monotonic(), limit)

    async def _close_idle(self) -> None:
        """Close client connections that sent nothing for ``limits.idle_timeout`` seconds.

        One sweep every quarter of the timeout (so a connection may idle up to 25% longer)
        costs far less than re-arming a timer on every line. A half line left behind is
        dropped with the connection, not answered.
        """
        idle = self.limits.idle_timeout
        while True:
            await asyncio.sleep(idle / 4)
            cutoff = time.monotonic() - idle
            for session in list(self.state.clients):
                if session.last_line < cutoff and session.task is None and not session.subscribed:
                    log.info("closing %s: idle for %g s", session.peer, idle)
                    session.hang_up()
