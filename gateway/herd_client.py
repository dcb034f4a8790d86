"""A TCP client of the herd: a small pool of connections per server, and failover.

The gateway speaks to the herd only in the herd's own protocol (IAMAT, WHATSAT, WHEREIS,
STATUS, HISTORY, AREA). A request goes to the first server of the preference list that
answers; a server that fails (refused, reset, timed out) is skipped for a moment and the next
one is tried, so the user sees no error while any server is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from backend.config import ServerAddress
from backend.protocol import (
    MAX_HISTORY_LIMIT,
    Forget,
    Record,
    Status,
    WhatsAt,
    WhereIs,
    parse_invalid_reply,
    parse_status,
)
from backend.protocol import History as HistoryCommand

from .herd_answers import (
    PARSE_BYTES,
    HerdRefused,
    HerdUnavailable,
    area_line,
    fresh_lines,
    fresh_points,
    history_records,
    in_line,
    json_answer,
    paged,
    parsed,
    point_lines,
    record_of,
    through_end,
)
from .history.lines import Point
from .history.reading import Window
from .history.templates import JsonRecords
from .records import herd_json
from .rules import Box

__all__ = [
    "HERD_ERRORS",
    "PARSE_BYTES",
    "PIPELINE_DEPTH",
    "HerdClient",
    "HerdRefused",
    "HerdUnavailable",
    "Server",
    "history_records",
]

log = logging.getLogger("herd.gateway.client")

# A server that failed is tried last for this long, so one dead server does not cost every
# request a connection timeout.
PENALTY_SECONDS = 2.0
# WHATSAT replies are at most 20 places of JSON (a few tens of KB); this bounds a reply.
MAX_REPLY_BYTES = 4 * 1024 * 1024


# Lines written to the herd before their replies are read: one round trip per 64 points of
# an import, and fewer than the herd's default max_invalid_lines (100), so a group it refuses
# whole (a budget) never makes it hang up.
PIPELINE_DEPTH = 64

# What a dead, slow or rude herd server makes a request fail with.
HERD_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    address: ServerAddress


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class HerdClient:
    """Requests to the herd with pooling and failover. Use inside one event loop."""

    def __init__(self, servers: Sequence[Server], timeout: float = 5.0, pool_size: int = 8) -> None:
        if not servers:
            raise ValueError("a herd client needs at least one server")
        self.servers = list(servers)
        self.timeout = timeout
        self.pool_size = pool_size
        self._idle: dict[str, list[_Connection]] = {s.name: [] for s in servers}
        self._failed_at: dict[str, float] = {}
        self.failovers = 0

    def _order(self) -> list[Server]:
        now = time.monotonic()
        healthy = [
            s for s in self.servers if now - self._failed_at.get(s.name, -1e9) > PENALTY_SECONDS
        ]
        return healthy + [s for s in self.servers if s not in healthy]

    async def request(self, line: bytes) -> bytes:
        """Send one command line and return the whole reply, from the first server that
        answers. Raises HerdRefused for ``? ...``, HerdUnavailable if no server answers."""
        for i, server in enumerate(self._order()):
            try:
                reply = await self._ask(server, line)
            except HERD_ERRORS as exc:
                self._failed_at[server.name] = time.monotonic()
                log.warning(
                    "herd server %s failed (%s); trying the next", server.name, type(exc).__name__
                )
                self.failovers += 1
                continue
            if i and server.name in self._failed_at:
                log.info("now using herd server %s", server.name)
            self._failed_at.pop(server.name, None)
            refused = parse_invalid_reply(reply)
            if refused is not None:
                raise HerdRefused(refused.decode(errors="replace"))
            return reply
        raise HerdUnavailable("no herd server answered")

    async def _ask(self, server: Server, line: bytes) -> bytes:
        async with asyncio.timeout(self.timeout):
            idle = self._idle.setdefault(server.name, [])
            while idle:
                conn = idle.pop()
                try:
                    reply = await self._exchange(conn, line)
                except (OSError, asyncio.IncompleteReadError):
                    # The server may have closed an idle connection: retry on a fresh one.
                    conn.close()
                    continue
                except BaseException:
                    conn.close()
                    raise
                self._release(server, conn)
                return reply
            reader, writer = await asyncio.open_connection(
                server.address.host, server.address.port, limit=MAX_REPLY_BYTES
            )
            conn = _Connection(reader, writer)
            try:
                reply = await self._exchange(conn, line)
            except BaseException:
                conn.close()
                raise
            self._release(server, conn)
            return reply

    async def _exchange(self, conn: _Connection, line: bytes) -> bytes:
        conn.writer.write(line)
        return await self._reply(conn, line)

    async def _reply(self, conn: _Connection, line: bytes, *, pipelined: bool = False) -> bytes:
        """The whole reply to ``line``: one line, or WHATSAT's and HISTORY's several.
        ``pipelined``: more replies follow, so a HISTORY answer is read a line at a time
        (``_through_end`` reads ahead, past its END line)."""
        first = await conn.reader.readuntil(b"\n")
        if line.startswith(b"WHATSAT ") and first.startswith(b"AT "):
            # The AT line, then the places JSON, then an empty line.
            return first + await conn.reader.readuntil(b"\n\n")
        if line.startswith((b"HISTORY ", b"AREA ")) and not first.startswith((b"END ", b"? ")):
            if not pipelined:
                return await through_end(conn.reader, first)
            lines = [first]
            while not lines[-1].startswith(b"END "):
                lines.append(await conn.reader.readuntil(b"\n"))
            return b"".join(lines)
        return first

    async def pipeline(self, lines: Sequence[bytes]) -> list[bytes]:
        """Send ``lines`` in order on one connection, PIPELINE_DEPTH at a time, and return
        the reply to each, in order, from the first server that answers.

        Stops after a group of lines holding a refusal (``? ...``, a herd budget): the
        replies then end there and the lines after them were not sent. A server that fails
        mid-way is skipped and the lines it had not answered go to the next one (a point
        sent twice is stored once). Raises HerdUnavailable if no server answers."""
        replies: list[bytes] = []
        for i, server in enumerate(self._order()):
            try:
                await self._pipeline_to(server, lines, replies)
            except HERD_ERRORS as exc:
                self._failed_at[server.name] = time.monotonic()
                log.warning(
                    "herd server %s failed after %d of %d pipelined lines (%s); trying the next",
                    server.name,
                    len(replies),
                    len(lines),
                    type(exc).__name__,
                )
                self.failovers += 1
                continue
            if i and server.name in self._failed_at:
                log.info("now using herd server %s", server.name)
            self._failed_at.pop(server.name, None)
            return replies
        raise HerdUnavailable("no herd server answered")

    async def _pipeline_to(
        self, server: Server, lines: Sequence[bytes], replies: list[bytes]
    ) -> None:
        # A fresh connection: a pooled one the server has closed would fail the first write
        # and count as the server's failure.
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(
                server.address.host, server.address.port, limit=MAX_REPLY_BYTES
            )
        conn = _Connection(reader, writer)
        try:
            while len(replies) < len(lines):
                group = lines[len(replies) : len(replies) + PIPELINE_DEPTH]
                async with asyncio.timeout(self.timeout):
                    conn.writer.write(b"".join(group))
                    answered = [await self._reply(conn, line, pipelined=True) for line in group]
                replies.extend(answered)
                if any(parse_invalid_reply(reply) is not None for reply in answered):
                    break
        except BaseException:
            conn.close()
            raise
        self._release(server, conn)

    def _release(self, server: Server, conn: _Connection) -> None:
        idle = self._idle.setdefault(server.name, [])
        if len(idle) < self.pool_size:
            idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
            idle.clear()

    # -- the herd's commands -------------------------------------------------------------

    async def iamat(self, line: bytes, attributes: bytes = b"") -> Record:
        """Send an IAMAT (or a REPORT carrying ``attributes``); the record the herd made. Its
        reply is IAMAT's AT line, so the attributes sent are put back on the record."""
        record = record_of(await self.request(line))
        record.attributes = attributes
        return record

    async def whereis(self, client_id: str) -> Record | None:
        """A client's current record, attributes included (WHEREIS ... POINTS)."""
        try:
            return record_of(await self.request(WhereIs(client_id, points=True).encode()))
        except HerdRefused:
            return None

    async def whatsat(
        self, client_id: str, radius_km: str, limit: int
    ) -> tuple[Record, dict[str, Any]]:
        reply = await self.request(WhatsAt(client_id, Decimal(radius_km), limit).encode())
        at, _, places = reply.partition(b"\n")
        record = record_of(at + b"\n")
        try:
            found = herd_json(places)
        except ValueError:  # not JSON, or an integer past Python's digit limit
            raise HerdUnavailable(f"unexpected places from the herd: {places[:100]!r}") from None
        if not isinstance(found, dict):
            raise HerdUnavailable(f"unexpected places from the herd: {places[:100]!r}")
        return record, found

    async def history(
        self, client_id: str, since_ns: int, until_ns: int, limit: int, *, points: bool = True
    ) -> list[Record]:
        """A client's points in the window, oldest first, with their attributes (HISTORY ...
        POINTS) or without (``points=False``: AT lines, less to read); raises HerdRefused
        where history is off."""
        reply = await self._history(client_id, since_ns, until_ns, limit, points)
        return [record_of(line) for line in point_lines(reply)]

    async def history_points(
        self, client_id: str, since_ns: int, until_ns: int, limit: int, *, points: bool = True
    ) -> list[Point]:
        """:meth:`history` as points read in bulk (``gateway.history.lines``): what the REST
        API shows and exports, for half the cost of parsing each line to a Record."""
        return await parsed(await self._history(client_id, since_ns, until_ns, limit, points))

    async def history_json(
        self, client_id: str, since_ns: int, until_ns: int, limit: int
    ) -> JsonRecords | list[Point]:
        """:meth:`history_points` as the JSON records the REST API shows, written from the
        answer by templates (``gateway.history.templates``) when they take every line; else
        the points, read the per-line way."""
        reply = await self._history(client_id, since_ns, until_ns, limit, True)
        records = await json_answer(reply)
        return await parsed(reply) if records is None else records

    async def _history(
        self, client_id: str, since_ns: int, until_ns: int, limit: int, points: bool
    ) -> bytes:
        command = HistoryCommand(client_id, since_ns, until_ns, limit, points=points)
        return await self.request(command.encode())

    async def history_pages(
        self, client_id: str, since_ns: int, until_ns: int, *, points: bool = True
    ) -> AsyncGenerator[list[Point], None]:
        """A client's whole window, oldest first, each point once, in pages of at most
        MAX_HISTORY_LIMIT points (a page may be empty); the next page is asked for while the
        caller works through the one before, so memory is two pages. Raises what
        :meth:`history` raises; use inside ``contextlib.aclosing``."""
        async with contextlib.aclosing(
            paged(self._asker(client_id, points), client_id, since_ns, until_ns, fresh_points)
        ) as pages:
            async for page in pages:
                yield page

    async def history_lines(
        self, client_id: str, since_ns: int, until_ns: int
    ) -> AsyncGenerator[bytes, None]:
        """:meth:`history_pages` of points with their attributes, as the lines of the herd's
        answers (``herd_answers.fresh_lines``), for a caller that writes them from the text
        (``GpxWriter.add_lines``, which reads them as :meth:`history_pages` does)."""
        async with contextlib.aclosing(
            paged(self._asker(client_id, True), client_id, since_ns, until_ns, fresh_lines)
        ) as pages:
            async for page in pages:
                yield page

    def _asker(self, client_id: str, points: bool) -> Callable[[Window], Awaitable[bytes]]:
        def ask(window: Window) -> Awaitable[bytes]:
            return self._history(
                client_id, window.since_ns, window.until_ns, MAX_HISTORY_LIMIT, points
            )

        return ask

    async def area(self, box: Box, since_ns: int, until_ns: int, limit: int) -> list[Point]:
        """The points in ``box`` (west <= east) in the window, by client then time, with their
        attributes (AREA ... POINTS); raises HerdRefused where history is off."""
        line = area_line(box, since_ns, until_ns, limit, "POINTS")
        return await parsed(await self.request(line))

    async def area_clients(self, box: Box, since_ns: int, until_ns: int, limit: int) -> list[str]:
        """The clients with a point in ``box`` (west <= east) in the window, by client ID
        (AREA ... CLIENTS); raises HerdRefused where history is off."""
        reply = await self.request(area_line(box, since_ns, until_ns, limit, "CLIENTS"))
        lines = point_lines(reply)
        return [in_line(line).client_id for line in lines]

    async def forget(self, client_id: str, until_ns: int) -> str:
        """Delete a client's points at or before ``until_ns`` on every server (FORGET); the
        time as the herd echoed it, once this server has deleted them. Raises HerdRefused
        where history is off."""
        reply = await self.request(Forget(client_id, until_ns).encode())
        fields = reply.split()
        if len(fields) != 3 or fields[0] != b"FORGOTTEN":
            raise HerdUnavailable(f"unexpected reply to FORGET: {reply[:100]!r}")
        return fields[2].decode()

    async def status(self, server: Server) -> dict[str, Any] | None:
        """STATUS of one given server (no failover); None if it does not answer."""
        try:
            reply = await self._ask(server, Status().encode())
        except HERD_ERRORS:
            return None
        return parse_status(reply)
