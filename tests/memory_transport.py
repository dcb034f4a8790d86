"""A transport in memory, for testing a connection's protocol object without a socket (as
hypercorn's ``MemoryReader``/``MemoryWriter`` and h11's ``ConnectionPair``).

What the protocol writes is kept in ``written`` (``take`` empties it), or, for two transports
joined with ``pair``, handed to the other side's protocol in the next loop iteration; the test
feeds bytes with ``protocol.data_received``. The write buffer's size is the test's to set
(``fill``), which pauses and resumes the protocol's writing as a socket's high-water mark does;
``reading`` says whether the protocol paused reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# As asyncio's default: above it the protocol is told to pause writing, below it to resume.
HIGH_WATER = 64 * 1024


class MemoryTransport(asyncio.Transport):
    def __init__(
        self,
        protocol: asyncio.Protocol,
        peername: tuple[str, int] = ("127.0.0.1", 40000),
        on_write: Callable[[bytes], None] | None = None,
    ) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.writes = 0  # calls to write: each would be a system call
        self.on_write = on_write
        self.aborted = False
        self.reading = True
        self.buffered = 0  # what the test says the socket has not sent yet
        self._paused = False
        self._closing = False
        self._other: MemoryTransport | None = None
        self._extra = {"peername": peername}
        protocol.connection_made(self)

    @staticmethod
    def pair(a: asyncio.Protocol, b: asyncio.Protocol) -> tuple[MemoryTransport, MemoryTransport]:
        """Two transports joined like the ends of one socket: what ``a`` writes ``b`` receives
        (in the next loop iteration), and the other way round; a close is an EOF there."""
        ta = MemoryTransport(a, ("127.0.0.1", 40001))
        tb = MemoryTransport(b, ("127.0.0.1", 40002))
        ta._other, tb._other = tb, ta
        return ta, tb

    def take(self) -> bytes:
        """What was written since the last ``take``."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return  # as a socket's transport: nothing goes out after the close
        self.writes += 1
        data = bytes(data)
        if self.on_write is not None:
            self.on_write(data)
        if self._other is not None:
            asyncio.get_running_loop().call_soon(self._other._receive, data)
        else:
            self.written += data

    def _receive(self, data: bytes) -> None:
        if not self._closing:
            self.protocol.data_received(data)

    def _remote_closed(self) -> None:
        if not self._closing and not self.protocol.eof_received():
            self.close()

    def fill(self, size: int) -> None:
        """Say the socket holds ``size`` unsent bytes: past HIGH_WATER the protocol is told to
        pause writing, at or under it to resume."""
        self.buffered = size
        if size > HIGH_WATER and not self._paused:
            self._paused = True
            self.protocol.pause_writing()
        elif size <= HIGH_WATER and self._paused:
            self._paused = False
            self.protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            loop = asyncio.get_running_loop()
            loop.call_soon(self.protocol.connection_lost, None)
            if self._other is not None:
                loop.call_soon(self._other._remote_closed)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._extra.get(name, default)
