"""History's store with no sockets: what is new, what is kept, deleted and expired, the
digests anti-entropy compares, and reads (backend/history)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from backend.history import History, Row, bucket_of, fill, identity_hash
from backend.history.points import (
    DAY_NS,
    SPREAD,
    day_bucket,
    decode_chunk,
    hour_bucket_of,
    slice_of,
)

NOW = 1_780_000_000.0  # 2026-05-28: the tests' clock
DAY = 86_400


def row(client: str, t: float, location: str = "+34.068930-118.445127", **kw: str) -> Row:
    text = f"{t:.9f}"
    ns = round(t * 1e9)
    attributes = kw.get("attributes", "").encode()
    return Row(client, ns, text, location, kw.get("server", "Riley"), "+0.100000000", attributes)


@pytest.fixture
async def history(tmp_path: Path):
    h = History(tmp_path, keep_days=30, max_points=1_000, clock=lambda: NOW)
    h.open()
    yield h
    await h.close()


async def reopen(h: History) -> History:
    await h.close()
    again = History(h.path.parent, keep_days=h.keep_days, max_points=h.max_points, clock=h.clock)
    again.open()
    return again


def recomputed(h: History) -> dict[int, tuple[int, int]]:
    """The digests as they should be, from the points themselves."""
    digests: dict[int, tuple[int, int]] = {}
    conn = sqlite3.connect(h.path)
    for name, data in conn.execute(
        "SELECT c.name, x.data FROM chunks x JOIN clients c ON c.id = x.client"
    ):
        for r in decode_chunk(name, data):
            b = bucket_of(name, r.ns)
            count, xor = digests.get(b, (0, 0))
            digests[b] = (count + 1, xor ^ identity_hash(name, r.ns, r.location))
    conn.close()
    return digests


def stored(h: History) -> dict[int, tuple[int, int]]:
    return {b: (d.points, d.xor) for b, d in h.reads.digests(0, 10**6).items()}


async def test_a_point_is_new_once_and_stored_once(history: History) -> None:
    point = row("kiwi", NOW - 60)
    assert history.offer(point)
    assert not history.offer(point), "a copy queued is not new"
    await history.wait_saved()
    assert not history.offer(point), "a copy held is not new"
    history.add(point)  # a copy through the newest-record path is ignored by the writer
    await history.wait_saved()
    assert history.points("kiwi", 0, 2**62, 10) == [point]


async def test_late_points_are_kept_in_time_order(history: History) -> None:
    times = [NOW - 10, NOW - 300, NOW - 20, NOW - 3_000]
    for t in times:
        history.offer(row("kiwi", t))
    await history.wait_saved()
    got = history.points("kiwi", 0, 2**62, 10)
    assert [r.ns for r in got] == sorted(round(t * 1e9) for t in times)
    assert got[0].at_line() == (
        f"AT Riley +0.100000000 kiwi +34.068930-118.445127 {NOW - 3_000:.9f}".encode()
    )


async def test_one_time_two_places_are_two_points(history: History) -> None:
    assert history.offer(row("kiwi", NOW, "+1-1"))
    assert history.offer(row("kiwi", NOW, "+2-2"))
    await history.wait_saved()
    assert len(history.points("kiwi", 0, 2**62, 10)) == 2


async def test_window_is_inclusive_and_limited(history: History) -> None:
    for i in range(10):
        history.offer(row("kiwi", NOW - 100 + i))
    await history.wait_saved()
    since, until = round((NOW - 98) * 1e9), round((NOW - 95) * 1e9)
    assert len(history.points("kiwi", since, until, 100)) == 4
    assert len(history.points("kiwi", since, until, 3)) == 3
    assert history.points("nobody", 0, 2**62, 10) == []


async def test_overlapping_chunks_and_open_points_read_in_order_once(history: History) -> None:
    """Points written in several chunks that overlap in time (late ones), plus points not yet
    written, read back in (time, location) order, each once."""
    points = [row("kiwi", NOW - 100 + i // 5, f"+{i:02}-1") for i in range(25)]  # 5 per time
    for start in range(0, 20, 7):
        for p in points[start : start + 7][::-1]:
            assert history.offer(p)
        await history.wait_saved()  # a chunk each
    for p in points[21:]:
        assert history.offer(p)  # still open
    assert not history.offer(points[3]) and not history.offer(points[22])
    window = (0, round(NOW * 1e9), 100)
    assert await history.read_points("kiwi", *window) == points
    assert await history.read_points("kiwi", 0, points[9].ns, 7) == points[:7]
    assert history.points("kiwi", *window) == points[:21]  # committed only
    # HISTORY's lines: the rows' lines, whichever way they are made (chunks that overlap here).
    for limit in (100, 7):
        lines = await history.read_lines("kiwi", 0, round(NOW * 1e9), limit, False)
        assert lines == [p.at_line().decode() + "\n" for p in points[:limit]]


async def test_history_lines_from_chunks_apart_and_open_points(history: History) -> None:
    """Chunks that do not overlap are read straight into lines, open points after them."""
    points = [row("owl", NOW - 3_000 + i, attributes=f'{{"n":{i}}}') for i in range(960)]
    for p in points[:900]:  # chunks of 512 and 388
        history.add(p)
    await history.wait_saved()
    for p in points[900:]:
        history.add(p)  # still open
    since, until = points[5].ns, points[950].ns
    for limit, flag in ((10_000, True), (10_000, False), (600, True)):
        lines = await history.read_lines("owl", since, until, limit, flag)
        kept = points[5:951][:limit]
        assert lines == [(p.wire() if flag else p.at_line()).decode() + "\n" for p in kept]


async def test_attributes_are_kept(history: History) -> None:
    point = row("kiwi", NOW, attributes='{"battery":80}')
    history.offer(point)
    await history.wait_saved()
    (got,) = history.points("kiwi", 0, 2**62, 1)
    assert got.attributes == b'{"battery":80}'
    assert got.wire().startswith(b"POINT Riley") and got.wire().endswith(b' {"battery":80}')


async def test_digests_follow_inserts_deletions_and_trims(history: History) -> None:
    for i in range(300):
        history.offer(row(f"c{i % 7}", NOW - i * 997.0))
    history.offer(row("c1", NOW - 5, "+1-1"))
    await history.wait_saved()
    assert stored(history) == recomputed(history)
    history.forget("c3", round((NOW - 50_000) * 1e9))
    await history.wait_saved()
    assert stored(history) == recomputed(history)
    assert len(stored(history)) > 5


async def test_a_client_is_held_to_its_point_limit_oldest_first(tmp_path: Path) -> None:
    h = History(tmp_path, keep_days=30, max_points=50, clock=lambda: NOW)
    h.open()
    for i in range(80):
        h.offer(row("kiwi", NOW - 1_000 + i))
    await h.wait_saved()
    kept = h.points("kiwi", 0, 2**62, 100)
    assert len(kept) == 50
    assert kept[0].ns == round((NOW - 1_000 + 30) * 1e9)
    assert stored(h) == recomputed(h)
    # The trimmed points are never taken back, from a peer or a late phone, after a restart.
    h = await reopen(h)
    assert not h.offer(row("kiwi", NOW - 1_000 + 5))
    assert h.offer(row("kiwi", NOW - 1))
    await h.close()


async def test_deleted_points_stay_deleted(history: History) -> None:
    for i in range(20):
        history.offer(row("kiwi", NOW - 100 + i))
    history.offer(row("owl", NOW - 90))
    await history.wait_saved()
    until = round((NOW - 90) * 1e9)
    assert history.forget("kiwi", until)
    assert not history.forget("kiwi", until), "an equal deletion again is nothing new"
    await history.wait_saved()
    assert [r.ns > until for r in history.points("kiwi", 0, 2**62, 100)] == [True] * 9
    assert len(history.points("owl", 0, 2**62, 100)) == 1
    assert not history.offer(row("kiwi", NOW - 95)), "a deleted point does not come back"
    again = await reopen(history)
    assert not again.offer(row("kiwi", NOW - 95))
    assert again.reads.forgotten() == {"kiwi": until}
    await again.close()


async def test_retention_goes_by_whole_days_of_client_time(tmp_path: Path) -> None:
    clock = [NOW]
    h = History(tmp_path, keep_days=2, max_points=1_000, clock=lambda: clock[0])
    h.open()
    today = int(NOW // DAY)
    # keep_days = 2: today and the two days before it, so never less than two whole days.
    for days_ago in range(3):
        assert h.offer(row("kiwi", (today - days_ago) * DAY + 60))
    assert not h.offer(row("kiwi", (today - 3) * DAY + 60)), "before retention: refused"
    await h.wait_saved()
    assert len(h.points("kiwi", 0, 2**62, 10)) == 3
    clock[0] += DAY
    h.expire()
    await h.wait_saved()
    assert len(h.points("kiwi", 0, 2**62, 10)) == 2
    assert min(stored(h)) >= (today - 1) * SPREAD
    assert stored(h) == recomputed(h)
    await h.close()


async def test_who_was_in_an_area(history: History) -> None:
    history.offer(row("in", NOW - 100, "+34.1-118.4"))
    history.offer(row("in", NOW - 50, "+40.0-100.0"))  # same hour, elsewhere
    history.offer(row("out", NOW - 100, "+10.0+010.0"))
    history.offer(row("early", NOW - 5 * 3_600, "+34.1-118.4"))
    await history.wait_saved()
    found = await history.read_area(
        (-119, 34, -118, 35), round((NOW - 3_600) * 1e9), round(NOW * 1e9), 10
    )
    assert list(found) == ["in"]
    assert [r.location for r in found["in"]] == ["+34.1-118.4"]
    # Its hour's box covers the box asked, but no point of "near" lies inside it.
    history.offer(row("near", NOW - 100, "+33.9-118.5"))
    history.offer(row("near", NOW - 90, "+35.1-117.9"))
    await history.wait_saved()
    history.offer(row("in2", NOW - 100, "+34.5-118.5"))  # not yet written: found all the same
    window = round((NOW - 3_600) * 1e9), round(NOW * 1e9)
    box = (-119.0, 34.0, -118.0, 35.0)
    assert await history.read_area_clients(box, *window, 10) == ["in", "in2"]
    assert await history.read_area_clients(box, *window, 1) == ["in"]
    assert await history.read_area_clients((0, 0, 1, 1), *window, 10) == []
    found = await history.read_area(box, *window, 10)
    assert {name: [r.location for r in rows] for name, rows in found.items()} == {
        "in": ["+34.1-118.4"],
        "in2": ["+34.5-118.5"],
    }


async def test_fill_writes_a_history_a_server_then_reads(tmp_path: Path) -> None:
    rows = [row(f"c{c}", NOW - 60 * i) for c in range(3) for i in reversed(range(50))]
    assert fill(tmp_path, rows) == 150
    h = History(tmp_path, keep_days=30, max_points=1_000, clock=lambda: NOW)
    h.open()
    try:
        assert h.stats()["points"] == 150
        assert h.points("c1", 0, round(NOW * 1e9), 100) == rows[50:100]
        assert stored(h) == recomputed(h)
    finally:
        await h.close()


async def test_a_failed_write_is_retried_not_dropped(history: History, monkeypatch) -> None:
    """Disk full: the batch is written once there is room, and nothing is lost."""
    monkeypatch.setattr("backend.history.batches.RETRY_S", 0.05)
    writer = history._writer
    assert writer is not None
    pages = writer.conn.execute("PRAGMA page_count").fetchone()[0]
    writer.conn.execute(f"PRAGMA max_page_count={pages}")
    for i in range(3_000):
        history.offer(row(f"c{i}", NOW - i))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(history.wait_saved(), 0.5)
    assert history.saved < history.queued
    writer.conn.execute("PRAGMA max_page_count=1000000")  # room again
    await asyncio.wait_for(history.wait_saved(), 30)
    assert sum(len(history.points(f"c{i}", 0, 2**62, 2)) for i in range(3_000)) == 3_000


async def test_a_point_written_after_its_hour_was_looked_up_is_still_held(
    history: History,
) -> None:
    """``offer`` reads what the database holds of a client's hour once and keeps it: a point
    committed after that read is found all the same (each commit is added to what is kept),
    a new point is new, and deleted points stay refused."""
    first, second, third = (row("kiwi", NOW - s) for s in (100, 50, 10))
    assert history.offer(first)
    await history.wait_saved()
    assert history.offer(second)  # looked the hour up in the database: first was there
    assert not history.offer(first)
    await history.wait_saved()  # second is written after the hour was read
    assert not history.offer(second)
    assert history.offer(third)
    await history.wait_saved()
    held = history.points("kiwi", 0, round(NOW * 1e9), 100)
    assert [r.ns for r in held] == [first.ns, second.ns, third.ns]
    assert history.forget("kiwi", third.ns - 1)
    await history.wait_saved(flush=False)
    assert not history.offer(first) and not history.offer(second)
    assert not history.offer(third)
    assert history.offer(row("kiwi", NOW - 5))


async def test_a_copy_is_known_from_its_line_before_it_is_parsed(history: History) -> None:
    """``holds_line`` (a neighbour's PUT of a point) finds a held point from its AT or POINT
    line, whether it is uncommitted or written, its time written with any trailing zeros;
    another location or time is not held, and a line that is not plainly a point is not
    looked up (None)."""
    loc = "+34.068930-118.445127"
    assert history.offer(row("kiwi", NOW - 100.5))
    at = f"AT Riley +0.100000000 kiwi {loc} {NOW - 100.5:.9f}".encode()
    for _ in range(2):  # uncommitted, then written
        assert history.holds_line(at)
        assert history.holds_line(at.replace(b"AT", b"POINT", 1) + b' {"battery":50}')
        assert history.holds_line(at + b"000")
        assert history.holds_line(at.replace(b"Riley +0.1", b"Jaquez -4.2"))  # another copy
        assert history.holds_line(at.replace(b"kiwi", b"lime")) is False
        assert history.holds_line(at.replace(loc.encode(), b"+34.068930-118.445128")) is False
        assert history.holds_line(at.replace(b".5000", b".5001")) is False
        await history.wait_saved()
    for junk in (b"", b"AT Riley", b"PUT point " + at, at.replace(b".", b"x"), b"AT \xff" + at):
        assert history.holds_line(junk) is None  # not looked up: an offer must look


async def test_an_unheld_offer_skips_the_lookup_but_not_the_floor(history: History) -> None:
    """``offer(unheld=True)`` (its line was just found not held) keeps the point without
    looking again; a point at or before its client's floor is refused all the same."""
    assert history.offer(row("kiwi", NOW - 50), unheld=True)
    assert history.stats()["points"] == 1
    assert history.forget("kiwi", round((NOW - 40) * 1e9))
    assert not history.offer(row("kiwi", NOW - 45), unheld=True)
    assert history.offer(row("kiwi", NOW - 30), unheld=True)
    await history.wait_saved()
    assert [r.ns for r in history.points("kiwi", 0, 2**62, 10)] == [round((NOW - 30) * 1e9)]


async def test_days_hours_digests_and_buckets_agree(history: History) -> None:
    """A day bucket's digest is its hour buckets' together; an hour bucket's is its points',
    whether written or not (half of them are still open here)."""
    for i in range(200):
        history.offer(row(f"c{i}", NOW - i * 600))
        if i == 100:
            await history.wait_saved()
    today = int(NOW * 1e9) // DAY_NS
    days = await history.read_digests(today - 2, today)
    assert sum(d.points for d in days.values()) == 200
    summed: dict[int, tuple[int, int]] = {}
    for day in range(today - 2, today + 1):
        for b, digest in (await history.read_hours(day)).items():
            rows = await history.read_bucket(b)
            assert len(rows) == digest.points
            xor = 0
            for r in rows:
                assert hour_bucket_of(r.client_id, r.ns) == b
                xor ^= identity_hash(r.client_id, r.ns, r.location)
            assert xor == digest.xor
            count, held = summed.get(day_bucket(b), (0, 0))
            summed[day_bucket(b)] = (count + digest.points, held ^ digest.xor)
    assert summed == {b: (d.points, d.xor) for b, d in days.items()}


async def test_times_past_64_bit_nanoseconds_are_no_history(history: History) -> None:
    """A record may be dated up to 9999 (from a peer); history's nanoseconds end in 2262."""
    far = Row("kiwi", 253402300799 * 10**9, "253402300799", "+1+1", "Riley", "+0.1", b"")
    assert not history.offer(far)
    history.add(far)  # as the newest record it is kept; as a point it is left out
    history.offer(row("kiwi", NOW))
    await history.wait_saved()
    # A window reaching past 2262 (HISTORY kiwi 0 9999999999 ...) reads what there is.
    assert len(history.points("kiwi", 0, 9_999_999_999 * 10**9, 10)) == 1
    assert len(history.points("kiwi", 0, 253402300799 * 10**9, 10)) == 1
    assert history.forget("kiwi", 253402300799 * 10**9)
    await history.wait_saved()
    assert history.points("kiwi", 0, 2**62, 10) == []


# What the first build of history wrote (schema 1: a row per point, hourly cells).
_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema', 1);
CREATE TABLE clients (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    slice INTEGER NOT NULL, points INTEGER NOT NULL DEFAULT 0, floor INTEGER);
CREATE TABLE points (client INTEGER NOT NULL, ns INTEGER NOT NULL, location TEXT NOT NULL,
    time TEXT NOT NULL, server TEXT NOT NULL, diff TEXT NOT NULL, attributes BLOB,
    PRIMARY KEY (client, ns, location)) WITHOUT ROWID;
CREATE TABLE cells (hour INTEGER NOT NULL, client INTEGER NOT NULL, south REAL NOT NULL,
    west REAL NOT NULL, north REAL NOT NULL, east REAL NOT NULL,
    PRIMARY KEY (hour, client)) WITHOUT ROWID;
CREATE TABLE digests (bucket INTEGER PRIMARY KEY, count INTEGER NOT NULL,
    xor INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE forgotten (name TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID;
"""


async def test_a_database_of_schema_1_is_converted(tmp_path: Path) -> None:
    points = [row("kiwi", NOW - 6_000 + i * 100, attributes='{"battery":5}') for i in range(60)]
    points.append(row("owl", NOW - 50))
    conn = sqlite3.connect(tmp_path / "history.db")
    conn.executescript(_SCHEMA_1)
    for cid, name in enumerate(("kiwi", "owl"), 1):
        mine = [p for p in points if p.client_id == name]
        conn.execute(
            "INSERT INTO clients VALUES (?, ?, ?, ?, NULL)",
            (cid, name, slice_of(name), len(mine)),
        )
        conn.executemany(
            "INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (cid, p.ns, p.location, p.client_time, p.server_id, p.time_diff, p.attributes)
                for p in mine
            ],
        )
    conn.commit()
    conn.close()
    h = History(tmp_path, keep_days=30, max_points=1_000, clock=lambda: NOW)
    h.open()
    try:
        window = (0, round(NOW * 1e9), 100)
        assert await h.read_points("kiwi", *window) == points[:60]
        assert await h.read_points("owl", *window) == points[60:]
        assert h.stats()["points"] == 61
        assert stored(h) == recomputed(h)
        assert not h.offer(points[3]) and h.offer(row("kiwi", NOW - 1))
    finally:
        await h.close()
    tables = sqlite3.connect(tmp_path / "history.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    )
    assert {"points", "cells"}.isdisjoint(name for (name,) in tables)
