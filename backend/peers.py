"""Links to neighbouring servers: handshake, flooding with a bounded queue per link,
heartbeats, and reconnection with backoff.

Each link is one TCP connection, dialled by the server whose name sorts first and accepted
by the other; both then send AT lines over it. A link starts with a challenge-response
handshake (HMAC-SHA256 over both names and two fresh nonces) so each side proves it knows
the herd secret without sending it. See ``docs/protocol.md``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable

from .config import HerdConfig, ServerAddress
from .framing import LineBuffer, TooLong
from .outbox import Outbox
from .protocol import (
    At,
    Challenge,
    Digests,
    Peer,
    Ping,
    Proof,
    ProtocolError,
    Record,
    Sync,
    Welcome,
    format_digests,
    parse_line,
    peer_proof,
)
from .store import Store
from .tls import client_context

__all__ = ["HandshakeError", "PeerLink", "PeerManager", "format_address"]

log = logging.getLogger("herd.peers")

# Above this many unsent bytes in a link's socket buffer, records wait in the link's own
# queue instead, so one slow neighbour costs memory up to its queue bound and nothing else.
WRITE_HIGH_WATER = 1024 * 1024
# Records written to the socket per flush once a backlog exists: large enough to amortise
# the write, small enough that a flush never holds the loop for long.
FLUSH_BATCH = 512

PING_LINE = b"PING\n"
# Bytes asked of the socket per read: a flood's whole backlog at once.
READ_SIZE = 65536


class HandshakeError(Exception):
    """The other side of a peer connection failed to prove itself."""


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
    ) -> None:
        self.config = config
        self.store = store
        self._outbox = outbox
        self._out: list[bytes] = []  # lines for the end of this loop iteration
        self._last_line = time.monotonic()
        self.local = local
        self.name = name
        self.address: ServerAddress = config.dial_address(local, name)
        self.dialer = local < name
        self._on_record = on_record
        self._queue: deque[bytes] = deque(maxlen=config.limits.peer_queue)
        self._wake = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._tls = client_context(config.tls) if config.tls is not None else None
        self.overflowed = False

    @property
    def up(self) -> bool:
        return self._writer is not None

    def send(self, line: bytes) -> None:
        """Send one line at the end of this loop iteration if the link can take it, else queue
        it; never blocks.

        The outbox writes peer links before any reply of the same iteration, and without a
        task in between: that is what lets a neighbour hold a record before the client that
        sent it has its reply.
        """
        self._outbox.log(self.name, b"<<", line)
        if self._writer is not None and not self._queue:
            if not self._out:
                self._outbox.later(Outbox.PEERS, self._flush_out)
            self._out.append(line)
        else:
            self._enqueue(line)

    def _flush_out(self) -> None:
        lines, self._out = self._out, []
        writer = self._writer
        if (
            writer is not None
            and not self._queue
            and writer.transport.get_write_buffer_size() < WRITE_HIGH_WATER
        ):
            writer.write(b"".join(lines))
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
        if self._writer is not None:
            self._writer.close()

    async def dial_forever(self) -> None:
        """Keep a link to the neighbour open, reconnecting with capped exponential backoff."""
        timings = self.config.peers
        delay = timings.reconnect_min
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    self.address.host, self.address.port, limit=self.config.limits.max_line_bytes
                )
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, timings.reconnect_max)
                continue
            try:
                async with asyncio.timeout(timings.handshake_timeout):
                    await self._handshake_dial(reader, writer)
            except (
                HandshakeError,
                ProtocolError,
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ) as exc:
                log.warning(
                    "link to %s: handshake failed: %s", self.name, exc or type(exc).__name__
                )
                writer.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, timings.reconnect_max)
                continue
            delay = timings.reconnect_min
            await self.serve(reader, writer)

    async def _handshake_dial(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._tls is not None:
            writer.write(b"STARTTLS\n")
            if await reader.readuntil(b"\n") != b"STARTTLS\n":
                raise HandshakeError(f"{self.name} did not agree to STARTTLS")
            await writer.start_tls(self._tls)
        nonce_d = secrets.token_hex(16)
        writer.write(f"PEER {self.local} {nonce_d}\n".encode())
        reply = parse_line(await reader.readuntil(b"\n"))
        if not isinstance(reply, Challenge) or reply.server_id != self.name:
            raise HandshakeError(f"expected CHALLENGE from {self.name}, got {reply!r}")
        secret = self.config.secret
        expected = peer_proof(secret, "acceptor", self.local, self.name, nonce_d, reply.nonce)
        if not secrets.compare_digest(expected, reply.proof):
            raise HandshakeError(f"{self.name} does not know the herd secret")
        proof = peer_proof(secret, "dialer", self.local, self.name, nonce_d, reply.nonce)
        writer.write(f"PROOF {proof}\n".encode())
        welcome = parse_line(await reader.readuntil(b"\n"))
        if not isinstance(welcome, Welcome) or welcome.server_id != self.name:
            raise HandshakeError(f"{self.name} refused our proof: {welcome!r}")

    async def accept(
        self, hello: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Finish the handshake that ``hello`` began, then serve the link until it drops."""
        nonce_a = secrets.token_hex(16)
        secret = self.config.secret
        proof = peer_proof(secret, "acceptor", self.name, self.local, hello.nonce, nonce_a)
        writer.write(f"CHALLENGE {self.local} {nonce_a} {proof}\n".encode())
        async with asyncio.timeout(self.config.peers.handshake_timeout):
            line = await reader.readuntil(b"\n")
        answer = parse_line(line)
        expected = peer_proof(secret, "dialer", self.name, self.local, hello.nonce, nonce_a)
        if not isinstance(answer, Proof) or not secrets.compare_digest(expected, answer.proof):
            raise HandshakeError(f"{self.name} failed to prove the herd secret")
        writer.write(f"WELCOME {self.local}\n".encode())
        await self.serve(reader, writer)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run an authenticated connection: read the peer's lines, flush our queue, send
        heartbeats; return when it drops. A newer connection from the same peer replaces it."""
        old = self._writer
        if old is not None:
            log.info("link to %s: replaced by a new connection", self.name)
            old.transport.abort()  # at once: a black-holed old path must not linger
        self._writer = writer
        self._last_line = time.monotonic()
        peername = writer.get_extra_info("peername")
        tls = " over TLS" if writer.get_extra_info("ssl_object") is not None else ""
        log.info("link to %s up (%s%s)", self.name, format_address(peername), tls)
        # Anti-entropy: each side sends its range digests; each answers differing ranges with
        # its records there (see docs/anti-entropy.md).
        writer.write(format_digests(self.store.digests))
        helpers = {
            asyncio.create_task(self._flush(writer)),
            asyncio.create_task(self._heartbeat(writer)),
        }
        self._wake.set()
        try:
            await self._read(reader, writer, helpers)
        except asyncio.IncompleteReadError:
            log.warning("link to %s dropped: closed by peer", self.name)
        except (OSError, asyncio.LimitOverrunError) as exc:
            log.warning("link to %s dropped: %s", self.name, exc or type(exc).__name__)
        finally:
            for task in helpers:
                task.cancel()
            if self._writer is writer:
                self._writer = None
            writer.close()

    async def _read(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        helpers: set[asyncio.Task[None]],
    ) -> None:
        # Any line proves the peer alive (the heartbeat task checks how long ago the last came).
        clock = time.monotonic
        lines = LineBuffer(self.config.limits.max_line_bytes)
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise ConnectionResetError("closed by peer")
            self._last_line = clock()
            for line in lines.feed(data):
                if isinstance(line, TooLong):
                    raise ConnectionResetError(f"a line over {lines.limit} bytes")
                command = self._on_line(line)
                if isinstance(command, Sync):
                    writer.write(format_digests(self.store.digests))
                elif command is not None:
                    task = asyncio.create_task(self._send_ranges(writer, command))
                    helpers.add(task)
                    task.add_done_callback(helpers.discard)
            # End of a batch: pass what it brought on now rather than at the end of the loop
            # iteration; each hop of a flood then costs one iteration less.
            self._outbox.flush()

    async def _send_ranges(self, writer: asyncio.StreamWriter, theirs: Digests) -> None:
        """Send our records in every range whose digest differs from the peer's."""
        ours = self.store.digests
        differ = [i for i, (a, b) in enumerate(zip(ours, theirs.values, strict=False)) if a != b]
        if len(theirs.values) != len(ours):
            differ = list(range(len(ours)))
        sent = 0
        for index in differ:
            lines = [r.line + b"\n" for r in self.store.bucket(index)]
            if lines:
                writer.write(b"".join(lines))
                sent += len(lines)
                await writer.drain()
        if differ:
            log.info(
                "sync with %s: %d ranges differ, sent %d records", self.name, len(differ), sent
            )

    def _on_line(self, line: bytes) -> Digests | Sync | None:
        self._outbox.log(self.name, b">>", line)
        try:
            command = parse_line(line)
        except ProtocolError as exc:
            # Never answer a peer with "? ...": it would answer that too, forever.
            log.warning("link to %s: invalid line (%s): %r", self.name, exc, line[:200])
            return None
        if isinstance(command, At):
            self._on_record(command.record, self.name)
        elif isinstance(command, Digests | Sync):
            return command
        elif command is not None and not isinstance(command, Ping):
            log.warning("link to %s: unexpected %s", self.name, type(command).__name__)
        return None

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        queue = self._queue
        while True:
            await self._wake.wait()
            if self._writer is not writer:
                return  # replaced by a newer connection, whose own flusher takes over
            self._wake.clear()
            while queue:
                n = min(len(queue), FLUSH_BATCH)
                writer.write(b"".join([queue.popleft() for _ in range(n)]))
                await writer.drain()
            if self.overflowed:
                # Records were dropped from the queue: a digest exchange finds and repairs them.
                self.overflowed = False
                writer.write(b"SYNC\n")  # the peer answers with DIGESTS; we send what differs

    async def _heartbeat(self, writer: asyncio.StreamWriter) -> None:
        timings = self.config.peers
        loop = asyncio.get_running_loop()
        next_sync = loop.time() + timings.sync_interval
        while True:
            await asyncio.sleep(timings.heartbeat)
            if self._writer is not writer:
                return
            if time.monotonic() - self._last_line > 3 * timings.heartbeat:
                # Three heartbeats of silence: the peer (or the path to it) is gone.
                log.warning("link to %s dropped: silent for too long", self.name)
                writer.transport.abort()
                return
            if loop.time() >= next_sync:
                next_sync = loop.time() + timings.sync_interval
                writer.write(format_digests(self.store.digests))
            else:
                writer.write(PING_LINE)


class PeerManager:
    """All of one server's links; floods records to them."""

    def __init__(
        self,
        config: HerdConfig,
        local: str,
        on_record: RecordHandler,
        store: Store,
        outbox: Outbox,
    ) -> None:
        self.local = local
        self.links = {
            name: PeerLink(config, local, name, on_record, store, outbox)
            for name in config.neighbours(local)
        }
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for link in self.links.values():
            if link.dialer:
                self._tasks.append(
                    asyncio.create_task(link.dial_forever(), name=f"dial-{link.name}")
                )

    def flood(self, record: Record, source: str | None) -> None:
        """Send ``record`` to every neighbour but the one it came from and its origin."""
        line = record.line + b"\n"
        for link in self.links.values():
            if link.name != source and link.name != record.server_id:
                link.send(line)

    async def accept(
        self, hello: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Take over a connection that opened with ``PEER``; raises ProtocolError if the
        sender is not a neighbour, HandshakeError if it fails the challenge."""
        link = self.links.get(hello.server_id)
        if link is None:
            raise ProtocolError(f"{hello.server_id} is not a neighbour of {self.local}")
        await link.accept(hello, reader, writer)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self.links.values():
            link.close()


def format_address(peername: object) -> str:
    """``host:port`` of a socket's peer name, for logs."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)
