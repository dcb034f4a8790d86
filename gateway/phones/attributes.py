"""A point's attributes as the gateway keeps them (docs/gateway.md, the phone table's units):
the helpers each app's parser uses, and the strict check of the REST API's and the WebSocket's."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from backend.protocol import (
    MAX_ATTRIBUTES_BYTES,
    format_attributes,
)

from .values import (
    MAX_ATTRIBUTE_CHARS,
    PhoneError,
    _clean,
    _decimal,
    _missing,
)

# -- attributes --------------------------------------------------------------------------

# OwnTracks regions and Overland motion types are a handful; 16 keeps the object small.
MAX_ATTRIBUTE_ITEMS = 16
# Sane ranges: a value outside is a unit mix-up or an app's "unknown" (-1), and is left
# out (never failing the point for it).
ATTRIBUTE_RANGES: dict[str, tuple[int, int]] = {
    "accuracy": (0, 40_000_000),  # metres: no worse than the Earth's circumference
    "altitude": (-12_000, 100_000),  # metres: the deepest trench to the edge of space
    "speed": (0, 11_200),  # m/s: nothing near the Earth outruns escape velocity
    "heading": (0, 360),  # degrees; 360 is written 0
    "battery": (0, 100),  # percent
}
KMH = Decimal(1000) / Decimal(3600)  # m/s in a km/h (OwnTracks vel)
KNOT = Decimal(1852) / Decimal(3600)  # m/s in a knot (Traccar speed)
PER_UNIT = Decimal(100)  # percent in a 0..1 fraction (battery levels)
# Dropped first, in this order, while the whole is over MAX_ATTRIBUTES_BYTES: the longest
# and least needed. Numbers and flags alone are far under it.
_DROP_ORDER = ("regions", "motion", "transition", "event", "alarm", "trigger", "name")


def _measure(value: object, key: str, scale: Decimal | int = 1) -> float | None:
    """A number in ``key``'s unit (``value`` times ``scale``), or None if absent, not a
    number, or out of the sane range."""
    if _missing(value):
        return None
    number = _decimal(value)
    if number is None or not number.is_finite():
        return None
    result = float(number * scale)
    low, high = ATTRIBUTE_RANGES[key]
    if not low <= result <= high:
        return None
    return result % 360 if key == "heading" else result


def _text(value: object) -> str | None:
    return _clean(value) if isinstance(value, str) and value else None


def _texts(value: object) -> list[str] | None:
    if not isinstance(value, list):
        return None
    texts = [_clean(item) for item in value if isinstance(item, str) and item]
    return texts[:MAX_ATTRIBUTE_ITEMS] or None


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _put(attributes: dict[str, object], key: str, value: object) -> None:
    if value is not None:
        attributes[key] = value


def _measures(source: Mapping[str, object], keys: tuple[str, ...]) -> dict[str, object]:
    """The measures ``source`` holds under their own names (``keys``, in order), in their
    units; absent or out-of-range ones left out."""
    attributes: dict[str, object] = {}
    for key in keys:
        _put(attributes, key, _measure(source.get(key), key))
    return attributes


def fit_attributes(attributes: Mapping[str, object]) -> dict[str, object]:
    """``attributes`` less the longest optional ones (_DROP_ORDER) until the whole fits
    MAX_ATTRIBUTES_BYTES as the herd carries it."""
    kept = dict(attributes)
    for key in _DROP_ORDER:
        if len(format_attributes(kept)) <= MAX_ATTRIBUTES_BYTES:
            break
        kept.pop(key, None)
    return kept


# The attributes the REST API and the WebSocket take, by kind (docs/gateway.md, "Attributes").
API_NUMBERS = ("accuracy", "altitude", "speed", "heading", "battery")
API_TEXTS = ("trigger", "event", "alarm", "name")
API_LISTS = ("motion", "regions")
API_FLAGS = ("charging", "heartbeat")


def api_attributes(value: object) -> dict[str, object]:
    """The attributes of a report sent to the API, checked strictly: the kept set only, each
    in its unit and range (numbers), a string of at most MAX_ATTRIBUTE_CHARS, a list of at
    most MAX_ATTRIBUTE_ITEMS strings, or a flag. Raises PhoneError(400) naming the attribute.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PhoneError(400, "attributes must be an object")
    kept: dict[str, object] = {}
    for key, item in value.items():
        if key in API_NUMBERS:
            number = _measure(item, key)
            if number is None:
                low, high = ATTRIBUTE_RANGES[key]
                raise PhoneError(400, f"attributes.{key} must be a number from {low} to {high}")
            kept[key] = number
        elif key in API_TEXTS:
            if not isinstance(item, str) or not 0 < len(item) <= MAX_ATTRIBUTE_CHARS:
                raise PhoneError(
                    400, f"attributes.{key} must be text of 1 to {MAX_ATTRIBUTE_CHARS} characters"
                )
            kept[key] = _clean(item)
        elif key in API_LISTS:
            if not (
                isinstance(item, list)
                and len(item) <= MAX_ATTRIBUTE_ITEMS
                and all(isinstance(t, str) and 0 < len(t) <= MAX_ATTRIBUTE_CHARS for t in item)
            ):
                raise PhoneError(
                    400, f"attributes.{key} must be a list of at most {MAX_ATTRIBUTE_ITEMS} texts"
                )
            if item:
                kept[key] = [_clean(text) for text in item]
        elif key in API_FLAGS:
            if not isinstance(item, bool):
                raise PhoneError(400, f"attributes.{key} must be true or false")
            kept[key] = item
        elif key == "transition":
            event = item.get("event") if isinstance(item, dict) else None
            region = item.get("region", "") if isinstance(item, dict) else None
            if (
                event not in ("enter", "leave")
                or not isinstance(region, str)
                or len(region) > MAX_ATTRIBUTE_CHARS
                or set(item) - {"event", "region"}
            ):
                raise PhoneError(
                    400, 'attributes.transition must be {"event": "enter"|"leave", "region"}'
                )
            kept[key] = {"event": event, "region": _clean(region)} if region else {"event": event}
        else:
            raise PhoneError(400, f"attributes.{key} is not an attribute the herd keeps")
    return kept
