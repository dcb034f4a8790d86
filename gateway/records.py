"""How the gateway shows a herd record in JSON (REST answers and WebSocket messages), and the
strict JSON encoder every answer goes through."""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from backend.protocol import MAX_TIME_BYTES, MAX_TIME_S, ProtocolError, Record

from .history.lines import Point, herd_json

__all__ = [
    "RECORD_KEYS",
    "attributes_json",
    "dumps",
    "event_json",
    "has_event",
    "herd_json",
    "json_response",
    "point_json",
    "record_json",
    "record_text",
    "records_body",
    "records_json",
    "records_response",
]

log = logging.getLogger("herd.gateway")


# JSON as RFC 8259 has it: NaN and Infinity are not JSON, and a browser's JSON.parse refuses
# a whole document for one of them. Nothing the gateway renders holds one; were a bug to
# produce one, the request fails alone (500) rather than every viewer's map.
def _default(value: object) -> object:
    # A command's id is echoed as the browser sent it, and JSON numbers with a fraction or an
    # exponent are read as Decimal (gateway.phones.load_json): a double if one holds it, else
    # its text.
    if isinstance(value, Decimal):
        number = float(value)
        return number if math.isfinite(number) else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


dumps = functools.partial(json.dumps, allow_nan=False, default=_default)


def json_response(data: Any, *, status: int = 200, **kwargs: Any) -> web.Response:
    """``web.json_response`` with the strict encoder."""
    return web.json_response(data, status=status, dumps=dumps, **kwargs)


def records_response(data: Any) -> web.Response:
    """JSON of records as ``record_json`` shows them (numbers finite or null), with orjson:
    a page of 10,000 points takes json.dumps some 50 ms, orjson a tenth of that."""
    return web.Response(body=records_body(data), content_type="application/json")


def records_body(data: Any) -> bytes:
    """``records_response``'s body: orjson's compact JSON, or, for what orjson cannot write
    (an integer past 64 bits in a point's attributes), the strict encoder's, as compact."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _seconds(client_time: str) -> float | None:
    """A client time as a float for the map, or None if it is not one a browser can show:
    unreadable, or past the herd's latest time (a record from a server before the bound)."""
    if len(client_time) > MAX_TIME_BYTES:
        return None
    try:
        value = float(client_time)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= MAX_TIME_S else None


# The keys of a record as the API shows it, in order (the OpenAPI document describes each).
RECORD_KEYS = (
    "client_id",
    "lat",
    "lon",
    "location",
    "client_time",
    "time",
    "server",
    "time_diff",
    "at",
    "attributes",
)


def record_json(record: Record) -> dict[str, Any]:
    """A herd record as the API shows it; ``at`` is the exact AT line.

    Never raises and never holds NaN or infinity: ``time`` is null for a client time that is
    past the herd's bound (kept exactly in ``client_time``), ``lat``/``lon`` null for a
    location that does not parse."""
    lat: float | None
    lon: float | None
    try:
        lat, lon = record.lat_lng
    except (ProtocolError, ValueError):
        lat = lon = None
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        lat = lon = None
    return {
        "client_id": record.client_id,
        "lat": lat,
        "lon": lon,
        "location": record.location,
        "client_time": record.client_time,
        "time": _seconds(record.client_time),
        "server": record.server_id,
        "time_diff": record.time_diff,
        "at": record.line.decode(errors="replace"),
        "attributes": attributes_json(record.attributes),
    }


def point_json(point: Point) -> dict[str, Any]:
    """``record_json`` of a point read from a history answer (``gateway.history.lines``): the
    same document, from the line's fields. Its location is strictly inside its range and its
    time one the herd takes (the reader checked both), so only a time that rounds past the
    herd's latest as a float is shown as null."""
    seconds = float(point.client_time)
    return {
        "client_id": point.client_id,
        "lat": float(point.lat),
        "lon": float(point.lon),
        "location": point.location,
        "client_time": point.client_time,
        "time": seconds if seconds <= MAX_TIME_S else None,
        "server": point.server_id,
        "time_diff": point.time_diff,
        "at": "AT " + point.body,
        "attributes": point.shown,
    }


def record_text(record: Record) -> str:
    """``record_json(record)`` as JSON text, the same document ``dumps`` writes (without its
    spaces); raises what ``dumps`` raises for a value JSON cannot hold (a bug)."""
    shown = record_json(record)
    try:
        # orjson would write NaN or infinity as null rather than refuse it, but record_json
        # holds neither (its numbers are checked, and herd_json nulls them in attributes); it
        # is a tenth of json's cost, for the record of every client in every snapshot.
        return orjson.dumps(shown).decode()
    except orjson.JSONEncodeError:
        # An integer past 64 bits or a lone surrogate from the attributes: json writes both.
        return dumps(shown)


# Nineteen digits in a row: perhaps an integer past 64 bits, which orjson reads as a double
# and json as the integer it is (``herd_json``).
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def attributes_json(raw: bytes) -> dict[str, Any]:
    """A record's attributes as the herd carries them (a JSON object), or {}."""
    if not raw:
        return {}
    if _LONG_NUMBER.search(raw) is None:
        # The herd let them in only if orjson reads them (backend.protocol.check_attributes),
        # so this is what herd_json reads, in a tenth of its time (history exports read
        # hundreds of thousands).
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            return value if isinstance(value, dict) else {}
    try:
        value = herd_json(raw)
    except ValueError:
        log.warning("unreadable attributes left out: %r", raw[:200])
        return {}
    return value if isinstance(value, dict) else {}


# Attributes that make a point an event on the WebSocket, and the event's type.
EVENT_KEYS = {"alarm": "alarm", "transition": "transition"}


def has_event(raw: bytes) -> bool:
    """Whether attributes (as the herd carries them) may hold an event; cheap, no parsing."""
    return b'"alarm"' in raw or b'"transition"' in raw


def event_json(shown: dict[str, Any]) -> dict[str, Any] | None:
    """The event a shown record carries (``record_json``), or None: ``{"type": "alarm",
    "client_id", "point", "alarm": "sos"}`` or ``{"type": "transition", "client_id", "point",
    "event": "enter" | "leave", "region": ...}``."""
    attributes = shown["attributes"]
    for key, kind in EVENT_KEYS.items():
        value = attributes.get(key)
        if not value:
            continue
        event: dict[str, Any] = {"type": kind, "client_id": shown["client_id"], "point": shown}
        if isinstance(value, dict):
            event.update({k: v for k, v in value.items() if k not in event})
        else:
            event[key] = value
        return event
    return None


def records_json(records: Iterable[Record]) -> list[dict[str, Any]]:
    """``record_json`` of each record; one that cannot be shown is left out with a warning,
    never taking the rest of the document with it."""
    shown = []
    for record in records:
        try:
            shown.append(record_json(record))
        except Exception:  # a bug for one record must not hide every other client
            log.exception("cannot render the record %r; left out", record.line[:200])
    return shown
