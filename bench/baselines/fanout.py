"""Baseline for the gateway: the least an aiohttp app can do with the same HTTP traffic.

``POST /api/v1/locations`` answers ``{"record": <body>}`` and pushes
``{"type": "update", "record": <body>}`` to every socket of ``/api/v1/ws`` (which opens with an
empty snapshot, like the gateway's). No herd behind it, no parsing of the body, no logging.
It runs on uvloop, as ``herd gateway`` does.

    python fanout.py [--port 0]      prints the port on stdout once it listens
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

import uvloop
from aiohttp import web


class Hub:
    """The open sockets, and the two handlers."""

    def __init__(self) -> None:
        self.sockets: set[web.WebSocketResponse] = set()

    async def post(self, request: web.Request) -> web.Response:
        body = await request.text()
        update = '{"type":"update","record":' + body + "}"
        for ws in list(self.sockets):
            if not ws.closed:
                await ws.send_str(update)
        return web.Response(text='{"record":' + body + "}", content_type="application/json")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"snapshot","records":[]}')
        self.sockets.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            self.sockets.discard(ws)
        return ws


async def main(port: int) -> None:
    hub = Hub()
    app = web.Application()
    app.router.add_post("/api/v1/locations", hub.post)
    app.router.add_get("/api/v1/ws", hub.websocket)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    await web.SockSite(runner, sock, backlog=1024).start()
    print(sock.getsockname()[1], flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(args.port))
    except KeyboardInterrupt:
        sys.exit(0)
