"""Writing a client's history through the gateway (docs/history.md, "Writing history").

- ``DELETE /api/v1/clients/{id}/history?until=`` deletes the client's points at or before
  ``until`` on every server (FORGET, replicated).
- ``POST /api/v1/clients/{id}/history`` imports a GPX or GeoJSON file, all or nothing as
  far as the file goes: it is read whole (up to ``[gateway] max_import_bytes``), parsed in an
  executor (``gateway.history.parse_import``: any bad point refuses it, naming the point),
  the points the herd already holds are left out, and the rest go to the herd as REPORT (or
  IAMAT) lines pipelined on one connection; the herd keeps each one in history (late ones
  included) and replicates it like any other point.

Both need what reporting for the client needs: with tokens configured, its device token.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable

from aiohttp import hdrs, web

from backend.protocol import MAX_HISTORY_LIMIT, MAX_TIME_S, parse_invalid_reply
from backend.protocol import History as HistoryCommand

from . import phones, rules
from .errors import ApiError
from .herd_client import HerdClient, HerdRefused, history_records
from .history import ImportedPoint, parse_import
from .history.held import Identity, check_retention, held_identity, identity, windows
from .keys import ACCESS, CONFIG, HERD, IMPORTS, METRICS
from .records import json_response
from .site import read_bounded

__all__ = ["MAX_IMPORTS", "delete_history", "import_history"]

log = logging.getLogger("herd.gateway.history")

# Imports a gateway reads and parses at once; the others wait their turn, their bodies unread.
# A file near the limits holds its body (up to max_import_bytes) and about 110 MB more while
# gpxpy parses it (docs/history-formats.md, "Limits"); two keep both cores busy.
MAX_IMPORTS = 2
# Seconds a client is told to wait when the herd refused points of an import (its budgets
# refill per second).
RETRY_AFTER = 1
_NS_PER_S = 1_000_000_000


def _client_id(request: web.Request) -> str:
    client_id = phones.check_client_id(request.match_info["client_id"])  # PhoneError: 400
    # Deleting or importing is writing: the device token of this client, within its rate.
    request.app[ACCESS].check_reports(request, [client_id])
    return client_id


async def delete_history(request: web.Request) -> web.Response:
    """Delete the client's points at or before ``until`` on every server."""
    client_id = _client_id(request)
    raw = request.query.get("until")
    if raw is None:
        raise ApiError(400, "until is required: POSIX seconds; points at or before it go")
    # Past the herd's last time (the end of 9999) deletes the same: every point.
    until_ns = min(rules.seconds_ns("until", raw, 0), MAX_TIME_S * _NS_PER_S)
    max_future = request.app[CONFIG].limits.max_future
    if until_ns > time.time_ns() + round(max_future * _NS_PER_S):
        # The deletion raises the client's floor to until: no point at or before it is kept
        # from then on, so a later until would stop the client's history until that time.
        raise ApiError(
            400, f"until is more than {max_future:g} s ahead: to delete everything, use now"
        )
    try:
        echoed = await request.app[HERD].forget(client_id, until_ns)
    except HerdRefused as exc:
        raise ApiError(503, f"history is off in the herd: {exc}") from None
    request.app[METRICS].history_deletions += 1
    log.info("history of %r deleted up to %s s (for %s)", client_id, echoed, request.remote)
    return json_response({"client_id": client_id, "until": echoed})


async def import_history(request: web.Request) -> web.Response:
    """Import a GPX or GeoJSON file into the client's history."""
    metrics = request.app[METRICS]
    try:
        counts = await _import(request)
    except ApiError as exc:
        if exc.status in (400, 413, 415):  # the file was refused; nothing was sent
            metrics.history_imports["refused"] += 1
        raise
    except web.HTTPException as exc:
        if exc.status in (408, 413):
            metrics.history_imports["refused"] += 1
        raise
    metrics.history_imports["imported"] += 1
    metrics.history_points["imported"] += counts["imported"]
    metrics.history_points["duplicate"] += counts["duplicates"]
    metrics.history_points["not_kept"] += counts["not_kept"]
    return json_response(counts)


async def _import(request: web.Request) -> dict[str, int]:
    client_id = _client_id(request)  # before the body is read
    async with request.app[IMPORTS]:  # a few at a time: each may hold 100s of MB parsing
        return await _import_file(request, client_id)


async def _import_file(request: web.Request, client_id: str) -> dict[str, int]:
    config = request.app[CONFIG]
    gateway = config.gateway
    body = await read_bounded(
        request, gateway.max_import_bytes, gateway.body_timeout, gateway.max_body_bytes
    )
    now_ns = time.time_ns()
    parse = functools.partial(
        parse_import,
        body,
        request.headers.get(hdrs.CONTENT_TYPE),
        now=now_ns / _NS_PER_S,
        max_future=config.limits.max_future,
        max_bytes=gateway.max_import_bytes,
    )
    # CPU-bound, seconds for a file near the limits: never on the event loop.
    result = await asyncio.get_running_loop().run_in_executor(None, parse)
    check_retention(result.points, now_ns, config.history.keep_days)
    herd = request.app[HERD]
    try:
        before = await _held(herd, client_id, result.points)
        new = [point for point in result.points if identity(point) not in before]
        await _send(herd, client_id, new, len(result.points))
        after = await _held(herd, client_id, new)
    except HerdRefused as exc:  # to HISTORY: history is off
        raise ApiError(503, f"history is off in the herd: {exc}") from None
    # Counted from what the herd holds now: a point it answered but does not keep (at or
    # before a deletion of this client's history) is not imported.
    imported = sum(1 for point in new if identity(point) in after)
    log.info(
        "imported %d points of %s into %r (%d held already, %d not kept)",
        imported,
        result.format,
        client_id,
        len(result.points) - len(new),
        len(new) - imported,
    )
    return {
        "imported": imported,
        "duplicates": result.duplicates + len(result.points) - len(new),
        "not_kept": len(new) - imported,
    }


async def _send(herd: HerdClient, client_id: str, points: list[ImportedPoint], total: int) -> None:
    """Each point to the herd, pipelined. Raises 429 if the herd refused some (a budget):
    those before them are in, and the file may be sent again."""
    lines = [
        phones.Report(client_id, p.lat, p.lon, p.client_time, p.attributes).command()
        for p in points
    ]
    replies = await herd.pipeline(lines)
    refused = sum(1 for reply in replies if parse_invalid_reply(reply) is not None)
    if refused or len(replies) < len(lines):
        stored = len(replies) - refused
        raise ApiError(
            429,
            f"the herd refused points over its per-client budget: {stored} of the file's "
            f"{total} were sent; send the file again later (points the herd holds count as "
            "duplicates)",
            {hdrs.RETRY_AFTER: str(RETRY_AFTER)},
        )


async def _held(herd: HerdClient, client_id: str, points: list[ImportedPoint]) -> set[Identity]:
    """Which of ``points`` (oldest first) the herd holds, read window by window."""
    held: set[Identity] = set()
    for first, last, group in windows(points):
        records = await herd.history(client_id, first, last, MAX_HISTORY_LIMIT, points=False)
        if len(records) < MAX_HISTORY_LIMIT:
            held.update(held_identity(record) for record in records)
            continue
        # Ten times more held points there than the file has: ask for each time alone.
        times = sorted({ns for ns, _ in group})
        lines = [HistoryCommand(client_id, ns, ns, MAX_HISTORY_LIMIT).encode() for ns in times]
        held.update(_identities(await herd.pipeline(lines)))
    return held


def _identities(replies: Iterable[bytes]) -> Iterable[Identity]:
    for reply in replies:
        if parse_invalid_reply(reply) is not None:
            raise HerdRefused(reply.decode(errors="replace").strip())
        yield from (held_identity(record) for record in history_records(reply))
