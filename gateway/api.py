"""REST API (``/api/v1``) and phone-app endpoints: HTTP in, herd commands out.

Handlers validate input, turn it into IAMAT/WHATSAT/WHEREIS lines through the herd client,
and answer JSON. Errors are JSON too: ``{"error": {"status": 400, "message": "..."}}``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import hdrs, web

from backend.protocol import Record, format_attributes, time_to_ns

from . import phones, rules
from .errors import ApiError, envelope
from .herd_client import HerdRefused, HerdUnavailable, Server
from .keys import ACCESS, CONFIG, FEED, HERD, METRICS
from .records import json_response, record_json, records_json

__all__ = [
    "error_middleware",
    "get_client",
    "get_nearby",
    "gpslogger",
    "herd_status",
    "json_error",
    "list_clients",
    "overland",
    "owntracks",
    "post_locations",
    "record_json",
    "traccar",
]

# Seconds to wait for one server's STATUS in the herd overview before calling it down.
STATUS_TIMEOUT = 1.0
# Seconds a client is told to wait after the herd refused its report: the herd's budgets
# refill per second.
HERD_RETRY_AFTER = 1
# Statuses after which the rest of the request is not worth reading: the connection closes.
_CLOSE_AFTER = frozenset({408, 413})


def json_error(status: int, message: str) -> web.Response:
    return json_response(envelope(status, message), status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """JSON errors for the API and phone endpoints, and request counts for /metrics."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = json_error(exc.status, exc.text or exc.reason or "error")
        kept = {"allow", "retry-after"}
        response.headers.update({k: v for k, v in exc.headers.items() if k.lower() in kept})
        if exc.status in _CLOSE_AFTER:
            response.force_close()
    except HerdUnavailable:
        response = json_error(503, "no herd server answered")
    except ApiError as exc:  # a phone's report, a refusal: one envelope
        response = json_error(exc.status, exc.message)
        response.headers.update(exc.headers)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[METRICS].requests[request.method, route, response.status] += 1
    return response


async def _json_body(request: web.Request) -> Any:
    body = await request.read()  # 413 past the configured max_body_bytes
    try:
        return phones.load_json(body)
    except phones.PhoneError as exc:
        raise web.HTTPBadRequest(text=exc.message) from None


def _max_future(request: web.Request) -> float:
    """The herd's ``[limits] max_future``: how far ahead of now a report's time may be."""
    return request.app[CONFIG].limits.max_future


def _reports(payload: Any, now_ns: int, max_future: float) -> tuple[list[phones.Report], bool]:
    """Reports in a body: one object, a JSON array, or ``{"locations": [...]}``."""
    if isinstance(payload, dict) and "locations" in payload:
        payload = payload["locations"]
    batch = isinstance(payload, list)
    items = payload if batch else [payload]
    if batch and not items:
        raise web.HTTPBadRequest(text="the batch is empty")
    if len(items) > rules.MAX_BATCH:
        raise web.HTTPBadRequest(text=f"a batch holds at most {rules.MAX_BATCH} reports")
    reports = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise web.HTTPBadRequest(text=f"report {i}: must be a JSON object")
        where = f"report {i}: " if batch else ""
        try:
            reports.append(
                phones.report(
                    item.get("client_id"),
                    item.get("lat"),
                    item.get("lon"),
                    item.get("time"),
                    now_ns,
                    max_future=max_future,
                    attributes=item.get("attributes"),
                )
            )
        except phones.PhoneError as exc:
            raise web.HTTPBadRequest(text=where + exc.message) from None
    return reports, batch


async def _send(request: web.Request, reports: list[phones.Report]) -> list[Record | None]:
    """Each report to the herd, in order; None for one the herd refused. Raises 429 when it
    refused every one (the sender should retry later)."""
    # Every write path comes here: its token must cover each client ID, each within its rate.
    request.app[ACCESS].check_reports(request, [report.client_id for report in reports])
    herd = request.app[HERD]
    records: list[Record | None] = []
    for report in reports:
        try:
            records.append(await herd.iamat(report.command(), format_attributes(report.attributes)))
        except HerdRefused:
            records.append(None)
    if reports and all(record is None for record in records):
        raise web.HTTPTooManyRequests(
            text=HERD_REFUSED, headers={hdrs.RETRY_AFTER: str(HERD_RETRY_AFTER)}
        )
    return records


async def _deliver(
    request: web.Request, app: str, entries: list[phones.Entry], *, batch: bool
) -> None:
    """Store what a phone upload holds, in order; count what is skipped in /metrics.

    A heartbeat becomes a record at the position the herd holds for its client, when it is
    newer than that record (docs/gateway.md, "Phone apps"). In a batch, a report the herd
    refuses is skipped and counted: the app drops a batch only on success, and would resend
    it forever. A lone report the herd refuses is 429, so the app retries it later.
    """
    metrics = request.app[METRICS]
    ids = [entry.client_id for entry in entries if not isinstance(entry, phones.Skipped)]
    request.app[ACCESS].check_reports(request, ids)
    herd = request.app[HERD]
    for entry in entries:
        if isinstance(entry, phones.Skipped):
            metrics.phone_skipped[app, entry.reason] += 1
            continue
        if isinstance(entry, phones.Report):
            report = entry
        else:
            held = await herd.whereis(entry.client_id)
            if held is None:
                metrics.phone_skipped[app, phones.HEARTBEAT_NO_POSITION] += 1
                continue
            if time_to_ns(entry.time) <= time_to_ns(held.client_time):
                metrics.phone_skipped[app, phones.HEARTBEAT_NOT_NEWER] += 1
                continue
            report = entry.at(*held.lat_lng)
        try:
            await herd.iamat(report.command())
        except HerdRefused:
            if not batch:
                raise web.HTTPTooManyRequests(
                    text=HERD_REFUSED, headers={hdrs.RETRY_AFTER: str(HERD_RETRY_AFTER)}
                ) from None
            metrics.phone_skipped[app, phones.REFUSED] += 1
            continue
        if isinstance(entry, phones.Heartbeat):
            metrics.phone_heartbeats[app] += 1


# Every report is checked against the herd's own rules before it is sent (bounds, max_future,
# ranges, client IDs), so a "? <line>" answer to one means a herd budget refused it.
HERD_REFUSED = "the herd refused the report: over its per-client or per-address budget"


async def post_locations(request: web.Request) -> web.Response:
    reports, batch = _reports(await _json_body(request), time.time_ns(), _max_future(request))
    records = await _send(request, reports)
    if batch:
        # In order; a report the herd refused (a budget) is null, with its status in "results".
        return json_response(
            {
                "records": [None if r is None else record_json(r) for r in records],
                "results": [_result(r) for r in records],
            }
        )
    record = records[0]
    assert record is not None  # _send raised 429 otherwise
    return json_response({"record": record_json(record)})


def _result(record: Record | None) -> dict[str, Any]:
    if record is None:
        return {"stored": False, "status": 429, "message": HERD_REFUSED}
    return {"stored": True, "status": 200}


async def list_clients(request: web.Request) -> web.Response:
    offset = rules.OFFSET.from_text(request.query.get("offset"))
    limit = rules.PAGE.from_text(request.query.get("limit"))
    feed = request.app[FEED]
    if not feed.synced.is_set():
        raise HerdUnavailable
    ids = sorted(feed.records)
    page = records_json(feed.records[cid] for cid in ids[offset : offset + limit])
    after = offset + limit
    return json_response(
        {
            "clients": page,
            "total": len(ids),
            "offset": offset,
            "limit": limit,
            "next_offset": after if after < len(ids) else None,
        }
    )


async def get_nearby(request: web.Request) -> web.Response:
    client_id = _client_id(request)
    radius_km = rules.radius_km(request.query.get("radius_km", rules.DEFAULT_RADIUS_KM))
    limit = rules.BOUND.from_text(request.query.get("limit"))
    try:
        record, places = await request.app[HERD].whatsat(client_id, rules.plain(radius_km), limit)
    except HerdRefused:
        raise web.HTTPNotFound(text=f"no location known for client {client_id!r}") from None
    return json_response({"record": record_json(record), "places": places})


async def get_client(request: web.Request) -> web.Response:
    client_id = _client_id(request)
    record = await request.app[HERD].whereis(client_id)
    if record is None:
        raise web.HTTPNotFound(text=f"no location known for client {client_id!r}")
    return json_response({"record": record_json(record)})


async def herd_status(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    herd = request.app[HERD]

    async def one(name: str) -> dict[str, Any]:
        address = config.servers[name]
        try:
            status = await asyncio.wait_for(herd.status(Server(name, address)), STATUS_TIMEOUT)
        except TimeoutError:
            status = None
        return {
            "name": name,
            "host": address.host,
            "port": address.port,
            "up": status is not None,
            "records": status.get("records") if status else None,
            "places": status.get("places") if status else None,
            "links": status.get("links", {}) if status else {},
        }

    servers = await asyncio.gather(*(one(name) for name in config.servers))
    links = sorted(sorted(link) for link in config.links)
    feed = request.app[FEED]
    return json_response({"servers": servers, "links": links, "subscribed_to": feed.subscribed_to})


# -- phone apps --------------------------------------------------------------------------


async def owntracks(request: web.Request) -> web.Response:
    body = await request.read()
    entries = phones.owntracks(
        body, request.headers, request.query, time.time_ns(), max_future=_max_future(request)
    )
    await _deliver(request, "owntracks", entries, batch=body.lstrip().startswith(b"["))
    # OwnTracks expects a JSON array of messages for it (friends, cards, commands): none.
    return json_response([], content_type="application/json")


async def traccar(request: web.Request) -> web.Response:
    body = await request.read()
    content_type = request.headers.get("Content-Type", "")
    entries = phones.traccar(
        request.query, content_type, body, time.time_ns(), max_future=_max_future(request)
    )
    batch = content_type.lower().startswith("application/json") and body.lstrip()[:1] == b"["
    await _deliver(request, "traccar", entries, batch=batch)
    return web.Response(status=200)  # Traccar: 200 with an empty body (no queued command)


async def gpslogger(request: web.Request) -> web.Response:
    body = await request.read()
    entries = phones.gpslogger(
        request.query,
        body,
        time.time_ns(),
        max_future=_max_future(request),
        fallback=_token_client(request) or phones.GPSLOGGER_DEVICE,
    )
    await _deliver(request, "gpslogger", entries, batch=False)
    return web.Response(status=200)  # GPSLogger counts any 2xx as sent


async def overland(request: web.Request) -> web.Response:
    body = await request.read()
    entries = phones.overland(
        body,
        request.headers,
        request.query,
        time.time_ns(),
        max_future=_max_future(request),
        fallback=_token_client(request) or phones.OVERLAND_DEVICE,
    )
    await _deliver(request, "overland", entries, batch=True)
    return json_response({"result": "ok"})  # Overland drops the batch only on exactly this


def _token_client(request: web.Request) -> str | None:
    """The client ID of the request's write token, when tokens are configured."""
    grant = request.app[ACCESS].check_writer(request)
    return None if grant is None else grant.client_id


# -- helpers -------------------------------------------------------------------------------


def _client_id(request: web.Request) -> str:
    return phones.check_client_id(request.match_info["client_id"])  # PhoneError: 400
