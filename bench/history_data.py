"""The history workload's data set, as rows for ``backend.history.fill`` (pure: no I/O).

One server's history of ``points`` points over ``clients`` clients, ending at ``end_ns``:

- ``TRAIL``: a phone reporting every 10 s through the measured day (the day before
  ``end_ns``), 8,640 points with the attributes a phone sends: the 24-hour trail read back;
- ``EXPORT``: a phone at one point a second, ``export`` points up to ``end_ns`` (a million:
  11.6 days), with attributes: the GPX export;
- every other client an equal share of the rest, spread evenly over the ``BULK_DAYS`` days
  before ``end_ns`` with a jitter, as plain IAMATs (no attributes): with the issue's 10
  million points over 10,000 clients, a point every ten minutes or so.

Every client walks from a start of its own in steps of up to ~100 m, so no two points of a
client are alike and the trails are trails. The same arguments give the same rows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from backend.history import Row
from backend.protocol import format_attributes

__all__ = ["BULK_DAYS", "EXPORT", "TRAIL", "TRAIL_POINTS", "DataSet"]

SECOND = 1_000_000_000
DAY_S = 86_400
# The bulk spreads over a week; nothing is older than KEEP_DAYS, well within the default
# keep_days (365), or the server would expire it on open.
BULK_DAYS = 7
KEEP_DAYS = 300
TRAIL_EVERY_S = 10  # the trail: one point per 10 s, 8,640 in 24 hours
TRAIL_POINTS = DAY_S // TRAIL_EVERY_S
EXPORT_EVERY_S = 1  # a phone at 1 Hz: a million points in 11.6 days
# Sorted before the bulk's "c00000"...: rows must come sorted by (client, time).
EXPORT, TRAIL = "bench-export", "bench-trail"
SERVER = "Riley"  # the server that took each report, as its AT line says
STEP_DEGREES = 0.001  # a step of the walk: up to ~110 m of latitude
# Attribute sets the phones' points take in turn: enough variety that rows are not alike.
PHONE_VARIANTS = 64


def _phone_attributes() -> list[bytes]:
    return [
        format_attributes(
            {
                "accuracy": 5.0 + i % 7,
                "altitude": 70.0 + i,
                "speed": round(1.4 + i / 10, 1),
                "heading": float(i * 5 % 360),
                "battery": float(100 - i),
                "charging": False,
                "trigger": "p",
            }
        )
        for i in range(PHONE_VARIANTS)
    ]


@dataclass(frozen=True)
class DataSet:
    points: int  # in all
    clients: int  # in all, TRAIL and EXPORT included
    export: int  # EXPORT's points
    trail: int  # TRAIL's points, every TRAIL_EVERY_S through the measured day
    end_ns: int  # no point is later; the measured day is the day before it
    seed: int = 14

    def __post_init__(self) -> None:
        if self.clients < 3 or self.points < self.export + self.trail + self.clients - 2:
            raise ValueError(f"{self} leaves the bulk clients no point each")
        if self.trail * TRAIL_EVERY_S > DAY_S:
            raise ValueError(f"{self.trail} points every {TRAIL_EVERY_S} s overflow a day")
        if self.export * EXPORT_EVERY_S > KEEP_DAYS * DAY_S:
            raise ValueError(f"{self.export} points a second overflow {KEEP_DAYS} days")

    @property
    def day(self) -> tuple[int, int]:
        """The measured day, both ends inclusive, in ns: TRAIL's 24 hours."""
        start = self.end_ns - DAY_S * SECOND
        return start, self.end_ns - 1

    @property
    def export_window(self) -> tuple[int, int]:
        """EXPORT's whole history, both ends inclusive, in ns."""
        return self.end_ns - self.export * EXPORT_EVERY_S * SECOND, self.end_ns

    def bulk_names(self) -> list[str]:
        return [f"c{i:05d}" for i in range(self.clients - 2)]

    def rows(self) -> Iterator[Row]:
        """Every row, sorted by (client, time)."""
        rng = random.Random(self.seed)
        phone = _phone_attributes()
        first, _ = self.export_window
        yield from _walk(rng, EXPORT, first, EXPORT_EVERY_S * SECOND, 0, self.export, phone)
        yield from _walk(rng, TRAIL, self.day[0], TRAIL_EVERY_S * SECOND, 0, self.trail, phone)
        names = self.bulk_names()
        bulk = self.points - self.export - self.trail
        share, extra = divmod(bulk, len(names))
        span = BULK_DAYS * DAY_S * SECOND
        for i, name in enumerate(names):
            n = share + (1 if i < extra else 0)
            step = span // n
            yield from _walk(rng, name, self.end_ns - span, step, step // 2, n, [b""])


def _walk(
    rng: random.Random,
    client: str,
    first_ns: int,
    step_ns: int,
    jitter_ns: int,
    n: int,
    attributes: list[bytes],
) -> Iterator[Row]:
    """``n`` points of ``client`` from ``first_ns`` every ``step_ns`` (each up to
    ``jitter_ns`` later), on a random walk, taking ``attributes`` in turn."""
    lat, lng = rng.uniform(-60.0, 60.0), rng.uniform(-170.0, 170.0)
    variants = len(attributes)
    uniform, randrange = rng.uniform, rng.randrange
    for k in range(n):
        ns = first_ns + k * step_ns + (randrange(jitter_ns) if jitter_ns else 0)
        lat += uniform(-STEP_DEGREES, STEP_DEGREES)
        lng += uniform(-STEP_DEGREES, STEP_DEGREES)
        diff = f"+0.{randrange(1_000_000):06d}000"
        yield Row(
            client,
            ns,
            f"{ns // SECOND}.{ns % SECOND:09d}",
            f"{lat:+.6f}{lng:+.6f}",
            SERVER,
            diff,
            attributes[k % variants],
        )
