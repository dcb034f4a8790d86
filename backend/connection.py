"""A line-oriented TCP connection as an ``asyncio.Protocol``: the I/O adapter of peer links.

Bytes are split into lines as they arrive (``backend/framing.py``). Until a consumer is set,
complete lines wait to be awaited one by one with ``readline`` (a handshake); after
``deliver(consumer)``, every batch of lines is handed to the consumer synchronously from
``data_received``, with no task to wake per batch. That is the whole point: a record passing
through a server costs one callback, not a callback, a future and a task step.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import cast

from .framing import LineBuffer, TooLong

__all__ = ["LineConnection", "Lines"]

Lines = list[bytes | TooLong]


class LineConnection(asyncio.Protocol):
    """One connection's lines in, bytes out, and write flow control (``drain``)."""

    def __init__(self, limit: int) -> None:
        self.transport: asyncio.Transport | None = None
        self._lines = LineBuffer(limit)
        self._waiting: deque[bytes | TooLong] = deque()  # lines not yet read by readline
        self._reader: asyncio.Future[None] | None = None  # a readline waiting for a line
        self._consumer: Callable[[Lines], object] | None = None
        self._eof = False
        self._write_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        items = self._lines.feed(data)
        if self._consumer is not None:
            self._consumer(items)
        else:
            self._waiting.extend(items)
            self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake_reader()
        self._release_drainers()
        if not self.closed.done():
            self.closed.set_result(str(exc) if exc is not None else "closed")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_drainers()

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
            raise ValueError(f"a line over {self._lines.limit} bytes")
        return line

    @property
    def buffered(self) -> bool:
        """Whether bytes came in that no readline has taken yet."""
        return bool(self._waiting or self._lines.pending)

    def deliver(self, consumer: Callable[[Lines], object]) -> None:
        """From now on hand every batch of lines to ``consumer`` as it arrives, starting with
        the lines that came in before."""
        self._consumer = consumer
        if self._waiting:
            items = list(self._waiting)
            self._waiting.clear()
            consumer(items)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

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
        if self._write_paused and not self.closing():
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

    async def start_tls(self, context: ssl.SSLContext, server_side: bool) -> None:
        """Upgrade to TLS (after both sides agreed on STARTTLS)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(self.transport, self, context, server_side=server_side)
        if transport is None:
            raise ConnectionResetError("closed during the TLS handshake")
        self.transport = transport

    def get_extra_info(self, name: str) -> object:
        return self.transport.get_extra_info(name) if self.transport is not None else None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
