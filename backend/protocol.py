"""The herd's wire protocol, with no I/O: parse a line into a command, format replies,
and order records.

Every rule of ``shared/spec/herd-protocol.md`` that can be checked without a socket lives
here. The server hands this module raw line bytes and gets back frozen command objects or a
``ProtocolError``; it writes the bytes this module formats. Extensions (SUBSCRIBE, WHEREIS,
STATUS and the peer handshake) are described in ``docs/protocol.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import orjson

__all__ = [
    "MAX_ATTRIBUTES_BYTES",
    "MAX_BOUND",
    "MAX_CLIENT_ID_BYTES",
    "MAX_LOCATION_BYTES",
    "MAX_NUMBER_BYTES",
    "MAX_POINT_LINE",
    "MAX_RADIUS_KM",
    "MAX_RECORD_LINE",
    "MAX_SERVER_ID_BYTES",
    "MAX_TIME_BYTES",
    "MAX_TIME_DIFF_BYTES",
    "MAX_TIME_S",
    "PEER_LINE_LIMIT",
    "At",
    "Bye",
    "Challenge",
    "Command",
    "Digests",
    "IAmAt",
    "Peer",
    "Ping",
    "Proof",
    "ProtocolError",
    "Record",
    "StartTls",
    "Status",
    "Subscribe",
    "Sync",
    "Synced",
    "Welcome",
    "WhatsAt",
    "WhereIs",
    "check_attributes",
    "derive_peer_key",
    "format_attributes",
    "format_digests",
    "format_status",
    "format_time_diff",
    "invalid_reply",
    "key_to_ns",
    "make_record",
    "parse_fields",
    "parse_line",
    "parse_location",
    "parse_status",
    "peer_proof",
    "time_to_ns",
]

MAX_RADIUS_KM = Decimal(50)
MAX_BOUND = 20

# Bounds on every field of a record (docs/protocol.md, "Bounds"). Nothing a server accepts may
# be refused by its peers, so every line the herd makes from a record must stay within what
# every reader takes: with these bounds the longest AT line is MAX_RECORD_LINE bytes, far
# under the peer links' PEER_LINE_LIMIT and the clients' default max_line_bytes (8 KiB).
# A client ID: the course's tests send IDs of 256 bytes; the gateway allows 256 characters,
# which UTF-8 writes in up to 1,024 bytes.
MAX_CLIENT_ID_BYTES = 1024
# A server's name (in the config and in every AT line): names are words, not essays.
MAX_SERVER_ID_BYTES = 64
# A location: two numbers of up to 3 integer digits with up to ~55 decimals each; real
# clients send 6 to 15.
MAX_LOCATION_BYTES = 128
# A client time: the course's tests send 30 decimals (41 bytes in all); 64 leaves room.
MAX_TIME_BYTES = 64
# The latest client time accepted: 9999-12-31T23:59:59Z, as the gateway's phone formats and
# every date library can represent it (a float, a JavaScript Date, ISO 8601).
MAX_TIME_S = 253402300799
# A time difference: a sign, at most 12 digits of seconds (times are bounded above; a server
# clock is not before 1970), a point and nine decimals: 23 bytes; 32 leaves room.
MAX_TIME_DIFF_BYTES = 32
# "AT " + server + diff + client + location + time, with their four separating spaces.
MAX_RECORD_LINE = (
    3
    + MAX_SERVER_ID_BYTES
    + MAX_TIME_DIFF_BYTES
    + MAX_CLIENT_ID_BYTES
    + MAX_LOCATION_BYTES
    + MAX_TIME_BYTES
    + 4
)
# A WHATSAT radius or bound: a number, not a novel ("10", "50.0", "20").
MAX_NUMBER_BYTES = 32
# A point's attributes: a JSON object of the phone apps' kept set (docs/gateway.md) fits in
# a few hundred bytes; a display name of 256 characters can take 1,024 of them.
MAX_ATTRIBUTES_BYTES = 2048
# A POINT line: the record's AT line, less "AT", plus "POINT" and the attributes.
MAX_POINT_LINE = MAX_RECORD_LINE - 2 + 5 + 1 + MAX_ATTRIBUTES_BYTES
# What a peer link reads as one line: the longest record line, and DIGESTS (4,105 bytes),
# with room for the extensions to come. Fixed, not configured: every server must take what
# every other server may send, whatever its [limits] say about clients.
PEER_LINE_LIMIT = 64 * 1024

# ISO 6709 "+34.068930-118.445127": each number carries its own sign; decimals optional.
_LOCATION = re.compile(rb"([+-])([0-9]+(?:\.[0-9]+)?)([+-])([0-9]+(?:\.[0-9]+)?)")
# POSIX seconds with an optional fraction: no sign, no exponent, no nan/inf.
_TIME = re.compile(rb"([0-9]+)(?:\.([0-9]+))?")
# Time difference as servers write it: explicit sign, then decimals.
_DIFF = re.compile(rb"[+-][0-9]+\.[0-9]+")
_RADIUS = re.compile(rb"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_BOUND = re.compile(rb"[0-9]+")
_NONCE = re.compile(rb"[0-9a-f]{32}")
_PROOF = re.compile(rb"[0-9a-f]{64}")

_NS_PER_S = 1_000_000_000


class ProtocolError(Exception):
    """The peer sent a line the protocol does not allow; it is answered with ``? <line>``."""


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
    (``SUBSCRIBE POINTS``), records that have attributes come as POINT lines."""

    points: bool = False

    def encode(self) -> bytes:
        return b"SUBSCRIBE POINTS\n" if self.points else b"SUBSCRIBE\n"


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
)


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError("not UTF-8") from None


def parse_location(raw: bytes) -> tuple[float, float]:
    """Latitude and longitude of an ISO 6709 pair; raises ProtocolError if malformed, out of
    range or longer than MAX_LOCATION_BYTES. Ranges are checked exactly (Decimal), so
    ``+90.0000000001`` is refused."""
    if len(raw) > MAX_LOCATION_BYTES:
        raise ProtocolError(f"location over {MAX_LOCATION_BYTES} bytes")
    m = _LOCATION.fullmatch(raw)
    if m is None:
        raise ProtocolError("malformed location")
    lat, lng = float(m[1] + m[2]), float(m[3] + m[4])
    # Rounding to the nearest double is monotonic and 90 and 180 are exact doubles, so a
    # float strictly inside the range means the decimal is inside too; only values that
    # round onto the edge need the exact check.
    if abs(lat) < 90 and abs(lng) < 180:
        return lat, lng
    exact_lat, exact_lng = Decimal((m[1] + m[2]).decode()), Decimal((m[3] + m[4]).decode())
    if not (-90 <= exact_lat <= 90 and -180 <= exact_lng <= 180):
        raise ProtocolError("location out of range")
    return lat, lng


def _time_key(raw: bytes) -> tuple[int, str]:
    """An exact sort key for a POSIX time: whole seconds, then the fraction's digits with
    trailing zeros stripped (for such strings, string order is numeric order). Raises
    ProtocolError for a malformed time, one over MAX_TIME_BYTES, or one after MAX_TIME_S."""
    if len(raw) > MAX_TIME_BYTES:
        # Checked before any conversion: int() of thousands of digits is slow, and past
        # 4,300 digits it raises.
        raise ProtocolError(f"time over {MAX_TIME_BYTES} bytes")
    m = _TIME.fullmatch(raw)
    if m is None:
        raise ProtocolError("malformed time")
    key = _key_of(m[1], m[2])
    if key[0] > MAX_TIME_S:
        raise ProtocolError("time after the year 9999")
    return key


def _key_of(seconds: bytes, fraction: bytes | None) -> tuple[int, str]:
    """The sort key of a time from its digits before and after the point."""
    return int(seconds), fraction.rstrip(b"0").decode() if fraction else ""


def time_to_ns(client_time: str) -> int:
    """Integer nanoseconds of a POSIX time string, rounded to the nearest nanosecond."""
    return _key_ns(*_time_key(client_time.encode()))


def key_to_ns(key: tuple[int, str]) -> int:
    """Integer nanoseconds of a time from its sort key (``IAmAt.time_key``)."""
    return _key_ns(*key)


def _key_ns(seconds: int, fraction: str) -> int:
    """Nanoseconds of a time from its sort key (fraction digits, trailing zeros stripped),
    rounded half up."""
    return seconds * _NS_PER_S + int(fraction[:9].ljust(9, "0")) + (fraction[9:10] >= "5")


def format_time_diff(ns: int) -> str:
    """``+0.263873386``: explicit sign (zero is ``+``) and exactly nine decimals."""
    sign = "-" if ns < 0 else "+"
    seconds, frac = divmod(abs(ns), _NS_PER_S)
    return f"{sign}{seconds}.{frac:09d}"


def make_record(server_id: str, received_ns: int, cmd: IAmAt) -> Record:
    """The AT record a server makes for an IAMAT it received at ``received_ns`` (POSIX ns)."""
    sec, frac = cmd.time_key or _time_key(cmd.client_time.encode())
    diff = format_time_diff(received_ns - _key_ns(sec, frac))
    line = f"AT {server_id} {diff} {cmd.client_id} {cmd.location} {cmd.client_time}".encode()
    return Record(
        server_id,
        diff,
        cmd.client_id,
        cmd.location,
        cmd.client_time,
        line,
        (sec, frac, server_id, line),
        cmd.attributes,
    )


def invalid_reply(line: bytes) -> bytes:
    """``? `` and the line as received, minus its terminator (LF or CRLF)."""
    if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    return b"? " + line + b"\n"


# The peer handshake's version: in every proof and in the key's salt, so servers of different
# versions fail the handshake (logged) instead of misunderstanding each other.
PEER_LABEL = "herd-peer-v2"
# scrypt's cost: 2**14 blocks of 8 x 128 bytes (16 MiB) take some 35 ms on one core, paid once
# when a server starts, and again by anyone for each guess at the secret from a captured proof.
# Memory-hard, so a GPU or ASIC gains far less over a CPU than with a plain hash.
KDF_N, KDF_R, KDF_P = 2**14, 8, 1
KDF_MAXMEM = 64 * 1024 * 1024  # over scrypt's 128 * N * R bytes (OpenSSL's default is 32 MiB)


def derive_peer_key(secret: str) -> bytes:
    """The HMAC key of the peer handshake, derived from the herd secret with scrypt (salted
    with the protocol label, the same for the whole herd): slow once, at start."""
    return hashlib.scrypt(
        secret.encode(),
        salt=f"{PEER_LABEL} key".encode(),
        n=KDF_N,
        r=KDF_R,
        p=KDF_P,
        maxmem=KDF_MAXMEM,
        dklen=32,
    )


def peer_proof(
    key: bytes, role: str, dialer: str, acceptor: str, nonce_d: str, nonce_a: str
) -> str:
    """HMAC-SHA256 proof that a side knows the herd secret (``key``: from ``derive_peer_key``),
    bound to both names, both nonces and the side's role, so a proof can be neither replayed
    nor reflected back."""
    message = "|".join((PEER_LABEL, role, dialer, acceptor, nonce_d, nonce_a)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _client_id(raw: bytes) -> str:
    if len(raw) > MAX_CLIENT_ID_BYTES:
        raise ProtocolError(f"client ID over {MAX_CLIENT_ID_BYTES} bytes")
    return _text(raw)


def _parse_iamat(f: list[bytes]) -> IAmAt:
    if len(f) != 4:
        raise ProtocolError("IAMAT takes 3 fields")
    client_id = _client_id(f[1])
    parse_location(f[2])
    key = _time_key(f[3])  # before decoding: it refuses anything but digits and a dot
    return IAmAt(client_id, f[2].decode(), f[3].decode(), key)


def _parse_whatsat(f: list[bytes]) -> WhatsAt:
    if len(f) != 4:
        raise ProtocolError("WHATSAT takes 3 fields")
    if len(f[2]) > MAX_NUMBER_BYTES or len(f[3]) > MAX_NUMBER_BYTES:
        raise ProtocolError(f"radius or bound over {MAX_NUMBER_BYTES} bytes")
    if _RADIUS.fullmatch(f[2]) is None or _BOUND.fullmatch(f[3]) is None:
        raise ProtocolError("malformed radius or bound")
    radius, bound = Decimal(f[2].decode()), int(f[3])
    if not (0 < radius <= MAX_RADIUS_KM and 1 <= bound <= MAX_BOUND):
        raise ProtocolError("radius or bound out of range")
    return WhatsAt(_client_id(f[1]), radius, bound)


def _parse_at(f: list[bytes]) -> At:
    if len(f) != 6:
        raise ProtocolError("AT takes 5 fields")
    if len(f[1]) > MAX_SERVER_ID_BYTES:
        raise ProtocolError(f"server ID over {MAX_SERVER_ID_BYTES} bytes")
    if len(f[2]) > MAX_TIME_DIFF_BYTES or _DIFF.fullmatch(f[2]) is None:
        raise ProtocolError("malformed time difference")
    client_id = _client_id(f[3])
    parse_location(f[4])
    sec, frac = _time_key(f[5])
    server_id = _text(f[1])
    line = b" ".join(f)
    record = Record(
        server_id,
        f[2].decode(),
        client_id,
        f[4].decode(),
        f[5].decode(),
        line,
        (sec, frac, server_id, line),
    )
    return At(record)


def _no_args(cmd: Status | Ping | StartTls | Sync | Bye) -> Callable[[list[bytes]], Command]:
    def parse(f: list[bytes]) -> Command:
        if len(f) != 1:
            raise ProtocolError(f"{f[0].decode()} takes no fields")
        return cmd

    return parse


def _parse_whereis(f: list[bytes]) -> WhereIs:
    if len(f) == 3 and f[2] == b"POINTS":
        return WhereIs(_client_id(f[1]), points=True)
    if len(f) != 2:
        raise ProtocolError("WHEREIS takes a client ID, and optionally POINTS")
    return WhereIs(_client_id(f[1]))


def _parse_subscribe(f: list[bytes]) -> Subscribe:
    if len(f) == 2 and f[1] == b"POINTS":
        return Subscribe(points=True)
    if len(f) != 1:
        raise ProtocolError("SUBSCRIBE takes no fields, or POINTS")
    return Subscribe()


def _parse_synced(f: list[bytes]) -> Synced:
    if len(f) != 2 or _BOUND.fullmatch(f[1]) is None or len(f[1]) > MAX_NUMBER_BYTES:
        raise ProtocolError("SYNCED takes a number of records")
    return Synced(int(f[1]))


def format_status(status: Mapping[str, object]) -> bytes:
    """The reply to STATUS: ``STATUS`` and the server's state as one line of compact JSON."""
    return b"STATUS " + orjson.dumps(status) + b"\n"


def parse_status(reply: bytes) -> dict[str, object] | None:
    """The state in a reply to STATUS, or None if the reply is not one."""
    if not reply.startswith(b"STATUS "):
        return None
    try:
        status = orjson.loads(reply[len(b"STATUS ") :])
    except orjson.JSONDecodeError:
        return None
    return status if isinstance(status, dict) else None


def check_attributes(raw: bytes) -> bytes:
    """``raw`` if it is attributes as the herd carries them: one JSON object of at most
    MAX_ATTRIBUTES_BYTES with no white space; raises ProtocolError otherwise. The herd does
    not interpret them (the gateway does), so a key it does not know passes."""
    if len(raw) > MAX_ATTRIBUTES_BYTES:
        raise ProtocolError(f"attributes over {MAX_ATTRIBUTES_BYTES} bytes")
    if not raw.startswith(b"{"):
        raise ProtocolError("attributes must be a JSON object")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("attributes are not valid JSON") from None
    return raw


def format_attributes(attributes: Mapping[str, object]) -> bytes:
    """Attributes as the herd carries them: compact JSON, its spaces (only ever inside
    strings) escaped, so the object is one field of a line. Empty for no attributes."""
    if not attributes:
        return b""
    return orjson.dumps(attributes).replace(b" ", b"\\u0020")


def _parse_report(f: list[bytes]) -> IAmAt:
    if len(f) != 5:
        raise ProtocolError("REPORT takes 4 fields")
    command = _parse_iamat(f[:4])
    command.attributes = check_attributes(f[4])
    return command


def _parse_point(f: list[bytes]) -> At:
    if len(f) != 7:
        raise ProtocolError("POINT takes 6 fields")
    at = _parse_at([b"AT", *f[1:6]])
    at.record.attributes = check_attributes(f[6])
    return at


def _parse_peer(f: list[bytes]) -> Peer:
    if len(f) != 3 or _NONCE.fullmatch(f[2]) is None:
        raise ProtocolError("PEER takes a name and a 32-hex-digit nonce")
    return Peer(_text(f[1]), f[2].decode())


def _parse_challenge(f: list[bytes]) -> Challenge:
    if len(f) == 4:
        raise ProtocolError(
            "a CHALLENGE with a proof is herd-peer-v1: upgrade every server of the herd together"
        )
    if len(f) != 3 or _NONCE.fullmatch(f[2]) is None:
        raise ProtocolError("CHALLENGE takes a name and a nonce")
    return Challenge(_text(f[1]), f[2].decode())


def _parse_proof(f: list[bytes]) -> Proof:
    if len(f) != 2 or _PROOF.fullmatch(f[1]) is None:
        raise ProtocolError("PROOF takes a 64-hex-digit proof")
    return Proof(f[1].decode())


# DIGESTS carries 256 digests of 16 hex digits each as one field.
_DIGESTS = re.compile(rb"(?:[0-9a-f]{16})+")


def _parse_digests(f: list[bytes]) -> Digests:
    if len(f) != 2 or _DIGESTS.fullmatch(f[1]) is None:
        raise ProtocolError("DIGESTS takes one field of 16-hex-digit digests")
    raw = f[1]
    return Digests(tuple(int(raw[i : i + 16], 16) for i in range(0, len(raw), 16)))


def format_digests(values: list[int]) -> bytes:
    return b"DIGESTS " + "".join(f"{v:016x}" for v in values).encode() + b"\n"


def _parse_welcome(f: list[bytes]) -> Welcome:
    if len(f) == 2:
        raise ProtocolError(
            "a WELCOME without a proof is herd-peer-v1: upgrade every server of the herd together"
        )
    if len(f) != 3 or _PROOF.fullmatch(f[2]) is None:
        raise ProtocolError("WELCOME takes a name and a 64-hex-digit proof")
    return Welcome(_text(f[1]), f[2].decode())


# Commands are case-sensitive: only these exact words are known.
_PARSERS: dict[bytes, Callable[[list[bytes]], Command]] = {
    b"IAMAT": _parse_iamat,
    b"WHATSAT": _parse_whatsat,
    b"AT": _parse_at,
    b"SUBSCRIBE": _parse_subscribe,
    b"WHEREIS": _parse_whereis,
    b"STATUS": _no_args(Status()),
    b"PING": _no_args(Ping()),
    b"PEER": _parse_peer,
    b"CHALLENGE": _parse_challenge,
    b"PROOF": _parse_proof,
    b"WELCOME": _parse_welcome,
    b"DIGESTS": _parse_digests,
    b"STARTTLS": _no_args(StartTls()),
    b"SYNC": _no_args(Sync()),
    b"REPORT": _parse_report,
    b"SYNCED": _parse_synced,
    b"BYE": _no_args(Bye()),
    b"POINT": _parse_point,
}


def parse_line(line: bytes) -> Command | None:
    """Parse one line (its terminator may be included); ``None`` for a blank line.

    Fields are split on the protocol's six white-space bytes only (space, tab, CR, LF, FF,
    VT), which is what ``bytes.split()`` does; a Unicode space inside a client ID is part of
    the ID. Raises ProtocolError for anything invalid.

    The two lines a busy herd is made of, IAMAT from clients and AT from peers, are first
    tried against one regular expression each (``_IAMAT``, ``_AT``); a line that does not
    match plainly goes the general way, which gives the same result and the precise error.
    """
    fast = _FAST.get(line[:3])
    if fast is not None:
        pattern, make = fast
        m = pattern.fullmatch(line)
        command = make(m) if m is not None else None
        if command is not None:
            return command
    return parse_fields(line)


def parse_fields(line: bytes) -> Command | None:
    """``parse_line`` the general way: split the fields, then parse by command."""
    fields = line.split()
    if not fields:
        return None
    parser = _PARSERS.get(fields[0])
    if parser is None:
        raise ProtocolError("unknown command")
    return parser(fields)


_NUMBER = rb"[0-9]+(?:\.[0-9]+)?"
_IAMAT = re.compile(
    rb"IAMAT\s+(\S+)\s+(([+-]"
    + _NUMBER
    + rb")([+-]"
    + _NUMBER
    + rb"))\s+(([0-9]+)(?:\.([0-9]+))?)\s*"
)
# Peers write AT lines with single spaces and a newline: the record's line is the match less
# its terminator.
_AT = re.compile(
    rb"(AT (\S+) ([+-][0-9]+\.[0-9]+) (\S+) (([+-]"
    + _NUMBER
    + rb")([+-]"
    + _NUMBER
    + rb")) (([0-9]+)(?:\.([0-9]+))?))\r?\n?"
)


def _fast_iamat(m: re.Match[bytes]) -> IAmAt | None:
    client, location, lat, lng, stamp, sec, frac = m.groups()
    # In a line this short no field can be past its bound (most real lines are).
    if m.end() > _SHORT_IAMAT and not _within_bounds(client, location, stamp):
        return None  # the general way gives the precise error
    if not (-90 < float(lat) < 90 and -180 < float(lng) < 180):
        return None  # on or past the edge: the exact check decides
    key = _key_of(sec, frac)
    if key[0] > MAX_TIME_S:
        return None
    return IAmAt(_text(client), location.decode(), stamp.decode(), key)


# No field of an IAMAT line of at most this many bytes is longer than the smallest bound.
_SHORT_IAMAT = len(b"IAMAT") + 3 + min(MAX_CLIENT_ID_BYTES, MAX_LOCATION_BYTES, MAX_TIME_BYTES)


def _within_bounds(client: bytes, location: bytes, stamp: bytes) -> bool:
    """The fast paths' check of the field lengths (the general parsers check each one)."""
    return (
        len(client) <= MAX_CLIENT_ID_BYTES
        and len(location) <= MAX_LOCATION_BYTES
        and len(stamp) <= MAX_TIME_BYTES
    )


def _fast_at(m: re.Match[bytes]) -> At | None:
    line, server, diff, client, location, lat, lng, stamp, sec, frac = m.groups()
    if (
        len(server) > MAX_SERVER_ID_BYTES
        or len(diff) > MAX_TIME_DIFF_BYTES
        or len(client) > MAX_CLIENT_ID_BYTES
        or len(location) > MAX_LOCATION_BYTES
        or len(stamp) > MAX_TIME_BYTES
    ):
        return None
    if not (-90 < float(lat) < 90 and -180 < float(lng) < 180):
        return None
    server_id = _text(server)
    sec_key = _key_of(sec, frac)
    if sec_key[0] > MAX_TIME_S:
        return None
    key = (*sec_key, server_id, line)
    record = Record(
        server_id, diff.decode(), _text(client), location.decode(), stamp.decode(), line, key
    )
    return At(record)


# The first three bytes of a line, to its fast path: the pattern, and what makes the command
# from a match (None where the general way must decide: a location on the edge of its range).
_FAST: dict[bytes, tuple[re.Pattern[bytes], Callable[[re.Match[bytes]], Command | None]]] = {
    b"IAM": (_IAMAT, _fast_iamat),
    b"AT ": (_AT, _fast_at),
}
