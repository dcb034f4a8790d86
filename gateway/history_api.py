"""``GET /api/v1/clients/{id}/history``: a client's points oldest first, as JSON pages, or the
whole window streamed as one GPX or GeoJSON document; simplified with ``simplify=<metres>``.

The JSON answer reads one HISTORY of the herd. An export pages through the window with
HISTORY ... POINTS (``HerdClient.history_pages``) and writes each page through the formats of
``gateway/history`` as it comes, so it holds about two pages (20,000 points) whatever the
window's size. Its status is sent before the points: a herd that fails before the first
page is answered 503, but one that fails later can only cut the answer short, which an HTTP
client sees as a body that ends before its last chunk (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncGenerator, Callable

from aiohttp import hdrs, web

from backend.protocol import MAX_HISTORY_LIMIT, MAX_TIME_S, time_to_ns

from . import phones, rules
from .errors import ApiError
from .herd_client import HerdClient, HerdRefused, HerdUnavailable
from .history import GeoJsonWriter, GpxWriter, Simplifier, simplify
from .history.lines import Point
from .keys import HERD
from .records import point_json, records_response

__all__ = ["attachment", "get_history", "history_off"]

log = logging.getLogger("herd.gateway.history")

# The herd's last time, in nanoseconds: a later end of a window reads the same.
LATEST_NS = MAX_TIME_S * 1_000_000_000
# Points of a page written between two turns of the event loop: 500 points are 170 KB of GPX
# or 180 KB of GeoJSON, a few ms of work.
EXPORT_SLICE = 500
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
        # An export is the whole window: limit and cursor (checked all the same) page JSON.
        return await _export(request, client_id, since_ns, until_ns, export, metres)
    skip = 0
    if cursor is not None:
        since_ns, skip = max(since_ns, cursor[0]), cursor[1]
    if since_ns > until_ns:  # an empty window
        return records_response({"client_id": client_id, "points": [], "next_cursor": None})
    ask = min(limit + skip, MAX_HISTORY_LIMIT)
    try:
        records = await request.app[HERD].history_points(client_id, since_ns, until_ns, ask)
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
    points = [point_json(p) for p in kept]
    return records_response({"client_id": client_id, "points": points, "next_cursor": next_cursor})


def _cursor(raw: str | None) -> tuple[int, int] | None:
    """``<ns>:<n>``: go on from that time, past the n points at it already given."""
    if raw is None:
        return None
    ns, _, seen = raw.partition(":")
    if not (ns.isdigit() and seen.isdigit() and len(ns) <= 21 and len(seen) <= 5):
        raise ApiError(400, "cursor is not one this API gave")
    return int(ns), int(seen)


def lat_lon(point: Point) -> tuple[object, object]:
    """A point's latitude and longitude (the herd checked its location: it always has both)."""
    return float(point.lat), float(point.lon)


def attachment(client_id: str, extension: str) -> str:
    """A Content-Disposition naming the download after the client (RFC 6266): ASCII in
    ``filename`` (any other character, ``/`` included, as ``_``), the exact ID in
    ``filename*`` (``/`` as ``_`` too: no browser saves a path)."""
    name = client_id.replace("/", "_") + extension
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
    encoded = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


# -- exports ------------------------------------------------------------------------------


async def _export(
    request: web.Request,
    client_id: str,
    since_ns: int,
    until_ns: int,
    export: str,
    metres: float,
) -> web.StreamResponse:
    herd = request.app[HERD]

    def pages(points: bool) -> AsyncGenerator[list[Point], None]:
        return _simplified(herd, client_id, since_ns, until_ns, metres, points)

    content_type, extension = EXPORTS[export]
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: content_type,
            hdrs.CONTENT_DISPOSITION: attachment(client_id, extension),
        }
    )
    # The first page is read before the status is sent: a dead herd, or one with history
    # off, is still a 503 here.
    async with contextlib.aclosing(pages(export == "gpx")) as first_pass:
        try:
            first: list[Point] = await anext(first_pass, [])
        except HerdRefused as exc:
            raise history_off(exc) from None
        await response.prepare(request)
        try:
            if export == "gpx":
                gpx = GpxWriter(client_id)
                await _write(response, gpx.add_points, first, first_pass)
                await _send(response, gpx.close())
            else:
                writer = GeoJsonWriter(client_id)
                await _write(response, writer.add_trail_points, first, first_pass)
                await _send(response, writer.end_trail())
                async with contextlib.aclosing(pages(True)) as second_pass:
                    await _write(response, writer.add_points, [], second_pass)
                await _send(response, writer.close())
        except (HerdUnavailable, HerdRefused) as exc:
            # The status is sent: all that is left is to end the answer short of its last
            # chunk, so the client sees an incomplete body, never a whole-looking document.
            log.warning("export of %r cut short: the herd failed mid-stream (%s)", client_id, exc)
            if request.transport is not None:
                request.transport.close()
            return response
        except ConnectionError:  # the client went away
            log.debug("export of %r: the client went away", client_id)
            return response
    await response.write_eof()
    return response


async def _write(
    response: web.StreamResponse,
    add: Callable[[list[Point]], bytes | None],
    first: list[Point],
    rest: AsyncGenerator[list[Point], None],
) -> None:
    """The points of ``first`` and of the pages of ``rest``, added to a writer EXPORT_SLICE
    at a time; each chunk it returns is sent."""
    page: list[Point] | None = first
    while page is not None:
        for start in range(0, len(page), EXPORT_SLICE):
            await _send(response, add(page[start : start + EXPORT_SLICE]))
        page = await anext(rest, None)


async def _send(response: web.StreamResponse, chunk: bytes | None) -> None:
    if chunk:
        await response.write(chunk)
        # A chunk is some hundreds of points' work: let the loop serve others between them.
        await asyncio.sleep(0)


async def _simplified(
    herd: HerdClient,
    client_id: str,
    since_ns: int,
    until_ns: int,
    metres: float,
    points: bool,
) -> AsyncGenerator[list[Point], None]:
    """The window's pages, simplified with a tolerance of ``metres`` (0: every point)."""
    simplifier = Simplifier(metres, lat_lon=lat_lon) if metres else None
    async with contextlib.aclosing(
        herd.history_pages(client_id, since_ns, until_ns, points=points)
    ) as pages:
        async for page in pages:
            yield page if simplifier is None else simplifier.add(page)
    if simplifier is not None:
        yield simplifier.end()
