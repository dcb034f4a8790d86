"""The herd's many-line answers (HISTORY, AREA) as the gateway reads them: off the stream in
large pieces, then parsed a slice at a time so the event loop's other work never waits long;
and the one-line replies (AT, IN) read into records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import TypeVar

from backend.protocol import (
    MAX_HISTORY_LIMIT,
    MAX_POINT_LINE,
    At,
    In,
    Record,
)

from .history.lines import (
    BadAnswer,
    LinePoints,
    Point,
    answer_body,
    answer_lines,
    read_body,
    reply_as,
)
from .history.reading import Window, next_window, window_after
from .history.templates import JsonRecords, json_records
from .rules import Box

__all__ = [
    "MAX_HISTORY_REPLY",
    "PARSE_BYTES",
    "READ_PIECE",
    "HerdRefused",
    "HerdUnavailable",
    "area_line",
    "fresh_lines",
    "fresh_points",
    "history_records",
    "in_line",
    "json_answer",
    "paged",
    "parsed",
    "point_lines",
    "record_of",
    "through_end",
]

log = logging.getLogger("herd.gateway.client")

T = TypeVar("T")

# Bytes of a history page parsed between two turns of the event loop: some 1,400 POINT
# lines or 3,000 AT lines (``gateway.history.lines``: 2-3 us a line), a few ms of work.
PARSE_BYTES = 256 * 1024
# A HISTORY or AREA answer: at most MAX_HISTORY_LIMIT lines of at most MAX_POINT_LINE bytes,
# and its END line; read READ_PIECE bytes at a time.
MAX_HISTORY_REPLY = MAX_HISTORY_LIMIT * MAX_POINT_LINE + 64
READ_PIECE = 256 * 1024


class HerdUnavailable(Exception):
    """No herd server answered (or one answered what no server writes)."""


class HerdRefused(Exception):
    """The herd answered ``? <line>``: the request was invalid (or named an unknown client)."""


async def through_end(reader: asyncio.StreamReader, first: bytes) -> bytes:
    """The rest of a HISTORY or AREA answer after its ``first`` line: points (or AREA ...
    CLIENTS' IN lines), then ``END <n>``; read in large pieces, not a line at a time (a
    page is 10,000 lines). Only an END line follows a line break with ``END ``: no other
    line starts so, and no field holds a line break."""
    reply = bytearray(first)
    searched = 0  # where "\nEND " may start, in what was read
    while True:
        if reply.endswith(b"\n"):
            # The usual end: the last line is END. Only else is the rest searched, once.
            last = reply.rfind(b"\n", 0, len(reply) - 1)
            if reply.startswith(b"\nEND ", last) or reply.find(b"\nEND ", searched) >= 0:
                return bytes(reply)
            searched = max(0, len(reply) - 4)
        if len(reply) > MAX_HISTORY_REPLY:
            raise HerdUnavailable(f"a history answer past {MAX_HISTORY_REPLY} bytes")
        piece = await reader.read(READ_PIECE)
        if not piece:
            raise asyncio.IncompleteReadError(bytes(reply), None)
        reply += piece


def _slices(reply: bytes) -> Iterator[bytes]:
    """The points' lines of an answer, PARSE_BYTES or so at a time, cut at line breaks."""
    body = answer_body(reply)
    start = 0
    while start < len(body):
        end = body.find(b"\n", start + PARSE_BYTES) + 1 or len(body)
        yield body[start:end]
        start = end


async def parsed(reply: bytes) -> list[Point]:
    """The points of a whole answer to HISTORY or AREA, read PARSE_BYTES at a time: a page of
    10,000 takes some 25 ms to read, which the event loop's other work should not wait for.
    Raises HerdUnavailable for an answer that is not points then ``END <n>``."""
    points: list[Point] = []
    try:
        for i, piece in enumerate(_slices(reply)):
            if i:
                await asyncio.sleep(0)
            points += read_body(piece)
    except BadAnswer as exc:
        raise HerdUnavailable(str(exc)) from None
    return points


async def json_answer(reply: bytes) -> JsonRecords | None:
    """The points of a whole answer to HISTORY as JSON records (``history.templates``),
    PARSE_BYTES at a time; None if some slice holds a line the templates do not take (the
    caller then reads the answer with :func:`parsed`). Raises HerdUnavailable for an answer
    that does not end with ``END <n>``."""
    made: list[bytes] = []
    times: list[bytes] = []
    try:
        for i, piece in enumerate(_slices(reply)):
            if i:
                await asyncio.sleep(0)
            records = json_records(piece)
            if records is None:
                return None
            made += records.records
            times += records.times
    except BadAnswer as exc:
        raise HerdUnavailable(str(exc)) from None
    return JsonRecords(made, times)


# -- paging ----------------------------------------------------------------------------------


async def paged(
    ask: Callable[[Window], Awaitable[bytes]],
    client_id: str,
    since_ns: int,
    until_ns: int,
    fresh: Callable[[bytes, Window], Awaitable[tuple[T, Window]]],
) -> AsyncGenerator[T, None]:
    """A client's whole window, a HISTORY answer (``ask``) at a time, each made a page by
    ``fresh`` with the window left after it; the next answer is asked for while the caller
    works through the page before, so memory is two pages. Use inside
    ``contextlib.aclosing``."""
    if since_ns > until_ns:
        return
    window = Window(since_ns, until_ns)
    pending: asyncio.Future[bytes] | None = asyncio.ensure_future(ask(window))
    try:
        while pending is not None:
            skipped = window.skipped_ns
            page, window = await fresh(await pending, window)
            if window.skipped_ns > skipped:
                log.warning(
                    "history of %r: %d points or more at one time; any more are not read",
                    client_id,
                    MAX_HISTORY_LIMIT,
                )
            pending = None if window.done else asyncio.ensure_future(ask(window))
            yield page
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, HerdUnavailable, HerdRefused):
                await pending


async def fresh_points(reply: bytes, window: Window) -> tuple[list[Point], Window]:
    """The points of a page not given before (``next_window``), every line read."""
    return next_window(window, await parsed(reply), MAX_HISTORY_LIMIT)


async def fresh_lines(reply: bytes, window: Window) -> tuple[bytes, Window]:
    """The lines of a page's points not given before, each with its newline: only the points
    at either end of the page are read (``window_after``); whoever writes the lines reads
    the rest, as exactly."""
    try:
        page = LinePoints(answer_body(reply))
        kept, rest, window = window_after(window, page, MAX_HISTORY_LIMIT)
    except BadAnswer as exc:
        raise HerdUnavailable(str(exc)) from None
    return b"".join([*(page.line(i) for i in kept), page.lines_from(rest)]), window


def history_records(reply: bytes) -> list[Record]:
    """The points of a whole reply to HISTORY (AT or POINT lines, then ``END <n>``)."""
    return [record_of(line) for line in point_lines(reply)]


def point_lines(reply: bytes) -> list[bytes]:
    """The lines of a HISTORY or AREA answer before its ``END <n>``."""
    try:
        return answer_lines(reply)
    except BadAnswer as exc:
        raise HerdUnavailable(str(exc)) from None


def area_line(box: Box, since_ns: int, until_ns: int, limit: int, variant: str) -> bytes:
    """An AREA command."""
    # The box as the client gave it (exact decimals, which the herd reads), not as floats:
    # repr(1e-05) is no decimal the herd takes.
    window = f"{_seconds(since_ns)} {_seconds(until_ns)}"
    return f"AREA {box.fields()} {window} {limit} {variant}\n".encode()


def _seconds(ns: int) -> str:
    whole, fraction = divmod(ns, 1_000_000_000)
    return f"{whole}.{fraction:09d}".rstrip("0") if fraction else str(whole)


def in_line(line: bytes) -> In:
    """An IN line of AREA ... CLIENTS; raises HerdUnavailable for any other line."""
    return _reply(line, In)


def record_of(line: bytes) -> Record:
    """The record of an AT (or POINT) line; raises HerdUnavailable for any other line."""
    return _reply(line, At).record


def _reply(line: bytes, kind: type[T]) -> T:
    try:
        return reply_as(line, kind)
    except BadAnswer as exc:
        raise HerdUnavailable(str(exc)) from None
