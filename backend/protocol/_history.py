"""History's words (docs/history.md): HISTORY and AREA read points, FORGET deletes them, END
closes a read; the peer-only PUT floods a replicated object, HAVE lists digests and IDS the
identities of a leaf's objects."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ._fields import (
    MAX_NUMBER_BYTES,
    ProtocolError,
    _client_id,
    _key_ns,
    _time_key,
)

__all__ = [
    "MAX_HAVE_ENTRIES",
    "MAX_HISTORY_LIMIT",
    "MAX_IDS",
    "Area",
    "End",
    "Forget",
    "Have",
    "History",
    "Ids",
    "In",
    "Put",
]

# Points one HISTORY or AREA answers at most: 10,000 AT lines are ~1 MB, a few ms to send;
# a longer window is read in pages (ask again from the last time returned).
MAX_HISTORY_LIMIT = 10_000
# Digests one HAVE line lists at most: 400 entries of at most ~45 bytes stay under 18 KB,
# well inside a peer link's 64 KiB line (a scope with more children is sent in several lines).
MAX_HAVE_ENTRIES = 400
# Kinds of replicated objects and scopes: short lower-case words.
_WORD = re.compile(rb"[a-z][a-z0-9_-]{0,31}")
_COUNT = re.compile(rb"[0-9]{1,19}")
_DEGREES = re.compile(rb"[+-]?[0-9]{1,3}(?:\.[0-9]{1,15})?")
_HASH = re.compile(rb"[0-9a-f]{16}")
_ENTRY = re.compile(rb"(-?[0-9]{1,19}):([0-9]{1,19}):(-?[0-9a-f]{1,16})")


def _ns(raw: bytes, what: str) -> int:
    try:
        return _key_ns(*_time_key(raw))
    except ProtocolError as exc:
        raise ProtocolError(f"{what}: {exc}") from None


def _window(since: bytes, until: bytes) -> tuple[int, int]:
    since_ns, until_ns = _ns(since, "since"), _ns(until, "until")
    if since_ns > until_ns:
        raise ProtocolError("since is after until")
    return since_ns, until_ns


def _limit(raw: bytes) -> int:
    if _COUNT.fullmatch(raw) is None or not 1 <= int(raw) <= MAX_HISTORY_LIMIT:
        raise ProtocolError(f"limit must be 1 to {MAX_HISTORY_LIMIT}")
    return int(raw)


def _points_flag(extra: list[bytes], word: str) -> bool:
    if not extra:
        return False
    if extra == [b"POINTS"]:
        return True
    raise ProtocolError(f"{word} takes POINTS after its fields, or nothing")


@dataclass(frozen=True, slots=True)
class History:
    """``HISTORY <client> <since> <until> <limit> [POINTS]``: a client's points in the window
    (POSIX seconds, both ends inclusive), oldest first, then ``END <n>``."""

    client_id: str
    since_ns: int
    until_ns: int
    limit: int
    points: bool = False

    @classmethod
    def parse(cls, f: list[bytes]) -> History:
        if len(f) not in (5, 6):
            raise ProtocolError("HISTORY takes a client ID, since, until and limit")
        since_ns, until_ns = _window(f[2], f[3])
        flag = _points_flag(f[5:], "HISTORY")
        return cls(_client_id(f[1]), since_ns, until_ns, _limit(f[4]), flag)

    def encode(self) -> bytes:
        tail = " POINTS" if self.points else ""
        return (
            f"HISTORY {self.client_id} {_seconds(self.since_ns)} {_seconds(self.until_ns)} "
            f"{self.limit}{tail}\n"
        ).encode()


def _degrees(raw: bytes, bound: int, what: str) -> float:
    if len(raw) > MAX_NUMBER_BYTES or _DEGREES.fullmatch(raw) is None:
        raise ProtocolError(f"malformed {what}")
    try:
        value = Decimal(raw.decode())
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ProtocolError(f"malformed {what}") from None
    if not -bound <= value <= bound:
        raise ProtocolError(f"{what} out of range")
    return float(value)


@dataclass(frozen=True, slots=True)
class Area:
    """``AREA <west> <south> <east> <north> <since> <until> <limit> [POINTS|CLIENTS]``: the
    points of every client in the box in the window, by client then time, then ``END <n>``;
    with ``CLIENTS``, only the clients: a line ``IN <client>`` each, by client ID, at most
    ``limit`` of them."""

    box: tuple[float, float, float, float]
    since_ns: int
    until_ns: int
    limit: int
    points: bool = False
    clients: bool = False

    @classmethod
    def parse(cls, f: list[bytes]) -> Area:
        if len(f) not in (8, 9):
            raise ProtocolError("AREA takes west, south, east, north, since, until and limit")
        west, east = _degrees(f[1], 180, "west"), _degrees(f[3], 180, "east")
        south, north = _degrees(f[2], 90, "south"), _degrees(f[4], 90, "north")
        if west > east or south > north:
            raise ProtocolError("the box must have west <= east and south <= north")
        since_ns, until_ns = _window(f[5], f[6])
        box, limit = (west, south, east, north), _limit(f[7])
        if f[8:] == [b"CLIENTS"]:
            return cls(box, since_ns, until_ns, limit, clients=True)
        return cls(box, since_ns, until_ns, limit, _points_flag(f[8:], "AREA"))

    def encode(self) -> bytes:
        box = " ".join(repr(v) for v in self.box)
        tail = " POINTS" if self.points else " CLIENTS" if self.clients else ""
        return (
            f"AREA {box} {_seconds(self.since_ns)} {_seconds(self.until_ns)} "
            f"{self.limit}{tail}\n"
        ).encode()


@dataclass(frozen=True, slots=True)
class Forget:
    """``FORGET <client> <until>``: delete a client's points at or before ``until`` on every
    server (replicated); answered ``FORGOTTEN <client> <until>``."""

    client_id: str
    until_ns: int

    @classmethod
    def parse(cls, f: list[bytes]) -> Forget:
        if len(f) != 3:
            raise ProtocolError("FORGET takes a client ID and a time")
        return cls(_client_id(f[1]), _ns(f[2], "until"))

    def encode(self) -> bytes:
        return b"FORGET " + self.payload() + b"\n"

    def payload(self) -> bytes:
        """``<client> <until>``: the deletion as it is replicated (``PUT forget``)."""
        return f"{self.client_id} {_seconds(self.until_ns)}".encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> Forget:
        return cls.parse([b"FORGET", *payload.split()])

    def reply(self) -> bytes:
        return f"FORGOTTEN {self.client_id} {_seconds(self.until_ns)}\n".encode()


@dataclass(frozen=True, slots=True)
class End:
    """``END <n>``: the end of a HISTORY or AREA answer, after its n lines."""

    count: int

    def encode(self) -> bytes:
        return b"END %d\n" % self.count

    @classmethod
    def parse(cls, f: list[bytes]) -> End:
        if len(f) != 2 or _COUNT.fullmatch(f[1]) is None:
            raise ProtocolError("END takes a number of lines")
        return cls(int(f[1]))


@dataclass(frozen=True, slots=True)
class In:
    """``IN <client>``: a client of an ``AREA ... CLIENTS`` answer."""

    client_id: str

    def encode(self) -> bytes:
        return f"IN {self.client_id}\n".encode()

    @classmethod
    def parse(cls, f: list[bytes]) -> In:
        if len(f) != 2:
            raise ProtocolError("IN takes a client ID")
        return cls(_client_id(f[1]))


@dataclass(frozen=True, slots=True)
class Put:
    """Peer-only: ``PUT <kind> <payload>``, one replicated object new to the sender."""

    kind: str
    payload: bytes

    @classmethod
    def parse(cls, f: list[bytes]) -> Put:
        # The payload's fields are single-spaced as servers write them (AT and POINT lines;
        # attributes are JSON with no white space), so joining the split fields restores it.
        if len(f) < 3 or _WORD.fullmatch(f[1]) is None:
            raise ProtocolError("PUT takes a kind and a payload")
        return cls(f[1].decode(), b" ".join(f[2:]))

    def encode(self) -> bytes:
        return b"PUT " + self.kind.encode() + b" " + self.payload + b"\n"


@dataclass(frozen=True, slots=True)
class Have:
    """Peer-only: ``HAVE <kind> <scope> <first> <last> <index>:<count>:<xor>...``, the
    digests of a scope's children from ``first`` to ``last`` (empty children left out;
    ``xor`` is a signed 64-bit number in hexadecimal)."""

    kind: str
    scope: str
    first: int
    last: int
    digests: dict[int, tuple[int, int]]

    @classmethod
    def parse(cls, f: list[bytes]) -> Have:
        if len(f) < 5 or len(f) > 5 + MAX_HAVE_ENTRIES:
            raise ProtocolError(f"HAVE takes kind, scope, range, <= {MAX_HAVE_ENTRIES} digests")
        kind, scope = _kind_scope(f, "HAVE")
        if _COUNT.fullmatch(f[3]) is None or _COUNT.fullmatch(f[4]) is None:
            raise ProtocolError("malformed HAVE range")
        first, last = int(f[3]), int(f[4])
        digests = {}
        for raw in f[5:]:
            m = _ENTRY.fullmatch(raw)
            if m is None:
                raise ProtocolError("malformed HAVE digest")
            index = int(m[1])
            if not first <= index <= last:
                raise ProtocolError("HAVE digest outside its range")
            digests[index] = (int(m[2]), int(m[3], 16))
        return cls(kind, scope, first, last, digests)

    def encode(self) -> bytes:
        entries = "".join(f" {i}:{c}:{x:x}" for i, (c, x) in sorted(self.digests.items()))
        return f"HAVE {self.kind} {self.scope} {self.first} {self.last}{entries}\n".encode()


def _kind_scope(f: list[bytes], word: str) -> tuple[str, str]:
    """The kind and scope of a HAVE or IDS line (fields 1 and 2): a word, and ``*`` or a
    count."""
    if _WORD.fullmatch(f[1]) is None or not (f[2] == b"*" or _COUNT.fullmatch(f[2])):
        raise ProtocolError(f"malformed {word} kind or scope")
    return f[1].decode(), f[2].decode()


def _seconds(ns: int) -> str:
    """POSIX seconds with up to nine decimals, no trailing zeros (``1.5``, ``1700000000``)."""
    whole, frac = divmod(ns, 1_000_000_000)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else str(whole)


# Identities one IDS line lists at most: 3,000 of 17 bytes are 51 KB, inside a peer link's
# 64 KiB line (a leaf with more objects is listed in several lines, by ranges of identity).
MAX_IDS = 3_000
_LAST_ID = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Ids:
    """Peer-only: ``IDS <kind> <scope> <child> <low> <high> <id>...``, every identity hash
    (unsigned, 16 hex digits) of one leaf's objects from ``low`` to ``high`` (inclusive, as
    16 hex digits) that the sender holds; the receiver answers with its objects of that leaf
    and range that are not listed."""

    kind: str
    scope: str
    child: int
    low: int
    high: int
    ids: frozenset[int]

    @classmethod
    def parse(cls, f: list[bytes]) -> Ids:
        if len(f) < 6 or len(f) > 6 + MAX_IDS:
            raise ProtocolError(f"IDS takes kind, scope, child, range, <= {MAX_IDS} identities")
        kind, scope = _kind_scope(f, "IDS")
        if _COUNT.fullmatch(f[3]) is None:
            raise ProtocolError("malformed IDS child")
        if _HASH.fullmatch(f[4]) is None or _HASH.fullmatch(f[5]) is None:
            raise ProtocolError("malformed IDS range")
        low, high = int(f[4], 16), int(f[5], 16)
        ids = []
        for raw in f[6:]:
            if _HASH.fullmatch(raw) is None:
                raise ProtocolError("malformed IDS identity")
            value = int(raw, 16)
            if not low <= value <= high:
                raise ProtocolError("IDS identity outside its range")
            ids.append(value)
        return cls(kind, scope, int(f[3]), low, high, frozenset(ids))

    def encode(self) -> bytes:
        ids = "".join(f" {i:016x}" for i in sorted(self.ids))
        head = f"IDS {self.kind} {self.scope} {self.child} {self.low:016x} {self.high:016x}"
        return f"{head}{ids}\n".encode()

    @classmethod
    def lines(cls, kind: str, scope: str, child: int, ids: list[int]) -> list[Ids]:
        """A leaf's identities (unsigned) as IDS lines of at most MAX_IDS each, whose ranges
        together cover every identity."""
        ordered = sorted(set(ids))
        found, low = [], 0
        for start in range(0, max(len(ordered), 1), MAX_IDS):
            chunk = ordered[start : start + MAX_IDS]
            final = start + MAX_IDS >= len(ordered)
            high = _LAST_ID if final else chunk[-1]
            found.append(cls(kind, scope, child, low, high, frozenset(chunk)))
            low = high + 1
        return found
