"""One herd server: the TCP I/O adapter around the protocol core, the store and the links.

The path of one IAMAT: ``_serve_client`` reads a line, ``parse_line`` makes an ``IAmAt``,
``_on_iamat`` makes the record, ``accept`` stores it and floods it to the neighbours
(written to their sockets at once), and only then is the reply written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from . import places as places_mod
from .config import HerdConfig
from .framing import LineBuffer, TooLong
from .journal import Journal
from .outbox import Outbox, TrafficLog
from .peers import HandshakeError, PeerManager, format_address
from .protocol import (
    At,
    Command,
    IAmAt,
    Peer,
    ProtocolError,
    Record,
    StartTls,
    Status,
    Subscribe,
    WhatsAt,
    WhereIs,
    invalid_reply,
    make_record,
    parse_line,
)
from .ratelimit import RateLimiter
from .store import Store
from .tls import server_context

__all__ = ["HerdServer"]

log = logging.getLogger("herd.server")

# Bytes asked of the socket per read: a whole pipelined batch of lines at once.
READ_SIZE = 65536
# Records per write while sending a subscriber its snapshot: big writes, bounded size.
SNAPSHOT_CHUNK = 1024


class _Client:
    """Per-connection state of a client connection."""

    __slots__ = (
        "busy",
        "host",
        "idle_closed",
        "invalid",
        "last_line",
        "out",
        "outbox",
        "peer",
        "reader",
        "taken_over",
        "tls",
        "writer",
    )

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, outbox: Outbox
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.outbox = outbox
        peername = writer.get_extra_info("peername")
        self.peer = format_address(peername)
        self.host = str(peername[0]) if isinstance(peername, tuple) else self.peer
        self.invalid = 0
        self.busy = False  # between reading a line and writing its reply
        self.tls = False
        self.out: list[bytes] = []  # replies waiting for the end of this loop iteration
        self.last_line = time.monotonic()
        self.taken_over = False
        self.idle_closed = False

    def send(self, reply: bytes) -> None:
        """Queue a whole reply; the outbox writes it after the journal and the peer links."""
        if not self.out:
            self.outbox.later(Outbox.CLIENTS, self.flush)
        self.out.append(reply)
        self.outbox.log(self.peer, b"<<", reply)

    def flush(self) -> None:
        if self.out:
            data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
            self.out.clear()
            if not self.writer.is_closing():
                self.writer.write(data)


class _Takeover(Exception):
    """Raised by a handler that takes the connection over (peer link, subscription) or
    ends it (too many invalid lines). ``then`` runs the connection from here on, outside
    the idle timeout of client connections."""

    def __init__(self, then: Callable[[bytes], Coroutine[Any, Any, None]] | None = None) -> None:
        super().__init__()
        self.then = then
        self.rest = b""  # bytes the client sent after the line that took over


Handler = Callable[[Command, _Client], Awaitable[bytes]]


class HerdServer:
    """A herd server named ``name`` in ``config``. ``start`` opens the port; ``close`` stops."""

    def __init__(
        self, config: HerdConfig, name: str, places: places_mod.PlacesProvider | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.address = config.server(name)
        self.limits = config.limits
        self.outbox = Outbox(TrafficLog(config.logs_dir / f"{name}.log"))
        self.store = Store()
        self.journal = Journal(config.data_dir / name, fsync=config.durability.fsync)
        self.retention = config.durability.retention
        self.peers = PeerManager(config, name, self.accept, self.store, self.outbox)
        self._sub_lines: list[bytes] = []  # records for subscribers, this iteration
        self.places = places or places_mod.make_provider(config.places, config.data_dir / "places")
        # Each subscriber's allowance of unsent bytes: the limit plus its snapshot, which it
        # is still reading when the first live records come.
        self._subscribers: dict[asyncio.StreamWriter, int] = {}
        self._clients: dict[asyncio.Task[None], _Client] = {}
        self._closing = False
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: dict[type, Handler] = {
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

    def recover(self) -> int:
        """Load every record from the journal (before accepting connections)."""
        count = 0
        for line in self.journal.recover():
            try:
                command = parse_line(line)
            except ProtocolError:
                command = None
            if isinstance(command, At) and not self._expired(command.record):
                count += self.store.offer(command.record)
            elif line.strip():
                log.warning("journal: skipped a line that is not a record: %r", line[:100])
        self.journal.open()
        return count

    async def start(self) -> None:
        recovered = self.recover()
        log.info("%s recovered %d records from %s", self.name, recovered, self.journal.directory)
        self._server = await asyncio.start_server(
            self._serve_client,
            self.address.host,
            self.address.port,
            limit=self.limits.max_line_bytes,
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
        if self._server is not None:
            self._server.close()
        for writer in self._subscribers:
            writer.close()
        busy = []
        for task, client in list(self._clients.items()):
            if client.busy:
                busy.append(task)
            else:
                task.cancel()
        if busy:
            log.info("%s: finishing %d replies in flight", self.name, len(busy))
            await asyncio.wait(busy, timeout=self.limits.shutdown_grace)
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await self.peers.close()
        await self.places.close()
        self.outbox.flush()
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
        # Into the kernel before anyone hears of it (the journal is the outbox's first stage):
        # an acknowledged record survives kill -9.
        if self.journal.append(line):
            self.outbox.later(Outbox.JOURNAL, self.journal.flush)
        if self.journal.appended > max(self.config.durability.compact_min, 2 * len(self.store)):
            self.journal.compact(r.line + b"\n" for r in self.store)
        self.peers.flood(record, source)
        if self._subscribers:
            if not self._sub_lines:
                self.outbox.later(Outbox.CLIENTS, self._push_to_subscribers)
            self._sub_lines.append(line)
        return True

    def _push_to_subscribers(self) -> None:
        data = b"".join(self._sub_lines)
        self._sub_lines.clear()
        for writer, allowance in list(self._subscribers.items()):
            if writer.transport.get_write_buffer_size() > allowance:
                log.warning(
                    "subscriber %s too slow, disconnected",
                    format_address(writer.get_extra_info("peername")),
                )
                self._subscribers.pop(writer, None)
                writer.close()
            elif not writer.is_closing():
                writer.write(data)

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

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        client = _Client(reader, writer, self.outbox)
        if self._closing:
            writer.close()  # accepted just before the server stopped listening
            return
        if len(self._clients) >= self.limits.max_connections:
            log.warning("refused %s: %d connections already open", client.peer, len(self._clients))
            writer.close()
            return
        self._clients[task] = client
        self.outbox.log(client.peer, b"++", b"connected")
        try:
            try:
                await self._client_loop(client)
            except _Takeover as takeover:
                if takeover.then is not None:
                    client.taken_over = True  # a peer link or a subscription: never idle
                    await takeover.then(takeover.rest)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("bug while serving %s", client.peer)
        finally:
            self._clients.pop(task, None)
            self._subscribers.pop(writer, None)
            self.outbox.flush()  # this connection's last replies go out before it closes
            writer.close()
            self.outbox.log(client.peer, b"--", b"closed")

    async def _client_loop(self, client: _Client) -> None:
        reader, writer = client.reader, client.writer
        clock = time.monotonic
        lines = LineBuffer(self.limits.max_line_bytes)
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                # A last line ended by end-of-stream is still a command (unless we closed the
                # connection for idling, and the "end" is ours).
                last = lines.end()
                if last is not None and not client.idle_closed:
                    client.busy = True
                    await self._answer(client, last)
                self.outbox.flush()
                await writer.drain()
                return
            items = lines.feed(data)
            for i, item in enumerate(items):
                if isinstance(item, TooLong):
                    self._too_long(client, item.head)
                    continue
                client.last_line = clock()  # see _close_idle
                client.busy = True
                tls_before = client.tls
                try:
                    await self._answer(client, item)
                except _Takeover as takeover:
                    # Whatever the client sent after the line that took the connection over.
                    rest = items[i + 1 :]
                    takeover.rest = b"".join(x for x in rest if isinstance(x, bytes))
                    takeover.rest += lines.pending
                    raise
                finally:
                    client.busy = False  # also when the connection is taken over
                if client.tls and not tls_before and (i + 1 < len(items) or lines.pending):
                    # Bytes that came in the clear behind STARTTLS must not pass as encrypted.
                    log.warning("refused %s: it sent data after STARTTLS in the clear", client.peer)
                    raise _Takeover
                if self._closing:
                    self.outbox.flush()
                    await writer.drain()
                    return
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()

    async def _ping_subscribers(self) -> None:
        """A PING to every subscriber each heartbeat, so that a subscriber whose server
        vanished without closing the connection notices the silence and moves on."""
        while True:
            await asyncio.sleep(self.config.peers.heartbeat)
            for writer in list(self._subscribers):
                if not writer.is_closing():
                    writer.write(b"PING\n")

    async def _close_idle(self) -> None:
        """Close client connections that sent no line for ``limits.idle_timeout`` seconds.

        One sweep every quarter of the timeout (so a connection may idle up to 25% longer)
        costs far less than re-arming a timer on every line.
        """
        idle = self.limits.idle_timeout
        while True:
            await asyncio.sleep(idle / 4)
            cutoff = time.monotonic() - idle
            for client in list(self._clients.values()):
                if client.last_line < cutoff and not client.busy and not client.taken_over:
                    log.info("closing %s: idle for %g s", client.peer, idle)
                    client.idle_closed = True  # its unfinished line is dropped, not answered
                    client.writer.close()

    async def _answer(self, client: _Client, line: bytes) -> None:
        self.outbox.log(client.peer, b">>", line)
        try:
            command = parse_line(line)
            if command is None:
                return
            if self._line_limit is not None and self._line_limit.take([client.host]):
                raise ProtocolError(
                    f"over {self.limits.lines_per_address:g} lines/s from {client.host}"
                )
            reply = await self._handlers.get(type(command), self._refuse)(command, client)
        except ProtocolError as exc:
            log.warning("invalid line from %s (%s)", client.peer, exc)
            reply = invalid_reply(line)
            client.invalid += 1
        if reply:
            client.send(reply)
        self._check_budget(client)

    def _check_budget(self, client: _Client) -> None:
        if client.invalid > self.limits.max_invalid_lines:
            log.warning(
                "hanging up on %s: more than %d invalid lines",
                client.peer,
                self.limits.max_invalid_lines,
            )
            raise _Takeover

    def _too_long(self, client: _Client, head: bytes) -> None:
        """Answer a line longer than the limit with ``?`` and its first bytes (the framing
        skips the rest of it)."""
        log.warning("line from %s over %d bytes", client.peer, self.limits.max_line_bytes)
        client.invalid += 1
        client.send(invalid_reply(head))
        self._check_budget(client)

    # -- handlers: each returns the whole reply, written in one write --------------------

    async def _refuse(self, command: Command, client: _Client) -> bytes:
        # AT from a client that is not an authenticated peer, or a handshake line out of turn.
        raise ProtocolError(f"{type(command).__name__} not allowed from a client")

    async def _on_iamat(self, command: Command, client: _Client) -> bytes:
        assert isinstance(command, IAmAt)
        if self._report_limit is not None and self._report_limit.take([command.client_id]):
            raise ProtocolError(
                f"over {self.limits.reports_per_client:g} reports/s for this client"
            )
        record = make_record(self.name, time.time_ns(), command)
        if self.accept(record, None):
            await self.journal.commit()  # with fsync on: wait for the group commit
        return record.line + b"\n"

    async def _on_whatsat(self, command: Command, client: _Client) -> bytes:
        assert isinstance(command, WhatsAt)
        record = self.store.get(command.client_id)
        if record is None:
            raise ProtocolError("WHATSAT for an unknown client")
        lat, lng = record.lat_lng
        payload = await self.places.nearby(lat, lng, command.radius_m, command.bound)
        return record.line + b"\n" + places_mod.render(payload) + b"\n\n"

    async def _on_whereis(self, command: Command, client: _Client) -> bytes:
        assert isinstance(command, WhereIs)
        record = self.store.get(command.client_id)
        if record is None:
            raise ProtocolError("WHEREIS for an unknown client")
        return record.line + b"\n"

    async def _on_status(self, command: Command, client: _Client) -> bytes:
        status = {
            "server": self.name,
            "pid": os.getpid(),
            "records": len(self.store),
            "places": self.places.state,
            "links": {
                name: ("up" if link.up else "down") for name, link in self.peers.links.items()
            },
        }
        return b"STATUS " + json.dumps(status, separators=(",", ":")).encode() + b"\n"

    async def _on_subscribe(self, command: Command, client: _Client) -> bytes:
        writer = client.writer
        # Records accepted before now go out to the present subscribers (and this client's
        # earlier replies to it); then the snapshot and the registration happen with no await
        # in between, so no record can fall between the two or come twice.
        self.outbox.flush()
        records = list(self.store)
        for i in range(0, len(records), SNAPSHOT_CHUNK):
            writer.write(b"".join(r.line + b"\n" for r in records[i : i + SNAPSHOT_CHUNK]))
        writer.write(b"SYNCED %d\n" % len(records))
        snapshot = writer.transport.get_write_buffer_size()
        self._subscribers[writer] = self.limits.subscriber_buffer + snapshot
        log.info("%s subscribed (%d records in snapshot)", client.peer, len(records))
        raise _Takeover(lambda rest: self._subscription(client, rest))

    async def _subscription(self, client: _Client, rest: bytes) -> None:
        # The subscription lasts until the client closes; its further lines are not commands.
        lines = LineBuffer(self.limits.max_line_bytes)
        data = rest
        while True:
            for item in lines.feed(data):
                line = item.head if isinstance(item, TooLong) else item
                if line.strip():
                    self.outbox.log(client.peer, b">>", line)
                    client.send(invalid_reply(line))
            data = await client.reader.read(READ_SIZE)
            if not data:
                return

    async def _on_starttls(self, command: Command, client: _Client) -> bytes:
        if self._tls is None or client.tls:
            raise ProtocolError("STARTTLS is not available here")
        self.outbox.flush()
        client.writer.write(b"STARTTLS\n")
        try:
            await client.writer.start_tls(self._tls)
        except (ssl.SSLError, ConnectionError) as exc:
            log.warning("refused TLS from %s: %s", client.peer, exc)
            raise _Takeover from None
        client.tls = True
        return b""

    async def _on_peer(self, command: Command, client: _Client) -> bytes:
        assert isinstance(command, Peer)
        if self._tls is not None and not client.tls:
            raise ProtocolError("this herd's peers must STARTTLS first")
        if command.server_id not in self.peers.links:
            raise ProtocolError(f"{command.server_id} is not a neighbour of {self.name}")
        self.outbox.flush()
        raise _Takeover(lambda rest: self._peer_link(command, client, rest))

    async def _peer_link(self, hello: Peer, client: _Client, rest: bytes) -> None:
        if rest:
            # A dialler waits for CHALLENGE before it sends anything else.
            log.warning(
                "refused peer connection from %s: it did not wait for CHALLENGE", client.peer
            )
            return
        try:
            await self.peers.accept(hello, client.reader, client.writer)
        except (HandshakeError, ProtocolError, TimeoutError) as exc:
            log.warning("refused peer connection from %s: %s", client.peer, exc)


def _limiter(rate: float) -> RateLimiter | None:
    return RateLimiter(rate, max(1.0, 2 * rate)) if rate > 0 else None
