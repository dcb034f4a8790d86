"""Overland: GeoJSON batches of points, answered ``{"result": "ok"}`` so the app drops them."""

from __future__ import annotations

from collections.abc import Mapping

from .attributes import (
    PER_UNIT,
    _measure,
    _put,
    _texts,
)
from .reports import (
    NO_POSITION,
    Entry,
    Report,
    _batch,
    _report,
)
from .values import (
    PhoneError,
    _device,
    _missing,
    load_json,
)

# -- Overland ----------------------------------------------------------------------------

# The client ID of an Overland feature with an empty device_id (the app's default), when
# neither ?device_id= nor a write token names one.
OVERLAND_DEVICE = "overland"
_OVERLAND_CHARGING = {"charging": True, "full": True, "unplugged": False}


def overland(
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    now_ns: int,
    *,
    max_future: float | None = None,
    fallback: str = OVERLAND_DEVICE,
) -> list[Entry]:
    """Reports in an Overland batch ``{"locations": [Feature, ...]}``, in order.

    GeoJSON coordinates are ``[lon, lat]``. A feature's client ID is its
    ``properties.device_id``, else ``?device_id=``, else ``fallback``. A feature that
    cannot be stored (no geometry: an app event) is Skipped. ``headers`` is unused (kept so
    the parsers share a shape). Raises PhoneError(400) for a body that is not a batch.
    """
    payload = load_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("locations"), list):
        raise PhoneError(400, 'Overland sends {"locations": [...]}')
    default = query.get("device_id") or fallback
    features = payload["locations"]
    return _batch(
        features, "location", lambda item: _overland_feature(item, now_ns, default, max_future)
    )


def _overland_feature(
    feature: object, now_ns: int, default: str, max_future: float | None
) -> Report:
    if not isinstance(feature, dict):
        raise PhoneError(400, "must be a GeoJSON Feature object")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") != "Point":
        raise PhoneError(400, "has no GeoJSON Point geometry", NO_POSITION)
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        raise PhoneError(400, "coordinates must be [lon, lat]")
    properties = feature.get("properties", {})
    if not isinstance(properties, dict):
        raise PhoneError(400, "properties must be an object")
    device = properties.get("device_id")
    client_id, name = _device(default if _missing(device) else device)
    timestamp = properties.get("timestamp")
    if _missing(timestamp):
        raise PhoneError(400, "properties.timestamp is missing")
    attributes: dict[str, object] = {}
    accuracy = properties.get("horizontal_accuracy")
    _put(attributes, "accuracy", _measure(accuracy, "accuracy"))
    altitude = properties.get("altitude")
    if _missing(altitude) and len(coordinates) > 2:
        altitude = coordinates[2]  # GeoJSON's optional third coordinate
    _put(attributes, "altitude", _measure(altitude, "altitude"))
    _put(attributes, "speed", _measure(properties.get("speed"), "speed"))
    _put(attributes, "heading", _measure(properties.get("course"), "heading"))
    level = properties.get("battery_level")
    _put(attributes, "battery", _measure(level, "battery", PER_UNIT))
    state = properties.get("battery_state")
    if isinstance(state, str):
        _put(attributes, "charging", _OVERLAND_CHARGING.get(state))
    _put(attributes, "motion", _texts(properties.get("motion")))
    _put(attributes, "name", name)
    # GeoJSON order: longitude first.
    lon, lat = coordinates[0], coordinates[1]
    names = ("coordinates[1] (lat)", "coordinates[0] (lon)", "properties.timestamp")
    return _report(
        client_id, lat, lon, timestamp, now_ns, names, max_future=max_future, attributes=attributes
    )
