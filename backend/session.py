"""A client's session: the lines of one client connection answered in order, above its line
transport (``backend/transport.py``), which it writes through and nothing else.

Lines are answered as they arrive, right in ``lines_received``: most replies (IAMAT, WHEREIS,
STATUS) are made at once. A line whose reply must wait runs in a task; reading pauses, and the
lines behind it wait in ``backlog`` until it is answered. What each command does is in
``backend/commands.py``; the session holds what is the connection's own (its replies waiting
for the outbox, its count of invalid lines, its subscription) and no one else changes it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .framing import TooLong
from .outbox import Outbox, TrafficLog
from .protocol import PEER_LINE_LIMIT, Peer, ProtocolError, StartTls, invalid_reply, parse_line
from .state import Admission
from .transport import Lines, LineTransport

if TYPE_CHECKING:
    from .server import HerdServer
    from .subscription import Subscription

__all__ = ["ClientSession"]

log = logging.getLogger("herd.server")


class ClientSession:
    """A connection accepted on the server's port: a client, until it subscribes or proves
    to be a neighbour (``PEER``), when its transport goes to a peer link (``hand_over``)."""

    def __init__(self, server: HerdServer) -> None:
        self.state = server.state
        self.outbox = server.outbox
        self.limits = server.limits
        self.commands = server.commands
        self.handlers = server.commands.handlers
        self.refuse = server.commands.refuse
        self.line_limit = server.commands.line_limit
        self.max_invalid = server.limits.max_invalid_lines
        self.transport = LineTransport(server.limits.max_line_bytes)
        self.transport.attach(self)
        self.peer = self.host = "?"
        self.tag_in = self.tag_out = b""
        self.invalid = 0
        self.out: list[bytes] = []  # replies waiting for the end of this loop iteration
        self.last_line = time.monotonic()
        self.task: asyncio.Task[None] | None = None  # a line being answered in a task
        self.backlog: Lines = []  # lines waiting behind it
        self.subscribed = False
        self.subscription: Subscription | None = None
        self.spare = False  # in a handshake slot: only STARTTLS or PEER may come
        self.closed = False
        self._eof = False
        self._batch: Lines = []
        self._at = 0
        self._flush = self.flush  # bound once: registered with the outbox for every reply

    # -- what the transport tells -------------------------------------------------------------

    def connection_made(self) -> None:
        self.peer, self.host = self.transport.peer, self.transport.host
        self.tag_in = TrafficLog.tag(self.peer, ">>")
        self.tag_out = TrafficLog.tag(self.peer, "<<")
        admission = self.state.admit(self)
        if admission is Admission.SPARE:
            self.spare = True
        elif admission is Admission.REFUSED:
            self.hang_up()

    def lines_received(self, items: Lines) -> None:
        if items:
            # Idle means no complete line (see HerdServer._close_idle): a client that dribbles
            # a byte at a time without ever ending a line does not keep its slot.
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
        self.state.release(self)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests until it does.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.subscription is not None:
            self.subscription.pump()  # the next part of the snapshot
        if self.task is None and not self.closed:
            self.transport.resume_reading()

    # -- answering ----------------------------------------------------------------------------

    def _answer_all(self, items: Lines) -> None:
        self._batch = items  # for followed()
        for i, item in enumerate(items):
            if self.closed:
                return
            if self.subscribed:
                self._after_subscribing(item)
                continue
            if isinstance(item, TooLong):
                self._too_long(item.head)
                continue
            self._at = i
            pending = self._answer(item)
            if pending is not None:
                self.backlog = items[i + 1 :]
                self._wait(pending)
                return
            if self.state.closing:
                self.hang_up()  # each connection ends after its line in progress
                return

    def followed(self) -> bool:
        """Whether the client sent anything after the line being answered."""
        return self._at + 1 < len(self._batch) or bool(self.transport.lines.pending)

    def _answer(self, line: bytes) -> Coroutine[Any, Any, None] | None:
        """Answer one line: the reply is queued now, or the coroutine returned queues it."""
        self.outbox.log(self.tag_in, line)
        if self.spare:
            return self._answer_spare(line)
        try:
            command = parse_line(line)
            if command is None:
                return None
            if self.line_limit is not None and self.line_limit.take([self.host]):
                raise ProtocolError(
                    f"over {self.limits.lines_per_address:g} lines/s from {self.host}"
                )
            reply = self.handlers.get(type(command), self.refuse)(command, self)
        except ProtocolError as exc:
            reply = self._invalid(line, exc)
        except Exception:
            # A bug, or the disk failing under a compaction: this client gets no answer
            # (nothing unanswered counts as acknowledged) and the rest are served.
            log.exception("bug while serving %s", self.peer)
            self.hang_up()
            return None
        if isinstance(reply, bytes):
            if reply:
                self.send(reply)
            if self.invalid > self.max_invalid:  # _check_budget, inline: once per line
                self._check_budget()
            return None
        return self._answer_later(line, reply)

    def _answer_spare(self, line: bytes) -> Coroutine[Any, Any, None] | None:
        """A line on a handshake slot: STARTTLS or PEER go on, anything else ends it unanswered
        (nobody but a neighbour should be there, and the slots are few)."""
        try:
            command = parse_line(line)
            if not isinstance(command, Peer | StartTls):
                raise ProtocolError("not a peer handshake")
            reply = self.handlers[type(command)](command, self)
        except ProtocolError as exc:
            log.warning("closing %s in a handshake slot: %s", self.peer, exc)
            self.state.leave_spare_slot(self)
            self.hang_up()
            return None
        if isinstance(reply, bytes):
            if reply:
                self.send(reply)
            return None
        return self._answer_later(line, reply)

    async def _answer_later(self, line: bytes, pending: Coroutine[Any, Any, bytes]) -> None:
        try:
            reply = await pending
        except ProtocolError as exc:
            reply = self._invalid(line, exc)
        if reply:
            self.send(reply)
        self._check_budget()

    def _invalid(self, line: bytes, exc: ProtocolError) -> bytes:
        log.warning("invalid line from %s (%s)", self.peer, exc)
        self.invalid += 1
        return invalid_reply(line)

    def _check_budget(self) -> None:
        if self.invalid > self.limits.max_invalid_lines:
            log.warning(
                "hanging up on %s: more than %d invalid lines",
                self.peer,
                self.limits.max_invalid_lines,
            )
            self.hang_up()

    def _too_long(self, head: bytes) -> None:
        """Answer a line longer than the limit with ``?`` and its first bytes (the framing
        skips the rest of it)."""
        log.warning("line from %s over %d bytes", self.peer, self.limits.max_line_bytes)
        self.invalid += 1
        self.send(invalid_reply(head))
        self._check_budget()

    def _after_subscribing(self, item: bytes | TooLong) -> None:
        # A subscription lasts until the client closes; its further lines are not commands.
        line = item.head if isinstance(item, TooLong) else item
        subscription = self.state.subscribers.get(self)
        if line.strip() and subscription is not None:
            self.outbox.log(self.tag_in, line)
            reply = invalid_reply(line)
            self.outbox.log(self.tag_out, reply)
            subscription.send(reply)  # in the stream's order: after the snapshot

    def _wait(self, pending: Coroutine[Any, Any, None]) -> None:
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
        if self.state.closing:
            self.hang_up()
        elif self._eof:
            self._end()
        elif not self.transport.write_paused:
            self.transport.resume_reading()

    def _end(self) -> None:
        """End of the client's stream: a last line without its newline is still a command;
        then the replies go out and the connection closes."""
        last = self.transport.lines.end()
        if last is not None and not self.subscribed:
            self._answer_all([last + b"\n"])
            if self.task is not None:
                return  # _finish ends it
        if self.subscription is not None:
            self.subscription.end()  # once the snapshot is out
        else:
            self.hang_up()

    # -- writing and closing ------------------------------------------------------------------

    def send(self, reply: bytes) -> None:
        """Queue a whole reply; the outbox writes it after the journal and the peer links."""
        if not self.out:
            self.outbox.later(Outbox.CLIENTS, self._flush)
        self.out.append(reply)
        self.outbox.log(self.tag_out, reply)

    def flush(self) -> None:
        if self.out:
            data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
            self.out.clear()
            self.transport.write(data)

    def hang_up(self) -> None:
        """Read no more, and close once the replies already made are written: the close is
        the outbox's last step for this connection in this iteration."""
        if not self.closed:
            self.closed = True
            self.outbox.later(Outbox.CLIENTS, self._close)

    def _close(self) -> None:
        self.flush()  # a reply queued after the hang-up was registered
        self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is unsent (a subscriber that does not read would keep
        its buffer for as long as it likes if the close waited for it)."""
        self.closed = True
        self.transport.abort()

    # -- what a command changes ---------------------------------------------------------------

    def subscribe(self, subscription: Subscription) -> None:
        """From now on the connection is ``subscription``'s stream; lines are not commands."""
        self.subscription = subscription
        self.subscribed = True

    async def start_tls(self, context: ssl.SSLContext) -> bytes:
        """Answer STARTTLS and upgrade the connection; on failure, hang up."""
        self.outbox.flush()
        self.outbox.log(self.tag_out, StartTls().encode())
        self.transport.write(StartTls().encode())
        try:
            upgraded = await self.transport.start_tls(context, server_side=True)
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.warning("refused TLS from %s: %s", self.peer, exc)
            self.hang_up()
            return b""
        if not upgraded:
            self.hang_up()
        return b""

    def hand_over(self) -> LineTransport:
        """Give up the connection (to a peer link, which reads it from now on): this session
        ends, its transport lives on under its new owner."""
        self.closed = True
        self.state.release(self, handed_over=True)
        self.transport.detach()
        # A peer's lines are bounded by the peer links' limit, not by [limits] for clients.
        self.transport.set_line_limit(PEER_LINE_LIMIT)
        return self.transport
