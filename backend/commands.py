"""What each client command does: one handler per command type, each given the command and
the session it came on, returning the whole reply (or a coroutine that makes it).

The handlers use the server's parts (store, journal, places, links, live state) and change a
session only through its methods (``subscribe``, ``start_tls``, ``hand_over``, ``hang_up``).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import places as places_mod
from .history import History, Row
from .protocol import (
    MAX_POINT_LINE,
    Area,
    Command,
    End,
    Forget,
    IAmAt,
    In,
    Peer,
    ProtocolError,
    Record,
    StartTls,
    Status,
    Subscribe,
    WhatsAt,
    WhereIs,
    format_status,
    make_record,
    time_to_ns,
)
from .protocol import History as HistoryCommand
from .ratelimit import RateLimiter
from .subscription import SNAPSHOT_CHUNK, SNAPSHOT_WINDOW, Subscription

if TYPE_CHECKING:
    from .server import HerdServer
    from .session import ClientSession

__all__ = ["Commands", "Reply"]

log = logging.getLogger("herd.server")

# What a handler gives back: the whole reply now, or a coroutine that makes it (a WHATSAT
# waiting for places, an IAMAT waiting for its fsync, STARTTLS).
Reply = bytes | Coroutine[Any, Any, bytes]
Handler = Callable[[Any, "ClientSession"], Reply]


class Commands:
    """The handlers of one server's client commands (``handlers``: by command type)."""

    def __init__(self, server: HerdServer, tls: ssl.SSLContext | None) -> None:
        self.server = server
        self.name = server.name
        self.limits = limits = server.limits
        self.store = server.store
        self.journal = server.journal
        self.outbox = server.outbox
        self.state = server.state
        self.accept = server.accept
        self.tls = tls
        self.line_limit = _limiter(limits.lines_per_address)
        self.report_limit = _limiter(limits.reports_per_client)
        self.max_future_ns = round(limits.max_future * 1e9)
        self.handlers: dict[type, Handler] = {
            IAmAt: self.on_IAMAT,
            WhatsAt: self.on_WHATSAT,
            WhereIs: self.on_WHEREIS,
            Status: self.on_STATUS,
            Subscribe: self.on_SUBSCRIBE,
            Peer: self.on_PEER,
            StartTls: self.on_STARTTLS,
            HistoryCommand: self.on_HISTORY,
            Area: self.on_AREA,
            Forget: self.on_FORGET,
        }

    def refuse(self, command: Command, session: ClientSession) -> Reply:
        # AT from a client that is not an authenticated peer, or a handshake line out of turn.
        raise ProtocolError(f"{type(command).__name__} not allowed from a client")

    def on_IAMAT(self, command: IAmAt, session: ClientSession) -> Reply:
        # Per address and client ID: a client elsewhere cannot spend the budget of a device
        # that reports through the gateway (docs/security.md).
        limit = self.report_limit
        if limit is not None and limit.take([f"{session.host} {command.client_id}"]):
            raise ProtocolError(
                f"over {self.limits.reports_per_client:g} reports/s for this client"
            )
        now = time.time_ns()
        client_ns = command.time_ns  # set by parse_line; from the time itself otherwise
        if client_ns is None:
            client_ns = time_to_ns(command.client_time)
        if client_ns > now + self.max_future_ns:
            # Only here, where the client talks to the herd: a peer never refuses a record
            # for it (its clock may differ, and nothing it accepted may be refused).
            raise ProtocolError(f"time more than {self.limits.max_future:g} s ahead")
        record = make_record(self.name, now, command)
        reply = record.line + b"\n"
        if self.accept(record, None) and self.journal.fsync:
            return self._after_commit(reply)  # wait for the group commit
        return reply

    async def _after_commit(self, reply: bytes) -> bytes:
        await self.journal.commit()
        return reply

    def on_WHATSAT(self, command: WhatsAt, session: ClientSession) -> Reply:
        record = self.store.get(command.client_id)
        if record is None:
            raise ProtocolError("WHATSAT for an unknown client")
        return self._places_reply(record, command)

    async def _places_reply(self, record: Record, command: WhatsAt) -> bytes:
        lat, lng = record.lat_lng
        payload = await self.server.places.nearby(lat, lng, command.radius_m, command.bound)
        return record.line + b"\n" + places_mod.render(payload) + b"\n\n"

    def on_WHEREIS(self, command: WhereIs, session: ClientSession) -> Reply:
        record = self.store.get(command.client_id)
        if record is None:
            raise ProtocolError("WHEREIS for an unknown client")
        return (record.wire() if command.points else record.line) + b"\n"

    def on_STATUS(self, command: Status, session: ClientSession) -> Reply:
        server = self.server
        status = {
            "server": self.name,
            "pid": os.getpid(),
            "records": len(self.store),
            "places": server.places.state,
            "links": {
                name: ("up" if link.up else "down") for name, link in server.peers.links.items()
            },
        }
        if server.history is not None:
            status["history"] = server.history.stats()
        return format_status(status)

    def on_SUBSCRIBE(self, command: Subscribe, session: ClientSession) -> Reply:
        subscribers = self.state.subscribers
        if len(subscribers) >= self.limits.max_subscribers:
            raise ProtocolError(f"{len(subscribers)} subscribers already")
        # Records accepted before now go out to the present subscribers (and this client's
        # earlier replies to it); then the snapshot is taken and the subscriber registered at
        # once, so no record can fall between the two or come twice.
        self.outbox.flush()
        # What it may pin: its live records up to the limit, and the part of the snapshot in
        # its socket buffer (the window and a chunk).
        allowance = (
            self.limits.subscriber_buffer + SNAPSHOT_WINDOW + SNAPSHOT_CHUNK * MAX_POINT_LINE
        )
        subscription = Subscription(
            session, list(self.store), allowance, command.points, command.late
        )
        subscribers.add(subscription)
        session.subscribe(subscription)
        log.info("%s subscribed (%d records in snapshot)", session.peer, subscription.count)
        subscription.pump()
        return b""

    # -- history (docs/history.md): read in a worker thread, points not yet written included

    def _history(self) -> History:
        history = self.server.history
        if history is None:
            raise ProtocolError("history is off on this server")
        return history

    def on_HISTORY(self, command: HistoryCommand, session: ClientSession) -> Reply:
        return self._read_history(self._history(), command)

    async def _read_history(self, history: History, command: HistoryCommand) -> bytes:
        lines = await history.read_lines(
            command.client_id, command.since_ns, command.until_ns, command.limit, command.points
        )
        return "".join(lines).encode() + End(len(lines)).encode()

    def on_AREA(self, command: Area, session: ClientSession) -> Reply:
        return self._read_area(self._history(), command)

    async def _read_area(self, history: History, command: Area) -> bytes:
        window = (command.box, command.since_ns, command.until_ns, command.limit)
        if command.clients:
            names = await history.read_area_clients(*window)
            return b"".join(In(name).encode() for name in names) + End(len(names)).encode()
        found = await history.read_area(*window)
        return _points_reply([row for rows in found.values() for row in rows], command.points)

    def on_FORGET(self, command: Forget, session: ClientSession) -> Reply:
        history = self._history()
        self.server.forget(command, None)
        return self._forgotten(history, command)

    async def _forgotten(self, history: History, command: Forget) -> bytes:
        # Answered once the deletion is in the database.
        await history.wait_saved(flush=False)
        return command.reply()

    def on_STARTTLS(self, command: StartTls, session: ClientSession) -> Reply:
        if self.tls is None or session.transport.tls:
            raise ProtocolError("STARTTLS is not available here")
        if session.followed():
            # Bytes that came in the clear behind STARTTLS must not pass as encrypted.
            log.warning("refused %s: it sent data after STARTTLS in the clear", session.peer)
            session.hang_up()
            return b""
        return session.start_tls(self.tls)

    def on_PEER(self, command: Peer, session: ClientSession) -> Reply:
        peers = self.server.peers
        if self.tls is not None and not session.transport.tls:
            raise ProtocolError("this herd's peers must STARTTLS first")
        if command.server_id not in peers.links:
            raise ProtocolError(f"{command.server_id} is not a neighbour of {self.name}")
        self.outbox.flush()
        if session.followed():
            # A dialler waits for CHALLENGE before it sends anything else.
            log.warning(
                "refused peer connection from %s: it did not wait for CHALLENGE", session.peer
            )
            session.hang_up()
            return b""
        peers.accept(command, session.hand_over())
        return b""


def _points_reply(rows: list[Row], points: bool) -> bytes:
    lines = [(row.wire() if points else row.at_line()) + b"\n" for row in rows]
    return b"".join(lines) + End(len(rows)).encode()


def _limiter(rate: float) -> RateLimiter | None:
    return RateLimiter(rate, max(1.0, 2 * rate)) if rate > 0 else None
