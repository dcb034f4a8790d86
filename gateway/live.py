"""Live updates: one subscription to the herd, and a queue per WebSocket.

``LiveFeed`` keeps one ``SUBSCRIBE`` open to a herd server. When that server dies it
subscribes to the next one; the new server's snapshot carries the newest record of every
client, and merging it under the herd's own order ("newer") means no update is missed and
none is delivered twice. The feed keeps the newest record per client (the same records the
herd holds, nothing more) and hands every newer record to its listeners. With history on it
subscribes with ``LATE`` too, and hands each late point (a point kept in history that did not
become its client's newest record) to its late listeners: the map's trails want them.

``Watcher`` is one WebSocket's view of the feed: its filters, and a queue in which the latest
update per client wins, so a slow browser holds at most one pending update per client and
never slows anyone else, and a queue of late points, none coalesced.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from backend.protocol import At, Ping, ProtocolError, Record, Subscribe, Synced, parse_line

from .herd_client import HERD_ERRORS, Server
from .records import dumps, event_json, has_event, record_json, record_text

__all__ = ["BBox", "LiveFeed", "Watcher"]

log = logging.getLogger("herd.gateway.live")

# Snapshot lines can be as long as any AT line the herd accepts (its line limit is 8 KiB).
MAX_LINE = 64 * 1024

# Encoded updates kept: enough for every socket to work through a burst before a record's
# text is made again (a miss costs one encoding, never a wrong message).
MESSAGE_CACHE = 4096

# Events (alarms, transitions) waiting for one socket: a browser that falls this far behind
# loses the oldest, as it would lose intermediate positions.
EVENT_QUEUE = 1024

# Late points waiting for one socket: a phone's offline queue arrives in batches of hundreds
# to thousands (a day at one fix per 9 s is ~10,000). A browser that falls this far behind
# loses the oldest; its trails get them back on their next load from history.
LATE_QUEUE = 10_000
# A late point's line starts with this word in a SUBSCRIBE ... LATE stream (docs/history.md).
LATE = b"LATE "

Listener = Callable[[Record], None]


class LiveFeed:
    """The herd's records as they arrive, from one subscription at a time, with failover."""

    def __init__(
        self,
        servers: Sequence[Server],
        timeout: float = 5.0,
        retry: float = 0.2,
        silence: float = 15.0,
        late: bool = True,
    ) -> None:
        self.servers = list(servers)
        # Ask for late points too (SUBSCRIBE POINTS LATE); a server that refuses the variant
        # (history off) gets the plain SUBSCRIBE POINTS on the same connection.
        self.late = late
        self.timeout = timeout
        # Servers PING subscribers every heartbeat; this long without a line, the server (or
        # the path to it) is gone even if the connection never closed.
        self.silence = silence
        self.retry = retry
        self.records: dict[str, Record] = {}
        self.subscribed_to: str | None = None
        self.synced = asyncio.Event()
        self.failovers = 0
        self._listeners: set[Listener] = set()
        self._late_listeners: set[Listener] = set()
        self._messages: dict[bytes, str] = {}
        # Each client's newest record and its JSON text, made the first time a snapshot or an
        # update shows it: a snapshot of every client is then a join, not 10,000 encodings.
        # As many entries as clients known, never more (a newer record replaces its entry).
        self._texts: dict[str, tuple[Record, str]] = {}

    def add_listener(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def add_late_listener(self, listener: Listener) -> None:
        self._late_listeners.add(listener)

    def remove_late_listener(self, listener: Listener) -> None:
        self._late_listeners.discard(listener)

    def offer_late(self, record: Record) -> None:
        """Pass on a late point: kept in history, never its client's newest record (so never
        held here)."""
        for listener in list(self._late_listeners):
            listener(record)

    def offer(self, record: Record) -> bool:
        """Keep ``record`` if newer than the one held for its client, and pass it on."""
        if not record.newer_than(self.records.get(record.client_id)):
            return False
        self.records[record.client_id] = record
        for listener in list(self._listeners):
            listener(record)
        return True

    def event_message(self, record: Record) -> str | None:
        """The WebSocket event (an alarm, a region entered or left) that ``record`` carries,
        as JSON text; None if it carries none or cannot be shown."""
        try:
            shown = record_json(record)
            event = event_json(shown)
            return None if event is None else dumps({"type": "event", "event": event})
        except Exception:
            log.exception("cannot render the event of %r; not sent", record.line[:200])
            return None

    def record_text(self, record: Record) -> str:
        """``record_text(record)``, encoded once while ``record`` is its client's newest."""
        held = self._texts.get(record.client_id)
        if held is not None and held[0] is record:
            return held[1]
        text = record_text(record)
        if self.records.get(record.client_id) is record:
            self._texts[record.client_id] = (record, text)
        return text

    def snapshot_message(self, wants: Callable[[Record], bool]) -> str:
        """The WebSocket snapshot of every record ``wants`` as JSON text; a record that cannot
        be shown is left out (logged), never taking the rest with it."""
        texts = []
        for record in self.records.values():
            if not wants(record):
                continue
            try:
                texts.append(self.record_text(record))
            except Exception:  # a bug for one record must not hide every other client
                log.exception("cannot render the record %r; left out", record.line[:200])
        return '{"type":"snapshot","records":[' + ",".join(texts) + "]}"

    def update_message(self, record: Record) -> str | None:
        """The WebSocket update for ``record`` as JSON text, encoded once for every socket;
        None (logged) for a record that cannot be shown."""
        text = self._messages.get(record.line)
        if text is None:
            try:
                text = '{"type":"update","record":' + self.record_text(record) + "}"
            except Exception:  # a bug for one record must not end any socket's updates
                log.exception("cannot render the update %r; not sent", record.line[:200])
                return None
            if len(self._messages) >= MESSAGE_CACHE:
                del self._messages[next(iter(self._messages))]  # the oldest
            self._messages[record.line] = text
        return text

    def late_message(self, records: Sequence[Record]) -> str | None:
        """The WebSocket message for late points, ``{"type": "late", "records": [...]}``, as
        JSON text; a point that cannot be shown is left out (logged); None if none can."""
        texts = []
        for record in records:
            text = self._messages.get(LATE + record.line)
            if text is None:
                try:
                    text = record_text(record)
                except Exception:  # a bug for one point must not hide the others
                    log.exception("cannot render the late point %r; left out", record.line[:200])
                    continue
                if len(self._messages) >= MESSAGE_CACHE:
                    del self._messages[next(iter(self._messages))]
                self._messages[LATE + record.line] = text  # encoded once for every socket
            texts.append(text)
        return '{"type":"late","records":[' + ",".join(texts) + "]}" if texts else None

    async def run(self) -> None:
        """Follow the herd forever: subscribe, and on failure move to the next server."""
        index = 0
        while True:
            for _ in range(len(self.servers)):
                server = self.servers[index]
                try:
                    await self._follow(server)
                except HERD_ERRORS as exc:
                    if self.subscribed_to is not None:
                        log.warning("subscription to %s lost (%s)", server.name, type(exc).__name__)
                        self.failovers += 1
                finally:
                    self.subscribed_to = None
                index = (index + 1) % len(self.servers)
            await asyncio.sleep(self.retry)

    async def _follow(self, server: Server) -> None:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(
                server.address.host, server.address.port, limit=MAX_LINE
            )
        loop = asyncio.get_running_loop()
        try:
            # POINTS: records with attributes come as POINT lines, attributes included.
            subscribe = Subscribe(points=True, late=self.late).encode()
            writer.write(subscribe)
            # One deadline for the whole subscription, moved on by the lines that arrive once a
            # tenth of it has passed (a timer per line would cost more than the line): silence
            # ends the subscription after 90-100% of ``silence``.
            async with asyncio.timeout(self.silence) as silent:
                while True:
                    line = await reader.readuntil(b"\n")
                    now = loop.time()
                    if (silent.when() or now) - now < 0.9 * self.silence:
                        silent.reschedule(now + self.silence)
                    if self.late and line == b"? " + subscribe:
                        # History is off there: the records without late points, then.
                        log.info("%s keeps no late points (history off)", server.name)
                        writer.write(Subscribe(points=True).encode())
                        continue
                    self._on_line(server, line)
        finally:
            writer.close()

    def _on_line(self, server: Server, line: bytes) -> None:
        late = line.startswith(LATE)
        try:
            command = parse_line(line[len(LATE) :] if late else line)
        except (ProtocolError, ValueError):  # ValueError: int() past its digit limit
            command = None
        if isinstance(command, At):
            if late:
                self.offer_late(command.record)
            else:
                self.offer(command.record)
        elif isinstance(command, Synced):
            self.subscribed_to = server.name
            self.synced.set()
            log.info("subscribed to %s (%d clients known)", server.name, len(self.records))
        elif not isinstance(command, Ping):
            log.warning("unexpected line from %s: %r", server.name, line[:100])


@dataclass(frozen=True, slots=True)
class BBox:
    west: float
    south: float
    east: float
    north: float

    def contains(self, lat: float, lon: float) -> bool:
        if not self.south <= lat <= self.north:
            return False
        if self.west <= self.east:
            return self.west <= lon <= self.east
        return lon >= self.west or lon <= self.east  # a box across the antimeridian


class Watcher:
    """One WebSocket's filters and pending updates (latest per client wins)."""

    def __init__(self, clients: Iterable[str] | None = None, bbox: BBox | None = None) -> None:
        self.set_filter(clients, bbox)
        self._pending: dict[str, Record] = {}
        # Records that carry an event: each is pushed as an event message, never coalesced
        # away by a newer update of the same client.
        self._events: deque[Record] = deque(maxlen=EVENT_QUEUE)
        self._late: deque[Record] = deque(maxlen=LATE_QUEUE)
        self._wake = asyncio.Event()

    def set_filter(self, clients: Iterable[str] | None, bbox: BBox | None) -> None:
        self.clients = None if clients is None else frozenset(clients)
        self.bbox = bbox

    def wants(self, record: Record) -> bool:
        if self.clients is not None and record.client_id not in self.clients:
            return False
        if self.bbox is not None:
            try:
                lat, lon = record.lat_lng
            except (ProtocolError, ValueError):  # no position: in no box
                return False
            return self.bbox.contains(lat, lon)
        return True

    def push(self, record: Record) -> None:
        if self.wants(record):
            # Re-inserted at the end, so the queue stays in order of arrival.
            self._pending.pop(record.client_id, None)
            self._pending[record.client_id] = record
            if record.attributes and has_event(record.attributes):
                self._events.append(record)
            self._wake.set()

    def push_late(self, record: Record) -> None:
        if self.wants(record):
            self._late.append(record)
            self._wake.set()

    async def next_batch(self) -> list[Record]:
        """Wait for updates, then take every pending one."""
        await self._wake.wait()
        self._wake.clear()
        batch = list(self._pending.values())
        self._pending.clear()
        return batch

    def take_events(self) -> list[Record]:
        """The records carrying events since the last call, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def take_late(self) -> list[Record]:
        """The late points since the last call, in the order they came."""
        late = list(self._late)
        self._late.clear()
        return late
