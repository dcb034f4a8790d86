"""Phone-app location uploads turned into herd reports, with no I/O.

The gateway hands this module what an HTTP request carried (body bytes, headers, query) and
gets back a list of :class:`Report`, each ready to send as one ``IAMAT`` line, or a
:class:`PhoneError` whose ``status`` and ``message`` it answers with. The wire formats are
those of ``shared/reference/phone-apps.md``.

Client IDs, per format (used verbatim unless stated; always checked against the herd's
rule: non-empty, no white space, at most ``MAX_CLIENT_ID`` characters):

- **OwnTracks** (HTTP mode): ``owntracks/<user>/<device>``. Like OwnTracks Recorder, user and
  device come from the ``X-Limit-U`` / ``X-Limit-D`` headers, else the ``u`` / ``d`` query
  parameters, else default to ``owntracks`` / ``phone``, and are lower-cased. Only when
  none of those four is given, a body ``topic`` of the form ``owntracks/<user>/<device>``
  is used as the ID as it is (not lower-cased). Messages other than ``_type: location``
  (transition, waypoint, card, lwt, encrypted, ...) and empty bodies yield no reports.
- **Traccar / OsmAnd**: the ``id`` parameter, else ``deviceid``; in JSON also ``device_id``
  (generation B puts it there). A JSON integer ID is written in decimal.
- **Overland**: each feature's ``properties.device_id``, else the ``device_id`` query
  parameter (an empty ``device_id`` counts as absent).

Times become POSIX seconds as protocol text, computed exactly (``decimal``, never a float
made from text): numbers are seconds, or milliseconds from 2**31 - 1 up (Traccar's rule);
ISO 8601 date-times keep their fraction; a naive date-time is UTC; a missing time is "now".

A Traccar report without ``lat``/``lon`` (a cell- or wifi-only fix) is refused: Traccar
reuses the device's last known position, but the gateway keeps no state to reuse.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from backend.protocol import (
    MAX_ATTRIBUTES_BYTES,
    MAX_CLIENT_ID_BYTES,
    MAX_LOCATION_BYTES,
    MAX_TIME_BYTES,
    MAX_TIME_S,
    format_attributes,
    time_to_ns,
)

from .numbers import MAX_NUMBER_CHARS, NumberError, bounded_decimal

__all__ = [
    "MAX_BATCH",
    "MAX_CLIENT_ID",
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_CHARS",
    "MAX_TIME",
    "PhoneError",
    "Report",
    "check_client_id",
    "load_json",
    "overland",
    "owntracks",
    "parse_time",
    "report",
    "traccar",
]

# Device IDs are IMEIs, UUIDs or MQTT topics; 256 is ample and keeps an IAMAT line far
# below the herd's 8 KiB line limit even in 4-byte UTF-8.
MAX_CLIENT_ID = 256
# Phones upload tens to hundreds of points at a time; 1000 covers any batch-size setting,
# and is a day of fixes at a 90 s interval. Bigger requests are abuse, not backlog.
MAX_BATCH = 1000
# The deepest real payload (Overland) nests 5 levels; 32 is generous, and far below the
# depth at which the json module would hit Python's recursion limit.
MAX_JSON_DEPTH = 32
# Traccar Client sends about 15 form fields plus configured attributes.
MAX_FORM_FIELDS = 256
_NANOSECOND = Decimal("1e-9")
# Nanoseconds need 9 decimals; twice that admits any real clock and bounds the text.
MAX_TIME_DECIMALS = 18
# The herd's latest time (end of 9999): past it a number is a unit mix-up (microseconds,
# nanoseconds). The herd refuses later times, so the gateway refuses them first.
MAX_TIME = MAX_TIME_S
# Traccar: a timestamp below 2**31 - 1 is seconds, from there on milliseconds. Applied to
# fractional values too, so that 1750000000000 and 1750000000000.0 mean the same instant.
MS_THRESHOLD = 2**31 - 1

# The herd splits lines on exactly these six bytes (backend.protocol.parse_line).
_WHITE_SPACE = frozenset(" \t\r\n\x0b\x0c")
_POSIX_TIME = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# ISO 8601 extended format, or Traccar's "yyyy-MM-dd HH:mm:ss"; seconds, fraction and
# offset are optional.
_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r" ?(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)?"
)
_OWNTRACKS_TOPIC = re.compile(r"owntracks/[^/]+/[^/]+")
# JSON depth check: strip strings, keep brackets, then peel innermost pairs level by level.
# The closing quote is optional so that a match never fails: retrying an unterminated
# string from each escaped quote inside it would be quadratic.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_JSON_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_JSON_PAIR = re.compile(r"[\[{][\]}]")
_JSON_TOO_DEEP = re.compile(rf"[\[{{]{{{MAX_JSON_DEPTH + 1}}}")

_NS_PER_S = 1_000_000_000


class PhoneError(ValueError):
    """A request a phone app sent that we cannot turn into reports.

    ``status`` is the HTTP status to answer (400) and ``message`` says what is wrong, in
    words fit to show the app's user.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __reduce__(self) -> tuple[type[PhoneError], tuple[int, str]]:
        return PhoneError, (self.status, self.message)


@dataclass(frozen=True, slots=True)
class Report:
    """One client's position, valid for the herd: construction checks every field.

    ``time`` is POSIX seconds as protocol text (``1750000000`` or ``1750000000.862``).
    Raises PhoneError if a field breaks the herd's rules.
    """

    client_id: str
    lat: float
    lon: float
    time: str
    # What the phone said besides the position (docs/gateway.md, "Attributes"): carried by
    # the herd with the record, as REPORT instead of IAMAT.
    attributes: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _client_id(self.client_id)
        for name, value, limit in (("lat", self.lat, 90), ("lon", self.lon, 180)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PhoneError(400, f"{name} must be a number")
            if not -limit <= value <= limit:  # also refuses nan and inf
                raise PhoneError(400, f"{name} must be a number between -{limit} and {limit}")
            # Adding 0.0 turns -0.0 into 0.0 and an int into a float.
            object.__setattr__(self, name, value + 0.0)
        if not isinstance(self.time, str) or not _POSIX_TIME.fullmatch(self.time):
            raise PhoneError(400, "time must be POSIX seconds as text")
        # The herd's bounds on a record (backend.protocol): what it would refuse, refused here.
        if len(self.time) > MAX_TIME_BYTES or Decimal(self.time) > MAX_TIME_S:
            raise PhoneError(400, "time is after the year 9999")
        if len(self.location) > MAX_LOCATION_BYTES:  # unreachable: 7 decimals at most
            raise PhoneError(400, "location is too long")
        if len(format_attributes(self.attributes)) > MAX_ATTRIBUTES_BYTES:
            raise PhoneError(400, f"the report's attributes are over {MAX_ATTRIBUTES_BYTES} bytes")

    @property
    def location(self) -> str:
        """ISO 6709 for IAMAT: each number signed, rounded to 7 decimals (about 1 cm),
        trailing zeros trimmed (``+34.06893-118.445127``, ``+0+0``); zero is ``+``."""
        return _degrees(self.lat) + _degrees(self.lon)

    def command(self) -> bytes:
        """The herd command with its newline: ``IAMAT <client_id> <location> <time>``, or
        ``REPORT <client_id> <location> <time> <attributes>`` when there are attributes."""
        attributes = format_attributes(self.attributes)
        if not attributes:
            return f"IAMAT {self.client_id} {self.location} {self.time}\n".encode()
        line = f"REPORT {self.client_id} {self.location} {self.time} ".encode()
        return line + attributes + b"\n"


def _degrees(value: float) -> str:
    text = f"{abs(value):.7f}".rstrip("0").rstrip(".")
    return ("-" if value < 0 and text != "0" else "+") + text


def report(
    client_id: object,
    lat: object,
    lon: object,
    time: object,
    now_ns: int,
    *,
    max_future: float | None = None,
) -> Report:
    """A report from loosely typed values, as a JSON API receives them.

    ``lat``/``lon`` are numbers or numeric strings in degrees; ``time`` is anything
    :func:`parse_time` takes. With ``max_future``, a time more than that many seconds after
    ``now_ns`` is refused (the herd's ``[limits] max_future``). Raises PhoneError(400) naming
    the field that is wrong.
    """
    return _report(client_id, lat, lon, time, now_ns, max_future=max_future)


def _report(
    client_id: object,
    lat: object,
    lon: object,
    time: object,
    now_ns: int,
    names: tuple[str, str, str] = ("lat", "lon", "time"),
    *,
    max_future: float | None,
) -> Report:
    lat_name, lon_name, time_name = names
    checked_id = _client_id(client_id)
    lat_value = _coordinate(lat, lat_name, 90)
    lon_value = _coordinate(lon, lon_name, 180)
    when = _time(time, now_ns, time_name)
    if max_future is not None and time_to_ns(when) > now_ns + round(max_future * _NS_PER_S):
        # A phone that reports local time as UTC, or a clock set years ahead: stored, the
        # report would stay the client's newest until the real time caught up with it.
        raise PhoneError(
            400, f"{time_name} is more than {max_future:g} s ahead of the gateway's clock"
        )
    return Report(checked_id, lat_value, lon_value, when)


def _client_id(value: object) -> str:
    if value is None:
        raise PhoneError(400, "client ID is missing")
    if not isinstance(value, str):
        raise PhoneError(400, "client ID must be a string")
    if not value:
        raise PhoneError(400, "client ID is empty")
    if len(value) > MAX_CLIENT_ID:
        raise PhoneError(400, f"client ID is longer than {MAX_CLIENT_ID} characters")
    if not _WHITE_SPACE.isdisjoint(value):
        raise PhoneError(400, "client ID contains white space")
    try:
        encoded = value.encode()
    except UnicodeEncodeError:  # a lone surrogate, which JSON "\ud800" can produce
        raise PhoneError(400, "client ID is not valid Unicode") from None
    if len(encoded) > MAX_CLIENT_ID_BYTES:  # unreachable: 256 characters are <= 1,024 bytes
        raise PhoneError(400, f"client ID is longer than {MAX_CLIENT_ID_BYTES} bytes")
    return value


def check_client_id(value: object) -> str:
    """``value`` if it is a client ID the herd takes (non-empty, no white space, at most
    MAX_CLIENT_ID characters and MAX_CLIENT_ID_BYTES bytes); raises PhoneError(400)."""
    return _client_id(value)


def _decimal(value: object) -> Decimal | None:
    """The bounded exact value of a JSON-ish number (gateway.numbers), or None if it is not
    one; a magnitude past every range is infinite, so range checks refuse it."""
    try:
        return bounded_decimal(value)
    except NumberError:
        return None


def _coordinate(value: object, name: str, limit: int) -> float:
    if value is None or value == "":
        raise PhoneError(400, f"{name} is missing")
    number = _decimal(value)
    # Compared exactly, before float() could overflow or round into range.
    if number is None or not -limit <= number <= limit:
        raise PhoneError(400, f"{name} must be a number between -{limit} and {limit}")
    return float(number)


def parse_time(value: object, now_ns: int) -> str:
    """POSIX seconds as protocol text for a phone's timestamp.

    ``None`` or ``""`` is now (``now_ns`` with nine decimals). A number (int, float,
    Decimal, numeric text) is seconds, or milliseconds if at least 2**31 - 1 (Traccar's
    rule, fractions included). Text with a date is ISO 8601 (``2025-06-15T13:45:12.862Z``,
    offsets, or none for UTC) or ``yyyy-MM-dd HH:mm:ss`` (UTC); its fraction is kept.
    Raises PhoneError(400) for negative, non-finite, out-of-range or unreadable values.
    """
    return _time(value, now_ns, "time")


def _time(value: object, now_ns: int, name: str) -> str:
    if value is None or value == "":
        seconds, ns = divmod(now_ns, _NS_PER_S)
        return f"{seconds}.{ns:09d}"
    if isinstance(value, str) and (match := _DATE_TIME.fullmatch(value.strip())):
        return _date_time(match, name)
    number = _decimal(value)
    if number is None:
        raise PhoneError(
            400, f"{name} must be POSIX seconds, milliseconds or an ISO 8601 date-time"
        )
    if number < 0:
        raise PhoneError(400, f"{name} is negative")
    if not number.is_finite():
        raise PhoneError(400, f"{name} is after the year 9999")
    if number >= MS_THRESHOLD:
        sign, digits, exponent = number.as_tuple()
        assert isinstance(exponent, int)  # finite, checked by _decimal
        number = Decimal((sign, digits, exponent - 3))  # exact, unlike division
    if number > MAX_TIME:
        raise PhoneError(400, f"{name} is after the year 9999")
    if not isinstance(value, str) and number != number.quantize(_NANOSECOND, ROUND_FLOOR):
        # A JSON number finer than a nanosecond (1e-107, a float's binary tail) is rounded to
        # nanoseconds; only text is kept to the digit, as the protocol keeps it.
        number = number.quantize(_NANOSECOND, ROUND_HALF_EVEN)
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0") if exponent < 0 else ""
    places = -exponent - (len(digits) - len(text)) if exponent < 0 else 0
    if places > MAX_TIME_DECIMALS:
        raise PhoneError(400, f"{name} has more than {MAX_TIME_DECIMALS} decimals")
    whole = int(number)  # below MAX_TIME, so small
    if places <= 0:
        return str(whole)
    return f"{whole}.{text[-places:].rjust(places, '0')}"


def _date_time(match: re.Match[str], name: str) -> str:
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        raise PhoneError(400, f"{name} is not a valid date and time") from None
    offset = 0
    if sign is not None:
        hours, minutes = int(off_h), int(off_m or 0)
        if hours > 23 or minutes > 59:
            raise PhoneError(400, f"{name} has an invalid UTC offset")
        offset = (hours * 60 + minutes) * 60 * (-1 if sign == "-" else 1)
    seconds = calendar.timegm(moment.timetuple()) - offset
    if seconds < 0:
        raise PhoneError(400, f"{name} is before 1970")
    if seconds > MAX_TIME:
        raise PhoneError(400, f"{name} is after the year 9999")
    fraction = (fraction or "").rstrip("0")
    if len(fraction) > MAX_TIME_DECIMALS:
        raise PhoneError(400, f"{name} has more than {MAX_TIME_DECIMALS} decimals")
    return f"{seconds}.{fraction}" if fraction else str(seconds)


def load_json(body: bytes) -> Any:
    """Parse a JSON body (UTF-8) with bounded nesting.

    Numbers with a fraction or exponent come back as Decimal (so times stay exact),
    integers as int. Raises PhoneError(400) for an empty body, bad UTF-8, malformed JSON,
    NaN/Infinity, or nesting deeper than MAX_JSON_DEPTH.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise PhoneError(400, "body is not UTF-8") from None
    if not text.strip():
        raise PhoneError(400, "body is empty; expected JSON")
    _check_depth(text)
    try:
        return json.loads(text, parse_float=_json_decimal, parse_constant=_json_constant)
    except PhoneError:
        raise
    except json.JSONDecodeError as exc:
        raise PhoneError(400, f"malformed JSON at character {exc.pos}: {exc.msg}") from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise PhoneError(400, "malformed JSON: a number has too many digits") from None
    except RecursionError:  # unreachable after _check_depth; kept so none can escape
        raise PhoneError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None


def _check_depth(text: str) -> None:
    """Refuse nesting beyond MAX_JSON_DEPTH before json (which recurses) sees it.

    Outside strings only brackets nest; each pass deletes the innermost pairs, so a
    document of depth d is empty after d passes. Work is linear per pass, in C.
    """
    skeleton = _JSON_NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if _JSON_TOO_DEEP.search(skeleton):  # 33 openers in a row: the usual attack, in one pass
        raise PhoneError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    for _ in range(MAX_JSON_DEPTH):
        if not skeleton:
            return
        skeleton, pairs = _JSON_PAIR.subn("", skeleton)
        if not pairs:
            raise PhoneError(400, "malformed JSON: unbalanced brackets")
    if skeleton:
        raise PhoneError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _json_decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise PhoneError(400, "malformed JSON: a number is out of range") from None


def _json_constant(text: str) -> object:
    raise PhoneError(400, f"malformed JSON: {text} is not a JSON number")


def _each(items: list[Any], label: str, parse: Callable[[object], Report]) -> list[Report]:
    """``parse`` applied to each item of a batch, with the item's index in any error."""
    if len(items) > MAX_BATCH:
        raise PhoneError(400, f"a batch holds at most {MAX_BATCH} locations")
    reports = []
    for index, item in enumerate(items):
        try:
            reports.append(parse(item))
        except PhoneError as exc:
            raise PhoneError(exc.status, f"{label} {index}: {exc.message}") from None
    return reports


def _missing(value: object) -> bool:
    return value is None or value == ""


# -- OwnTracks ---------------------------------------------------------------------------


def owntracks(
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    now_ns: int,
    *,
    max_future: float | None = None,
) -> list[Report]:
    """Reports in one OwnTracks HTTP-mode message: one for ``_type: location``, none for
    every other type and for an empty body. Raises PhoneError(400) for malformed JSON, a
    non-object, a missing ``_type``, or a location without a valid lat, lon or tst."""
    if not body:
        return []
    message = load_json(body)
    if not isinstance(message, dict):
        raise PhoneError(400, "an OwnTracks message is a JSON object")
    kind = message.get("_type")
    if not isinstance(kind, str):
        raise PhoneError(400, "OwnTracks message has no _type")
    if kind != "location":
        return []
    for field in ("lat", "lon", "tst"):
        if _missing(message.get(field)):
            raise PhoneError(400, f"OwnTracks location has no {field}")
    client_id = _owntracks_id(_lower_keys(headers), query, message.get("topic"))
    lat, lon, tst = message["lat"], message["lon"], message["tst"]
    names = ("lat", "lon", "tst")
    return [_report(client_id, lat, lon, tst, now_ns, names, max_future=max_future)]


def _owntracks_id(headers: Mapping[str, str], query: Mapping[str, str], topic: object) -> str:
    user = headers.get("x-limit-u") or query.get("u") or None
    device = headers.get("x-limit-d") or query.get("d") or None
    topical = isinstance(topic, str) and _OWNTRACKS_TOPIC.fullmatch(topic)
    if user is None and device is None and topical:
        return str(topic)
    # The Recorder's defaults and lower-casing, so both servers name a phone alike.
    return f"owntracks/{(user or 'owntracks').lower()}/{(device or 'phone').lower()}"


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names are case-insensitive; the first of repeated headers wins."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), value)
    return lowered


# -- Traccar / OsmAnd --------------------------------------------------------------------


def traccar(
    query: Mapping[str, str],
    content_type: str,
    body: bytes,
    now_ns: int,
    *,
    max_future: float | None = None,
) -> list[Report]:
    """Reports in a Traccar Client or OsmAnd request, any generation.

    ``application/json`` bodies are one object (generation B, or flat) or an array of flat
    objects (generation C ``uploadJson``). Otherwise parameters come from the query, or,
    when it has no ``id``/``deviceid``, from a form-encoded body. Raises PhoneError(400)
    for a missing ID, no lat/lon, or any invalid field.
    """
    # Traccar's own test: media types are case-insensitive, parameters may follow.
    if content_type.strip().lower().startswith("application/json"):
        payload = load_json(body)
        if isinstance(payload, list):
            return _each(
                payload, "position", lambda item: _traccar_object(item, now_ns, max_future)
            )
        return [_traccar_object(payload, now_ns, max_future)]
    params = query if "id" in query or "deviceid" in query else _form(body)
    client_id = params.get("id") or params.get("deviceid")
    if not client_id:
        raise PhoneError(400, "Traccar position has no id (or deviceid)")
    lat, lon = params.get("lat"), params.get("lon")
    return [
        _traccar_report(
            client_id,
            lat,
            lon,
            params.get("location"),
            params.get("timestamp"),
            now_ns,
            max_future,
        )
    ]


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


def _traccar_object(value: object, now_ns: int, max_future: float | None) -> Report:
    if not isinstance(value, dict):
        raise PhoneError(400, "Traccar JSON is an object or an array of objects")
    client_id = next(
        (value[k] for k in ("id", "deviceid", "device_id") if not _missing(value.get(k))), None
    )
    if client_id is None:
        raise PhoneError(400, "Traccar position has no id (or deviceid, device_id)")
    if isinstance(client_id, int) and not isinstance(client_id, bool):
        client_id = str(client_id)
    location = value.get("location")
    if isinstance(location, dict):  # generation B: the background-geolocation record
        coords = location.get("coords")
        if not isinstance(coords, dict):
            raise PhoneError(400, "location.coords is missing")
        names = ("coords.latitude", "coords.longitude", "location.timestamp")
        lat, lon = coords.get("latitude"), coords.get("longitude")
        if _missing(lat) and _missing(lon):
            raise PhoneError(400, _NO_FIX)
        stamp = location.get("timestamp")
        return _report(client_id, lat, lon, stamp, now_ns, names, max_future=max_future)
    lat, lon = value.get("lat"), value.get("lon")
    stamp = value.get("timestamp")
    return _traccar_report(client_id, lat, lon, location, stamp, now_ns, max_future)


_NO_FIX = (
    "no lat/lon: cell- or wifi-only positions are not supported "
    "(the gateway keeps no last known location to reuse)"
)


def _traccar_report(
    client_id: object,
    lat: object,
    lon: object,
    location: object,
    timestamp: object,
    now_ns: int,
    max_future: float | None,
) -> Report:
    if _missing(lat) and _missing(lon) and not _missing(location):
        parts = location.split(",") if isinstance(location, str) else []
        if len(parts) != 2:
            raise PhoneError(400, "location must be lat,lon")
        lat, lon = parts
    if _missing(lat) and _missing(lon):
        raise PhoneError(400, _NO_FIX)
    names = ("lat", "lon", "timestamp")
    return _report(client_id, lat, lon, timestamp, now_ns, names, max_future=max_future)


# -- Overland ----------------------------------------------------------------------------


def overland(
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    now_ns: int,
    *,
    max_future: float | None = None,
) -> list[Report]:
    """Reports in an Overland batch ``{"locations": [Feature, ...]}``, in order.

    GeoJSON coordinates are ``[lon, lat]``. ``headers`` is unused (kept so the three
    parsers share a shape). Raises PhoneError(400) naming the index of an invalid feature.
    """
    payload = load_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("locations"), list):
        raise PhoneError(400, 'Overland sends {"locations": [...]}')
    fallback = query.get("device_id") or None
    features = payload["locations"]
    return _each(
        features, "location", lambda item: _overland_feature(item, now_ns, fallback, max_future)
    )


def _overland_feature(
    feature: object, now_ns: int, fallback: str | None, max_future: float | None
) -> Report:
    if not isinstance(feature, dict):
        raise PhoneError(400, "must be a GeoJSON Feature object")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") != "Point":
        raise PhoneError(400, "geometry must be a GeoJSON Point")
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        raise PhoneError(400, "coordinates must be [lon, lat]")
    properties = feature.get("properties", {})
    if not isinstance(properties, dict):
        raise PhoneError(400, "properties must be an object")
    device = properties.get("device_id")
    client_id = fallback if _missing(device) else device
    if client_id is None:
        raise PhoneError(400, "no device_id: set one in Overland or add ?device_id= to the URL")
    timestamp = properties.get("timestamp")
    if _missing(timestamp):
        raise PhoneError(400, "properties.timestamp is missing")
    # GeoJSON order: longitude first.
    lon, lat = coordinates[0], coordinates[1]
    names = ("coordinates[1] (lat)", "coordinates[0] (lon)", "properties.timestamp")
    return _report(client_id, lat, lon, timestamp, now_ns, names, max_future=max_future)
