"""Traccar Client (all generations) and OsmAnd: a query string, a form body, a JSON object or
a JSON array, at ``/`` as Traccar's own server takes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from .attributes import (
    KNOT,
    PER_UNIT,
    _flag,
    _measure,
    _measures,
    _put,
    _text,
)
from .reports import (
    Entry,
    Heartbeat,
    Report,
    _batch,
    _fix,
)
from .values import (
    MAX_FORM_FIELDS,
    PhoneError,
    _device,
    _first,
    _missing,
    load_json,
)

# -- Traccar / OsmAnd --------------------------------------------------------------------


# Parameters that make a request to the root URL a Traccar or OsmAnd report, not a visit
# to the map: OsmAnd's default template has no ID at all.
_TRACCAR_KEYS = ("id", "deviceid", "lat", "lon", "location", "timestamp")


def traccar_query(query: Mapping[str, str]) -> bool:
    """True if a query string is a Traccar/OsmAnd report (it has an ID, a position or a
    timestamp), which the root URL must answer as one."""
    return any(key in query for key in _TRACCAR_KEYS)


def traccar(
    query: Mapping[str, str],
    content_type: str,
    body: bytes,
    now_ns: int,
    *,
    max_future: float | None = None,
) -> list[Entry]:
    """Reports in a Traccar Client or OsmAnd request, any generation.

    ``application/json`` bodies are one object (generation B, or flat) or an array of flat
    objects (generation C ``uploadJson``). Otherwise parameters come from the query, or,
    when it has no ``id``/``deviceid``, from a form-encoded body. A position without
    lat/lon (a heartbeat, a cell- or Wi-Fi-only report) is a :class:`Heartbeat`. Raises
    PhoneError(400) for a missing ID or an invalid field of a lone position; in an array,
    such a position is Skipped.
    """
    # Traccar's own test: media types are case-insensitive, parameters may follow.
    if content_type.strip().lower().startswith("application/json"):
        payload = load_json(body)
        if isinstance(payload, list):
            return _batch(
                payload, "position", lambda item: _traccar_object(item, now_ns, max_future)
            )
        return [_traccar_object(payload, now_ns, max_future)]
    params = query if "id" in query or "deviceid" in query else _form(body)
    client_id = params.get("id") or params.get("deviceid")
    if not client_id:
        raise PhoneError(400, "Traccar position has no id (or deviceid): add id= to the URL")
    return [_traccar_flat(params, client_id, now_ns, max_future)]


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            body.decode(),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:  # bad UTF-8 (raw or %-encoded), or too many fields
        raise PhoneError(
            400, f"body is not a form of at most {MAX_FORM_FIELDS} UTF-8 fields"
        ) from None
    params: dict[str, str] = {}
    for key, value in pairs:
        params.setdefault(key, value)  # like the query: the first of a repeated key wins
    return params


def _traccar_object(value: object, now_ns: int, max_future: float | None) -> Report | Heartbeat:
    if not isinstance(value, dict):
        raise PhoneError(400, "Traccar JSON is an object or an array of objects")
    client_id = _first(value, ("id", "deviceid", "device_id"))
    if client_id is None:
        raise PhoneError(400, "Traccar position has no id (or deviceid, device_id)")
    location = value.get("location")
    if not isinstance(location, dict):
        return _traccar_flat(value, client_id, now_ns, max_future)
    # Generation B: the background-geolocation record, in its own units (m/s, 0..1).
    cid, name = _device(client_id)
    coords = location.get("coords")
    coords = coords if isinstance(coords, dict) else {}
    battery = location.get("battery")
    battery = battery if isinstance(battery, dict) else {}
    attributes = _measures(coords, ("accuracy", "altitude", "speed", "heading"))
    _put(attributes, "battery", _measure(battery.get("level"), "battery", PER_UNIT))
    _put(attributes, "charging", _flag(battery.get("is_charging")))
    _put(attributes, "trigger", _text(location.get("event")))
    _put(attributes, "name", name)
    lat, lon, stamp = coords.get("latitude"), coords.get("longitude"), location.get("timestamp")
    names = ("coords.latitude", "coords.longitude", "location.timestamp")
    return _fix(cid, lat, lon, stamp, now_ns, names, max_future, attributes)


def _traccar_flat(
    params: Mapping[str, Any], client_id: object, now_ns: int, max_future: float | None
) -> Report | Heartbeat:
    """A query, form or flat JSON object. OsmAnd's template is told by its ``hdop``: its
    speed is m/s and its hdop the accuracy in metres; Traccar Client's speed is knots."""
    cid, name = _device(client_id)
    osmand = "hdop" in params
    attributes: dict[str, object] = {}
    accuracy = params.get("hdop") if osmand else params.get("accuracy")
    _put(attributes, "accuracy", _measure(accuracy, "accuracy"))
    _put(attributes, "altitude", _measure(params.get("altitude"), "altitude"))
    _put(attributes, "speed", _measure(params.get("speed"), "speed", 1 if osmand else KNOT))
    _put(attributes, "heading", _measure(_first(params, ("bearing", "heading")), "heading"))
    _put(attributes, "battery", _measure(_first(params, ("batt", "battery")), "battery"))
    _put(attributes, "charging", _flag(params.get("charge")))
    _put(attributes, "event", _text(params.get("event")))
    _put(attributes, "alarm", _text(params.get("alarm")))
    _put(attributes, "name", name)
    lat, lon, location = params.get("lat"), params.get("lon"), params.get("location")
    if _missing(lat) and _missing(lon) and not _missing(location):
        parts = location.split(",") if isinstance(location, str) else []
        if len(parts) != 2:
            raise PhoneError(400, "location must be lat,lon")
        lat, lon = parts
    # No position: a heartbeat, or a cell- or Wi-Fi-only report (Traccar reuses the last one).
    names = ("lat", "lon", "timestamp")
    return _fix(cid, lat, lon, params.get("timestamp"), now_ns, names, max_future, attributes)
