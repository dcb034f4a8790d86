"""The commands and records of the protocol, as dataclasses: what ``parse_line`` returns and
what the servers send (``encode``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from ._fields import parse_location
from ._history import Area, End, Forget, Have, History, Ids, In, Put


# Record, IAmAt and At are made for every line on the hot path and are not frozen: a frozen
# dataclass's __init__ costs 4x a plain one (1.4 against 0.3 us, measured). Treat them as
# immutable all the same.
@dataclass(slots=True)
class Record:
    """A client's location as the herd stores and floods it: one AT line.

    ``line`` is the exact AT line (no newline); every server answers WHATSAT with it, so it
    is never rebuilt once made. ``key`` orders records: see ``newer_than``.
    """

    server_id: str
    time_diff: str
    client_id: str
    location: str
    client_time: str
    line: bytes
    key: tuple[int, str, str, bytes] = field(repr=False, compare=False)
    # The point's attributes (accuracy, battery, ...) as one compact JSON object with no
    # white space (``format_attributes``), or empty. They travel with the record (POINT lines)
    # but are no part of its AT line, which every client sees byte-exact.
    attributes: bytes = b""
    # The client time in POSIX nanoseconds where the maker had it at hand (a server's own
    # record: its time difference needs it), else -1 (times are never negative): history's
    # writer would otherwise compute it again for every point.
    ns: int = field(default=-1, compare=False, repr=False)

    def wire(self) -> bytes:
        """The line that carries this record between servers and into the journal (without
        its newline): the AT line, or a POINT line when the record has attributes."""
        if not self.attributes:
            return self.line
        return b"POINT" + self.line[2:] + b" " + self.attributes

    def newer_than(self, other: Record | None) -> bool:
        """The herd's total order: client time (exact), then origin server, then the line.

        Every server applies the same order, so floods converge and every cycle ends: a
        record equal to the one held is not newer, so it is dropped, not forwarded.
        """
        return other is None or self.key > other.key

    @property
    def lat_lng(self) -> tuple[float, float]:
        return parse_location(self.location.encode())


@dataclass(slots=True)
class IAmAt:
    """IAMAT, or the extension REPORT: the same with the point's attributes."""

    client_id: str
    location: str
    client_time: str
    # The exact sort key of client_time (see _time_key), computed once while parsing.
    time_key: tuple[int, str] | None = field(default=None, compare=False, repr=False)
    attributes: bytes = b""
    # client_time in integer nanoseconds (rounded as ``time_to_ns``), also computed while
    # parsing: the record's time difference and the max_future check need it.
    time_ns: int | None = field(default=None, compare=False, repr=False)

    def encode(self) -> bytes:
        """The line a client sends: IAMAT, or REPORT when there are attributes (as
        ``format_attributes`` writes them)."""
        if not self.attributes:
            return f"IAMAT {self.client_id} {self.location} {self.client_time}\n".encode()
        head = f"REPORT {self.client_id} {self.location} {self.client_time} ".encode()
        return head + self.attributes + b"\n"


@dataclass(frozen=True, slots=True)
class WhatsAt:
    client_id: str
    radius_km: Decimal
    bound: int

    @property
    def radius_m(self) -> float:
        return float(self.radius_km * 1000)

    def encode(self) -> bytes:
        # Plain decimal notation: the protocol has no exponents.
        return f"WHATSAT {self.client_id} {self.radius_km:f} {self.bound}\n".encode()


@dataclass(slots=True)
class At:
    """An AT line received from a peer: a record being flooded."""

    record: Record


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Extension: stream every record the server accepts, after a snapshot. With ``points``
    (``SUBSCRIBE POINTS``), records that have attributes come as POINT lines; with ``late``
    (``SUBSCRIBE [POINTS] LATE``), points that did not become their client's newest record
    come too, each as ``LATE <its AT or POINT line>``."""

    points: bool = False
    late: bool = False

    def encode(self) -> bytes:
        words = [b"SUBSCRIBE"] + [b"POINTS"] * self.points + [b"LATE"] * self.late
        return b" ".join(words) + b"\n"


@dataclass(frozen=True, slots=True)
class WhereIs:
    """Extension: a client's current record, with no places lookup (``WHEREIS <client>
    POINTS``: as a POINT line when it has attributes)."""

    client_id: str
    points: bool = False

    def encode(self) -> bytes:
        points = " POINTS" if self.points else ""
        return f"WHEREIS {self.client_id}{points}\n".encode()


@dataclass(frozen=True, slots=True)
class Bye:
    """Extension (peer links): the sender is stopping; the close that follows is not a
    failure."""

    def encode(self) -> bytes:
        return b"BYE\n"


@dataclass(frozen=True, slots=True)
class Synced:
    """Extension (SUBSCRIBE streams): the end of the snapshot, with its number of records."""

    count: int

    def encode(self) -> bytes:
        return b"SYNCED %d\n" % self.count


@dataclass(frozen=True, slots=True)
class Status:
    """Extension: the server's name, record count and links, as one JSON line."""

    def encode(self) -> bytes:
        return b"STATUS\n"


@dataclass(frozen=True, slots=True)
class Ping:
    """Extension (peer links): a heartbeat; any line proves the link alive."""

    def encode(self) -> bytes:
        return b"PING\n"


@dataclass(frozen=True, slots=True)
class StartTls:
    """Extension (peer links): switch this connection to TLS before the peer handshake."""

    def encode(self) -> bytes:
        return b"STARTTLS\n"


@dataclass(frozen=True, slots=True)
class Peer:
    """Peer handshake, first line from the dialling server: its name and a nonce."""

    server_id: str
    nonce: str

    def encode(self) -> bytes:
        return f"PEER {self.server_id} {self.nonce}\n".encode()


@dataclass(frozen=True, slots=True)
class Challenge:
    """Peer handshake, the accepting server's answer: its name and nonce (no proof: the
    acceptor proves nothing before the dialler has)."""

    server_id: str
    nonce: str

    def encode(self) -> bytes:
        return f"CHALLENGE {self.server_id} {self.nonce}\n".encode()


@dataclass(frozen=True, slots=True)
class Digests:
    """Extension (peer links): the sender's digest of each record range, for anti-entropy."""

    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Sync:
    """Extension (peer links): "send me your DIGESTS" (after records to you were dropped)."""

    def encode(self) -> bytes:
        return b"SYNC\n"


@dataclass(frozen=True, slots=True)
class Welcome:
    """Peer handshake, the accepting server's last line, after it checked the dialler's proof:
    its name and its own proof. The dialler checks that before the link is up."""

    server_id: str
    proof: str

    def encode(self) -> bytes:
        return f"WELCOME {self.server_id} {self.proof}\n".encode()


@dataclass(frozen=True, slots=True)
class Proof:
    """Peer handshake, the dialling server's proof that it knows the secret."""

    proof: str

    def encode(self) -> bytes:
        return f"PROOF {self.proof}\n".encode()


Command = (
    Bye
    | Synced
    | IAmAt
    | WhatsAt
    | At
    | Subscribe
    | WhereIs
    | Status
    | Ping
    | Peer
    | Challenge
    | Proof
    | Welcome
    | Digests
    | StartTls
    | Sync
    | History
    | Area
    | Forget
    | End
    | In
    | Put
    | Have
    | Ids
)
