"""What every phone format shares, with no I/O: the bounds, client IDs and device names,
coordinates, times and bounded JSON."""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from backend.protocol import MAX_TIME_S

from ..errors import ApiError
from ..numbers import NumberError, bounded_decimal
from ..rules import WHITE_SPACE, client_id_problem

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


class PhoneError(ApiError):
    """A request a phone app sent that we cannot turn into reports.

    ``status`` is the HTTP status to answer (400) and ``message`` says what is wrong, in
    words fit to show the app's user. ``reason`` names the problem for the skip counters
    when the report was one entry of a batch (``invalid``, or ``future`` for max_future).
    """

    def __init__(self, status: int, message: str, reason: str = "invalid") -> None:
        super().__init__(status, message)
        self.reason = reason

    def __reduce__(self) -> tuple[type[PhoneError], tuple[int, str, str]]:
        return PhoneError, (self.status, self.message, self.reason)


def _client_id(value: object) -> str:
    problem = client_id_problem(value)
    if problem is not None:
        raise PhoneError(400, problem)
    assert isinstance(value, str)
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


def _missing(value: object) -> bool:
    return value is None or value == ""


# -- device names to client IDs ----------------------------------------------------------

# "%" and the herd's white space, percent-encoded. Encoding "%" itself makes the mapping
# one-to-one: "a b" is "a%20b", and a name that is literally "a%20b" is "a%2520b".
_ESCAPES = {ord(c): f"%{ord(c):02X}" for c in WHITE_SPACE + "%"}


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


def _first(params: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    """The first of ``names`` with a non-empty value, else None."""
    return next((params[n] for n in names if not _missing(params.get(n))), None)


# Text attributes (names, events, regions) are labels: 256 characters say any of them.
MAX_ATTRIBUTE_CHARS = 256


def _clean(text: str) -> str:
    """At most MAX_ATTRIBUTE_CHARS characters, valid UTF-8 (a lone surrogate from JSON's
    "\\ud800" becomes "?")."""
    return text[:MAX_ATTRIBUTE_CHARS].encode("utf-8", "replace").decode("utf-8")
