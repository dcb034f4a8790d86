"""What GPX and GeoJSON imports share: the point, the refusal, the checks every point passes
and the collection of a file's points (counted, bounded, de-duplicated)."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from backend.protocol import MAX_TIME_S

from ..errors import ApiError
from ..numbers import NumberError, bounded_decimal
from ..phones import PhoneError, api_attributes, fit_attributes
from .export import iso_time

# gpxpy holds a whole document as objects: measured (tracemalloc), 1.2 KB a point at the peak
# for bare points and 2.2 KB with one extension element each (our export's, with speed). 50,000
# points bound one import to about 110 MB above its body, and are two weeks of fixes at the
# phones' usual 30 s, or 14 hours at one a second; a longer history goes in several files.
MAX_IMPORT_POINTS = 50_000


class ImportRefused(ApiError):
    """An upload that imports nothing: ``status`` 400 (a bad point, named in ``message``:
    ``"track 1 segment 1 point 37: no time"``), 413 (over a limit) or 415 (not GPX or
    GeoJSON)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


class ImportedPoint(NamedTuple):
    """One point of an upload: degrees, exact POSIX seconds, and the attributes the herd
    keeps (docs/gateway.md's set, each in its unit and range)."""

    lat: float
    lon: float
    seconds: Decimal
    attributes: dict[str, object]

    @property
    def client_time(self) -> str:
        """The time as protocol text (``1733580000.25``)."""
        return format(self.seconds, "f")


@dataclass(slots=True)
class ImportResult:
    """A file's points, oldest first, each once; ``duplicates`` counts the repeats left out
    (the same time and location again). ``format`` is ``"gpx"`` or ``"geojson"``."""

    format: str
    points: list[ImportedPoint]
    duplicates: int


def time_text(label: str, moment: datetime) -> str:
    """A datetime (naive is UTC, as GPX says) as protocol text; refuses one before 1970."""
    try:
        seconds = calendar.timegm(moment.utctimetuple())
    except (OverflowError, ValueError):  # an offset past year 9999
        raise ImportRefused(f"{label}: time is after the year 9999") from None
    if seconds < 0:
        raise ImportRefused(f"{label}: time is before 1970")
    if seconds > MAX_TIME_S:
        raise ImportRefused(f"{label}: time is after the year 9999")
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return f"{seconds}.{fraction}" if fraction else str(seconds)


def coordinate(label: str, name: str, value: object, limit: int) -> float:
    """A latitude (limit 90) or longitude (180): a number or numeric text, in range."""
    try:
        number = bounded_decimal(value)
    except NumberError:
        raise ImportRefused(f"{label}: {name} is not a number") from None
    # Compared exactly, before float() could round into range.
    if not -limit <= number <= limit:
        raise ImportRefused(f"{label}: {name} must be from -{limit} to {limit}")
    return float(number)


def clean_attributes(raw: Mapping[str, object]) -> dict[str, object]:
    """The attributes the herd keeps, each checked as the REST API checks it; one out of its
    range or of the wrong kind is left out, as a phone's would be, never failing the point."""
    kept: dict[str, object] = {}
    for key, value in raw.items():
        try:
            kept.update(api_attributes({key: value}))
        except PhoneError:
            continue
    return fit_attributes(kept)


class Collector:
    """The points of one file as they are read: each checked, counted against
    MAX_IMPORT_POINTS, and kept once."""

    def __init__(self, now: float, max_future: float) -> None:
        self.latest = Decimal(repr(float(now))) + Decimal(repr(float(max_future)))
        self.max_future = max_future
        self.points: list[ImportedPoint] = []
        self.seen: set[tuple[Decimal, float, float]] = set()
        self.read = 0
        self.duplicates = 0

    def add(
        self, label: str, lat: object, lon: object, client_time: str, attributes: dict[str, object]
    ) -> None:
        """Checks and keeps one point; raises ImportRefused naming it."""
        self.read += 1
        if self.read > MAX_IMPORT_POINTS:
            raise ImportRefused(
                f"more than {MAX_IMPORT_POINTS} points; import the history in several files", 413
            )
        latitude = coordinate(label, "latitude", lat, 90)
        longitude = coordinate(label, "longitude", lon, 180)
        seconds = Decimal(client_time)
        if seconds > self.latest:
            shown = iso_time({"client_time": client_time}) or client_time
            raise ImportRefused(
                f"{label}: time {shown} is more than {self.max_future:g} s in the future"
            )
        # A point is its client, time and location (issue 14): the same time at another
        # place is another point. Decimal("1.50") == Decimal("1.5"), and they hash alike.
        key = (seconds, latitude, longitude)
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        kept = clean_attributes(attributes)
        self.points.append(ImportedPoint(latitude, longitude, seconds, kept))

    def result(self, kind: str) -> ImportResult:
        # Oldest first, the order a trail is read in; stable, so equal times keep the
        # file's order.
        self.points.sort(key=lambda point: point.seconds)
        return ImportResult(kind, self.points, self.duplicates)
