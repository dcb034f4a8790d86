"""The store and its range digests, with no sockets."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.protocol import IAmAt, Record, make_record
from backend.store import BUCKETS, PENDING_MAX, Store, bucket_of


def rec(client: str, when: int, server: str = "Riley") -> Record:
    return make_record(server, when * 10**9, IAmAt(client, "+1+1", str(when)))


@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcdefgh"), st.integers(0, 20), st.sampled_from(["Riley", "Bernard"])
        )
    ),
    st.randoms(use_true_random=False),  # hypothesis's: shrunk and replayed with the example
)
@settings(max_examples=200, deadline=None)
def test_the_same_records_in_any_order_give_the_same_store_and_digests(
    items: list[tuple[str, int, str]],
    shuffler: random.Random,
) -> None:
    records = [rec(c, t, s) for c, t, s in items]
    a, b = Store(), Store()
    for r in records:
        a.offer(r)
    shuffled = records[:]
    shuffler.shuffle(shuffled)
    for r in shuffled + records:  # replays change nothing
        b.offer(r)
    assert a.digests == b.digests
    assert {r.client_id: r.line for r in a} == {r.client_id: r.line for r in b}


def test_digests_tell_exactly_which_ranges_differ() -> None:
    a, b = Store(), Store()
    for i in range(500):
        a.offer(rec(f"c{i}", 1))
        b.offer(rec(f"c{i}", 1))
    assert a.digests == b.digests
    b.offer(rec("c42", 2))
    differ = [i for i in range(BUCKETS) if a.digests[i] != b.digests[i]]
    assert differ == [bucket_of("c42")]
    assert {r.client_id for r in b.bucket(differ[0])} >= {"c42"}


def test_removing_and_expiring_restore_the_digests() -> None:
    store = Store()
    store.offer(rec("keep", 100))
    before = list(store.digests)
    store.offer(rec("old", 5))
    store.offer(rec("old", 6))
    assert store.expire(oldest_second=50) == 1
    assert store.digests == before and store.get("old") is None and len(store) == 1


def test_digests_count_every_record_once_however_often_and_however_many_change() -> None:
    """Digests are brought up to date when asked for, or when more than PENDING_MAX clients
    changed since: either way each range's digest is the XOR of its records' line hashes."""
    store = Store()
    clients = [f"c{i}" for i in range(PENDING_MAX + 500)]
    for when in (1, 2):
        for client in clients:
            store.offer(rec(client, when))
    early = list(store.digests)
    for client in clients[:10]:
        store.offer(rec(client, 3))
        store.offer(rec(client, 4))
    store.remove(clients[10])
    store.remove("never-held")
    expected = [0] * BUCKETS
    for record in store:
        h = int.from_bytes(hashlib.blake2b(record.line, digest_size=8).digest(), "big")
        expected[bucket_of(record.client_id)] ^= h
    assert store.digests == expected != early
    assert len(store) == len(clients) - 1
