"""Paging through a window the herd answers a page at a time, with no sockets: each point
once however the pages cut the points that share a time, the end of a window, more points at
one time than a page holds, and the two halves of an area across the antimeridian."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from backend.protocol import IAmAt, Record, make_record, time_to_ns
from gateway.history.reading import Window, group_by_client, merge_areas, next_window

pytestmark = pytest.mark.timeout(60)


def point(client: str, t: int, k: int = 0) -> Record:
    return make_record("Riley", t * 10**9, IAmAt(client, f"+10.{k:04d}+20.0000", str(t)))


def herd_page(points: Sequence[Record], window: Window, limit: int) -> list[Record]:
    """What HISTORY answers: the window's points, by time then location, at most limit."""
    found = [p for p in points if window.since_ns <= time_to_ns(p.client_time) <= window.until_ns]
    found.sort(key=lambda p: (time_to_ns(p.client_time), p.location))
    return found[:limit]


def read_all(points: Sequence[Record], limit: int) -> tuple[list[Record], Window]:
    window = Window(0, 10**12)
    out: list[Record] = []
    for _ in range(1000):
        fresh, window = next_window(window, herd_page(points, window, limit), limit)
        out.extend(fresh)
        if window.done:
            return out, window
    raise AssertionError("paging did not end")


@pytest.mark.parametrize(("same_time", "limit"), [(1, 5), (2, 5), (3, 5), (3, 10), (7, 16)])
def test_every_point_once_whatever_the_pages_cut(same_time: int, limit: int) -> None:
    points = [point("kiwi", 100 + t, k) for t in range(40) for k in range(same_time)]
    out, window = read_all(points, limit)
    assert [(p.client_time, p.location) for p in out] == [
        (p.client_time, p.location) for p in herd_page(points, Window(0, 10**12), len(points))
    ]
    assert window.skipped_ns == 0


def test_more_points_at_one_time_than_a_page_holds_are_passed_by() -> None:
    # Twelve points at time 105 and a page of ten: paging by time cannot reach the last two;
    # the window goes on from the next nanosecond and says it skipped one.
    points = [point("kiwi", 100)] + [point("kiwi", 105, k) for k in range(12)]
    points += [point("kiwi", 110)]
    out, window = read_all(points, 10)
    times = [p.client_time for p in out]
    assert times[0] == "100" and times[-1] == "110" and times.count("105") == 10
    assert window.skipped_ns == 1


def test_a_short_page_ends_the_window() -> None:
    fresh, window = next_window(Window(0, 50), [point("kiwi", 1)], 10)
    assert len(fresh) == 1 and window.done
    fresh, window = next_window(Window(0, 50), [], 10)
    assert fresh == [] and window.done


def test_the_halves_of_an_area_merge_by_client_then_time() -> None:
    west = [point("a", 1), point("c", 1), point("c", 3)]
    east = [point("b", 2), point("c", 2)]
    merged, cut = merge_areas([(west, False), (east, False)])
    assert [(p.client_id, p.client_time) for p in merged] == [
        ("a", "1"),
        ("b", "2"),
        ("c", "1"),
        ("c", "2"),
        ("c", "3"),
    ]
    assert not cut
    assert [c for c, _ in group_by_client(merged)] == ["a", "b", "c"]
    # A half cut at its limit after client b: the other's points of later clients are left
    # out (the cut half lacks its own), and the answer says it is cut.
    merged, cut = merge_areas([([point("a", 1), point("b", 1)], True), (east + west[1:], False)])
    assert {p.client_id for p in merged} == {"a", "b"} and cut
