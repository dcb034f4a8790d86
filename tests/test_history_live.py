"""Late points live: the gateway subscribes with SUBSCRIBE POINTS LATE when history is on and
pushes each late point to the WebSockets as a ``late`` message (never as an update: the newest
record does not change), filters applied; a server that refuses the LATE variant gets the
plain subscription on the same connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from helpers import Herd, until_synced

from backend.config import ServerAddress
from gateway.herd_client import Server
from gateway.live import LiveFeed

HERD_EXTRA = "[history]\nenabled = true\n"  # (off by default)
NOW = time.time()


async def post(client: TestClient[Any, Any], body: object) -> None:
    response = await client.post("/api/v1/locations", json=body)
    assert response.status == 200, await response.text()


async def messages(ws: Any, until: str) -> list[dict[str, Any]]:
    """Every message up to and including the first of type ``until``."""
    seen = []
    while True:
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type == WSMsgType.TEXT, message
        data: dict[str, Any] = json.loads(message.data)
        seen.append(data)
        if data["type"] == until:
            return seen


async def test_late_points_reach_the_websocket_as_late_messages(
    herd: Herd, client: TestClient[Any, Any]
) -> None:
    await until_synced(client)
    async with client.ws_connect("/api/v1/ws?clients=phone,marker") as ws:
        await messages(ws, "snapshot")
        await post(client, {"client_id": "phone", "lat": 34.0, "lon": -118.0, "time": NOW})
        assert (await messages(ws, "update"))[-1]["record"]["time"] == NOW
        # A phone's offline queue: two older points in one batch, the second with attributes;
        # another client's late point is filtered out.
        queue = [
            {"client_id": "phone", "lat": 34.1, "lon": -118.1, "time": NOW - 60},
            {"client_id": "other", "lat": 1.0, "lon": 1.0, "time": NOW},
            {"client_id": "other", "lat": 1.5, "lon": 1.5, "time": NOW - 60},
            {
                "client_id": "phone",
                "lat": 34.2,
                "lon": -118.2,
                "time": NOW - 30,
                "attributes": {"battery": 40},
            },
        ]
        await post(client, queue)
        late: list[dict[str, Any]] = []
        while len(late) < 2:
            seen = await messages(ws, "late")
            # The newest record did not change: no update came for the late points.
            assert not [m for m in seen if m["type"] == "update"], seen
            late += seen[-1]["records"]
        assert [(p["client_id"], p["lat"], p["time"]) for p in late] == [
            ("phone", 34.1, NOW - 60),
            ("phone", 34.2, NOW - 30),
        ]
        assert late[1]["attributes"] == {"battery": 40}
        current = await (await client.get("/api/v1/clients/phone")).json()
        assert current["record"]["time"] == NOW


async def test_a_server_refusing_late_points_gets_the_plain_subscription() -> None:
    lines: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        lines.append(await reader.readline())
        writer.write(b"? " + lines[-1])  # as a server with history off answers it
        lines.append(await reader.readline())
        writer.write(b"AT Riley +0.000000000 kiwi +1+1 1700000000\nSYNCED 1\n")
        await writer.drain()
        await reader.read()  # until the feed hangs up

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    feed = LiveFeed([Server("Riley", ServerAddress("127.0.0.1", port))], silence=30)
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(feed.synced.wait(), 10)
        assert lines == [b"SUBSCRIBE POINTS LATE\n", b"SUBSCRIBE POINTS\n"]
        assert "kiwi" in feed.records and feed.subscribed_to == "Riley"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
