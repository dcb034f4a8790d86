"""What an upload holds: a :class:`Report` ready for the herd, a :class:`Heartbeat` (no fix)
or, in a batch, a :class:`Skipped` entry; and :func:`report`, for the JSON APIs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from backend.protocol import (
    MAX_ATTRIBUTES_BYTES,
    MAX_LOCATION_BYTES,
    MAX_TIME_BYTES,
    MAX_TIME_S,
    IAmAt,
    format_attributes,
    time_to_ns,
)

from ..rules import MAX_BATCH, MAX_LAT, MAX_LON
from .attributes import (
    api_attributes,
    fit_attributes,
)
from .values import (
    _NS_PER_S,
    _POSIX_TIME,
    PhoneError,
    _client_id,
    _coordinate,
    _missing,
    _time,
)


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
        for name, value, limit in (("lat", self.lat, MAX_LAT), ("lon", self.lon, MAX_LON)):
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
        return iso6709(self.lat, self.lon)

    def command(self) -> bytes:
        """The herd command with its newline: ``IAMAT <client_id> <location> <time>``, or
        ``REPORT <client_id> <location> <time> <attributes>`` when there are attributes."""
        attributes = format_attributes(self.attributes)
        return IAmAt(self.client_id, self.location, self.time, attributes=attributes).encode()


def iso6709(lat: float, lon: float) -> str:
    """A location as the gateway writes it for the herd (``Report.location``)."""
    return _degrees(lat) + _degrees(lon)


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
    lat_value = _coordinate(lat, lat_name, MAX_LAT)
    lon_value = _coordinate(lon, lon_name, MAX_LON)
    when = _time(time, now_ns, time_name)
    if max_future is not None and time_to_ns(when) > now_ns + round(max_future * _NS_PER_S):
        # A phone that reports local time as UTC, or a clock set years ahead: stored, the
        # report would stay the client's newest until the real time caught up with it.
        raise PhoneError(
            400, f"{time_name} is more than {max_future:g} s ahead of the gateway's clock", FUTURE
        )
    return Report(checked_id, lat_value, lon_value, when, fit_attributes(attributes or {}))


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


def _fix(
    client_id: str,
    lat: object,
    lon: object,
    time: object,
    now_ns: int,
    names: tuple[str, str, str],
    max_future: float | None,
    attributes: Mapping[str, object],
) -> Report | Heartbeat:
    """A report; without a position, a heartbeat (``names``: the three fields as the app
    calls them, for messages)."""
    if _missing(lat) or _missing(lon):
        return _heartbeat(client_id, time, now_ns, names[2], max_future, attributes)
    return _report(
        client_id, lat, lon, time, now_ns, names, max_future=max_future, attributes=attributes
    )
