"""History across a partition: two running servers whose link is cut (a relay that refuses and
aborts connections, ``bench.linkproxy``), each taking points the other does not hear of, then
healed. Retention (the point limit and ``keep_days``) and deletion must leave both holding
exactly the same points, the ones the rules keep, with nothing resurrected by the peer that
had not yet applied them."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from helpers import Herd, iamat, listening_async, poll_async

from backend.history.store import CHUNK_POINTS
from backend.protocol import End, History, parse_line
from bench.linkproxy import Links

pytestmark = pytest.mark.timeout(120)

PAIR = ("Riley", "Jaquez")
LINK = ("Jaquez", "Riley")  # (dialler, acceptor): the name that sorts first dials
NOW = time.time()
DAY = 86_400.0
LIMIT = 600  # max_points_per_client: less than two chunks' worth
HISTORY = f"[history]\nenabled = true\nkeep_days = 2\nmax_points_per_client = {LIMIT}\n"


@asynccontextmanager
async def cut_pair(tmp_path: Path, extra: str = "") -> AsyncIterator[tuple[Herd, Links]]:
    """Riley and Jaquez, history on, their one link through a relay; links up."""
    links = await Links([PAIR]).start()  # listening before the herd picks its ports
    herd = Herd(tmp_path, names=PAIR, links=[PAIR], extra=HISTORY + extra)
    links.route(herd)
    try:
        async with herd:
            await herd.wait_links_async()
            yield herd, links
    finally:
        await links.close()


async def points(herd: Herd, name: str, client: str) -> list[str]:
    """The client times of every point ``name`` holds of ``client`` (ten days back), oldest
    first; the answer must end with ``END <n>`` for its n lines."""
    ask = History(client, int((NOW - 10 * DAY) * 1e9), int((NOW + 60) * 1e9), 10_000)
    lines = (await herd.ask_async(name, ask.encode())).splitlines(keepends=True)
    assert lines and parse_line(lines[-1]) == End(len(lines) - 1), lines[-3:]
    return [line.split()[-1].decode() for line in lines[:-1]]


async def send(herd: Herd, name: str, stamps: list[float]) -> None:
    """Report kiwi at each time to ``name``, on one connection; each must be answered."""
    replies = await herd.ask_async(name, b"".join(iamat("kiwi", when=t) for t in stamps))
    assert replies.count(b"AT ") == len(stamps), replies[-200:]


def stamps(times: list[float]) -> list[str]:
    """Client times as ``iamat`` sends them, oldest first."""
    return [f"{t:.9f}" for t in sorted(times)]


async def restart(herd: Herd, name: str) -> None:
    """SIGTERM ``name``, as an operator would, and start it again until it listens."""
    herd.restart(name)
    await poll_async(lambda: listening_async(herd.ports[name]), 20, f"{name} to listen")


async def both_hold(herd: Herd, expected: list[float]) -> None:
    want = stamps(expected)

    async def converged() -> bool:
        return all([await points(herd, name, "kiwi") == want for name in PAIR])

    await poll_async(converged, 20, "both servers to hold the same points")


async def test_retention_leaves_both_sides_of_a_partition_the_same_points(tmp_path: Path) -> None:
    async with cut_pair(tmp_path) as (herd, links):
        # Whole chunks, so that each goes to the writer (which trims) as soon as it is sent.
        first = [NOW - 2000 + i for i in range(CHUNK_POINTS)]
        await send(herd, "Riley", first)
        await both_hold(herd, first)
        links.cut(LINK)
        await poll_async(lambda: _down(herd), 10, "the cut to be seen")
        # Riley goes past the limit and trims its oldest; Jaquez, apart, takes 5 points older
        # than any (a phone's queue), and one past keep_days that no server keeps.
        newer = [NOW - 1000 + i for i in range(CHUNK_POINTS)]
        await send(herd, "Riley", newer)
        await poll_async(lambda: _holds(herd, "Riley", LIMIT), 10, "Riley to trim")
        older = [NOW - 3000 + i for i in range(5)]
        await send(herd, "Jaquez", [NOW - 5 * DAY, *older])
        assert await points(herd, "Jaquez", "kiwi") == stamps(older + first)
        links.heal(LINK)
        await poll_async(lambda: _has(herd, "Jaquez", newer), 20, "Jaquez to get Riley's points")
        # A point may wait in its client's open chunk for minutes before the writer (which
        # trims) has it; a server that stops writes its open chunks: stop and start both.
        for name in PAIR:
            await restart(herd, name)
        await herd.wait_links_async()
        # Both keep the client's newest LIMIT of everything: Jaquez trims as Riley did, and
        # Riley takes none of Jaquez's older points back (they are below its floor).
        await both_hold(herd, sorted(first + newer + older)[-LIMIT:])


async def test_a_deletion_made_while_a_link_is_cut_holds_on_both_sides(tmp_path: Path) -> None:
    async with cut_pair(tmp_path) as (herd, links):
        before = [NOW - 100 + i for i in range(20)]
        await send(herd, "Riley", before)
        await both_hold(herd, before)
        links.cut(LINK)
        await poll_async(lambda: _down(herd), 10, "the cut to be seen")
        until = NOW - 90
        reply = await herd.ask_async("Riley", f"FORGET kiwi {until:.9f}\n".encode())
        assert reply.startswith(b"FORGOTTEN kiwi ")
        # Jaquez has not heard of it: a phone's late points before ``until`` are kept there,
        # for now, with newer ones.
        late, fresh = [NOW - 95.5 - i for i in range(3)], [NOW - 50, NOW - 40]
        await send(herd, "Jaquez", [*late, *fresh])
        assert len(await points(herd, "Jaquez", "kiwi")) == 25
        links.heal(LINK)
        await both_hold(herd, [t for t in before + fresh if t > until])


async def test_anti_entropy_sends_only_the_points_a_side_lacks(tmp_path: Path) -> None:
    """With a queue of 5 records per link, what each side took while cut (a deletion, then
    points) is nearly all dropped from the other's queue, and anti-entropy repairs it: both
    end with every point but the deleted ones, and no exchange sends more objects than the
    other side lacked (the 50 points both held before the cut share their leaves with the
    new ones, and are not sent again; the link-up and the queue's overflow may each start
    an exchange)."""
    async with cut_pair(tmp_path, "[limits]\npeer_queue = 5\n") as (herd, links):
        shared = [NOW - 600 + i for i in range(50)]
        await send(herd, "Riley", shared)
        await both_hold(herd, shared)
        links.cut(LINK)
        await poll_async(lambda: _down(herd), 10, "the cut to be seen")
        # A deletion first, so that it too is dropped from the queue: the deletions' digest
        # (one leaf, scope *) repairs it.
        until = shared[9]
        reply = await herd.ask_async("Riley", f"FORGET kiwi {until:.9f}\n".encode())
        assert reply.startswith(b"FORGOTTEN kiwi ")
        riley = [NOW - 500 + i for i in range(60)]
        jaquez = [NOW - 499.5 + i for i in range(40)]  # the same hour, the same client
        await send(herd, "Riley", riley)
        await send(herd, "Jaquez", jaquez)
        links.heal(LINK)
        await both_hold(herd, shared[10:] + riley + jaquez)
        riley_sent, jaquez_sent = sent_lacking(herd, "Riley"), sent_lacking(herd, "Jaquez")
        assert riley_sent and jaquez_sent
        # Jaquez may list back the 10 points Riley deleted, if its exchange of points runs
        # before its exchange of deletions: Riley refuses them (they are below the floor).
        assert max(riley_sent) <= len(riley) and max(jaquez_sent) <= len(jaquez) + 10


def sent_lacking(herd: Herd, name: str) -> list[int]:
    """How many points ``name`` sent its neighbour in each answer to a list of identities."""
    found = re.finditer(r"sent (\d+) point objects it lacked", herd.log(name))
    return [int(m[1]) for m in found]


async def _holds(herd: Herd, name: str, n: int) -> bool:
    return len(await points(herd, name, "kiwi")) == n


async def _has(herd: Herd, name: str, times: list[float]) -> bool:
    return set(stamps(times)) <= set(await points(herd, name, "kiwi"))


async def _down(herd: Herd) -> bool:
    riley, jaquez = [await herd.status_async(name) for name in PAIR]
    return riley["links"]["Jaquez"] == jaquez["links"]["Riley"] == "down"
