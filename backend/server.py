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
from .history import History
from .journal import Journal
from .outbox import Outbox, TrafficLog
from .peers import PeerManager
from .protocol import At, Forget, ProtocolError, Put, Record, parse_line
from .replicas import Deletions, Points, Replica
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
        self._compact_min = config.durability.compact_min
        self.history: History | None = None
        if config.history.enabled:
            self.history = History(
                config.data_dir / name,
                keep_days=config.history.keep_days,
                max_points=config.history.max_points_per_client,
                durable=config.durability.fsync,
            )
        # The kinds of replicated objects the links carry (backend/replicas.py).
        replicas: dict[str, Replica] = {}
        if self.history is not None:
            replicas["point"] = Points(self.history, self._put_point)
            replicas["forget"] = Deletions(self.history, self._put_forget)
        self.peers = PeerManager(config, name, self.accept, self.store, self.outbox, replicas)
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
        """Open history and load every record from the journal (before accepting
        connections; in the event loop).

        A line that is not a record within the protocol's bounds (a torn last line, or a
        record an earlier version accepted past today's bounds) is dropped with one log line.
        Returns the number of records loaded; ``self.dropped`` counts the lines dropped.
        """
        count = 0
        state = self.state
        state.dropped = 0
        # History replays what a crash may have left out of its database: the segments since
        # the last compaction; all of the journal when the database is new (a data directory
        # of a version before history).
        history = self.history
        everything = history.open() if history is not None else False
        for segment, line in self.journal.recover_marked():
            try:
                command = parse_line(line)
            except ProtocolError as exc:
                command = None
                reason = str(exc)
            else:
                reason = "not a record"
            if isinstance(command, At):
                record = command.record
                if history is not None and (segment or everything):
                    history.add(record)
                if not self._expired(record):
                    count += self.store.offer(record)
            elif line.strip():
                state.dropped += 1
                log.warning("journal: dropped a line (%s): %r", reason, line[:100])
        if history is not None:
            history.flush()  # the replayed points to the writer, which drops those it holds
        self.journal.open()
        return count

    async def start(self) -> None:
        recovered = self.recover()
        log.info("%s recovered %d records from %s", self.name, recovered, self.journal.directory)
        if self.dropped:
            # Rewrite the journal without the dropped lines, so they are gone from the disk.
            self._compact()
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
        if self.history is not None:
            log.info("%s: history to disk", self.name)
            await self.history.close()
        self.outbox.traffic.close()
        log.info("%s stopped", self.name)

    # -- the store ---------------------------------------------------------------------------

    def accept(self, record: Record, source: str | None, *, unheld: bool = False) -> bool:
        """Store ``record`` if newer, then flood it and push it to subscribers; with history
        on, keep an older one as a late point (``_late``).

        ``source`` is the neighbour it came from (None for a client's IAMAT): it is never
        sent back there; ``unheld``: history was just found not to hold its point
        (``History.holds_line``). Returns whether the record was kept, and so journaled: as
        the newest record, or as a late point new to this server.
        """
        if self.retention and self._expired(record):
            return False
        if not self.store.offer(record):
            if self.history is None:
                return False
            held = self.store.get(record.client_id)
            # A flood brings each record by every path: a copy of the newest is no news, and
            # costs no lookup.
            if held is not None and held.key == record.key:
                return False
            return self._late(record, source, unheld)
        if self.history is not None:
            self.history.add(record)
        line = record.line + b"\n"
        # What travels between servers and into the journal: the AT line, or with the
        # record's attributes a POINT line.
        wire = record.wire() + b"\n" if record.attributes else line
        # Into the kernel before its client has the reply (the journal's stage of the outbox
        # comes before the replies'): an acknowledged record survives kill -9.
        journal = self.journal
        if journal.append(wire):
            self.outbox.later(Outbox.JOURNAL, journal.flush)
        if journal.appended > self._compact_min:  # never due below it: no call for the rest
            self._compact_if_due()
        self.peers.flood(record, wire, source)
        if self._streams:
            # With the peer links: subscribers pass records on too (the gateway's map).
            self.state.subscribers.queue(line, wire)
        return True

    def _late(self, record: Record, source: str | None, unheld: bool) -> bool:
        """A point older than its client's newest record: kept in history if new here,
        journaled like a record (so its acknowledgement survives kill -9) and passed on as
        ``PUT point`` (never as AT: the protocol forwards only newer records)."""
        assert self.history is not None
        if not self.history.offer(record, unheld=unheld):
            return False
        self.history.late += 1
        wire = record.wire() + b"\n"
        journal = self.journal
        if journal.append(wire):
            self.outbox.later(Outbox.JOURNAL, journal.flush)
        if journal.appended > self._compact_min:  # as in accept: never due below it
            self._compact_if_due()
        self.peers.flood(record, b"PUT point " + wire, source)
        subscribers = self.state.subscribers
        if subscribers.late:
            subscribers.queue_late(record.line + b"\n", wire)
        return True

    def _put_point(self, payload: bytes, source: str, unheld: bool) -> None:
        """A neighbour's ``PUT point`` (``unheld``: history was just found not to hold it,
        ``replicas.Points.put``): the same as its AT or POINT line would be."""
        try:
            command = parse_line(payload)
        except ProtocolError as exc:
            log.warning("link to %s: invalid point (%s): %r", source, exc, payload[:200])
            return
        if isinstance(command, At):
            self.accept(command.record, source, unheld=unheld)
        else:
            log.warning("link to %s: PUT point of a %s", source, type(command).__name__)

    def forget(self, command: Forget, source: str | None) -> None:
        """Delete a client's points up to a time, here and (if that was news here) on every
        other server: a deletion floods like a point."""
        assert self.history is not None
        if self.history.forget(command.client_id, command.until_ns):
            self.peers.flood_put(Put("forget", command.payload()).encode(), source)

    def _put_forget(self, payload: bytes, source: str) -> None:
        if self.history is None:
            return
        try:
            command = Forget.from_payload(payload)
        except ProtocolError as exc:
            log.warning("link to %s: invalid deletion (%s): %r", source, exc, payload[:200])
            return
        self.forget(command, source)

    def _compact_if_due(self) -> None:
        """Compact once the journal holds more than compact_min records and twice the store."""
        if self.state.closing:
            return
        if self.journal.appended > max(self.config.durability.compact_min, 2 * len(self.store)):
            self._compact()

    def _compact(self) -> None:
        """Compact the journal; with history on, its older segments go only once every point
        in them is in the history database. Appends that came while it ran may call for the
        next one at once (nothing else would start it if no record came after)."""
        ready = self.history.wait_saved if self.history is not None else None
        running = self.journal.compact((r.wire() + b"\n" for r in self.store), ready)
        if running is not None:
            running.add_done_callback(lambda _: self._compact_if_due())

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
