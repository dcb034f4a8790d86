"""A link's side of replicated objects (backend/replicas.py): send each kind's top digests,
and answer a neighbour's HAVE with what differs: the children's digests, or at the leaves
the objects themselves as PUT lines."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from ..protocol import Have, Put
from ..replicas import TOP, Replica, differing, have_lines
from ..transport import LineTransport

__all__ = ["answer_have", "send_tops"]

log = logging.getLogger("herd.peers")

Say = Callable[[LineTransport, bytes], None]


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
    sent = 0
    for child in differing(mine, have):
        if conn.closing():
            return  # the link went down; the next one exchanges digests again
        if not mine.leaves:
            below = await replica.children(str(child))
            if below is not None:
                for line in have_lines(have.kind, str(child), below):
                    say(conn, line)
            continue
        for payload in await replica.objects(have.scope, child):
            say(conn, Put(have.kind, payload).encode())
            sent += 1
        try:
            await conn.drain()
        except ConnectionError:
            return
    if sent:
        log.info("sync with %s: sent %d %s objects where digests differ", name, sent, have.kind)
