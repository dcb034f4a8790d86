"""What an import sends to the herd, with no I/O: each point's identity, the windows in which
to ask the herd which it already holds, and the retention it must fall within.

A point is its client, client time (to the nanosecond) and location (issue 14). The herd
compares locations as text; the gateway writes every location the same way
(``phones.iso6709``: 7 decimals, about 1 cm), so a held point counts as the same point when
its location, written that way, is the same: ``+34.068930-118.445127`` sent by a TCP client
and ``34.06893, -118.445127`` in a GPX file are one point, and the file's is not sent again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from backend.protocol import Record, time_to_ns

from ..phones import iso6709
from ._points import ImportedPoint, ImportRefused
from .export import iso_time

__all__ = [
    "DAY_NS",
    "WINDOW_POINTS",
    "Identity",
    "check_retention",
    "held_identity",
    "identity",
    "kept_since",
    "windows",
]

# A point's identity within one client's history: client time in ns, location as written.
Identity = tuple[int, str]

# Points of a file asked about in one HISTORY window. The herd answers up to 10,000 points a
# window (MAX_HISTORY_LIMIT): a window of 1,000 points of the file is one request when the
# herd holds about as many there (a file imported again, a phone's own track), and when it
# holds ten times more the import asks for each point's time instead (1,000 small requests,
# pipelined), so the reads stay bounded by the file, not by the history around it.
WINDOW_POINTS = 1_000
DAY_NS = 86_400 * 1_000_000_000


def identity(point: ImportedPoint) -> Identity:
    return time_to_ns(point.client_time), iso6709(point.lat, point.lon)


def held_identity(record: Record) -> Identity:
    """The identity of a point the herd holds, its location written as the gateway writes it."""
    lat, lon = record.lat_lng
    return time_to_ns(record.client_time), iso6709(lat, lon)


def windows(points: Sequence[ImportedPoint]) -> Iterator[tuple[int, int, list[Identity]]]:
    """The points (oldest first) in groups of at most WINDOW_POINTS: each group's first and
    last time in ns, and its identities."""
    for start in range(0, len(points), WINDOW_POINTS):
        group = [identity(point) for point in points[start : start + WINDOW_POINTS]]
        yield group[0][0], group[-1][0], group


def kept_since(now_ns: int, keep_days: int) -> int:
    """The first client time (ns) the herd keeps in history: the start of the UTC day
    ``keep_days`` days before today's (docs/history.md, "Retention")."""
    return (now_ns // DAY_NS - keep_days) * DAY_NS


def check_retention(points: Sequence[ImportedPoint], now_ns: int, keep_days: int) -> None:
    """Raise ImportRefused (400) naming the oldest point if it is older than the herd keeps:
    it would be answered and never stored, so the file is refused whole instead."""
    if not points:
        return
    first = kept_since(now_ns, keep_days)
    oldest = points[0]  # oldest first
    if time_to_ns(oldest.client_time) < first:
        since = datetime.fromtimestamp(first // 1_000_000_000, UTC).date().isoformat()
        shown = iso_time({"client_time": oldest.client_time}) or oldest.client_time
        raise ImportRefused(
            f"the point at {shown} is older than the herd keeps history "
            f"([history] keep_days = {keep_days}: from {since} on)"
        )
