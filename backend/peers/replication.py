"""A link's side of replicated objects (backend/replicas.py): send each kind's top digests,
and answer a neighbour's HAVE with what differs: the children's digests, or at a leaf that
has settled here the identities of its objects (IDS); and answer a neighbour's IDS with the
objects of that leaf it does not list, as PUT lines. Only what one side lacks travels."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable, Mapping

from ..protocol import Have, Ids, Put
from ..replicas import TOP, Children, Replica, differing, have_lines
from ..transport import LineTransport

__all__ = ["answer_have", "answer_ids", "send_tops"]

log = logging.getLogger("herd.peers")

Say = Callable[[LineTransport, bytes], None]

# A leaf that differs is sent only once its digest here has held still this long. Under
# load every leaf of the current hour differs between two servers at any instant (points
# are in flight between them), and sending a leaf's objects because of points that arrive
# milliseconds later would resend the hour's points at every exchange.
SETTLE_S = 1.0
# ... looked at again every SETTLE_S while it changes, this many times: after a partition a
# leaf changes here while the repair from another link lands, then holds still, and is sent
# then rather than at the next exchange; a leaf still changing after the last look (the
# current hour's under load) is left for the next exchange (or the hour's end).
SETTLE_LOOKS = 3


async def send_tops(conn: LineTransport, replicas: Mapping[str, Replica], say: Say) -> None:
    """Each kind's top scope, as HAVE lines (on link-up and every sync_interval)."""
    for kind, replica in replicas.items():
        children = await replica.children(TOP)
        if children is not None and not conn.closing():
            for line in have_lines(kind, TOP, children):
                say(conn, line)


async def answer_have(
    conn: LineTransport, replicas: Mapping[str, Replica], have: Have, say: Say, name: str
) -> None:
    """Answer a neighbour's HAVE: for each child that differs, its digests one level down,
    or (a leaf) our objects in it; the neighbour does the same, so both end with the union."""
    replica = replicas.get(have.kind)
    mine = await replica.children(have.scope) if replica is not None else None
    if replica is None or mine is None:
        log.warning("link to %s: HAVE of an unknown kind or scope: %s", name, have.kind)
        return
    if not mine.leaves:
        for child in differing(mine, have):
            below = await replica.children(str(child))
            if below is not None and not conn.closing():
                for line in have_lines(have.kind, str(child), below):
                    say(conn, line)
        return
    await _send_settled(conn, replica, have, mine, say, name)


async def _send_settled(
    conn: LineTransport, replica: Replica, have: Have, mine: Children, say: Say, name: str
) -> None:
    """The objects of each leaf that differs, once it has held still here for SETTLE_S."""
    theirs = have.digests
    waiting = {child: mine.digests.get(child) for child in differing(mine, have)}
    sent = 0
    for _ in range(SETTLE_LOOKS):
        if not waiting:
            break
        await asyncio.sleep(SETTLE_S)
        now = await replica.children(have.scope, only=waiting)
        if now is None or conn.closing():
            return  # the link went down; the next one exchanges digests again
        held = [c for c, digest in waiting.items() if now.digests.get(c) == digest]
        sent_now = await _send_leaves(
            conn, replica, have, [c for c in held if now.digests.get(c) != theirs.get(c)], say
        )
        if sent_now is None:
            return
        sent += sent_now
        # Still changing, and still not what the neighbour had: another look.
        waiting = {
            c: now.digests.get(c)
            for c in waiting
            if c not in held and now.digests.get(c) != theirs.get(c)
        }
    if sent:
        log.info("sync with %s: listed %d %s where digests differ", name, sent, have.kind)
    if waiting:
        log.info(
            "sync with %s: %d %s leaves of %s still changing, left for the next exchange",
            name,
            len(waiting),
            have.kind,
            have.scope,
        )


async def _send_leaves(
    conn: LineTransport, replica: Replica, have: Have, leaves: list[int], say: Say
) -> int | None:
    """The identities of the objects of ``leaves`` as IDS lines; how many, or None if the
    link went down."""
    sent = 0
    for child in leaves:
        if conn.closing():
            return None
        ids = [identity for identity, _ in await replica.identities(have.scope, child)]
        for line in Ids.lines(have.kind, have.scope, child, ids):
            say(conn, line.encode())
        sent += len(ids)
        try:
            await conn.drain()
        except ConnectionError:
            return None
    return sent


async def answer_ids(
    conn: LineTransport, replicas: Mapping[str, Replica], ids: Ids, say: Say, name: str
) -> None:
    """Answer a neighbour's IDS: our objects of that leaf, in its range, that it does not
    list, as PUT lines (the neighbour does the same with ours)."""
    replica = replicas.get(ids.kind)
    if replica is None:
        log.warning("link to %s: IDS of an unknown kind: %s", name, ids.kind)
        return
    sent = 0
    objects = await replica.identities(ids.scope, ids.child)  # by identity
    start = bisect.bisect_left(objects, ids.low, key=_identity)
    end = bisect.bisect_right(objects, ids.high, key=_identity)
    for identity, payload in objects[start:end]:
        if identity not in ids.ids:
            say(conn, Put(ids.kind, payload).encode())
            sent += 1
    if sent and not conn.closing():
        log.info("sync with %s: sent %d %s objects it lacked", name, sent, ids.kind)
        with contextlib.suppress(ConnectionError):
            await conn.drain()


def _identity(pair: tuple[int, bytes]) -> int:
    return pair[0]
