"""Splitting a byte stream into protocol lines, with a bound on line length. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LineBuffer", "TooLong"]


@dataclass(frozen=True, slots=True)
class TooLong:
    """A line longer than the limit: ``head`` is its first ``limit`` bytes; the rest of the
    line is skipped up to and including its newline."""

    head: bytes


class LineBuffer:
    """Feed it bytes as they arrive; get back complete lines (with their newline).

    Reading whole chunks and splitting them here costs one await per chunk instead of one per
    line, and lets a caller act once per batch (flush its writes) after the last line of it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tail = b""
        self._skipping = False  # inside a too-long line, dropping bytes up to its end

    def feed(self, data: bytes) -> list[bytes | TooLong]:
        if not self._tail and not self._skipping:
            # The common chunk, one whole line (a client waiting for each reply), as it came.
            end = data.find(b"\n")
            if 0 <= end == len(data) - 1 and end <= self.limit:
                return [data]
        buffer = self._tail + data if self._tail else data
        items: list[bytes | TooLong] = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start : end + 1]
            start = end + 1
            if self._skipping:
                self._skipping = False
            elif len(line) - 1 > self.limit:
                items.append(TooLong(line[: self.limit]))
            else:
                items.append(line)
        tail = buffer[start:]
        if self._skipping:
            tail = b""
        elif len(tail) > self.limit:
            items.append(TooLong(tail[: self.limit]))
            self._skipping = True
            tail = b""
        self._tail = tail
        return items

    def end(self) -> bytes | None:
        """At end of stream: the last line, if one was left without its newline."""
        tail, self._tail = self._tail, b""
        return tail or None

    @property
    def pending(self) -> bytes:
        """Bytes of a line not yet complete."""
        return self._tail
