"""History's work a chunk at a time, with no sockets: the writer's columns (sorted, packed and
hashed in bulk) against the row-at-a-time definitions, the digests of uncommitted points kept
per list (``Tally``) against counting them afresh, and the writer's shortcuts."""

from __future__ import annotations

import random
import sqlite3
import zlib
from pathlib import Path

from backend.history.buffers import Buffer, digests_of
from backend.history.columns import columns_of, identity_xor
from backend.history.points import (
    HOUR_NS,
    SPREAD,
    Point,
    Row,
    as_row,
    decode_chunk,
    encode_chunk,
    identity_hash,
    key_of,
)
from backend.history.schema import connect, create
from backend.history.writer import Chunk, Writer
from backend.protocol import IAmAt, make_record

T0 = 1_780_000_000 * 10**9  # 2026-05-28, in ns
PLACES = ("+34.068930-118.445127", "+48.858400+002.294500", "-33.856800+151.215300")


def record(client: str, ns: int, location: str = PLACES[0], server: str = "Riley") -> Point:
    """A record as the loop keeps it (a Record), its client time written to the ns."""
    when = f"{ns // 10**9}.{ns % 10**9:09d}"
    return make_record(server, ns + 250_000, IAmAt(client, location, when))


def point(rng: random.Random, client: str, ns: int) -> Point:
    """A record or a row, at one of a few places, with attributes now and then."""
    location = rng.choice(PLACES)
    if rng.random() < 0.7:
        return record(client, ns, location, rng.choice(("Riley", "Juzang")))
    attributes = b'{"battery":%d}' % rng.randint(1, 99) if rng.random() < 0.5 else b""
    seconds = f"{ns // 10**9}.{ns % 10**9:09d}"
    return Row(client, ns, seconds, location, "Jaquez", "+0.100000000", attributes)


def by_hand(points: list[Point]) -> list[Row]:
    """One client's points sorted by (time, location), the first of each identity kept."""
    kept: dict[tuple[int, str], Row] = {}
    for p in map(as_row, points):
        kept.setdefault((p.ns, p.location), p)
    return [kept[k] for k in sorted(kept)]


def test_columns_pack_and_hash_as_rows_do(rng: random.Random) -> None:
    for case in range(40):
        n = rng.randint(1, 300)
        times = sorted(T0 + rng.randrange(3 * HOUR_NS) for _ in range(n))
        items = [point(rng, "kiwi", t) for t in times]
        if case % 2:  # late points and copies among them
            items += [rng.choice(items) for _ in range(rng.randint(1, 20))]
            rng.shuffle(items)
        rows = by_hand(items)
        columns = columns_of(items)
        assert columns.ns == [r.ns for r in rows]
        assert [as_row(p) for p in columns.items] == rows  # of copies, the first one kept
        assert zlib.decompress(columns.encode()) == zlib.decompress(encode_chunk(rows))
        assert decode_chunk("kiwi", columns.encode()) == rows
        xor = 0
        for r in rows:
            xor ^= identity_hash("kiwi", r.ns, r.location)
        assert identity_xor("kiwi", columns.ns, columns.locations()) == xor
        for hour, part in columns.hour_groups(times[n // 2]):
            assert {t // HOUR_NS for t in part.ns} == {hour}
            assert all(t >= times[n // 2] for t in part.ns)


def fresh_digests(buffers: list[Buffer]) -> dict[int, tuple[int, int]]:
    """Every uncommitted point's hour bucket, counted afresh, each point once."""
    digests: dict[int, tuple[int, int]] = {}
    for buffer in buffers:
        for r in by_hand(buffer.every()):
            bucket = r.ns // HOUR_NS * SPREAD + buffer.piece
            count, xor = digests.get(bucket, (0, 0))
            digests[bucket] = (count + 1, xor ^ identity_hash(r.client_id, r.ns, r.location))
    return digests


def test_tallies_count_what_a_fresh_count_does(rng: random.Random) -> None:
    """Points appended (rising, late, copies, across hours), chunks sent and committed, a
    deletion's filter: at every step the kept tallies give the digests a fresh count does."""
    buffers = [Buffer(name) for name in ("kiwi", "owl", "emu")]
    clock = {b.client_id: T0 for b in buffers}
    for step in range(600):
        buffer = rng.choice(buffers)
        action = rng.random()
        if action < 0.6:
            clock[buffer.client_id] += rng.randrange(1, HOUR_NS // 20)
            buffer.append(point(rng, buffer.client_id, clock[buffer.client_id]))
        elif action < 0.75 and buffer.every():
            buffer.append(rng.choice(buffer.every()))  # a copy
        elif action < 0.82:
            late = clock[buffer.client_id] - rng.randrange(1, 2 * HOUR_NS)
            buffer.append(point(rng, buffer.client_id, late))
        elif action < 0.9 and buffer.items:
            buffer.take()
        elif action < 0.95 and buffer.sent:
            buffer.committed()
        elif buffer.items:
            cut = rng.choice(buffer.items)
            buffer.replace([p for p in buffer.items if as_row(p).ns > as_row(cut).ns])
        if step % 7 == 0:
            parts = [b.parts() for b in buffers]
            assert digests_of(parts, 0, 2**62) == fresh_digests(buffers), f"step {step}"
            # Every uncommitted point is known held (a late copy of it is not new).
            assert all(b.holds(key_of(p)) for b in buffers for p in b.every()), f"step {step}"
    low = (T0 // HOUR_NS + 1) * SPREAD
    found = digests_of([b.parts() for b in buffers], low, low + SPREAD)
    assert found == {b: d for b, d in fresh_digests(buffers).items() if low <= b < low + SPREAD}


def writer(tmp_path: Path) -> tuple[Writer, list[str]]:
    conn = connect(tmp_path / "history.db", durable=False)
    create(conn)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    return Writer(conn, 1_000_000, lambda *_: None), statements


def held(conn: sqlite3.Connection, name: str) -> list[Row]:
    rows = []
    for (data,) in conn.execute(
        "SELECT data FROM chunks x JOIN clients c ON c.id = x.client WHERE c.name = ?", (name,)
    ):
        rows += decode_chunk(name, data)
    return sorted(rows, key=lambda r: (r.ns, r.location))


def test_the_writer_skips_the_held_query_only_after_every_held_point(tmp_path: Path) -> None:
    w, statements = writer(tmp_path)
    first = [record("kiwi", T0 + i * 10**9) for i in range(100)]
    w.apply([Chunk("kiwi", first[:60])])
    statements.clear()
    w.apply([Chunk("kiwi", first[60:])])  # after everything held: no lookup of held points
    assert not [s for s in statements if s.startswith("SELECT data FROM chunks")]
    # A late chunk reaching back over held points, and another over it in the same batch:
    # the held ones are dropped, each point is stored once.
    late = [record("kiwi", T0 + i * 10**9 + 5) for i in range(50, 70)] + first[40:55]
    again = [*late[:5], record("kiwi", T0 + 10**12)]
    w.apply([Chunk("kiwi", late), Chunk("kiwi", again)])
    assert [s for s in statements if s.startswith("SELECT data FROM chunks")]
    expected = by_hand(first + late + again)
    assert held(w.conn, "kiwi") == expected
    assert w.stored == len(expected)
    (count,) = w.conn.execute("SELECT sum(count) FROM hours").fetchone()
    assert count == len(expected)
