"""Phone-app location uploads turned into herd reports, with no I/O.

The gateway hands this module what an HTTP request carried (body bytes, headers, query) and
gets back a list of :class:`Report`, each ready to send as one ``IAMAT`` line, or a
:class:`PhoneError` whose ``status`` and ``message`` it answers with. The wire formats are
those of ``shared/reference/phone-apps.md``.

Client IDs, per format (device names mapped by :func:`device_client_id`: ``%`` and white
space percent-encoded, the name as sent kept in the ``name`` attribute; always checked
against the herd's rule: non-empty, no white space, at most ``MAX_CLIENT_ID`` characters):

- **OwnTracks** (HTTP mode): ``owntracks/<user>/<device>``. Like OwnTracks Recorder, user and
  device come from the ``X-Limit-U`` / ``X-Limit-D`` headers, else the ``u`` / ``d`` query
  parameters, else default to ``owntracks`` / ``phone``, and are lower-cased. Only when
  none of those four is given, a body ``topic`` of the form ``owntracks/<user>/<device>``
  (a transition's ``/event`` suffix dropped) is used, not lower-cased.
- **Traccar / OsmAnd**: the ``id`` parameter, else ``deviceid``; in JSON also ``device_id``
  (generation B puts it there). A JSON integer ID is written in decimal.
- **GPSLogger**: ``id``, ``deviceid``, ``device``, ``serial`` or ``androidId``, else a fallback.
- **Overland**: each feature's ``properties.device_id``, else the ``device_id`` query
  parameter (an empty ``device_id`` counts as absent), else a fallback.

Times become POSIX seconds as protocol text, computed exactly (``decimal``, never a float
made from text): numbers are seconds, or milliseconds from 2**31 - 1 up (Traccar's rule);
ISO 8601 date-times keep their fraction; a naive date-time is UTC; a missing time is "now".

A parser returns entries: a :class:`Report`, a :class:`Heartbeat` (no fix: the gateway places
it at the client's held position) or, in a batch, a :class:`Skipped` entry for one that
cannot be stored, so that one bad entry never fails the batch. Reports carry the attributes
of docs/gateway.md ("Phone apps") in fixed units, bounded.
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
    "GPSLOGGER_DEVICE",
    "MAX_BATCH",
    "MAX_CLIENT_ID",
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_CHARS",
    "MAX_TIME",
    "OVERLAND_DEVICE",
    "SKIP_REASONS",
    "Entry",
    "Heartbeat",
    "PhoneError",
    "Report",
    "Skipped",
    "check_client_id",
    "device_client_id",
    "fit_attributes",
    "gpslogger",
    "load_json",
    "overland",
    "owntracks",
    "parse_time",
    "report",
    "traccar",
    "traccar_query",
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
# A transition is published at the device's topic plus "/event".
_OWNTRACKS_TOPIC = re.compile(r"owntracks/([^/]+)/([^/]+)(?:/event)?")
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
    words fit to show the app's user. ``reason`` names the problem for the skip counters
    when the report was one entry of a batch (``invalid``, or ``future`` for max_future).
    """

    def __init__(self, status: int, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason

    def __reduce__(self) -> tuple[type[PhoneError], tuple[int, str, str]]:
        return PhoneError, (self.status, self.message, self.reason)


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
    attributes: object = None,
) -> Report:
    """A report from loosely typed values, as a JSON API receives them.

    ``lat``/``lon`` are numbers or numeric strings in degrees; ``time`` is anything
    :func:`parse_time` takes; ``attributes`` an object of the kept set (``api_attributes``).
    With ``max_future``, a time more than that many seconds after ``now_ns`` is refused (the
    herd's ``[limits] max_future``). Raises PhoneError(400) naming the field that is wrong.
    """
    kept = api_attributes(attributes)
    return _report(client_id, lat, lon, time, now_ns, max_future=max_future, attributes=kept)


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


def _report(
    client_id: object,
    lat: object,
    lon: object,
    time: object,
    now_ns: int,
    names: tuple[str, str, str] = ("lat", "lon", "time"),
    *,
    max_future: float | None,
    attributes: Mapping[str, object] | None = None,
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
            400, f"{time_name} is more than {max_future:g} s ahead of the gateway's clock", FUTURE
        )
    return Report(checked_id, lat_value, lon_value, when, fit_attributes(attributes or {}))


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


# -- what an upload holds: reports, heartbeats, skipped entries ---------------------------

# Why an entry of an upload was not stored: the ``reason`` label of the gateway's
# herd_gateway_phone_entries_skipped_total counter (docs/gateway.md, "Phone apps").
NO_POSITION = "no_position"  # no fix, no geometry, nothing to place
INVALID = "invalid"  # a field out of range or unreadable
FUTURE = "future"  # more than max_future ahead of the gateway's clock
REFUSED = "refused"  # the herd refused it (a budget); set by the gateway
HEARTBEAT_NO_POSITION = "heartbeat_no_position"  # a heartbeat for a client with no record
HEARTBEAT_NOT_NEWER = "heartbeat_not_newer"  # a heartbeat no newer than the held record
SKIP_REASONS = (
    NO_POSITION,
    INVALID,
    FUTURE,
    REFUSED,
    HEARTBEAT_NO_POSITION,
    HEARTBEAT_NOT_NEWER,
)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A report with no position (Traccar Client sends its battery without a fix).

    The gateway makes it a record at the position the herd already holds for the client,
    if the heartbeat is newer (:meth:`at`); else it is dropped.
    """

    client_id: str
    time: str
    attributes: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def at(self, lat: float, lon: float) -> Report:
        """The heartbeat as a report at (lat, lon), marked ``"heartbeat": true``."""
        attributes = fit_attributes({**self.attributes, "heartbeat": True})
        return Report(self.client_id, lat, lon, self.time, attributes)


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry of a batch that cannot be stored: ``reason`` is one of SKIP_REASONS."""

    reason: str
    message: str


Entry = Report | Heartbeat | Skipped


def _batch(items: list[Any], label: str, parse: Callable[[object], Entry | None]) -> list[Entry]:
    """``parse`` applied to each item of a batch. An item it refuses is Skipped (with its
    index in the message), never the batch: the app would resend the whole forever."""
    if len(items) > MAX_BATCH:
        raise PhoneError(400, f"a batch holds at most {MAX_BATCH} locations")
    entries: list[Entry] = []
    for index, item in enumerate(items):
        try:
            entry = parse(item)
        except PhoneError as exc:
            entry = Skipped(exc.reason, f"{label} {index}: {exc.message}")
        if entry is not None:
            entries.append(entry)
    return entries


def _missing(value: object) -> bool:
    return value is None or value == ""


def _heartbeat(
    client_id: str,
    time: object,
    now_ns: int,
    name: str,
    max_future: float | None,
    attributes: Mapping[str, object],
) -> Heartbeat:
    when = _time(time, now_ns, name)
    if max_future is not None and time_to_ns(when) > now_ns + round(max_future * _NS_PER_S):
        raise PhoneError(
            400, f"{name} is more than {max_future:g} s ahead of the gateway's clock", FUTURE
        )
    return Heartbeat(_client_id(client_id), when, fit_attributes(attributes))


# -- device names to client IDs ----------------------------------------------------------

# "%" and the herd's white space, percent-encoded. Encoding "%" itself makes the mapping
# one-to-one: "a b" is "a%20b", and a name that is literally "a%20b" is "a%2520b".
_ESCAPES = {ord(c): f"%{ord(c):02X}" for c in _WHITE_SPACE | {"%"}}


def device_client_id(name: str) -> str:
    """The client ID for a device name as a phone sent it: ``%`` and white space
    percent-encoded (``iPhone 12 Pro`` is ``iPhone%2012%20Pro``), everything else kept.
    Two different names never map to the same ID."""
    return name.translate(_ESCAPES)


def _device(value: object) -> tuple[str, str | None]:
    """The client ID for a phone-supplied device ID (text, or a JSON integer), and the name
    as sent when the ID had to be mapped from it (else None). Raises PhoneError(400)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return _client_id(value), None  # raises: missing or not a string
    client_id = _client_id(device_client_id(value))
    return client_id, None if client_id == value else _clean(value)


# -- attributes --------------------------------------------------------------------------

# Text attributes (names, events, regions) are labels: 256 characters say any of them.
MAX_ATTRIBUTE_CHARS = 256
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


def _clean(text: str) -> str:
    """At most MAX_ATTRIBUTE_CHARS characters, valid UTF-8 (a lone surrogate from JSON's
    "\\ud800" becomes "?")."""
    return text[:MAX_ATTRIBUTE_CHARS].encode("utf-8", "replace").decode("utf-8")


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


def fit_attributes(attributes: Mapping[str, object]) -> dict[str, object]:
    """``attributes`` less the longest optional ones (_DROP_ORDER) until the whole fits
    MAX_ATTRIBUTES_BYTES as the herd carries it."""
    kept = dict(attributes)
    for key in _DROP_ORDER:
        if len(format_attributes(kept)) <= MAX_ATTRIBUTES_BYTES:
            break
        kept.pop(key, None)
    return kept


def _first(params: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    """The first of ``names`` with a non-empty value, else None."""
    return next((params[n] for n in names if not _missing(params.get(n))), None)


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
    attributes: dict[str, object] = {}
    _put(attributes, "accuracy", _measure(coords.get("accuracy"), "accuracy"))
    _put(attributes, "altitude", _measure(coords.get("altitude"), "altitude"))
    _put(attributes, "speed", _measure(coords.get("speed"), "speed"))
    _put(attributes, "heading", _measure(coords.get("heading"), "heading"))
    _put(attributes, "battery", _measure(battery.get("level"), "battery", PER_UNIT))
    _put(attributes, "charging", _flag(battery.get("is_charging")))
    _put(attributes, "trigger", _text(location.get("event")))
    _put(attributes, "name", name)
    lat, lon = coords.get("latitude"), coords.get("longitude")
    stamp = location.get("timestamp")
    if _missing(lat) or _missing(lon):
        return _heartbeat(cid, stamp, now_ns, "location.timestamp", max_future, attributes)
    names = ("coords.latitude", "coords.longitude", "location.timestamp")
    return _report(
        cid, lat, lon, stamp, now_ns, names, max_future=max_future, attributes=attributes
    )


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
    timestamp = params.get("timestamp")
    if _missing(lat) or _missing(lon):
        # A heartbeat, or a cell- or Wi-Fi-only report: Traccar reuses the last position.
        return _heartbeat(cid, timestamp, now_ns, "timestamp", max_future, attributes)
    names = ("lat", "lon", "timestamp")
    return _report(
        cid, lat, lon, timestamp, now_ns, names, max_future=max_future, attributes=attributes
    )


# -- GPSLogger ---------------------------------------------------------------------------

# The client ID of a GPSLogger upload that names no device, and no write token does either.
GPSLOGGER_DEVICE = "gpslogger"
# %TIMEOFFSET writes "+02:00" without percent-encoding, so the query arrives with a space.
_SPACE_OFFSET = re.compile(r"(T.*) ([0-9]{2}:?[0-9]{2})$")


def gpslogger(
    query: Mapping[str, str],
    body: bytes,
    now_ns: int,
    *,
    max_future: float | None = None,
    fallback: str = GPSLOGGER_DEVICE,
) -> list[Entry]:
    """The report in a GPSLogger custom-URL request (GET query, or a POST body of
    ``key=value`` pairs, free text and newlines allowed), with Traccar's names (the
    documented template: ``id lat lon timestamp altitude speed bearing accuracy batt``) or
    GPSLogger's and Home Assistant's (``latitude longitude device serial acc alt spd dir
    battery time``). Speed is m/s (``%SPD``). Without lat/lon: a Heartbeat if the request
    names a device, else Skipped. Raises PhoneError(400) for an invalid field.
    """
    params: dict[str, Any] = _form(body.replace(b"\r", b"").replace(b"\n", b"&"))
    params.update(query)
    device = _first(params, ("id", "deviceid", "device", "serial", "androidId"))
    cid, name = _device(fallback if device is None else device)
    attributes: dict[str, object] = {}
    _put(attributes, "accuracy", _measure(_first(params, ("accuracy", "acc")), "accuracy"))
    _put(attributes, "altitude", _measure(_first(params, ("altitude", "alt")), "altitude"))
    _put(attributes, "speed", _measure(_first(params, ("speed", "spd")), "speed"))
    heading = _first(params, ("bearing", "heading", "direction", "dir"))
    _put(attributes, "heading", _measure(heading, "heading"))
    _put(attributes, "battery", _measure(_first(params, ("batt", "battery")), "battery"))
    _put(attributes, "name", name)
    stamp = _first(params, ("timestamp", "time", "epoch", "timeoff"))
    if isinstance(stamp, str):
        stamp = _SPACE_OFFSET.sub(r"\1+\2", stamp)
    lat = _first(params, ("lat", "latitude"))
    lon = _first(params, ("lon", "longitude"))
    if lat is None or lon is None:
        if device is None:
            return [Skipped(NO_POSITION, "no lat/lon and no device")]
        return [_heartbeat(cid, stamp, now_ns, "timestamp", max_future, attributes)]
    names = ("lat", "lon", "timestamp")
    return [
        _report(cid, lat, lon, stamp, now_ns, names, max_future=max_future, attributes=attributes)
    ]


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
