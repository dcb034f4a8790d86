"""The gateway application: routes, long-lived herd client and feed, templates, static files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from backend.config import HerdConfig

from . import api, auth, openapi, phones, site, ws
from .herd_client import HerdClient, Server
from .keys import ACCESS, CONFIG, FEED, HERD, METRICS, SERVERS, SOCKETS
from .live import LiveFeed
from .metrics import Metrics
from .records import json_response

__all__ = ["create_app", "resource_dir"]

log = logging.getLogger("herd.gateway")

_PACKAGE = Path(__file__).resolve().parent
# Seconds a client whose request was refused before its body was read (413, 408) may go on
# sending before the connection closes: enough for it to see the answer, no more.
LINGER_SECONDS = 2.0


def resource_dir(name: str) -> Path:
    """``templates`` or ``static``: inside the installed package (a wheel puts them there),
    else at the top of the source tree."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"gateway resources {name!r} not found near {_PACKAGE}")


async def _herd_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    gateway = config.gateway
    names = gateway.servers or tuple(config.servers)
    servers = [Server(name, config.servers[name]) for name in names]
    app[SERVERS] = servers
    app[HERD] = HerdClient(servers, timeout=gateway.request_timeout, pool_size=gateway.pool_size)
    feed = LiveFeed(servers, timeout=gateway.request_timeout, silence=3 * config.peers.heartbeat)
    app[FEED] = feed
    metrics = app[METRICS]
    metrics.gauge(
        "herd_gateway_websocket_clients", "Open WebSocket connections.", lambda: len(app[SOCKETS])
    )
    metrics.gauge(
        "herd_gateway_herd_failovers_total",
        "Herd requests or subscriptions moved to another server after a failure.",
        lambda: app[HERD].failovers + feed.failovers,
    )
    metrics.gauge(
        "herd_gateway_clients_known",
        "Clients whose location the gateway has seen.",
        lambda: len(feed.records),
    )
    task = asyncio.create_task(feed.run(), name="herd-feed")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await app[HERD].close()


@aiohttp_jinja2.template("index.html")
async def index(request: web.Request) -> web.StreamResponse | dict[str, object]:
    # Traccar Client and OsmAnd send to the server's root URL: /?id=...&lat=... A report
    # without an ID is answered 400 as Traccar does, never the map (the app would count the
    # point as delivered).
    if phones.traccar_query(request.query):
        return await api.traccar(request)
    config = request.app[CONFIG].gateway
    return {"tile_url": config.tile_url, "tile_attribution": config.tile_attribution}


@aiohttp_jinja2.template("api.html")
async def api_docs(request: web.Request) -> dict[str, object]:
    return {"spec": openapi.SPEC}


async def openapi_json(request: web.Request) -> web.Response:
    max_future = request.app[CONFIG].limits.max_future
    return json_response(openapi.spec_at(time.time(), max_future))


async def healthz(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    ok = feed.subscribed_to is not None
    body = {"status": "ok" if ok else "degraded", "subscribed_to": feed.subscribed_to}
    return json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[METRICS].render(), content_type="text/plain", charset="utf-8"
    )


def create_app(config: HerdConfig) -> web.Application:
    # Access rules run inside the error middleware, so refusals are counted in /metrics. The
    # Host and cross-site checks come first; a body is read (bounded) only once the access
    # rules let the request through.
    gateway = config.gateway
    access = auth.Access(gateway)
    auth.redact_access_logs()
    app = web.Application(
        client_max_size=gateway.max_body_bytes,
        middlewares=[
            api.error_middleware,
            site.site_middleware(gateway.allowed_hosts),
            access.middleware,
            site.body_middleware(gateway.body_timeout),
        ],
        # The HTTP server's own settings, whoever runs the application: aiohttp closes a
        # connection that has not sent a whole request head within its keep-alive timeout,
        # from the first byte on (a slowloris), and idle kept-alive connections with it.
        handler_args={
            "keepalive_timeout": gateway.header_timeout,
            "lingering_time": LINGER_SECONDS,
        },
    )
    app[CONFIG] = config
    app[ACCESS] = access
    app[METRICS] = Metrics()
    app[SOCKETS] = set()
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(resource_dir("templates")),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.cleanup_ctx.append(_herd_ctx)
    app.on_shutdown.append(ws.close_all)
    app.router.add_get("/", index, name="index")
    app.router.add_post("/", api.traccar)
    app.router.add_get("/api/v1/ws", ws.websocket, name="ws")
    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/api/docs", api_docs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(api.routes)
    app.router.add_static("/static", resource_dir("static"), name="static")
    return app
