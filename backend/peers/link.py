"""The link to one neighbour: its handshake, its queue of records, flooding, anti-entropy and
heartbeats, over one connection at a time, dialled (with backoff) by the server whose name
sorts first and accepted by the other; both then send AT lines over it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from ..config import HerdConfig, ServerAddress
from ..framing import TooLong
from ..outbox import Outbox, TrafficLog
from ..protocol import (
    PEER_LINE_LIMIT,
    At,
    Bye,
    Digests,
    Have,
    Ids,
    Peer,
    Ping,
    ProtocolError,
    Put,
    Record,
    Sync,
    format_digests,
    parse_line,
)
from ..replicas import Replica
from ..store import Store
from ..tls import client_context
from ..transport import Lines, LineTransport, format_address
from .handshake import Handshake, HandshakeError
from .replication import answer_have, answer_ids, send_tops

__all__ = [
    "FLUSH_BATCH",
    "HANDSHAKES_PER_LINK",
    "WRITE_HIGH_WATER",
    "PeerLink",
    "RecordHandler",
]

log = logging.getLogger("herd.peers")

# Above this many unsent bytes in a link's socket buffer, records wait in the link's own
# queue instead, so one slow neighbour costs memory up to its queue bound and nothing else.
WRITE_HIGH_WATER = 1024 * 1024
# Records written to the socket per flush once a backlog exists: large enough to amortise
# the write, small enough that a flush never holds the loop for long.
FLUSH_BATCH = 512

PING_LINE = Ping().encode()
# Seconds a link that looks silent waits before it is dropped, so that lines already in its
# socket are read (a timer due after a held loop runs before the reads): long enough for one
# pass of the loop, nothing next to the three heartbeats of silence it confirms.
CONFIRM_SILENCE_S = 0.1
# Acceptor handshakes waiting for PROOF per neighbour: a neighbour dials one at a time, so two
# cover a redial that overtakes a stale attempt. Anyone can send PEER with a neighbour's name;
# a newer handshake ends the oldest, so stalled ones cannot pile up or lock the neighbour out.
HANDSHAKES_PER_LINK = 2

RecordHandler = Callable[[Record, str], object]


class PeerLink:
    """The link to one neighbour and its queue of records waiting to be sent."""

    def __init__(
        self,
        config: HerdConfig,
        local: str,
        name: str,
        on_record: RecordHandler,
        store: Store,
        outbox: Outbox,
        key: bytes,
        replicas: Mapping[str, Replica] | None = None,
    ) -> None:
        self.config = config
        # The kinds of replicated objects (docs/history.md) this link carries, by name.
        self._replicas = replicas or {}
        self.store = store
        self._outbox = outbox
        self._out: list[bytes] = []  # lines for the end of this loop iteration
        self._last_line = time.monotonic()
        self.local = local
        self.name = name
        self._tag_in, self._tag_out = TrafficLog.tag(name, ">>"), TrafficLog.tag(name, "<<")
        self.address: ServerAddress = config.dial_address(local, name)
        self.dialer = local < name
        self._on_record = on_record
        self._queue: deque[bytes] = deque(maxlen=config.limits.peer_queue)
        self._wake = asyncio.Event()
        self._conn: LineTransport | None = None
        self._handshakes: deque[LineTransport] = deque()  # acceptor handshakes in progress
        tls = client_context(config.tls) if config.tls is not None else None
        timeout = config.peers.handshake_timeout
        self.handshake = Handshake(key, local, name, outbox, timeout, tls)
        self._say = self.handshake.say
        self.overflowed = False
        self._farewell = False  # the neighbour said BYE on the current connection

    @property
    def up(self) -> bool:
        return self._conn is not None

    def send(self, line: bytes) -> None:
        """Send one line at the end of this loop iteration if the link can take it, else queue
        it; never blocks.

        The outbox writes peer links before any reply of the same iteration, and without a
        task in between: that is what lets a neighbour hold a record before the client that
        sent it has its reply.
        """
        self._outbox.log(self._tag_out, line)
        if self._conn is not None and not self._queue:
            if not self._out:
                self._outbox.later(Outbox.PEERS, self._flush_out)
            self._out.append(line)
        else:
            self._enqueue(line)

    def _flush_out(self) -> None:
        lines, self._out = self._out, []
        conn = self._conn
        if conn is not None and not self._queue and conn.write_buffer_size() < WRITE_HIGH_WATER:
            conn.write(b"".join(lines))
        else:
            for line in lines:
                self._enqueue(line)

    def _enqueue(self, line: bytes) -> None:
        if len(self._queue) == self._queue.maxlen and not self.overflowed:
            log.warning("link to %s: queue full, dropping its oldest records", self.name)
            self.overflowed = True
        self._queue.append(line)
        self._wake.set()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def say_goodbye(self) -> None:
        """Tell the neighbour that this server is stopping (BYE), so that it does not take
        the close that follows for a failure."""
        if self._conn is not None:
            self._say(self._conn, Bye().encode())

    async def dial_forever(self) -> None:
        """Keep a link to the neighbour open, reconnecting with capped exponential backoff."""
        timings = self.config.peers
        limit = PEER_LINE_LIMIT
        loop = asyncio.get_running_loop()
        delay = timings.reconnect_min
        while True:
            try:
                _, conn = await loop.create_connection(
                    lambda: LineTransport(limit), self.address.host, self.address.port
                )
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, timings.reconnect_max)
                continue
            try:
                await self.handshake.dial(conn, loop.time() + timings.handshake_timeout)
            except (HandshakeError, ProtocolError, OSError, ValueError) as exc:
                log.warning(
                    "link to %s: handshake failed: %s", self.name, exc or type(exc).__name__
                )
                conn.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, timings.reconnect_max)
                continue
            delay = timings.reconnect_min
            await self.serve(conn)

    async def accept(self, hello: Peer, conn: LineTransport) -> None:
        """Finish the handshake that ``hello`` began, then serve the link until it drops."""
        deadline = asyncio.get_running_loop().time() + self.config.peers.handshake_timeout
        pending = self._handshakes
        if len(pending) >= HANDSHAKES_PER_LINK:
            log.warning("link to %s: a newer handshake ends the oldest in progress", self.name)
            pending.popleft().abort()
        pending.append(conn)
        try:
            nonce_a, answer = await self.handshake.challenge(conn, deadline)
        finally:
            with contextlib.suppress(ValueError):  # ended by a newer one: no longer there
                pending.remove(conn)
        self.handshake.welcome(conn, hello, nonce_a, answer)
        await self.serve(conn)

    async def serve(self, conn: LineTransport) -> None:
        """Run an authenticated connection: take the peer's lines as they arrive, flush our
        queue, send heartbeats; return when it drops. A newer connection from the same peer
        replaces it."""
        self._take(conn)
        # Anti-entropy: each side sends its range digests; each answers differing ranges with
        # its records there (see docs/anti-entropy.md).
        self._say(conn, format_digests(self.store.digests))
        helpers = {
            asyncio.create_task(self._flush(conn)),
            asyncio.create_task(self._heartbeat(conn)),
        }
        self._helper(helpers, send_tops(conn, self._replicas, self._say))
        self._wake.set()
        try:
            conn.deliver(functools.partial(self._on_lines, conn, helpers))
            reason = await conn.closed
            if self._farewell:
                log.info("link to %s closed: %s is stopping", self.name, self.name)
            else:
                log.warning("link to %s dropped: %s", self.name, reason)
        finally:
            for task in helpers:
                task.cancel()
            if self._conn is conn:
                self._conn = None
            conn.close()

    def _take(self, conn: LineTransport) -> None:
        """Make ``conn`` the link's connection, ending the one it replaces."""
        old = self._conn
        if old is not None:
            log.info("link to %s: replaced by a new connection", self.name)
            old.abort()  # at once: a black-holed old path must not linger
        self._conn = conn
        self._farewell = False
        self._last_line = time.monotonic()
        tls = " over TLS" if conn.get_extra_info("ssl_object") is not None else ""
        log.info(
            "link to %s up (%s%s)", self.name, format_address(conn.get_extra_info("peername")), tls
        )

    def _on_lines(
        self, conn: LineTransport, helpers: set[asyncio.Task[None]], lines: Lines
    ) -> None:
        # Any line proves the peer alive (the heartbeat task checks how long ago the last came).
        self._last_line = time.monotonic()
        for line in lines:
            if isinstance(line, TooLong):
                # Skipped, never a reason to drop the link: the next digest exchange would
                # send the same line again, and the link would flap forever.
                log.warning(
                    "link to %s: skipped a line over %d bytes: %r",
                    self.name,
                    len(line.head),
                    line.head[:100],
                )
                continue
            command = self._on_line(line)
            if isinstance(command, Sync):
                self._say(conn, format_digests(self.store.digests))
                self._helper(helpers, send_tops(conn, self._replicas, self._say))
            elif isinstance(command, Have):
                answer = answer_have(conn, self._replicas, command, self._say, self.name)
                self._helper(helpers, answer)
            elif isinstance(command, Ids):
                objects = answer_ids(conn, self._replicas, command, self._say, self.name)
                self._helper(helpers, objects)
            elif command is not None:
                self._helper(helpers, self._send_ranges(conn, command))
        # End of a batch: pass what it brought on now rather than at the end of the loop
        # iteration; each hop of a flood then costs one iteration less.
        self._outbox.flush()

    @staticmethod
    def _helper(helpers: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` beside the link, cancelled with it."""
        task = asyncio.create_task(work)
        helpers.add(task)
        task.add_done_callback(helpers.discard)

    async def _send_ranges(self, conn: LineTransport, theirs: Digests) -> None:
        """Send our records in every range whose digest differs from the peer's."""
        ours = self.store.digests
        differ = [i for i, (a, b) in enumerate(zip(ours, theirs.values, strict=False)) if a != b]
        if len(theirs.values) != len(ours):
            differ = list(range(len(ours)))
        sent = 0
        for index in differ:
            lines = [r.wire() + b"\n" for r in self.store.bucket(index)]
            if lines:
                for line in lines:
                    self._outbox.log(self._tag_out, line)
                conn.write(b"".join(lines))
                sent += len(lines)
                try:
                    await conn.drain()
                except ConnectionError:
                    return  # the link went down; the next one exchanges digests again
        if differ:
            log.info(
                "sync with %s: %d ranges differ, sent %d records", self.name, len(differ), sent
            )

    def _on_line(self, line: bytes) -> Digests | Sync | Have | Ids | None:
        self._outbox.log(self._tag_in, line)
        try:
            command = parse_line(line)
        except ProtocolError as exc:
            # Never answer a peer with "? ...": it would answer that too, forever.
            log.warning("link to %s: invalid line (%s): %r", self.name, exc, line[:200])
            return None
        if isinstance(command, At):
            self._on_record(command.record, self.name)
        elif isinstance(command, Put):
            replica = self._replicas.get(command.kind)
            if replica is None:
                log.warning("link to %s: PUT of an unknown kind %r", self.name, command.kind)
            else:
                replica.put(command.payload, self.name)
        elif isinstance(command, Have | Ids):
            return command
        elif isinstance(command, Bye):
            self._farewell = True
        elif isinstance(command, Digests | Sync):
            return command
        elif command is not None and not isinstance(command, Ping):
            log.warning("link to %s: unexpected %s", self.name, type(command).__name__)
        return None

    async def _flush(self, conn: LineTransport) -> None:
        queue = self._queue
        while True:
            await self._wake.wait()
            if self._conn is not conn:
                return  # replaced by a newer connection, whose own flusher takes over
            self._wake.clear()
            # Records leave the queue only for a connection that can take them: what is left
            # when it closes goes to the next one.
            while queue and not conn.closing():
                n = min(len(queue), FLUSH_BATCH)
                conn.write(b"".join([queue.popleft() for _ in range(n)]))
                with contextlib.suppress(ConnectionError):  # serve() sees the close
                    await conn.drain()
            if self.overflowed:
                # Records were dropped from the queue: a digest exchange finds and repairs them.
                self.overflowed = False
                # The peer answers with DIGESTS; we send what differs.
                self._say(conn, Sync().encode())

    async def _heartbeat(self, conn: LineTransport) -> None:
        timings = self.config.peers
        loop = asyncio.get_running_loop()
        next_sync = loop.time() + timings.sync_interval
        while True:
            await asyncio.sleep(timings.heartbeat)
            if self._conn is not conn:
                return
            last = self._last_line
            if time.monotonic() - last > 3 * timings.heartbeat:
                # A loop that was held (a saturated CPU) runs its due timers before it reads
                # its sockets: the peer's lines may be waiting unread. Read them first.
                await asyncio.sleep(CONFIRM_SILENCE_S)
                if self._conn is not conn:
                    return
                if self._last_line == last:
                    # Three heartbeats of silence: the peer (or the path to it) is gone.
                    log.warning("link to %s dropped: silent for too long", self.name)
                    conn.abort()
                    return
            if loop.time() >= next_sync:
                next_sync = loop.time() + timings.sync_interval
                self._say(conn, format_digests(self.store.digests))
                await send_tops(conn, self._replicas, self._say)
            else:
                self._say(conn, PING_LINE)
