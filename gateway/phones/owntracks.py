"""OwnTracks in HTTP mode (``/pub``): one message per request, or an array of them."""

from __future__ import annotations

from collections.abc import Mapping

from .attributes import (
    KMH,
    _measure,
    _put,
    _text,
    _texts,
)
from .reports import (
    NO_POSITION,
    Entry,
    Report,
    Skipped,
    _batch,
    _report,
)
from .values import (
    _OWNTRACKS_TOPIC,
    PhoneError,
    _clean,
    _client_id,
    _missing,
    device_client_id,
    load_json,
)

# -- OwnTracks ---------------------------------------------------------------------------

ENCRYPTED = (
    "encrypted OwnTracks payloads are not supported: clear the encryption key (Settings, "
    "Secret encryption key) in the app"
)
# OwnTracks bs: 0 unknown, 1 unplugged, 2 charging, 3 full.
_OWNTRACKS_CHARGING = {1: False, 2: True, 3: True}


def owntracks(
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    now_ns: int,
    *,
    max_future: float | None = None,
) -> list[Entry]:
    """Reports in an OwnTracks HTTP-mode body: one message or a JSON array of them.

    ``_type: location`` (and a ``transition`` with a position) is a report; every other
    message, and an empty body, yields nothing. A location without ``tst`` is at the
    arrival time (``now_ns``), as OwnTracks Recorder does. Raises PhoneError(400) for
    malformed JSON, a body that is not an object or array, an encrypted message (refused
    visibly: the gateway holds no keys), or a lone location with an invalid field; in an
    array, such a location is Skipped instead.
    """
    if not body.strip():
        return []
    message = load_json(body)
    lowered = _lower_keys(headers)
    messages = message if isinstance(message, list) else [message]
    if any(isinstance(m, dict) and m.get("_type") == "encrypted" for m in messages):
        raise PhoneError(400, ENCRYPTED)

    def parse(item: object) -> Report | Skipped | None:
        return _owntracks_message(item, lowered, query, now_ns, max_future)

    if isinstance(message, list):
        return _batch(message, "message", parse)
    if not isinstance(message, dict):
        raise PhoneError(400, "an OwnTracks message is a JSON object or an array of them")
    entry = parse(message)
    return [] if entry is None else [entry]


def _owntracks_message(
    message: object,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    now_ns: int,
    max_future: float | None,
) -> Report | Skipped | None:
    if not isinstance(message, dict):
        raise PhoneError(400, "an OwnTracks message is a JSON object")
    kind = message.get("_type")
    if kind not in ("location", "transition"):
        return None  # waypoints, cards, lwt, unknown or missing _type: not positions
    lat, lon = message.get("lat"), message.get("lon")
    if kind == "transition" and (_missing(lat) or _missing(lon)):
        return None
    if _missing(lat) and _missing(lon):  # {"_type":"location"} alone: nothing to place
        return Skipped(NO_POSITION, "OwnTracks location has no lat/lon")
    for field, value in (("lat", lat), ("lon", lon)):
        if _missing(value):
            raise PhoneError(400, f"OwnTracks location has no {field}")
    client_id, name = _owntracks_id(headers, query, message.get("topic"))
    attributes: dict[str, object] = {}
    _put(attributes, "accuracy", _measure(message.get("acc"), "accuracy"))
    _put(attributes, "altitude", _measure(message.get("alt"), "altitude"))
    _put(attributes, "speed", _measure(message.get("vel"), "speed", KMH))
    _put(attributes, "heading", _measure(message.get("cog"), "heading"))
    _put(attributes, "battery", _measure(message.get("batt"), "battery"))
    bs = message.get("bs")
    if type(bs) is int:
        _put(attributes, "charging", _OWNTRACKS_CHARGING.get(bs))
    _put(attributes, "trigger", _text(message.get("t")))
    _put(attributes, "regions", _texts(message.get("inregions")))
    event = message.get("event")
    if kind == "transition" and event in ("enter", "leave"):
        transition: dict[str, object] = {"event": event}
        _put(transition, "region", _text(message.get("desc")))
        attributes["transition"] = transition
    _put(attributes, "name", name)
    names = ("lat", "lon", "tst")
    return _report(
        client_id,
        lat,
        lon,
        message.get("tst"),
        now_ns,
        names,
        max_future=max_future,
        attributes=attributes,
    )


def _owntracks_id(
    headers: Mapping[str, str], query: Mapping[str, str], topic: object
) -> tuple[str, str | None]:
    """The client ID, and the device name as sent when the ID's device part differs."""
    user = headers.get("x-limit-u") or query.get("u") or None
    sent = headers.get("x-limit-d") or query.get("d") or None
    match = _OWNTRACKS_TOPIC.fullmatch(topic) if isinstance(topic, str) else None
    if user is None and sent is None and match:
        user, sent = match.group(1), match.group(2)  # as it is, not lower-cased
        device = sent
    else:
        # The Recorder's defaults and lower-casing, so both servers name a phone alike.
        user = (user or "owntracks").lower()
        device = (sent or "phone").lower()
    device = device_client_id(device)
    client_id = _client_id(f"owntracks/{device_client_id(user)}/{device}")
    return client_id, None if sent is None or sent == device else _clean(sent)


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names are case-insensitive; the first of repeated headers wins."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), value)
    return lowered
