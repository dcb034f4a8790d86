"""One herd server: the TCP I/O adapter around the protocol core, the store and the links.

The path of one IAMAT: ``ClientConnection.data_received`` splits the chunk into lines,
``parse_line`` makes an ``IAmAt``, ``_on_iamat`` makes the record, ``accept`` stores it,
journals it and floods it to the neighbours, and the reply is queued; at the end of the loop
iteration the outbox writes the peer links and subscribers, then the journal, then the replies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

from . import places as places_mod
from .config import HerdConfig
from .connection import LineConnection
from .framing import LineBuffer, TooLong
from .journal import Journal
from .outbox import Outbox, TrafficLog
from .peers import PeerManager, format_address
from .protocol import (
    MAX_POINT_LINE,
    PEER_LINE_LIMIT,
    At,
    Command,
    IAmAt,
    Peer,
    Ping,
    ProtocolError,
    Record,
    StartTls,
    Status,
    Subscribe,
    Synced,
    WhatsAt,
    WhereIs,
    format_status,
    invalid_reply,
    key_to_ns,
    make_record,
    parse_line,
)
from .ratelimit import RateLimiter
from .store import Store
from .tls import server_context

__all__ = ["HerdServer"]

log = logging.getLogger("herd.server")

# Records per write while sending a subscriber its snapshot: big writes (25 KB of typical
# records), bounded size (at most 256 of the longest records, 350 KB).
SNAPSHOT_CHUNK = 256
# The snapshot is written as the subscriber reads it: a chunk whenever its socket buffer holds
# at most this much. Enough to keep a fast reader busy between two wake-ups; so little that
# a subscriber that stops reading pins no more of it than this (plus a chunk).
SNAPSHOT_WINDOW = 256 * 1024
# Heartbeats a subscriber with unread data may go without reading a byte before it is cut off:
# the gateway gives up on a silent server after three, so three is what a live one tolerates.
STALLED_HEARTBEATS = 3
# Connections past max_connections (or past an address's share of them) still get a few slots
# in which a peer handshake alone may begin: slow clients holding every client slot must not
# keep a neighbour out, or the herd partitions. Two per neighbour: the one redialling now and
# one whose dialler gave up on it. A newer connection takes the oldest one's slot, so holding
# them costs an attacker a fresh connection every few milliseconds (a neighbour sends PEER in
# its first round trip), and each lasts at most peers.handshake_timeout.
HANDSHAKE_SLOTS_PER_NEIGHBOUR = 2

# What a handler gives back: the whole reply now, or a coroutine that makes it (a WHATSAT
# waiting for places, an IAMAT waiting for its fsync, STARTTLS).
Reply = bytes | Coroutine[Any, Any, bytes]


class ClientConnection(asyncio.Protocol):
    """A connection accepted on the server's port: a client, until it subscribes or proves
    to be a neighbour (``PEER``), when it changes hands.

    Lines are answered in order, as they arrive, right in ``data_received``: most replies
    (IAMAT, WHEREIS, STATUS) are made at once. A line whose reply must wait runs in a task;
    reading pauses, and the lines behind it wait in ``backlog`` until it is answered.
    """

    def __init__(self, server: HerdServer) -> None:
        self.server = server
        self.outbox = server.outbox
        self.lines = LineBuffer(server.limits.max_line_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.tag_in = self.tag_out = b""
        self.host = "?"
        self.invalid = 0
        self.tls = False
        self.out: list[bytes] = []  # replies waiting for the end of this loop iteration
        self.last_line = time.monotonic()
        self.task: asyncio.Task[None] | None = None  # a line being answered in a task
        self.backlog: list[bytes | TooLong] = []  # lines waiting behind it
        self.subscribed = False
        self.subscription: Subscription | None = None
        self.spare = False  # in a handshake slot: only STARTTLS or PEER may come
        self.expiry: asyncio.TimerHandle | None = None  # a handshake slot's deadline
        self.closed = False
        self._eof = False
        self._write_paused = False
        self._batch: list[bytes | TooLong] = []
        self._at = 0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        self.peer = format_address(peername)
        self.tag_in = TrafficLog.tag(self.peer, ">>")
        self.tag_out = TrafficLog.tag(self.peer, "<<")
        self.host = str(peername[0]) if isinstance(peername, tuple) else self.peer
        self.server._connected(self)

    def data_received(self, data: bytes) -> None:
        items = self.lines.feed(data)
        if items:
            # Idle means no complete line (see _close_idle): a client that dribbles a byte at a
            # time without ever ending a line does not keep its slot.
            self.last_line = time.monotonic()
        if self.task is not None:
            self.backlog += items  # reading is paused; this chunk was already on its way
        else:
            self._answer_all(items)

    def eof_received(self) -> bool:
        # The client is done sending but still reads: answer everything, then close.
        self._eof = True
        if self.task is None:
            self._end()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()
        self.server._disconnected(self)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests until it does.
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.subscription is not None:
            self.subscription.pump()  # the next part of the snapshot
        if self.transport is not None and self.task is None and not self.closed:
            self.transport.resume_reading()

    # -- answering ----------------------------------------------------------------------------

    def _answer_all(self, items: list[bytes | TooLong]) -> None:
        server = self.server
        self._batch = items  # for followed()
        for i, item in enumerate(items):
            if self.closed:
                return
            if self.subscribed:
                server._after_subscribing(self, item)
                continue
            if isinstance(item, TooLong):
                server._too_long(self, item.head)
                continue
            self._at = i
            pending = server._answer(self, item)
            if pending is not None:
                self.backlog = items[i + 1 :]
                self._wait(pending)
                return
            if server._closing:
                self.hang_up()  # each connection ends after its line in progress
                return

    def followed(self) -> bool:
        """Whether the client sent anything after the line being answered."""
        return self._at + 1 < len(self._batch) or bool(self.lines.pending)

    def _wait(self, pending: Coroutine[Any, Any, None]) -> None:
        if self.transport is not None:
            self.transport.pause_reading()
        self.task = asyncio.create_task(self._finish(pending))

    async def _finish(self, pending: Coroutine[Any, Any, None]) -> None:
        try:
            await pending
        except Exception:
            log.exception("bug while serving %s", self.peer)
            self.hang_up()
        finally:
            self.task = None
        backlog, self.backlog = self.backlog, []
        self._answer_all(backlog)
        if self.task is not None or self.closed:
            return
        if self.server._closing:
            self.hang_up()
        elif self._eof:
            self._end()
        elif not self._write_paused and self.transport is not None:
            self.transport.resume_reading()

    def _end(self) -> None:
        """End of the client's stream: a last line without its newline is still a command;
        then the replies go out and the connection closes."""
        last = self.lines.end()
        if last is not None and not self.subscribed:
            self._answer_all([last + b"\n"])
            if self.task is not None:
                return  # _finish ends it
        if self.subscription is not None and not self.subscription.synced:
            self.subscription.close_when_synced = True  # the snapshot is still on its way
            return
        self.hang_up()

    def send(self, reply: bytes) -> None:
        """Queue a whole reply; the outbox writes it after the journal and the peer links."""
        if not self.out:
            self.outbox.later(Outbox.CLIENTS, self.flush)
        self.out.append(reply)
        self.outbox.log(self.tag_out, reply)

    def flush(self) -> None:
        if self.out:
            data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
            self.out.clear()
            self.write(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def hang_up(self) -> None:
        """Read no more, and close once the replies already made are written: the close is
        the outbox's last step for this connection in this iteration."""
        if not self.closed:
            self.closed = True
            self.outbox.later(Outbox.CLIENTS, self._close)

    def _close(self) -> None:
        self.flush()  # a reply queued after the hang-up was registered
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is unsent (a subscriber that does not read would keep
        its buffer for as long as it likes if the close waited for it)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def hand_over(self, protocol: LineConnection) -> None:
        """Give the connection to ``protocol`` (a peer link's), which reads it from now on."""
        assert self.transport is not None
        self.closed = True  # for this object: the connection lives on under its new owner
        self.server._disconnected(self, handed_over=True)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)


class Subscription:
    """One SUBSCRIBE stream: the snapshot, written as the socket drains, then ``SYNCED``, then
    the live records, in that order.

    The snapshot is a list of references to the records held at SUBSCRIBE (records are never
    changed, only replaced), so it is the state of that instant however long the subscriber
    takes to read it; live records accepted meanwhile wait in ``backlog`` behind it. What one
    subscriber pins is bounded: its socket buffer holds at most SNAPSHOT_WINDOW plus a chunk of
    snapshot, and live records (in the buffer or the backlog) beyond ``limits.subscriber_buffer``
    cut it off; so is its time: STALLED_HEARTBEATS without reading and it is cut off.
    """

    def __init__(
        self, conn: ClientConnection, records: list[Record], allowance: int, points: bool
    ) -> None:
        self.conn = conn
        self.points = points  # SUBSCRIBE POINTS: records with attributes as POINT lines
        self.records = records
        self.count = len(records)
        self.sent = 0  # snapshot records written
        self.synced = False
        self.backlog: list[bytes] = []  # what comes after SYNCED, until it is written
        self.backlog_bytes = 0
        self.allowance = allowance
        self.written = 0  # bytes handed to the transport
        self.delivered = 0  # of them, bytes the transport had passed on at the last check
        self.progress = time.monotonic()  # when the subscriber last read something
        self.close_when_synced = False  # it sent EOF: close once the snapshot is out

    def pump(self) -> None:
        """Write snapshot chunks while the socket buffer is below the window; after the last,
        ``SYNCED`` and the backlog. Called at SUBSCRIBE and whenever the socket drains."""
        transport = self.conn.transport
        if self.synced or transport is None or transport.is_closing():
            return
        records = self.records
        while self.sent < self.count and transport.get_write_buffer_size() <= SNAPSHOT_WINDOW:
            chunk = records[self.sent : self.sent + SNAPSHOT_CHUNK]
            self.sent += len(chunk)
            if self.points:
                self._write(transport, b"".join([r.wire() + b"\n" for r in chunk]))
            else:
                self._write(transport, b"".join([r.line + b"\n" for r in chunk]))
        if self.sent < self.count:
            return  # resumed by resume_writing once the subscriber has read some
        self.records = []  # the references go with the snapshot
        self.synced = True
        self._write(transport, Synced(self.count).encode())
        if self.backlog:
            self._write(transport, b"".join(self.backlog))
            self.backlog.clear()
            self.backlog_bytes = 0
        if self.close_when_synced:
            self.conn.hang_up()

    def send(self, data: bytes) -> bool:
        """Send ``data`` after everything before it; False if the subscriber is over its
        allowance (the caller cuts it off)."""
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            return True
        unread = transport.get_write_buffer_size()
        if not self.synced:
            self.backlog.append(data)
            self.backlog_bytes += len(data)
            return unread + self.backlog_bytes <= self.allowance
        if unread > self.allowance:
            return False
        self._write(transport, data)
        return True

    def _write(self, transport: asyncio.Transport, data: bytes) -> None:
        self.written += len(data)
        transport.write(data)

    def stalled(self, now: float, limit: float) -> bool:
        """Whether the subscriber has had data waiting, and read none of it, for ``limit``
        seconds."""
        transport = self.conn.transport
        if transport is None:
            return False
        unread = transport.get_write_buffer_size()
        delivered = self.written - unread
        if delivered > self.delivered or not (unread or self.backlog or not self.synced):
            self.delivered = delivered
            self.progress = now
            return False
        return now - self.progress > limit


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
        self._sub_lines: list[bytes] = []  # records for subscribers, this iteration
        self._sub_points: dict[int, bytes] = {}  # of them, the POINT lines, by index
        self.places = places or places_mod.make_provider(config.places, config.data_dir / "places")
        self._subscribers: dict[ClientConnection, Subscription] = {}
        self._clients: set[ClientConnection] = set()
        self._per_address: dict[str, int] = {}  # client connections per remote address
        # Connections in handshake slots, oldest first (see HANDSHAKE_SLOTS_PER_NEIGHBOUR).
        self._spare: dict[ClientConnection, None] = {}
        self._spare_slots = HANDSHAKE_SLOTS_PER_NEIGHBOUR * len(config.neighbours(name))
        self._closing = False
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: dict[type, Callable[[Any, ClientConnection], Reply]] = {
            IAmAt: self._on_iamat,
            WhatsAt: self._on_whatsat,
            WhereIs: self._on_whereis,
            Status: self._on_status,
            Subscribe: self._on_subscribe,
            Peer: self._on_peer,
            StartTls: self._on_starttls,
        }
        self._tls = server_context(config.tls) if config.tls is not None else None
        self._line_limit = _limiter(self.limits.lines_per_address)
        self._report_limit = _limiter(self.limits.reports_per_client)
        self._max_future_ns = round(self.limits.max_future * 1e9)
        self.dropped = 0  # journal lines dropped by recover()

    def recover(self) -> int:
        """Load every record from the journal (before accepting connections).

        A line that is not a record within the protocol's bounds (a torn last line, or a
        record an earlier version accepted past today's bounds) is dropped with one log line.
        Returns the number of records loaded; ``self.dropped`` counts the lines dropped.
        """
        count = 0
        self.dropped = 0
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
                self.dropped += 1
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
            lambda: ClientConnection(self),
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
        self._closing = True
        log.info("%s stopping: no new connections", self.name)
        if self._server is not None:
            self._server.close()
        for conn in list(self._subscribers):
            conn.hang_up()
        busy = []
        for conn in list(self._clients):
            if conn.task is not None:
                busy.append(conn.task)
            else:
                conn.hang_up()
        if busy:
            log.info("%s: finishing %d replies in flight", self.name, len(busy))
            await asyncio.wait(busy, timeout=self.limits.shutdown_grace)
        cancelled = []
        for conn in list(self._clients):
            if conn.task is not None:
                conn.task.cancel()
                cancelled.append(conn.task)
            conn.hang_up()
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

    def _connected(self, conn: ClientConnection) -> None:
        limits = self.limits
        per_address = limits.connections_per_address
        if self._closing:
            conn.hang_up()  # accepted just before the server stopped listening
        elif len(self._clients) < limits.max_connections and (
            not per_address or self._per_address.get(conn.host, 0) < per_address
        ):
            self._clients.add(conn)
            self._per_address[conn.host] = self._per_address.get(conn.host, 0) + 1
            self.outbox.log(TrafficLog.tag(conn.peer, "++"), b"connected\n")
        elif self._spare_slots:
            self._take_spare_slot(conn)
        else:
            log.warning("refused %s: %d connections already open", conn.peer, len(self._clients))
            conn.hang_up()

    def _take_spare_slot(self, conn: ClientConnection) -> None:
        """Give ``conn`` a handshake slot, taking the oldest one's if all are held."""
        if len(self._spare) >= self._spare_slots:
            oldest = next(iter(self._spare))
            log.warning("closing %s: its handshake slot goes to a newer connection", oldest.peer)
            self._leave_spare_slot(oldest)
            oldest.hang_up()
        log.info("%s: no client slot for it, it may only begin a peer handshake", conn.peer)
        conn.spare = True
        self._spare[conn] = None
        timeout = self.config.peers.handshake_timeout
        conn.expiry = asyncio.get_running_loop().call_later(
            timeout, self._spare_expired, conn, timeout
        )
        self.outbox.log(TrafficLog.tag(conn.peer, "++"), b"connected (handshake slot)\n")

    def _spare_expired(self, conn: ClientConnection, timeout: float) -> None:
        if conn in self._spare:
            log.warning("closing %s: no peer handshake within %g s", conn.peer, timeout)
            self._leave_spare_slot(conn)
            conn.hang_up()

    def _leave_spare_slot(self, conn: ClientConnection) -> None:
        self._spare.pop(conn, None)
        if conn.expiry is not None:
            conn.expiry.cancel()
            conn.expiry = None

    def _disconnected(self, conn: ClientConnection, handed_over: bool = False) -> None:
        what = b"handed to a peer link\n" if handed_over else b"closed\n"
        if conn in self._clients:
            self._clients.discard(conn)
            left = self._per_address.pop(conn.host, 1) - 1
            if left:
                self._per_address[conn.host] = left
            self._subscribers.pop(conn, None)
            self.outbox.log(TrafficLog.tag(conn.peer, "--"), what)
        elif conn.spare:
            self._leave_spare_slot(conn)
            self.outbox.log(TrafficLog.tag(conn.peer, "--"), what)

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
        if self._subscribers:
            if not self._sub_lines:
                # With the peer links: subscribers pass records on too (the gateway's map).
                self.outbox.later(Outbox.PEERS, self._push_to_subscribers)
            if wire is not line:
                self._sub_points[len(self._sub_lines)] = wire
            self._sub_lines.append(line)
        return True

    def _push_to_subscribers(self) -> None:
        lines, points = self._sub_lines, self._sub_points
        data = b"".join(lines)
        # For SUBSCRIBE POINTS: the same records, with POINT lines where they have attributes.
        with_points = (
            b"".join([points.get(i, line) for i, line in enumerate(lines)]) if points else data
        )
        self._sub_lines, self._sub_points = [], {}
        for conn, subscription in list(self._subscribers.items()):
            if not subscription.send(with_points if subscription.points else data):
                log.warning("subscriber %s too slow, disconnected", conn.peer)
                self._subscribers.pop(conn, None)
                conn.abort()

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

    # -- client connections --------------------------------------------------------------

    async def _ping_subscribers(self) -> None:
        """A PING to every subscriber each heartbeat, so that a subscriber whose server
        vanished without closing the connection notices the silence and moves on; and the
        cut-off of subscribers that read nothing for STALLED_HEARTBEATS (a snapshot streaming
        is no silence, so it needs no PING)."""
        heartbeat = self.config.peers.heartbeat
        limit = STALLED_HEARTBEATS * heartbeat
        while True:
            await asyncio.sleep(heartbeat)
            now = time.monotonic()
            for conn, subscription in list(self._subscribers.items()):
                if subscription.stalled(now, limit):
                    log.warning(
                        "subscriber %s read nothing for %g s, disconnected", conn.peer, limit
                    )
                    self._subscribers.pop(conn, None)
                    conn.abort()
                elif subscription.synced and not subscription.send(Ping().encode()):
                    log.warning("subscriber %s too slow, disconnected", conn.peer)
                    self._subscribers.pop(conn, None)
                    conn.abort()

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
            for conn in list(self._clients):
                if conn.last_line < cutoff and conn.task is None and not conn.subscribed:
                    log.info("closing %s: idle for %g s", conn.peer, idle)
                    conn.hang_up()

    def _answer(self, conn: ClientConnection, line: bytes) -> Coroutine[Any, Any, None] | None:
        """Answer one line: the reply is queued now, or the coroutine returned queues it."""
        self.outbox.log(conn.tag_in, line)
        if conn.spare:
            return self._answer_spare(conn, line)
        try:
            command = parse_line(line)
            if command is None:
                return None
            if self._line_limit is not None and self._line_limit.take([conn.host]):
                raise ProtocolError(
                    f"over {self.limits.lines_per_address:g} lines/s from {conn.host}"
                )
            reply = self._handlers.get(type(command), self._refuse)(command, conn)
        except ProtocolError as exc:
            reply = self._invalid(conn, line, exc)
        except Exception:
            # A bug, or the disk failing under a compaction: this client gets no answer
            # (nothing unanswered counts as acknowledged) and the rest are served.
            log.exception("bug while serving %s", conn.peer)
            conn.hang_up()
            return None
        if isinstance(reply, bytes):
            if reply:
                conn.send(reply)
            self._check_budget(conn)
            return None
        return self._answer_later(conn, line, reply)

    def _answer_spare(
        self, conn: ClientConnection, line: bytes
    ) -> Coroutine[Any, Any, None] | None:
        """A line on a handshake slot: STARTTLS or PEER go on, anything else ends it unanswered
        (nobody but a neighbour should be there, and the slots are few)."""
        try:
            command = parse_line(line)
            if not isinstance(command, Peer | StartTls):
                raise ProtocolError("not a peer handshake")
            reply = self._handlers[type(command)](command, conn)
        except ProtocolError as exc:
            log.warning("closing %s in a handshake slot: %s", conn.peer, exc)
            self._leave_spare_slot(conn)
            conn.hang_up()
            return None
        if isinstance(reply, bytes):
            if reply:
                conn.send(reply)
            return None
        return self._answer_later(conn, line, reply)

    async def _answer_later(
        self, conn: ClientConnection, line: bytes, pending: Coroutine[Any, Any, bytes]
    ) -> None:
        try:
            reply = await pending
        except ProtocolError as exc:
            reply = self._invalid(conn, line, exc)
        if reply:
            conn.send(reply)
        self._check_budget(conn)

    def _invalid(self, conn: ClientConnection, line: bytes, exc: ProtocolError) -> bytes:
        log.warning("invalid line from %s (%s)", conn.peer, exc)
        conn.invalid += 1
        return invalid_reply(line)

    def _check_budget(self, conn: ClientConnection) -> None:
        if conn.invalid > self.limits.max_invalid_lines:
            log.warning(
                "hanging up on %s: more than %d invalid lines",
                conn.peer,
                self.limits.max_invalid_lines,
            )
            conn.hang_up()

    def _too_long(self, conn: ClientConnection, head: bytes) -> None:
        """Answer a line longer than the limit with ``?`` and its first bytes (the framing
        skips the rest of it)."""
        log.warning("line from %s over %d bytes", conn.peer, self.limits.max_line_bytes)
        conn.invalid += 1
        conn.send(invalid_reply(head))
        self._check_budget(conn)

    def _after_subscribing(self, conn: ClientConnection, item: bytes | TooLong) -> None:
        # A subscription lasts until the client closes; its further lines are not commands.
        line = item.head if isinstance(item, TooLong) else item
        subscription = self._subscribers.get(conn)
        if line.strip() and subscription is not None:
            self.outbox.log(conn.tag_in, line)
            reply = invalid_reply(line)
            self.outbox.log(conn.tag_out, reply)
            subscription.send(reply)  # in the stream's order: after the snapshot

    # -- handlers: each returns the whole reply (or a coroutine making it) -------------------

    def _refuse(self, command: Command, conn: ClientConnection) -> Reply:
        # AT from a client that is not an authenticated peer, or a handshake line out of turn.
        raise ProtocolError(f"{type(command).__name__} not allowed from a client")

    def _on_iamat(self, command: IAmAt, conn: ClientConnection) -> Reply:
        # Per address and client ID: a client elsewhere cannot spend the budget of a device
        # that reports through the gateway (docs/security.md).
        limit = self._report_limit
        if limit is not None and limit.take([f"{conn.host} {command.client_id}"]):
            raise ProtocolError(
                f"over {self.limits.reports_per_client:g} reports/s for this client"
            )
        now = time.time_ns()
        latest = now + self._max_future_ns
        key = command.time_key
        # Whole seconds first: the exact nanoseconds only for a time within a second of it.
        if key is not None and key[0] >= latest // 1_000_000_000 and key_to_ns(key) > latest:
            # Only here, where the client talks to the herd: a peer never refuses a record
            # for it (its clock may differ, and nothing it accepted may be refused).
            raise ProtocolError(f"time more than {self.limits.max_future:g} s ahead")
        record = make_record(self.name, now, command)
        reply = record.line + b"\n"
        if self.accept(record, None) and self.journal.fsync:
            return self._after_commit(reply)  # wait for the group commit
        return reply

    async def _after_commit(self, reply: bytes) -> bytes:
        await self.journal.commit()
        return reply

    def _on_whatsat(self, command: WhatsAt, conn: ClientConnection) -> Reply:
        record = self.store.get(command.client_id)
        if record is None:
            raise ProtocolError("WHATSAT for an unknown client")
        return self._places_reply(record, command)

    async def _places_reply(self, record: Record, command: WhatsAt) -> bytes:
        lat, lng = record.lat_lng
        payload = await self.places.nearby(lat, lng, command.radius_m, command.bound)
        return record.line + b"\n" + places_mod.render(payload) + b"\n\n"

    def _on_whereis(self, command: WhereIs, conn: ClientConnection) -> Reply:
        record = self.store.get(command.client_id)
        if record is None:
            raise ProtocolError("WHEREIS for an unknown client")
        return (record.wire() if command.points else record.line) + b"\n"

    def _on_status(self, command: Status, conn: ClientConnection) -> Reply:
        status = {
            "server": self.name,
            "pid": os.getpid(),
            "records": len(self.store),
            "places": self.places.state,
            "links": {
                name: ("up" if link.up else "down") for name, link in self.peers.links.items()
            },
        }
        return format_status(status)

    def _on_subscribe(self, command: Subscribe, conn: ClientConnection) -> Reply:
        if len(self._subscribers) >= self.limits.max_subscribers:
            raise ProtocolError(f"{len(self._subscribers)} subscribers already")
        # Records accepted before now go out to the present subscribers (and this client's
        # earlier replies to it); then the snapshot is taken and the subscriber registered at
        # once, so no record can fall between the two or come twice.
        self.outbox.flush()
        # What it may pin: its live records up to the limit, and the part of the snapshot in
        # its socket buffer (the window and a chunk).
        allowance = (
            self.limits.subscriber_buffer + SNAPSHOT_WINDOW + SNAPSHOT_CHUNK * MAX_POINT_LINE
        )
        subscription = Subscription(conn, list(self.store), allowance, command.points)
        self._subscribers[conn] = subscription
        conn.subscription = subscription
        conn.subscribed = True
        log.info("%s subscribed (%d records in snapshot)", conn.peer, subscription.count)
        subscription.pump()
        return b""

    def _on_starttls(self, command: StartTls, conn: ClientConnection) -> Reply:
        if self._tls is None or conn.tls:
            raise ProtocolError("STARTTLS is not available here")
        if conn.followed():
            # Bytes that came in the clear behind STARTTLS must not pass as encrypted.
            log.warning("refused %s: it sent data after STARTTLS in the clear", conn.peer)
            conn.hang_up()
            return b""
        return self._start_tls(conn, self._tls)

    async def _start_tls(self, conn: ClientConnection, context: ssl.SSLContext) -> bytes:
        transport = conn.transport
        assert transport is not None
        self.outbox.flush()
        self.outbox.log(conn.tag_out, b"STARTTLS\n")
        transport.write(b"STARTTLS\n")
        loop = asyncio.get_running_loop()
        try:
            tls_transport = await loop.start_tls(transport, conn, context, server_side=True)
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.warning("refused TLS from %s: %s", conn.peer, exc)
            conn.hang_up()
            return b""
        if tls_transport is None:
            conn.hang_up()
            return b""
        conn.transport = tls_transport
        conn.tls = True
        return b""

    def _on_peer(self, command: Peer, conn: ClientConnection) -> Reply:
        if self._tls is not None and not conn.tls:
            raise ProtocolError("this herd's peers must STARTTLS first")
        if command.server_id not in self.peers.links:
            raise ProtocolError(f"{command.server_id} is not a neighbour of {self.name}")
        self.outbox.flush()
        if conn.followed():
            # A dialler waits for CHALLENGE before it sends anything else.
            log.warning("refused peer connection from %s: it did not wait for CHALLENGE", conn.peer)
            conn.hang_up()
            return b""
        link = LineConnection(PEER_LINE_LIMIT)
        conn.hand_over(link)
        self.peers.accept(command, link)
        return b""


def _limiter(rate: float) -> RateLimiter | None:
    return RateLimiter(rate, max(1.0, 2 * rate)) if rate > 0 else None
