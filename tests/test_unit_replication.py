"""Anti-entropy's side of a link with no sockets (backend/peers/replication.py,
backend/replicas.py): which differing leaves are listed and when, which objects answer a
neighbour's list, and asks for one scope's digests that share one pass over the points."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection

import pytest

from backend.history.points import DAY_NS, HOURS, SPREAD, Row
from backend.peers import replication
from backend.protocol import MAX_IDS, Have, Ids, Put, parse_line
from backend.replicas import TOP, Children, Points

DAY = 20_000
LEAVES = HOURS * SPREAD


class Looks:
    """A replica whose leaf digests change from one look to the next as ``looks`` say, and
    whose leaf ``c`` holds the one object ``b"obj <c>"`` of identity ``c``."""

    def __init__(self, looks: list[dict[int, tuple[int, int]]]) -> None:
        self.looks = looks
        self.asked: list[set[int] | None] = []

    async def put(self, payload: bytes, source: str) -> None:  # pragma: no cover
        raise AssertionError("nothing is put here")

    async def children(self, scope: str, only: Collection[int] | None = None) -> Children:
        assert scope == str(DAY)
        self.asked.append(None if only is None else set(only))
        return Children(0, LEAVES - 1, self.looks.pop(0), leaves=True)

    async def identities(self, scope: str, child: int) -> list[tuple[int, bytes]]:
        return [(child, b"obj %d" % child)]


class Conn:
    def closing(self) -> bool:
        return False

    async def drain(self) -> None:
        return None


async def test_a_changing_leaf_is_sent_once_it_holds_still_within_the_exchange(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Leaf 8 holds still at the first look: its identities are listed then. Leaf 5 is still
    changing (a repair from another link landing) and is listed at the next look, when it
    held still; leaf 6 became what the neighbour has: not listed; leaf 7 never holds still:
    left for the next exchange. Each look reads only the leaves still waiting."""
    monkeypatch.setattr(replication, "SETTLE_S", 0.0)
    theirs = {5: (1, 10), 6: (2, 11), 7: (1, 12)}
    replica = Looks(
        [
            {5: (2, 1), 6: (1, 2), 7: (3, 3), 8: (1, 4)},  # when their HAVE comes
            {5: (3, 9), 6: (2, 11), 7: (4, 4), 8: (1, 4)},  # first look
            {5: (3, 9), 7: (5, 5)},  # second look
            {7: (6, 6)},  # third, the last
        ]
    )
    said: list[bytes] = []
    have = Have("point", str(DAY), 0, LEAVES - 1, theirs)
    await replication.answer_have(
        Conn(),  # type: ignore[arg-type]
        {"point": replica},  # type: ignore[dict-item]
        have,
        lambda _conn, line: said.append(line),
        "Jaquez",
    )
    day = str(DAY)
    assert said == [Ids("point", day, c, 0, 2**64 - 1, frozenset({c})).encode() for c in (8, 5)]
    assert replica.asked == [None, {5, 6, 7, 8}, {5, 7}, {7}]
    assert not replica.looks


class SlowHistory:
    """What ``Points`` reads of a history: digests that take until ``release`` is set."""

    first_day = DAY - 10

    def __init__(self) -> None:
        self.reads = 0
        self.release = asyncio.Event()

    def now_ns(self) -> int:
        return DAY * DAY_NS

    async def read_digests(self, first: int, last: int) -> dict[int, object]:
        self.reads += 1
        await self.release.wait()
        return {}


async def test_asks_for_a_scope_while_one_is_answered_share_its_answer() -> None:
    """Two links asking for the top digests at once (and a day's four HAVE lines) cost one
    pass over the points; an ask after the answer reads again."""
    history = SlowHistory()
    points = Points(history, lambda payload, source: None)  # type: ignore[arg-type]
    asks = [asyncio.ensure_future(points.children(TOP)) for _ in range(3)]
    await asyncio.sleep(0)
    history.release.set()
    answers = await asyncio.gather(*asks)
    assert history.reads == 1
    assert all(a == answers[0] for a in answers) and answers[0] is not None
    assert answers[0].first == DAY - 9 and answers[0].last == DAY + 1
    await points.children(TOP)
    assert history.reads == 2


async def test_an_asker_cancelled_leaves_the_others_their_answer() -> None:
    history = SlowHistory()
    points = Points(history, lambda payload, source: None)  # type: ignore[arg-type]
    gone = asyncio.ensure_future(points.children(TOP))
    kept = asyncio.ensure_future(points.children(TOP))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    history.release.set()
    assert (await kept) is not None
    assert gone.cancelled() and history.reads == 1


class Leaf:
    """A replica of one leaf holding the objects ``obj <i>`` of identities ``i``."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    async def put(self, payload: bytes, source: str) -> None:  # pragma: no cover
        raise AssertionError("nothing is put here")

    async def children(self, scope: str, only: Collection[int] | None = None) -> None:
        raise AssertionError("no digests are read")  # pragma: no cover

    async def identities(self, scope: str, child: int) -> list[tuple[int, bytes]]:
        assert (scope, child) == (str(DAY), 7)
        return [(i, b"obj %d" % i) for i in self.ids]


async def test_a_neighbours_list_is_answered_with_what_it_lacks_in_its_range() -> None:
    """Of our objects 1, 5, 9 and 2**63 + 1, the neighbour lists 5 and 8 in 0..9: we send 1
    and 9 (not 5, which it has; not 2**63 + 1, outside the range; 8 is not ours)."""
    said: list[bytes] = []
    leaf = Leaf([1, 5, 9, 2**63 + 1])
    await replication.answer_ids(
        Conn(),  # type: ignore[arg-type]
        {"point": leaf},  # type: ignore[dict-item]
        Ids("point", str(DAY), 7, 0, 9, frozenset({5, 8})),
        lambda _conn, line: said.append(line),
        "Jaquez",
    )
    assert said == [Put("point", b"obj 1").encode(), Put("point", b"obj 9").encode()]


def test_a_leafs_identities_are_listed_in_lines_whose_ranges_cover_them_all() -> None:
    """A leaf of more than MAX_IDS objects takes several lines; their ranges are consecutive
    from 0 to 2**64 - 1, each identity is in exactly one, and each line reads back."""
    ids = [(i * 7919 + 13) * 0x9E3779B97F4A7C15 % 2**64 for i in range(2 * MAX_IDS + 5)]
    lines = Ids.lines("point", str(DAY), 3, ids)
    assert len(lines) == 3
    assert lines[0].low == 0 and lines[-1].high == 2**64 - 1
    assert all(a.high + 1 == b.low for a, b in itertools.pairwise(lines))
    assert sorted(i for line in lines for i in line.ids) == sorted(ids)
    assert all(line.low <= i <= line.high for line in lines for i in line.ids)
    for line in lines:
        assert parse_line(line.encode()) == line
    assert Ids.lines("point", str(DAY), 3, []) == [
        Ids("point", str(DAY), 3, 0, 2**64 - 1, frozenset())
    ]


class BucketHistory:
    """What ``Points`` reads of a history for a leaf: one hour bucket's rows, counted."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.reads = 0

    async def read_bucket(self, bucket: int) -> list[Row]:
        self.reads += 1
        return self.rows


async def test_a_big_leaf_is_read_once_for_all_the_lines_that_list_it() -> None:
    """A neighbour lists a leaf of 3 * MAX_IDS + 1 points in four IDS lines, lacking one point
    in each: the leaf is read and hashed once for the four answers (not once a line), and
    each answer sends exactly the one point its range lacks."""
    rows = [
        Row("kiwi", DAY * DAY_NS + i * 1_000, "1.0", "+1+1", "Riley", "+0.1", b"")
        for i in range(3 * MAX_IDS + 1)
    ]
    history = BucketHistory(rows)
    points = Points(history, lambda payload, source: None)  # type: ignore[arg-type]
    ours = await points.identities(str(DAY), 7)
    assert [i for i, _ in ours] == sorted(i for i, _ in ours)
    lines = Ids.lines("point", str(DAY), 7, [i for i, _ in ours])
    assert len(lines) == 4
    said: list[bytes] = []
    lacking: list[bytes] = []
    for line in lines:
        missing = min(line.ids)
        lacking.append(dict(ours)[missing])
        await replication.answer_ids(
            Conn(),  # type: ignore[arg-type]
            {"point": points},
            Ids(line.kind, line.scope, line.child, line.low, line.high, line.ids - {missing}),
            lambda _conn, put: said.append(put),
            "Jaquez",
        )
    assert said == [Put("point", payload).encode() for payload in lacking]
    assert history.reads == 1
