"""One line transport under every TCP connection of a server: client connections and peer
links alike (the I/O adapter; what the lines mean is the business of its consumer).

``LineTransport`` is the ``asyncio.Protocol`` of the socket. It splits the bytes into lines as
they arrive (``backend/framing.py``), writes, keeps the write flow control (``drain``, and the
consumer told when writing pauses and resumes), upgrades to TLS, and closes. Its lines go to
one consumer at a time:

- a ``Consumer`` attached with ``attach`` (a client's session, ``backend/session.py``) gets
  every batch of lines from ``data_received``, the end of the stream, the loss of the
  connection and the write flow control;
- with none attached, lines wait to be read one by one with ``readline`` (a peer handshake),
  until ``deliver(receiver)`` hands every further batch to ``receiver`` (a peer link).

A client connection that proves itself a peer changes consumer on the same transport
(``detach``, then the peer handshake reads it): no asyncio ``set_protocol`` hand-over. Lines
go to their consumer synchronously from ``data_received``, with no task to wake per batch: a
record passing through a server costs one callback, not a callback, a future and a task step.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from .framing import LineBuffer, TooLong

__all__ = ["Consumer", "LineTransport", "Lines", "format_address"]

Lines = list[bytes | TooLong]


class Consumer(Protocol):
    """What a transport tells its attached consumer (a client's session)."""

    def connection_made(self) -> None: ...

    def lines_received(self, lines: Lines) -> None: ...

    def eof_received(self) -> bool:
        """The other side is done sending; True keeps the connection open for writing."""
        ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class LineTransport(asyncio.Protocol):
    """One connection's lines in, bytes out, write flow control, TLS and close."""

    def __init__(self, limit: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer = "?"  # host:port of the other side, for logs
        self.host = "?"  # its address alone (limits are per address)
        self.tls = False
        self.lines = LineBuffer(limit)
        self.consumer: Consumer | None = None
        self._receiver: Callable[[Lines], object] | None = None  # who takes each batch
        self._waiting: deque[bytes | TooLong] = deque()  # lines not yet read by readline
        self._reader: asyncio.Future[None] | None = None  # a readline waiting for a line
        self._eof = False
        self.write_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    # -- consumers ----------------------------------------------------------------------------

    def attach(self, consumer: Consumer) -> None:
        """Give every event of this connection to ``consumer`` from now on."""
        self.consumer = consumer
        self._receiver = consumer.lines_received

    def detach(self) -> None:
        """Take the connection from its consumer: from now on lines wait for ``readline``."""
        self.consumer = None
        self._receiver = None

    def deliver(self, receiver: Callable[[Lines], object]) -> None:
        """From now on hand every batch of lines to ``receiver`` as it arrives, starting with
        the lines that came in before."""
        self._receiver = receiver
        if self._waiting:
            items = list(self._waiting)
            self._waiting.clear()
            receiver(items)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        self.peer = format_address(peername)
        self.host = str(peername[0]) if isinstance(peername, tuple) else self.peer
        if self.consumer is not None:
            self.consumer.connection_made()

    def data_received(self, data: bytes) -> None:
        items = self.lines.feed(data)
        if self._receiver is not None:
            self._receiver(items)
        else:
            self._waiting.extend(items)
            self._wake_reader()

    def eof_received(self) -> bool:
        if self.consumer is not None:
            return self.consumer.eof_received()
        self._eof = True
        self._wake_reader()
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake_reader()
        self._release_drainers()
        if not self.closed.done():
            self.closed.set_result(str(exc) if exc is not None else "closed")
        if self.consumer is not None:
            self.consumer.connection_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.consumer is not None:
            self.consumer.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_drainers()
        if self.consumer is not None:
            self.consumer.resume_writing()

    # -- reading ------------------------------------------------------------------------------

    async def readline(self) -> bytes:
        """The next line (with its newline); ConnectionResetError at end of stream,
        ValueError for a line over the limit."""
        while not self._waiting:
            if self._eof:
                raise ConnectionResetError("closed by peer")
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        line = self._waiting.popleft()
        if isinstance(line, TooLong):
            raise ValueError(f"a line over {self.lines.limit} bytes")
        return line

    def set_line_limit(self, limit: int) -> None:
        """Take lines of up to ``limit`` bytes from now on."""
        self.lines.limit = limit

    @property
    def buffered(self) -> bool:
        """Whether bytes came in that no readline has taken yet."""
        return bool(self._waiting or self.lines.pending)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # -- writing ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark; raises
        ConnectionResetError if the connection is closing, or closed meanwhile."""
        if self.write_paused and not self.closing():
            waiter = asyncio.get_running_loop().create_future()
            self._drainers.append(waiter)
            await waiter  # released by resume_writing, or by connection_lost
        if self.closing():
            raise ConnectionResetError("connection closed")

    def _release_drainers(self) -> None:
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)
        self._drainers.clear()

    async def start_tls(self, context: ssl.SSLContext, server_side: bool) -> bool:
        """Upgrade to TLS (after both sides agreed on STARTTLS); False if the connection
        closed during the TLS handshake. Raises what ``loop.start_tls`` raises."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(self.transport, self, context, server_side=server_side)
        if transport is None:
            return False
        self.transport = transport
        self.tls = True
        return True

    def get_extra_info(self, name: str) -> object:
        return self.transport.get_extra_info(name) if self.transport is not None else None

    def close(self) -> None:
        """Close once what was written is sent."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is unsent."""
        if self.transport is not None:
            self.transport.abort()


def format_address(peername: object) -> str:
    """``host:port`` of a socket's peer name, for logs."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)
