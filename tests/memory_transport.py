"""A transport in memory, for testing a connection's protocol object without a socket: what the
protocol writes is kept in ``written``; the test feeds it bytes with ``data_received``."""

from __future__ import annotations

import asyncio


class MemoryTransport(asyncio.Transport):
    def __init__(self, protocol: asyncio.Protocol, peername: tuple[str, int]) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.aborted = False
        self._closing = False
        self._extra = {"peername": peername}
        protocol.connection_made(self)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._extra.get(name, default)
