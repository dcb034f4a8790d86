"""``parse_line``: a line to its command, the general way (split, then one parser per
command word) or, for the two lines a busy herd is made of, by a fast path that gives the same
result."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

from ._commands import (
    At,
    Bye,
    Command,
    IAmAt,
    Ping,
    Record,
    StartTls,
    Status,
    Subscribe,
    Sync,
    Synced,
    WhatsAt,
    WhereIs,
)
from ._fields import (
    MAX_BOUND,
    MAX_CLIENT_ID_BYTES,
    MAX_LOCATION_BYTES,
    MAX_NUMBER_BYTES,
    MAX_RADIUS_KM,
    MAX_SERVER_ID_BYTES,
    MAX_TIME_BYTES,
    MAX_TIME_DIFF_BYTES,
    MAX_TIME_S,
    ProtocolError,
    _client_id,
    _key_ns,
    _key_of,
    _text,
    _time_key,
    check_attributes,
    parse_location,
)
from ._history import Area, End, Forget, Have, History, Ids, In, Put
from ._peer import _parse_challenge, _parse_digests, _parse_peer, _parse_proof, _parse_welcome

# Time difference as servers write it: explicit sign, then decimals.
_DIFF = re.compile(rb"[+-][0-9]+\.[0-9]+")
_RADIUS = re.compile(rb"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_BOUND = re.compile(rb"[0-9]+")


def _parse_iamat(f: list[bytes]) -> IAmAt:
    if len(f) != 4:
        raise ProtocolError("IAMAT takes 3 fields")
    client_id = _client_id(f[1])
    parse_location(f[2])
    key = _time_key(f[3])  # before decoding: it refuses anything but digits and a dot
    return IAmAt(client_id, f[2].decode(), f[3].decode(), key, time_ns=_key_ns(*key))


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
    flags = f[1:]
    points, late = flags[:1] == [b"POINTS"], flags[-1:] == [b"LATE"]
    if len(flags) != points + late:
        raise ProtocolError("SUBSCRIBE takes nothing, POINTS, LATE, or POINTS LATE")
    return Subscribe(points=points, late=late)


def _parse_synced(f: list[bytes]) -> Synced:
    if len(f) != 2 or _BOUND.fullmatch(f[1]) is None or len(f[1]) > MAX_NUMBER_BYTES:
        raise ProtocolError("SYNCED takes a number of records")
    return Synced(int(f[1]))


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
    b"HISTORY": History.parse,
    b"AREA": Area.parse,
    b"FORGET": Forget.parse,
    b"END": End.parse,
    b"IN": In.parse,
    b"PUT": Put.parse,
    b"HAVE": Have.parse,
    b"IDS": Ids.parse,
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


# A location whose range the pattern itself proves: a latitude of at most two integer digits,
# the first of two 0-8 (at most 89 and decimals: strictly inside +-90), and a longitude of at
# most 179 and decimals (strictly inside +-180). Any other location (90 or 180 themselves,
# more integer digits, a malformed one) fails to match and goes the general way, which checks
# it exactly, as it does past any bound.
_LOCATION_INSIDE = (
    rb"[+-][0-8]?[0-9](?:\.[0-9]+)?[+-](?:1[0-7][0-9]|[0-9]?[0-9])(?:\.[0-9]+)?"
)
_IAMAT = re.compile(
    rb"IAMAT\s+(\S+)\s+(" + _LOCATION_INSIDE + rb")\s+(([0-9]+)(?:\.([0-9]+))?)\s*"
)
# Peers write AT lines with single spaces and a newline: the record's line is the match less
# its terminator.
_AT = re.compile(
    rb"(AT (\S+) ([+-][0-9]+\.[0-9]+) (\S+) ("
    + _LOCATION_INSIDE
    + rb") (([0-9]+)(?:\.([0-9]+))?))\r?\n?"
)


def _fast_iamat(m: re.Match[bytes]) -> IAmAt | None:
    client, location, stamp, sec, frac = m.groups()
    # In a line this short no field can be past its bound (most real lines are).
    if m.end() > _SHORT_IAMAT and not _within_bounds(client, location, stamp):
        return None  # the general way gives the precise error
    seconds = int(sec)
    if seconds > MAX_TIME_S:
        return None
    try:
        client_id = client.decode()
    except UnicodeDecodeError:
        return None
    # What _key_of and _key_ns make of the digits, without their calls: this runs for every
    # IAMAT. The nanoseconds from the first nine decimals, rounded half up on the tenth.
    if frac is None:
        key, ns = (seconds, ""), seconds * _NS_PER_S
    else:
        nine = frac[:9]
        ns = seconds * _NS_PER_S + int(nine) * _SCALE[len(nine)] + (frac[9:10] >= b"5")
        key = (seconds, frac.rstrip(b"0").decode())
    return IAmAt(client_id, location.decode(), stamp.decode(), key, b"", ns)


_NS_PER_S = 1_000_000_000
# A fraction of n decimals (n <= 9) to nanoseconds: times 10**(9 - n).
_SCALE = tuple(10 ** (9 - n) for n in range(10))


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
    line, server, diff, client, location, stamp, sec, frac = m.groups()
    if (
        len(server) > MAX_SERVER_ID_BYTES
        or len(diff) > MAX_TIME_DIFF_BYTES
        or len(client) > MAX_CLIENT_ID_BYTES
        or len(location) > MAX_LOCATION_BYTES
        or len(stamp) > MAX_TIME_BYTES
    ):
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


# Peers write PUT lines with single spaces (their payloads are AT or POINT lines, or a
# deletion's two fields): the payload is the match's second group as the general way would
# join its fields again. Any other spacing goes the general way.
_PUT = re.compile(rb"PUT ([a-z][a-z0-9_-]{0,31}) (\S+(?: \S+)*)\r?\n?")


def _fast_put(m: re.Match[bytes]) -> Put:
    return Put(m[1].decode(), m[2])


# The first three bytes of a line, to its fast path: the pattern, and what makes the command
# from a match (None where the general way must decide: a field past its bound, a time past
# MAX_TIME_S, bytes that are not UTF-8).
_FAST: dict[bytes, tuple[re.Pattern[bytes], Callable[[re.Match[bytes]], Command | None]]] = {
    b"IAM": (_IAMAT, _fast_iamat),
    b"AT ": (_AT, _fast_at),
    b"PUT": (_PUT, _fast_put),
}
