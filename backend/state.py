"""The live state of one server: its client connections, handshake slots, subscribers and
counters, in one typed home (as uvicorn's ``ServerState``).

A session asks it for a slot when it connects (``admit``) and gives the slot back when it goes
(``release``); the server sets ``closing`` when it stops. Nothing here changes a session's
fields: a session is told what it got, and is hung up through its own methods.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING

from .config import Limits
from .outbox import Outbox, TrafficLog
from .subscription import Subscribers

if TYPE_CHECKING:
    from .session import ClientSession

__all__ = ["HANDSHAKE_SLOTS_PER_NEIGHBOUR", "Admission", "ServerState"]

log = logging.getLogger("herd.server")

# Connections past max_connections (or past an address's share of them) still get a few slots
# in which a peer handshake alone may begin: slow clients holding every client slot must not
# keep a neighbour out, or the herd partitions. Two per neighbour: the one redialling now and
# one whose dialler gave up on it. A newer connection takes the oldest one's slot, so holding
# them costs an attacker a fresh connection every few milliseconds (a neighbour sends PEER in
# its first round trip), and each lasts at most peers.handshake_timeout.
HANDSHAKE_SLOTS_PER_NEIGHBOUR = 2


class Admission(enum.Enum):
    """What a new connection gets."""

    CLIENT = "client"  # a client slot: any command
    SPARE = "spare"  # a handshake slot: only STARTTLS or PEER may come
    REFUSED = "refused"  # nothing: it is hung up


class ServerState:
    """Connections (``clients``, per address), handshake slots, subscribers, counters."""

    def __init__(
        self, limits: Limits, outbox: Outbox, neighbours: int, handshake_timeout: float
    ) -> None:
        self.limits = limits
        self.outbox = outbox
        self.closing = False  # the server is stopping: each connection ends after its line
        self.clients: set[ClientSession] = set()
        self.per_address: dict[str, int] = {}  # client connections per remote address
        # Connections in handshake slots, oldest first, with their deadlines.
        self.spare: dict[ClientSession, asyncio.TimerHandle] = {}
        self.spare_slots = HANDSHAKE_SLOTS_PER_NEIGHBOUR * neighbours
        self.handshake_timeout = handshake_timeout
        self.subscribers = Subscribers(outbox)
        self.dropped = 0  # journal lines dropped at recovery

    def admit(self, session: ClientSession) -> Admission:
        """A client slot for ``session`` if one is free, else a handshake slot, else none."""
        limits = self.limits
        per_address = limits.connections_per_address
        host = session.transport.host
        if self.closing:
            return Admission.REFUSED  # accepted just before the server stopped listening
        if len(self.clients) < limits.max_connections and (
            not per_address or self.per_address.get(host, 0) < per_address
        ):
            self.clients.add(session)
            self.per_address[host] = self.per_address.get(host, 0) + 1
            self.outbox.log(TrafficLog.tag(session.peer, "++"), b"connected\n")
            return Admission.CLIENT
        if self.spare_slots:
            self._take_spare_slot(session)
            return Admission.SPARE
        log.warning("refused %s: %d connections already open", session.peer, len(self.clients))
        return Admission.REFUSED

    def _take_spare_slot(self, session: ClientSession) -> None:
        """Give ``session`` a handshake slot, taking the oldest one's if all are held."""
        if len(self.spare) >= self.spare_slots:
            oldest = next(iter(self.spare))
            log.warning("closing %s: its handshake slot goes to a newer connection", oldest.peer)
            self.leave_spare_slot(oldest)
            oldest.hang_up()
        log.info("%s: no client slot for it, it may only begin a peer handshake", session.peer)
        timeout = self.handshake_timeout
        self.spare[session] = asyncio.get_running_loop().call_later(
            timeout, self._spare_expired, session, timeout
        )
        self.outbox.log(TrafficLog.tag(session.peer, "++"), b"connected (handshake slot)\n")

    def _spare_expired(self, session: ClientSession, timeout: float) -> None:
        if session in self.spare:
            log.warning("closing %s: no peer handshake within %g s", session.peer, timeout)
            self.leave_spare_slot(session)
            session.hang_up()

    def leave_spare_slot(self, session: ClientSession) -> None:
        expiry = self.spare.pop(session, None)
        if expiry is not None:
            expiry.cancel()

    def release(self, session: ClientSession, handed_over: bool = False) -> None:
        """``session`` is gone (closed, or its connection handed to a peer link)."""
        what = b"handed to a peer link\n" if handed_over else b"closed\n"
        if session in self.clients:
            self.clients.discard(session)
            host = session.transport.host
            left = self.per_address.pop(host, 1) - 1
            if left:
                self.per_address[host] = left
            self.subscribers.remove(session)
            self.outbox.log(TrafficLog.tag(session.peer, "--"), what)
        elif session.spare:
            self.leave_spare_slot(session)
            self.outbox.log(TrafficLog.tag(session.peer, "--"), what)
