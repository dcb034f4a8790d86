"""Reading history from the herd a page at a time, with no I/O: the paging rule of HISTORY,
the merging of the two halves of an area across the antimeridian, and the points of a trail.

The herd answers at most ``MAX_HISTORY_LIMIT`` points a HISTORY, oldest first; the next page
is asked from the last time returned, so the points at exactly that time come again and are
skipped by identity (time and location: the same client and time at two locations are two
points, docs/history.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from backend.protocol import ProtocolError, time_to_ns

__all__ = [
    "HeldPoint",
    "Window",
    "group_by_client",
    "merge_areas",
    "next_window",
    "trail_point",
    "window_after",
]


class HeldPoint(Protocol):
    """What paging and merging read of a point: a ``backend.protocol.Record``, or a
    ``lines.Point`` read from an answer."""

    @property
    def client_id(self) -> str: ...

    @property
    def location(self) -> str: ...

    @property
    def client_time(self) -> str: ...

    @property
    def lat_lng(self) -> tuple[float, float]: ...


P = TypeVar("P", bound=HeldPoint)


@dataclass(frozen=True, slots=True)
class Window:
    """What is left of a window to read: from ``since_ns`` to ``until_ns`` (nanoseconds,
    both inclusive), less the points at ``since_ns`` already given (their locations in
    ``given``); ``done`` once nothing is left. ``skipped_ns`` counts the nanoseconds paged
    past with points left unread (see :func:`next_window`)."""

    since_ns: int
    until_ns: int
    given: frozenset[str] = frozenset()
    done: bool = False
    skipped_ns: int = 0


def next_window(window: Window, page: Sequence[P], asked: int) -> tuple[list[P], Window]:
    """The points of ``page`` (the herd's answer to ``asked`` points of ``window``) not given
    before, and the window left after them.

    A page shorter than ``asked`` ends the window. A full page whose points are all at one
    time already given (``asked`` points or more at one nanosecond, which paging by time
    cannot get past) is left behind: the window goes on from the next nanosecond and counts
    it in ``skipped_ns`` (any points at that time past the first ``asked`` are not read)."""
    kept, rest, after = window_after(window, page, asked)
    return [page[i] for i in kept] + list(page[rest:]), after


def window_after(
    window: Window, page: Sequence[HeldPoint], asked: int
) -> tuple[list[int], int, Window]:
    """:func:`next_window` as where the fresh points are: those of the first points (at the
    window's start) that are fresh, by index, and the index from which every point is; and
    the window left. Only the points at either end of the page are looked at."""
    at_since = 0
    while at_since < len(page) and _ns(page[at_since]) == window.since_ns:
        at_since += 1
    kept = [i for i in range(at_since) if page[i].location not in window.given]
    if len(page) < asked:
        end = window.until_ns + 1
        return kept, at_since, Window(end, window.until_ns, done=True, skipped_ns=window.skipped_ns)
    last_ns = _ns(page[-1])
    if last_ns == window.since_ns and not kept and at_since == len(page):
        after = last_ns + 1
        return (
            kept,
            at_since,
            Window(
                after,
                window.until_ns,
                done=after > window.until_ns,
                skipped_ns=window.skipped_ns + 1,
            ),
        )
    given = {page[-1].location}
    for i in range(len(page) - 2, -1, -1):
        if _ns(page[i]) != last_ns:
            break
        given.add(page[i].location)
    if last_ns == window.since_ns:
        given |= window.given
    return (
        kept,
        at_since,
        Window(last_ns, window.until_ns, frozenset(given), skipped_ns=window.skipped_ns),
    )


def _ns(record: HeldPoint) -> int:
    return time_to_ns(record.client_time)


def merge_areas(parts: Sequence[tuple[Sequence[P], bool]]) -> tuple[list[P], bool]:
    """The answers to several AREAs (the halves of a box across the antimeridian), each its
    points by client then time and whether it was cut at its limit, as one answer in the same
    order, and whether it is cut: where a part was cut after client C, the others' points of
    clients after C are left out (the cut part lacks its own)."""
    cut = [records[-1].client_id for records, full in parts if full and records]
    last = min(cut) if cut else None
    merged = [
        record
        for records, _ in parts
        for record in records
        if last is None or record.client_id <= last
    ]
    if len(parts) > 1:
        merged.sort(key=lambda r: (r.client_id, _ns(r), r.location))
    return merged, bool(cut)


def group_by_client(records: Iterable[P]) -> list[tuple[str, list[P]]]:
    """Records in client order as (client ID, its records), in the same order."""
    groups: list[tuple[str, list[P]]] = []
    for record in records:
        if not groups or groups[-1][0] != record.client_id:
            groups.append((record.client_id, []))
        groups[-1][1].append(record)
    return groups


def trail_point(record: HeldPoint) -> tuple[float, float, float] | None:
    """``(lat, lon, seconds)`` of a point for a trail, or None if it cannot be drawn (a
    location that does not parse, which only a server older than the herd's bounds sends)."""
    try:
        lat, lon = record.lat_lng
        seconds = float(record.client_time)
    except (ProtocolError, ValueError):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and math.isfinite(seconds)):
        return None
    return lat, lon, seconds
