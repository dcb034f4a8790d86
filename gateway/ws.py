"""The WebSocket ``/api/v1/ws``: a snapshot, then every update, plus report/nearby commands.

Messages from the gateway: ``{"type": "snapshot", "records": [...]}`` once on connect, then
``{"type": "update", "record": {...}}`` per update, ``{"type": "late", "records": [...]}`` for
late points (kept in history, never a client's newest record: the map's trails), and
``{"type": "reply", "id": ...}`` or ``{"type": "error", "id": ..., "error": {...}}`` per
command. Commands from the browser:
``{"type": "report", "id": 1, "client_id": ..., "lat": ..., "lon": ..., "time": ...}``,
``{"type": "nearby", "id": 2, "client_id": ..., "radius_km": 10, "limit": 5}`` and
``{"type": "filter", "id": 3, "clients": [...] | null, "bbox": [w, s, e, n] | null}``.
Filters can also be given on connect: ``?clients=a,b&bbox=w,s,e,n``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from backend.protocol import format_attributes

from . import api, phones, rules
from .errors import ApiError, envelope
from .herd_client import HerdRefused, HerdUnavailable
from .keys import ACCESS, CONFIG, FEED, HERD, METRICS, SOCKETS
from .live import BBox, Watcher
from .numbers import bounded_decimal
from .records import dumps, record_json, records_json

__all__ = ["websocket"]

log = logging.getLogger("herd.gateway.ws")

# Late points per WebSocket message: a phone's queue of thousands goes out in messages of
# about 300 KB, none near a browser's or a proxy's message limits.
LATE_PER_MESSAGE = 1000


class CommandError(ApiError):
    """A WebSocket command refused: answered with an error message, the socket stays open."""


def parse_bbox(value: Any) -> BBox | None:
    """``[west, south, east, north]`` (or "w,s,e,n") in degrees, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.split(",")
    try:
        west, south, east, north = (float(bounded_decimal(v)) for v in value)
    except (TypeError, ValueError):  # NumberError included
        raise CommandError(400, "bbox must be four numbers: west, south, east, north") from None
    lat, lon = rules.MAX_LAT, rules.MAX_LON
    if not (-lat <= south <= north <= lat and -lon <= west <= lon and -lon <= east <= lon):
        raise CommandError(400, "bbox must be west, south, east, north within the globe")
    return BBox(west, south, east, north)


def parse_clients(value: Any) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise CommandError(400, "clients must be a list of client IDs")
    return value


async def websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    config = app[CONFIG].gateway
    # A cross-site upgrade was refused before this (gateway/site.py).
    try:
        watcher = Watcher(
            parse_clients(request.query.get("clients")), parse_bbox(request.query.get("bbox"))
        )
    except CommandError as exc:
        raise web.HTTPBadRequest(text=exc.message) from None
    ws = web.WebSocketResponse(heartbeat=config.ws_heartbeat, max_msg_size=config.max_ws_message)
    await ws.prepare(request)
    feed = app[FEED]
    sockets = app[SOCKETS]
    sockets.add(ws)
    # Registration and snapshot with no await between them: no update falls in the gap.
    feed.add_listener(watcher.push)
    feed.add_late_listener(watcher.push_late)
    snapshot = feed.snapshot_message(watcher.wants)
    sender = asyncio.create_task(_send_updates(ws, watcher, request))
    try:
        await ws.send_str(snapshot)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                reply = await _command(request, watcher, message.data)
                await ws.send_json(reply, dumps=dumps)
            elif message.type == WSMsgType.BINARY:
                await ws.send_json(_error(None, 400, "send JSON text messages"), dumps=dumps)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        feed.remove_listener(watcher.push)
        feed.remove_late_listener(watcher.push_late)
        sockets.discard(ws)
        sender.cancel()
        # The sender ends cancelled, or earlier with the socket's own error: both are over.
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await sender
    return ws


async def _send_updates(ws: web.WebSocketResponse, watcher: Watcher, request: web.Request) -> None:
    metrics = request.app[METRICS]
    feed = request.app[FEED]
    while not ws.closed:
        for record in await watcher.next_batch():
            # Encoded once per record, however many sockets it goes to.
            text = feed.update_message(record)
            if text is not None:
                await ws.send_str(text)
                metrics.updates_pushed += 1
        for record in watcher.take_events():
            text = feed.event_message(record)
            if text is not None:
                await ws.send_str(text)
        late = watcher.take_late()
        for start in range(0, len(late), LATE_PER_MESSAGE):
            text = feed.late_message(late[start : start + LATE_PER_MESSAGE])
            if text is not None:
                await ws.send_str(text)


def _error(command_id: Any, status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "id": command_id, **envelope(status, message)}


async def _command(request: web.Request, watcher: Watcher, data: str) -> dict[str, Any]:
    command_id = None
    try:
        message = phones.load_json(data.encode())
        if not isinstance(message, dict):
            raise CommandError(400, "a command is a JSON object")
        command_id = message.get("id")
        kind = message.get("type")
        handler = _COMMANDS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise CommandError(400, f"unknown command type {kind!r}; use report, nearby or filter")
        # A command costs the herd what an HTTP request does (a nearby one may cost a Google
        # query): it counts against the address's rate like one.
        request.app[ACCESS].charge(request)
        result = await handler(request, watcher, message)
        return {"type": "reply", "id": command_id, **result}
    except ApiError as exc:  # a bad command, a refusal: answered, the socket stays open
        return _error(command_id, exc.status, exc.message)
    except HerdUnavailable:
        return _error(command_id, 503, "no herd server answered")
    except Exception:
        # A bug answers this command with 500 and keeps the socket (and its map) alive.
        log.exception("WebSocket command from %s failed", request.remote)
        return _error(command_id, 500, "internal error")


async def _report(
    request: web.Request, watcher: Watcher, message: dict[str, Any]
) -> dict[str, Any]:
    report = phones.report(
        message.get("client_id"),
        message.get("lat"),
        message.get("lon"),
        message.get("time"),
        time.time_ns(),
        max_future=request.app[CONFIG].limits.max_future,
        attributes=message.get("attributes"),
    )
    # A report carries its own write token: the socket itself was opened with a read token.
    token = message.get("token")
    request.app[ACCESS].check_reports(
        request, [report.client_id], token if isinstance(token, str) else None
    )
    try:
        record = await request.app[HERD].iamat(
            report.command(), format_attributes(report.attributes)
        )
    except HerdRefused:
        raise CommandError(429, api.HERD_REFUSED) from None
    return {"record": record_json(record)}


async def _nearby(
    request: web.Request, watcher: Watcher, message: dict[str, Any]
) -> dict[str, Any]:
    try:
        client_id = phones.check_client_id(message.get("client_id"))
    except phones.PhoneError as exc:
        raise CommandError(400, f"client_id: {exc.message}") from None
    radius = rules.radius_km(message.get("radius_km", rules.DEFAULT_RADIUS_KM))
    limit = rules.BOUND.from_json(message.get("limit", rules.BOUND.default))
    try:
        record, places = await request.app[HERD].whatsat(client_id, rules.plain(radius), limit)
    except HerdRefused:
        raise CommandError(404, f"no location known for client {client_id!r}") from None
    return {"record": record_json(record), "places": places}


async def _filter(
    request: web.Request, watcher: Watcher, message: dict[str, Any]
) -> dict[str, Any]:
    clients = parse_clients(message.get("clients"))
    bbox = parse_bbox(message.get("bbox"))
    watcher.set_filter(clients, bbox)
    feed = request.app[FEED]
    # A new filter comes with its own snapshot, so the map can redraw what it now covers.
    snapshot = records_json(r for r in feed.records.values() if watcher.wants(r))
    return {"records": snapshot}


_COMMANDS = {"report": _report, "nearby": _nearby, "filter": _filter}


async def close_all(app: web.Application) -> None:
    """On shutdown: tell every browser we are going away."""
    sockets: set[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"gateway shutting down")
