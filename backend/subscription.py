"""SUBSCRIBE streams: each subscriber's snapshot, then ``SYNCED``, then the live records; and
the fan-out of each loop iteration's records to every subscriber."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .outbox import Outbox
from .protocol import Ping, Record, Synced

if TYPE_CHECKING:
    from .session import ClientSession

__all__ = ["SNAPSHOT_CHUNK", "SNAPSHOT_WINDOW", "STALLED_HEARTBEATS", "Subscribers", "Subscription"]

log = logging.getLogger("herd.server")

# Records per write while sending a subscriber its snapshot: big writes (25 KB of typical
# records), bounded size (at most 256 of the longest records, 350 KB).
SNAPSHOT_CHUNK = 256
# The snapshot is written as the subscriber reads it: a chunk whenever its socket buffer holds
# at most this much. Enough to keep a fast reader busy between two wake-ups; so little that
# a subscriber that stops reading pins no more of it than this (plus a chunk).
SNAPSHOT_WINDOW = 256 * 1024
# Heartbeats a subscriber with unread data may go without reading a byte before it is cut off:
# the gateway gives up on a silent server after three, so three is what a live one tolerates.
STALLED_HEARTBEATS = 3

PING_LINE = Ping().encode()


class Subscription:
    """One SUBSCRIBE stream: the snapshot, written as the socket drains, then ``SYNCED``, then
    the live records, in that order.

    The snapshot is a list of references to the records held at SUBSCRIBE (records are never
    changed, only replaced), so it is the state of that instant however long the subscriber
    takes to read it; live records accepted meanwhile wait in ``backlog`` behind it. What one
    subscriber pins is bounded: its socket buffer holds at most SNAPSHOT_WINDOW plus a chunk of
    snapshot, and live records (in the buffer or the backlog) beyond ``limits.subscriber_buffer``
    cut it off; so is its time: STALLED_HEARTBEATS without reading and it is cut off.
    """

    def __init__(
        self,
        session: ClientSession,
        records: list[Record],
        allowance: int,
        points: bool,
        late: bool = False,
    ) -> None:
        self.late = late  # SUBSCRIBE ... LATE: late points too, as LATE lines
        self.session = session
        self.transport = session.transport
        self.points = points  # SUBSCRIBE POINTS: records with attributes as POINT lines
        self.records = records
        self.count = len(records)
        self.sent = 0  # snapshot records written
        self.synced = False
        self.backlog: list[bytes] = []  # what comes after SYNCED, until it is written
        self.backlog_bytes = 0
        self.allowance = allowance
        self.written = 0  # bytes handed to the transport
        self.delivered = 0  # of them, bytes the transport had passed on at the last check
        self.progress = time.monotonic()  # when the subscriber last read something
        self.close_when_synced = False  # it sent EOF: close once the snapshot is out

    def pump(self) -> None:
        """Write snapshot chunks while the socket buffer is below the window; after the last,
        ``SYNCED`` and the backlog. Called at SUBSCRIBE and whenever the socket drains."""
        transport = self.transport
        if self.synced or transport.closing():
            return
        records = self.records
        while self.sent < self.count and transport.write_buffer_size() <= SNAPSHOT_WINDOW:
            chunk = records[self.sent : self.sent + SNAPSHOT_CHUNK]
            self.sent += len(chunk)
            if self.points:
                self._write(b"".join([r.wire() + b"\n" for r in chunk]))
            else:
                self._write(b"".join([r.line + b"\n" for r in chunk]))
        if self.sent < self.count:
            return  # resumed by resume_writing once the subscriber has read some
        self.records = []  # the references go with the snapshot
        self.synced = True
        self._write(Synced(self.count).encode())
        if self.backlog:
            self._write(b"".join(self.backlog))
            self.backlog.clear()
            self.backlog_bytes = 0
        if self.close_when_synced:
            self.session.hang_up()

    def end(self) -> None:
        """The subscriber sent EOF: close now, or once the snapshot is out."""
        if self.synced:
            self.session.hang_up()
        else:
            self.close_when_synced = True

    def send(self, data: bytes) -> bool:
        """Send ``data`` after everything before it; False if the subscriber is over its
        allowance (the caller cuts it off)."""
        transport = self.transport
        if transport.closing():
            return True
        unread = transport.write_buffer_size()
        if not self.synced:
            self.backlog.append(data)
            self.backlog_bytes += len(data)
            return unread + self.backlog_bytes <= self.allowance
        if unread > self.allowance:
            return False
        self._write(data)
        return True

    def _write(self, data: bytes) -> None:
        self.written += len(data)
        self.transport.write(data)

    def stalled(self, now: float, limit: float) -> bool:
        """Whether the subscriber has had data waiting, and read none of it, for ``limit``
        seconds."""
        unread = self.transport.write_buffer_size()
        delivered = self.written - unread
        if delivered > self.delivered or not (unread or self.backlog or not self.synced):
            self.delivered = delivered
            self.progress = now
            return False
        return now - self.progress > limit


class Subscribers:
    """Every subscription of a server, and the records of this loop iteration for them."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.streams: dict[ClientSession, Subscription] = {}
        self._lines: list[bytes] = []  # records for subscribers, this iteration
        self._points: dict[int, bytes] = {}  # of them, the POINT lines, by index
        # Late points for LATE subscribers, by index among the lines (where the others have
        # an empty line): (LATE + AT line, LATE + POINT line).
        self._late: dict[int, tuple[bytes, bytes]] = {}
        self.late = 0  # subscribers that asked for late points

    def __len__(self) -> int:
        return len(self.streams)

    def add(self, subscription: Subscription) -> None:
        self.streams[subscription.session] = subscription
        self.late += subscription.late

    def remove(self, session: ClientSession) -> None:
        subscription = self.streams.pop(session, None)
        if subscription is not None:
            self.late -= subscription.late

    def get(self, session: ClientSession) -> Subscription | None:
        return self.streams.get(session)

    def queue(self, line: bytes, wire: bytes) -> None:
        """Pass a record on to every subscriber (``line``: its AT line, ``wire``: its POINT
        line or ``line``) in the outbox's first stage, before the peer links."""
        if not self._lines:
            self.outbox.later(Outbox.SUBSCRIBERS, self.push)
        if wire is not line:
            self._points[len(self._lines)] = wire
        self._lines.append(line)

    def queue_late(self, line: bytes, wire: bytes) -> None:
        """Pass a late point on to the subscribers that asked for them (``SUBSCRIBE ...
        LATE``), in order with the records."""
        if not self._lines:
            self.outbox.later(Outbox.SUBSCRIBERS, self.push)
        self._late[len(self._lines)] = (b"LATE " + line, b"LATE " + wire)
        self._lines.append(b"")

    def push(self) -> None:
        lines, points, late = self._lines, self._points, self._late
        data = b"".join(lines)
        # For SUBSCRIBE POINTS: the same records, with POINT lines where they have attributes.
        with_points = (
            b"".join([points.get(i, line) for i, line in enumerate(lines)]) if points else data
        )
        # For SUBSCRIBE ... LATE: the same, with the late points in their places.
        late_data, late_points = data, with_points
        if late:
            late_data = b"".join([late[i][0] if i in late else x for i, x in enumerate(lines)])
            late_points = b"".join(
                [late[i][1] if i in late else points.get(i, x) for i, x in enumerate(lines)]
            )
        self._lines, self._points, self._late = [], {}, {}
        for session, subscription in list(self.streams.items()):
            if subscription.late:
                chunk = late_points if subscription.points else late_data
            else:
                chunk = with_points if subscription.points else data
            if not chunk:
                continue  # only late points this time, and this subscriber takes none
            if not subscription.send(chunk):
                log.warning("subscriber %s too slow, disconnected", session.peer)
                self._cut_off(session)

    def heartbeat(self, now: float, limit: float) -> None:
        """A PING to every subscriber, so that a subscriber whose server vanished without
        closing the connection notices the silence and moves on; and the cut-off of those that
        read nothing for ``limit`` seconds (a snapshot streaming is no silence: no PING)."""
        for session, subscription in list(self.streams.items()):
            if subscription.stalled(now, limit):
                log.warning(
                    "subscriber %s read nothing for %g s, disconnected", session.peer, limit
                )
                self._cut_off(session)
            elif subscription.synced and not subscription.send(PING_LINE):
                log.warning("subscriber %s too slow, disconnected", session.peer)
                self._cut_off(session)

    def _cut_off(self, session: ClientSession) -> None:
        self.remove(session)
        session.abort()
