"""A link's side of replicated objects (backend/replicas.py): send each kind's top digests,
and answer a neighbour's HAVE with what differs: the children's digests, or at the leaves
the objects themselves as PUT lines, once the leaf has settled here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from ..protocol import Have, Put
from ..replicas import TOP, Children, Replica, differing, have_lines
from ..transport import LineTransport

__all__ = ["answer_have", "send_tops"]

log = logging.getLogger("herd.peers")

Say = Callable[[LineTransport, bytes], None]

# A leaf that differs is sent only if its digest here is the same this long later. Under
# load every leaf of the current hour differs between two servers at any instant (points
# are in flight between them), and sending a leaf's objects because of points that arrive
# milliseconds later would resend the hour's points at every exchange; a leaf still
# changing here is left for the next exchange (or the hour's end). After a partition, the
# leaves are quiet, and repair starts this long after the digests are compared.
SETTLE_S = 2.0


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
    """The objects of each leaf that differs and has not changed here for SETTLE_S."""
    candidates = differing(mine, have)
    if not candidates:
        return
    await asyncio.sleep(SETTLE_S)
    now = await replica.children(have.scope)
    if now is None:
        return
    settled = [
        child
        for child in candidates
        if now.digests.get(child) == mine.digests.get(child) != have.digests.get(child)
    ]
    if len(settled) < len(candidates):
        log.info(
            "sync with %s: %d of %d differing %s leaves of %s still changing here",
            name,
            len(candidates) - len(settled),
            len(candidates),
            have.kind,
            have.scope,
        )
    sent = 0
    for child in settled:
        if conn.closing():
            return  # the link went down; the next one exchanges digests again
        for payload in await replica.objects(have.scope, child):
            say(conn, Put(have.kind, payload).encode())
            sent += 1
        try:
            await conn.drain()
        except ConnectionError:
            return
    if sent:
        log.info("sync with %s: sent %d %s objects where digests differ", name, sent, have.kind)
