"""``GET /api/v1/clients/{id}/history``: a client's points oldest first, as JSON pages, or the
whole window streamed as one GPX or GeoJSON document; simplified with ``simplify=<metres>``.

The JSON answer reads one HISTORY of the herd, written as JSON from its text where the
templates take it (``gateway.history.templates``). An export pages through the window with
HISTORY ... POINTS (``HerdClient.history_lines`` for GPX, written from the herd's text;
``HerdClient.history_pages`` for GeoJSON and simplified trails) and writes each page through
the formats of ``gateway/history`` as it comes, so it holds about two pages (20,000 points)
whatever the window's size. Its status is sent before the points: a herd that fails before the first
page is answered 503, but one that fails later can only cut the answer short, which an HTTP
client sees as a body that ends before its last chunk (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

import orjson
from aiohttp import hdrs, web

from backend.protocol import MAX_HISTORY_LIMIT, MAX_TIME_S, time_to_ns

from . import phones, rules
from .errors import ApiError
from .herd_client import HerdClient, HerdRefused, HerdUnavailable
from .history import GeoJsonWriter, GpxWriter, Simplifier, simplify
from .history.lines import BadAnswer, Point
from .history.templates import JsonRecords
from .keys import HERD
from .records import point_json, records_response

__all__ = ["attachment", "get_history", "history_off"]

log = logging.getLogger("herd.gateway.history")

T = TypeVar("T")

# The herd's last time, in nanoseconds: a later end of a window reads the same.
LATEST_NS = MAX_TIME_S * 1_000_000_000
# Points of a page written between two turns of the event loop: 500 points are 170 KB of GPX
# or 180 KB of GeoJSON, a few ms of work.
EXPORT_SLICE = 500
# Bytes of the herd's lines written as GPX between two turns of the event loop, when written
# from the text (``GpxWriter.add_lines``, some 3 us a point): 256 KB are some 1,400 points,
# 500 KB of GPX, a few ms of work.
EXPORT_BYTES = 256 * 1024
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
    herd = request.app[HERD]
    try:
        if metres or not _json_text(client_id):
            records: JsonRecords | list[Point] = await herd.history_points(
                client_id, since_ns, until_ns, ask
            )
        else:
            records = await herd.history_json(client_id, since_ns, until_ns, ask)
    except HerdRefused as exc:
        raise history_off(exc) from None
    page_end = min(len(records), skip + limit)
    next_cursor = None
    if page_end > skip and len(records) == ask:
        if isinstance(records, JsonRecords):
            times = [t.decode() for t in records.times[:page_end]]
        else:
            times = [r.client_time for r in records[:page_end]]
        last = time_to_ns(times[-1])
        next_cursor = f"{last}:{sum(1 for t in times if time_to_ns(t) == last)}"
    if isinstance(records, JsonRecords):
        return _json_page(client_id, records.items(skip, page_end), next_cursor)
    page = records[skip:page_end]
    # A simplified page keeps the points that shape it; the cursor goes on after the page.
    kept = simplify(page, metres, lat_lon=lat_lon) if metres else page
    points = [point_json(p) for p in kept]
    return records_response({"client_id": client_id, "points": points, "next_cursor": next_cursor})


def _json_text(client_id: str) -> bool:
    """Whether orjson writes this client ID (not one with a lone surrogate)."""
    try:
        orjson.dumps(client_id)
    except orjson.JSONEncodeError:
        return False
    return True


def _json_page(client_id: str, points: list[bytes], next_cursor: str | None) -> web.Response:
    """``records_response`` of a page whose points are JSON already (``JsonRecords.items``):
    orjson's document."""
    head = [orjson.dumps({"client_id": client_id})[:-1], b',"points":[']
    tail = [b'],"next_cursor":', orjson.dumps(next_cursor), b"}"]
    return web.Response(body=b"".join(head + points + tail), content_type="application/json")


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

    async def gpx_lines(first: bytes | None, rest: AsyncGenerator[bytes, None]) -> None:
        gpx = GpxWriter(client_id)
        body = first
        while body is not None:
            start = 0
            while start < len(body):
                end = body.find(b"\n", start + EXPORT_BYTES) + 1 or len(body)
                await _send(response, gpx.add_lines(body[start:end]))
                start = end
            body = await anext(rest, None)
        await _send(response, gpx.close())

    async def gpx(first: list[Point] | None, rest: AsyncGenerator[list[Point], None]) -> None:
        gpx = GpxWriter(client_id)
        await _write(response, gpx.add_points, first or [], rest)
        await _send(response, gpx.close())

    async def geojson(first: list[Point] | None, rest: AsyncGenerator[list[Point], None]) -> None:
        writer = GeoJsonWriter(client_id)
        await _write(response, writer.add_trail_points, first or [], rest)
        await _send(response, writer.end_trail())
        async with contextlib.aclosing(pages(True)) as second_pass:
            await _write(response, writer.add_points, [], second_pass)
        await _send(response, writer.close())

    if export == "gpx" and not metres:
        lines = herd.history_lines(client_id, since_ns, until_ns)
        return await _stream(request, response, client_id, lines, gpx_lines)
    write = gpx if export == "gpx" else geojson
    return await _stream(request, response, client_id, pages(export == "gpx"), write)


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    client_id: str,
    pages: AsyncGenerator[T, None],
    write: Callable[[T | None, AsyncGenerator[T, None]], Awaitable[None]],
) -> web.StreamResponse:
    """``response``, written by ``write`` from the first of ``pages`` and the rest."""
    # The first page is read before the status is sent: a dead herd, or one with history
    # off, is still a 503 here.
    async with contextlib.aclosing(pages) as first_pass:
        try:
            first = await anext(first_pass, None)
        except HerdRefused as exc:
            raise history_off(exc) from None
        await response.prepare(request)
        try:
            await write(first, first_pass)
        except (HerdUnavailable, HerdRefused, BadAnswer) as exc:
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
