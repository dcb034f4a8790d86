"""The harness's link relays (``bench.linkproxy``): bytes pass both ways as they came, a cut
aborts the open connections and refuses new ones, a heal lets them through again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench.linkproxy import LinkProxy


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.fixture
async def proxy() -> AsyncIterator[LinkProxy]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    relay = LinkProxy()
    relay.target = server.sockets[0].getsockname()[1]
    await relay.start()
    yield relay
    await relay.close()
    server.close()


async def test_bytes_pass_both_ways_in_order(proxy: LinkProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    sent = bytes(range(256)) * 40_000  # 10 MB: past every buffer, so flow control works
    writer.write(sent)
    got = await asyncio.wait_for(reader.readexactly(len(sent)), 30)
    assert got == sent
    writer.close()
    await writer.wait_closed()


async def test_a_cut_aborts_open_connections_and_refuses_new_ones(proxy: LinkProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"PING\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"PING\n"
    proxy.cut()
    assert await asyncio.wait_for(_closed(reader, writer), 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await asyncio.wait_for(_closed(reader, writer), 5)
    proxy.heal()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"PING\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"PING\n"
    writer.close()
    await writer.wait_closed()


async def _closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether the relay closed the connection (then closed here too)."""
    try:
        closed = await reader.read(100) == b""
    except ConnectionError:
        closed = True
    writer.close()
    return closed
