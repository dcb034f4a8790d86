"""``GET /api/v1/clients/{id}/history``: a client's points oldest first, as JSON pages;
simplified with ``simplify=<metres>``. The answer reads one HISTORY of the herd."""

from __future__ import annotations

import logging
import urllib.parse

from aiohttp import web

from backend.protocol import MAX_HISTORY_LIMIT, MAX_TIME_S, ProtocolError, Record, time_to_ns

from . import phones, rules
from .errors import ApiError
from .herd_client import HerdRefused
from .history import simplify
from .keys import HERD
from .records import json_response, record_json

__all__ = ["attachment", "get_history", "history_off"]

log = logging.getLogger("herd.gateway.history")

# The herd's last time, in nanoseconds: a later end of a window reads the same.
LATEST_NS = MAX_TIME_S * 1_000_000_000
# What each export is sent as, and the extension of its file.
EXPORTS = {
    "gpx": ("application/gpx+xml", ".gpx"),
    "geojson": ("application/geo+json", ".geojson"),
}


def history_off(exc: HerdRefused) -> ApiError:
    return ApiError(503, f"history is off in the herd: {exc}")


async def get_history(request: web.Request) -> web.StreamResponse:
    """A client's points in a window, oldest first: a page of JSON, or the whole window as
    ``format=gpx`` or ``format=geojson``; ``simplify`` keeps the points that shape the trail."""
    client_id = phones.check_client_id(request.match_info["client_id"])  # PhoneError: 400
    query = request.query
    export = rules.history_format(query.get("format"))
    metres = rules.simplify_m(query.get("simplify"))
    since_ns = min(rules.seconds_ns("since", query.get("since"), 0), LATEST_NS)
    until_ns = min(rules.seconds_ns("until", query.get("until"), LATEST_NS), LATEST_NS)
    limit = rules.HISTORY_PAGE.from_text(query.get("limit"))
    cursor = _cursor(query.get("cursor"))
    if export != "json":
        raise ApiError(400, "format: the exports (gpx, geojson) are not built yet")
    skip = 0
    if cursor is not None:
        since_ns, skip = max(since_ns, cursor[0]), cursor[1]
    if since_ns > until_ns:  # an empty window
        return json_response({"client_id": client_id, "points": [], "next_cursor": None})
    ask = min(limit + skip, MAX_HISTORY_LIMIT)
    try:
        records = await request.app[HERD].history(client_id, since_ns, until_ns, ask)
    except HerdRefused as exc:
        raise history_off(exc) from None
    page = records[skip : skip + limit]
    next_cursor = None
    if page and len(records) == ask:
        last = time_to_ns(page[-1].client_time)
        at_last = sum(1 for r in records[: skip + len(page)] if time_to_ns(r.client_time) == last)
        next_cursor = f"{last}:{at_last}"
    # A simplified page keeps the points that shape it; the cursor goes on after the page.
    kept = simplify(page, metres, lat_lon=lat_lon) if metres else page
    points = [record_json(r) for r in kept]
    return json_response({"client_id": client_id, "points": points, "next_cursor": next_cursor})


def _cursor(raw: str | None) -> tuple[int, int] | None:
    """``<ns>:<n>``: go on from that time, past the n points at it already given."""
    if raw is None:
        return None
    ns, _, seen = raw.partition(":")
    if not (ns.isdigit() and seen.isdigit() and len(ns) <= 21 and len(seen) <= 5):
        raise ApiError(400, "cursor is not one this API gave")
    return int(ns), int(seen)


def lat_lon(record: Record) -> tuple[object, object]:
    """A record's latitude and longitude, or (None, None) if its location does not parse."""
    try:
        return record.lat_lng
    except (ProtocolError, ValueError):
        return None, None


def attachment(client_id: str, extension: str) -> str:
    """A Content-Disposition naming the download after the client (RFC 6266): ASCII in
    ``filename`` (any other character, ``/`` included, as ``_``), the exact ID in
    ``filename*`` (``/`` as ``_`` too: no browser saves a path)."""
    name = client_id.replace("/", "_") + extension
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
    encoded = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"
