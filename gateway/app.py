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

from . import (
    access,
    api,
    area_api,
    auth,
    history_api,
    history_write,
    openapi,
    phones,
    redact,
    rules,
    site,
    ws,
)
from .access import Guards, Need, Route
from .herd_client import HerdClient, Server
from .keys import ACCESS, CONFIG, FEED, GUARDS, HERD, IMPORTS, LABELS, METRICS, SERVERS, SOCKETS
from .labels import answer, parse_view
from .live import LiveFeed
from .metrics import Metrics, herd_history
from .place_labels import PlaceLabels
from .records import json_response

__all__ = ["ROUTES", "create_app", "resource_dir"]

log = logging.getLogger("herd.gateway")

_PACKAGE = Path(__file__).resolve().parent
# Seconds a client whose request was refused before its body was read (413, 408) may go on
# sending before the connection closes: enough for it to see the answer, no more.
LINGER_SECONDS = 2.0
# Seconds /metrics waits for the followed server's STATUS before leaving its figures out.
STATUS_TIMEOUT = 1.0


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
    feed = LiveFeed(
        servers,
        timeout=gateway.request_timeout,
        silence=3 * config.peers.heartbeat,
        late=config.history.enabled,  # late points for the map's trails
    )
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


async def _labels_ctx(app: web.Application) -> AsyncIterator[None]:
    # The map's place labels: loaded at start when the herd preloads its own gazetteer
    # ([places] preload), else on the first request.
    config = app[CONFIG]
    app[LABELS] = labels = PlaceLabels(config.places.gazetteer, config.data_dir / "labels")
    if config.places.preload:
        labels.start()
    yield
    await labels.close()


async def get_places(request: web.Request) -> web.Response:
    """``GET /api/v1/places?lat=&lon=&zoom=&width=&height=``: the places to label in that
    map view, most important first (gateway/labels.py)."""
    view = parse_view(request.query)
    index = await request.app[LABELS].index()
    return json_response(answer(index, view))


@aiohttp_jinja2.template("index.html")
async def index(request: web.Request) -> web.StreamResponse | dict[str, object]:
    # Traccar Client and OsmAnd send to the server's root URL: /?id=...&lat=... A report
    # without an ID is answered 400 as Traccar does, never the map (the app would count the
    # point as delivered).
    if phones.traccar_query(request.query):
        return await api.traccar(request)
    config = request.app[CONFIG]
    return {
        "tile_url": config.gateway.tile_url,
        "tile_attribution": config.gateway.tile_attribution,
        # The trails' window the map opens with; with history off its trails are what it saw
        # live (static/trails.js).
        "trail_hours": config.gateway.trail_hours,
        "history": config.history.enabled,
    }


# Where Swagger UI (templates/api.html, static/api-docs.js) reads the document from.
SPEC_URL = "/api/v1/openapi.json"


@aiohttp_jinja2.template("api.html")
async def api_docs(request: web.Request) -> dict[str, object]:
    return {"spec_url": SPEC_URL}


async def openapi_json(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    gateway = config.gateway
    bodies = rules.body_limits(
        gateway.max_body_bytes, gateway.max_ws_message, gateway.max_import_bytes
    )
    return json_response(openapi.spec_at(time.time(), config.limits.max_future, bodies))


async def healthz(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    ok = feed.subscribed_to is not None
    body = {"status": "ok" if ok else "degraded", "subscribed_to": feed.subscribed_to}
    return json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    text = request.app[METRICS].render(await _followed_history(request.app))
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _followed_history(app: web.Application) -> tuple[str, dict[str, int]] | None:
    """The history figures of the server the gateway follows (its STATUS), if it has them."""
    name = app[FEED].subscribed_to
    address = app[CONFIG].servers.get(name) if name is not None else None
    if name is None or address is None:
        return None
    try:
        status = await asyncio.wait_for(app[HERD].status(Server(name, address)), STATUS_TIMEOUT)
    except TimeoutError:
        return None
    figures = herd_history(status)
    return None if figures is None else (name, figures)


def _map_or_traccar(request: web.Request) -> Need:
    # Traccar Client and OsmAnd report to the root URL: then ``/`` is a write (see ``index``).
    return Need.WRITE if phones.traccar_query(request.query) else Need.PAGE


# Every route with what it asks of a caller once tokens are configured (gateway/access.py), in
# the order they are matched. Client IDs may hold "/" (OwnTracks IDs do), so they match across
# path segments; the nearby route comes first so that ".../nearby" is never read as an ID.
ROUTES = (
    Route("GET", "/", index, _map_or_traccar, name="index"),
    Route("POST", "/", api.traccar, Need.WRITE),
    Route("GET", "/api/v1/ws", ws.websocket, Need.READ, name="ws"),
    # Documentation and liveness show nothing the herd holds.
    Route("GET", SPEC_URL, openapi_json, Need.NOTHING),
    Route("GET", "/api/docs", api_docs, Need.NOTHING),
    Route("GET", "/healthz", healthz, Need.NOTHING),
    Route("GET", "/metrics", metrics, Need.READ),
    Route("POST", "/api/v1/locations", api.post_locations, Need.WRITE),
    Route("GET", "/api/v1/clients", api.list_clients, Need.READ),
    Route("GET", "/api/v1/clients/{client_id:.+}/nearby", api.get_nearby, Need.READ),
    Route("GET", "/api/v1/clients/{client_id:.+}/history", history_api.get_history, Need.READ),
    # Deleting or importing a client's history is writing for that client (its device token).
    Route(
        "DELETE", "/api/v1/clients/{client_id:.+}/history", history_write.delete_history, Need.WRITE
    ),
    Route(
        "POST",
        "/api/v1/clients/{client_id:.+}/history",
        history_write.import_history,
        Need.WRITE,
        streamed=True,
    ),
    Route("GET", "/api/v1/clients/{client_id:.+}", api.get_client, Need.READ),
    Route("GET", "/api/v1/herd", api.herd_status, Need.READ),
    Route("GET", "/api/v1/history", area_api.get_area_history, Need.READ),
    Route("GET", "/api/v1/trails", area_api.get_trails, Need.READ),
    Route("GET", "/api/v1/places", get_places, Need.READ),
    # The phone apps' endpoints (docs/gateway.md, "Phone apps"); OwnTracks authenticates with
    # HTTP Basic.
    Route("POST", "/pub", api.owntracks, Need.WRITE, basic=True),
    Route("POST", "/api/v1/phones/owntracks", api.owntracks, Need.WRITE, basic=True),
    Route("*", "/api/v1/phones/traccar", api.traccar, Need.WRITE),
    Route("POST", "/api/v1/phones/gpslogger", api.gpslogger, Need.WRITE),
    Route("GET", "/api/v1/phones/gpslogger", api.gpslogger, Need.WRITE),
    Route("POST", "/api/v1/phones/overland", api.overland, Need.WRITE),
)


def create_app(config: HerdConfig) -> web.Application:
    # Access rules run inside the error middleware, so refusals are counted in /metrics. The
    # Host and cross-site checks come first; a body is read (bounded) only once the access
    # rules let the request through.
    gateway = config.gateway
    tokens = auth.Access(gateway)
    guards = Guards()
    redact.redact_access_logs()
    app = web.Application(
        client_max_size=gateway.max_body_bytes,
        middlewares=[
            api.error_middleware,
            site.site_middleware(gateway.allowed_hosts, guards),
            access.middleware(tokens, guards),
            site.body_middleware(gateway.body_timeout, guards),
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
    app[ACCESS] = tokens
    app[GUARDS] = guards
    app[METRICS] = Metrics()
    app[SOCKETS] = set()
    app[IMPORTS] = asyncio.Semaphore(history_write.MAX_IMPORTS)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(resource_dir("templates")),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.cleanup_ctx.append(_herd_ctx)
    app.cleanup_ctx.append(_labels_ctx)
    app.on_shutdown.append(ws.close_all)
    guards.add(app.router, ROUTES)
    guards.add_static(app.router, "/static", resource_dir("static"))
    return app
