"""The protocol core, with no sockets: parsing, formatting, and the order of records."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.protocol import (
    At,
    IAmAt,
    Ping,
    ProtocolError,
    Status,
    Subscribe,
    WhatsAt,
    WhereIs,
    derive_peer_key,
    format_time_diff,
    invalid_reply,
    key_to_ns,
    make_record,
    parse_line,
    peer_proof,
    time_to_ns,
)

KIWI = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1614209128.918963997"
KIWI_AT = b"AT Riley +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1614209128.918963997"


def iamat(line: bytes) -> IAmAt:
    command = parse_line(line)
    assert isinstance(command, IAmAt)
    return command


def test_reference_iamat_parses_verbatim() -> None:
    assert parse_line(KIWI + b"\n") == IAmAt(
        "kiwi.cs.ucla.edu", "+34.068930-118.445127", "1614209128.918963997"
    )


def test_reference_at_line_is_made_byte_for_byte() -> None:
    # The reference AT line's difference: received 0.263873386 s after the client's time.
    received = time_to_ns("1614209128.918963997") + 263_873_386
    record = make_record("Riley", received, iamat(KIWI))
    assert record.line == KIWI_AT
    assert record.time_diff == "+0.263873386"


def test_reference_whatsat() -> None:
    assert parse_line(b"WHATSAT kiwi.cs.ucla.edu 10 5") == WhatsAt(
        "kiwi.cs.ucla.edu", Decimal(10), 5
    )


def test_at_line_from_peer_round_trips() -> None:
    command = parse_line(KIWI_AT + b"\n")
    assert isinstance(command, At)
    assert command.record.line == KIWI_AT
    assert command.record.server_id == "Riley"
    assert command.record.client_id == "kiwi.cs.ucla.edu"
    assert command.record.lat_lng == pytest.approx((34.06893, -118.445127))


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (263_873_386, "+0.263873386"),
        (-99_999_812_004, "-99.999812004"),
        (0, "+0.000000000"),
        (1, "+0.000000001"),
        (-1, "-0.000000001"),
        (12 * 10**9, "+12.000000000"),
    ],
)
def test_time_difference_has_sign_and_nine_decimals(ns: int, text: str) -> None:
    assert format_time_diff(ns) == text


def test_time_never_goes_through_a_float() -> None:
    # The protocol file's example: a float would give 1621464827.9594986.
    command = iamat(b"IAMAT c +1+1 1621464827.959498503")
    record = make_record("Riley", time_to_ns("1621464827.959498503"), command)
    assert record.line.endswith(b" 1621464827.959498503")
    assert record.time_diff == "+0.000000000"


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1614209128.918963997", 1614209128_918963997),
        ("1646272345.1234567", 1646272345_123456700),
        ("1646272345", 1646272345_000000000),
        ("0.0000000004", 0),
        ("0.0000000005", 1),
    ],
)
def test_time_to_ns_is_exact(text: str, ns: int) -> None:
    assert time_to_ns(text) == ns


@pytest.mark.parametrize(
    "line",
    [
        b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1614209128.918963997",
        b"  IAMAT\tkiwi.cs.ucla.edu  +34.068930-118.445127\x0b1614209128.918963997 \r\n",
        b"IAMAT a -33.8688+151.2093 1646272345.1234567",
        b"IAMAT a +12-118 1646272345",
        b"IAMAT a +90-180 1",
        b"IAMAT a -90.000+180.0000 1",
        b"IAMAT IAMAT +0+0 0",
        b"IAMAT Riley +0+0 0",
        "IAMAT caf\u00e9\u00a0x +1+1 1".encode(),
    ],
)
def test_valid_iamat_lines(line: bytes) -> None:
    assert isinstance(parse_line(line), IAmAt)


def test_fields_are_kept_verbatim_and_rejoined_with_one_space() -> None:
    command = iamat(b"\tIAMAT  a\x0c+12.50-118.0000  1646272345.100 \n")
    record = make_record("Jaquez", time_to_ns("1646272345.1"), command)
    assert record.line == b"AT Jaquez +0.000000000 a +12.50-118.0000 1646272345.100"


def test_unicode_space_is_not_a_separator() -> None:
    assert iamat("IAMAT a\u2003b +1+1 1".encode()).client_id == "a\u2003b"


@pytest.mark.parametrize(
    "line",
    [
        # the protocol file's examples
        b"IAMAT Clark +12-118",
        b"IAMAT Clark +12-118 160000 123",
        b"AS Clark +0.25 testuser +12-118 1234",
        # unknown or mis-cased command words
        b"iamat a +1+1 1",
        b"Whatsat a 10 5",
        b"HELLO",
        # wrong number of fields
        b"IAMAT",
        b"IAMAT a +1+1",
        b"WHATSAT a 10",
        b"WHATSAT a 10 5 extra",
        b"WHEREIS",
        b"WHEREIS a b",
        b"STATUS now",
        b"SUBSCRIBE all",
        # malformed locations
        b"IAMAT a 34.068930-118.445127 1",
        b"IAMAT a +34.068930118.445127 1",
        b"IAMAT a +34.06893 1",
        b"IAMAT a +34.-118 1",
        b"IAMAT a +.5-118 1",
        b"IAMAT a ++34-118 1",
        b"IAMAT a +34-118x 1",
        b"IAMAT a +3e1-118 1",
        b"IAMAT a +nan-118 1",
        b"IAMAT a +inf-inf 1",
        "IAMAT a +\u0663\u0664-118 1".encode(),  # Arabic-Indic digits are not ASCII digits
        # out-of-range locations
        b"IAMAT a +90.0000000001+0 1",
        b"IAMAT a -91+0 1",
        b"IAMAT a +0+180.000001 1",
        b"IAMAT a +0-181 1",
        # malformed times
        b"IAMAT a +1+1 -1614209128",
        b"IAMAT a +1+1 +1614209128",
        b"IAMAT a +1+1 1614209128.",
        b"IAMAT a +1+1 .5",
        b"IAMAT a +1+1 1.6e9",
        b"IAMAT a +1+1 nan",
        b"IAMAT a +1+1 inf",
        b"IAMAT a +1+1 1614209128.9.1",
        b"IAMAT a +1+1 0x10",
        # radius and bound
        b"WHATSAT a 0 5",
        b"WHATSAT a 0.0 5",
        b"WHATSAT a 50.0001 5",
        b"WHATSAT a 51 5",
        b"WHATSAT a -10 5",
        b"WHATSAT a +10 5",
        b"WHATSAT a ten 5",
        b"WHATSAT a 1e1 5",
        b"WHATSAT a nan 5",
        b"WHATSAT a inf 5",
        b"WHATSAT a 10 0",
        b"WHATSAT a 10 21",
        b"WHATSAT a 10 5.0",
        b"WHATSAT a 10 -1",
        b"WHATSAT a 10 five",
        # AT lines with a bad shape
        b"AT Riley 0.263873386 kiwi +34-118 1",
        b"AT Riley +0.263873386 kiwi +34-118",
        b"AT Riley +0.263873386 kiwi 34-118 1",
        # not UTF-8
        b"IAMAT \xff\xfe +1+1 1",
        b"WHATSAT \xc3 10 5",
        b"\xff",
        # handshake lines with a bad shape
        b"PEER Riley short",
        b"PROOF abc",
    ],
)
def test_invalid_lines_raise(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_line(line)


@pytest.mark.parametrize(
    ("line", "radius", "bound"),
    [
        (b"WHATSAT a 50 20", Decimal(50), 20),
        (b"WHATSAT a 0.001 1", Decimal("0.001"), 1),
        (b"WHATSAT a .5 1", Decimal("0.5"), 1),
        (b"WHATSAT a 10. 1", Decimal(10), 1),
        (b"WHATSAT a 050 020", Decimal(50), 20),
    ],
)
def test_radius_and_bound_edges(line: bytes, radius: Decimal, bound: int) -> None:
    command = parse_line(line)
    assert isinstance(command, WhatsAt)
    assert (command.radius_km, command.bound) == (radius, bound)


def test_radius_goes_out_in_metres() -> None:
    command = parse_line(b"WHATSAT a 10.5 5")
    assert isinstance(command, WhatsAt)
    assert command.radius_m == 10500.0


@pytest.mark.parametrize("line", [b"", b"\n", b"   \t\r\n", b"\x0b\x0c"])
def test_blank_lines_are_not_commands(line: bytes) -> None:
    assert parse_line(line) is None


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"IAMAT Clark +12-118\n", b"? IAMAT Clark +12-118\n"),
        (b"IAMAT Clark +12-118 160000 123", b"? IAMAT Clark +12-118 160000 123\n"),
        (b"AS Clark +0.25 testuser +12-118 1234\r\n", b"? AS Clark +0.25 testuser +12-118 1234\n"),
        (b"  odd\tspacing  \n", b"?   odd\tspacing  \n"),
        (b"\xff\xfe\n", b"? \xff\xfe\n"),
    ],
)
def test_invalid_reply_copies_the_line_as_received(line: bytes, reply: bytes) -> None:
    assert invalid_reply(line) == reply


def test_extensions_parse() -> None:
    assert parse_line(b"SUBSCRIBE") == Subscribe()
    assert parse_line(b"STATUS") == Status()
    assert parse_line(b"PING") == Ping()
    assert parse_line(b"WHEREIS kiwi") == WhereIs("kiwi")


# -- the order of records --------------------------------------------------------------


def record(server: str, time: str, received_ns: int | None = None, client: str = "c") -> At:
    command = iamat(f"IAMAT {client} +1+1 {time}".encode())
    ns = time_to_ns(time) if received_ns is None else received_ns
    line = make_record(server, ns, command).line
    parsed = parse_line(line)
    assert isinstance(parsed, At)
    return parsed


def test_later_client_time_is_newer_whatever_the_server() -> None:
    old, new = record("Riley", "100.5"), record("Bernard", "100.50000001")
    assert new.record.newer_than(old.record)
    assert not old.record.newer_than(new.record)


def test_time_order_is_numeric_not_textual() -> None:
    # Different digit counts compare by value: 99 < 100, 0.45 < 0.5, 0.5 == 0.500.
    assert record("A", "100").record.newer_than(record("A", "99.999999999").record)
    assert record("A", "1.5").record.newer_than(record("A", "1.45").record)
    a, b = record("A", "1.5", 0), record("A", "1.500", 0)
    assert a.record.key[:2] == b.record.key[:2]


def test_equal_client_times_break_ties_by_server_then_line() -> None:
    riley, bernard = record("Riley", "7"), record("Bernard", "7")
    assert riley.record.newer_than(bernard.record)
    assert not bernard.record.newer_than(riley.record)
    slow, fast = record("Riley", "7", 9 * 10**9), record("Riley", "7", 8 * 10**9)
    assert slow.record.newer_than(fast.record) != fast.record.newer_than(slow.record)


def test_a_record_is_not_newer_than_itself() -> None:
    # This is what ends every flood, cycles included.
    a = record("Riley", "1614209128.918963997")
    again = parse_line(a.record.line)
    assert isinstance(again, At)
    assert not again.record.newer_than(a.record)
    assert a.record.newer_than(None)


def test_peer_proofs_bind_role_names_and_nonces() -> None:
    args = ("Jaquez", "Riley", "a" * 32, "b" * 32)
    key = derive_peer_key("s3cret")
    dialer = peer_proof(key, "dialer", *args)
    assert len(dialer) == 64
    assert dialer == peer_proof(key, "dialer", *args)
    assert dialer != peer_proof(key, "acceptor", *args)
    assert dialer != peer_proof(derive_peer_key("other"), "dialer", *args)
    assert dialer != peer_proof(key, "dialer", "Riley", "Jaquez", "a" * 32, "b" * 32)
    assert dialer != peer_proof(key, "dialer", "Jaquez", "Riley", "a" * 32, "c" * 32)


# -- attributes (REPORT and POINT lines) -------------------------------------------------------


def test_report_carries_attributes_and_its_at_line_is_iamats() -> None:
    from backend.protocol import format_attributes, make_record

    attributes = format_attributes({"name": "iPhone 12 Pro", "battery": 87, "alarm": "sos"})
    assert b" " not in attributes
    report = parse_line(b"REPORT kiwi +34.1-118.2 1700000000.5 " + attributes + b"\n")
    plain = parse_line(b"IAMAT kiwi +34.1-118.2 1700000000.5\n")
    assert isinstance(report, IAmAt) and isinstance(plain, IAmAt)
    with_attributes = make_record("Riley", 1_700_000_001_000_000_000, report)
    without = make_record("Riley", 1_700_000_001_000_000_000, plain)
    assert with_attributes.line == without.line  # what every client sees: byte-exact
    assert without.wire() == without.line
    point = parse_line(with_attributes.wire() + b"\n")
    assert isinstance(point, At)
    assert point.record.line == with_attributes.line
    assert point.record.key == with_attributes.key
    assert json.loads(point.record.attributes) == {
        "name": "iPhone 12 Pro",
        "battery": 87,
        "alarm": "sos",
    }


@pytest.mark.parametrize(
    "attributes",
    [b"[1,2]", b"{", b"{'a':1}", b"not-json", b"{" + b'"a":"' + b"x" * 3000 + b'"}', b"1"],
)
def test_attributes_that_are_not_a_bounded_json_object_are_invalid(attributes: bytes) -> None:
    for line in (
        b"REPORT kiwi +1+1 1 " + attributes,
        b"POINT Riley +0.1 kiwi +1+1 1 " + attributes,
    ):
        with pytest.raises(ProtocolError):
            parse_line(line)


def test_points_variants_of_subscribe_and_whereis() -> None:
    assert parse_line(b"SUBSCRIBE POINTS") == Subscribe(points=True)
    assert parse_line(b"WHEREIS kiwi POINTS") == WhereIs("kiwi", points=True)
    for line in (b"SUBSCRIBE points", b"SUBSCRIBE POINTS x", b"WHEREIS kiwi x"):
        with pytest.raises(ProtocolError):
            parse_line(line)


@given(
    st.integers(0, 253_402_300_799),
    st.text("0123456789", max_size=40),
    # A location strictly inside the bounds takes the parser's fast path; one on a bound
    # (latitude 90) the general one.
    st.sampled_from(["+34.068930-118.445127", "+90-118.445127"]),
)
@settings(max_examples=300, deadline=None)
def test_a_records_nanoseconds_are_its_time_keys_on_every_server(
    seconds: int, digits: str, location: str
) -> None:
    """The nanoseconds a server's own record carries (history's identity of the point) are
    what every other server computes from the same time in the AT line it receives: else the
    same point would be two points, and the herd's digests would never agree."""
    stamp = f"{seconds}.{digits}" if digits else str(seconds)
    record = make_record(
        "Riley", 1_700_000_000 * 10**9, iamat(f"IAMAT kiwi {location} {stamp}".encode())
    )
    relayed = parse_line(record.line)
    assert isinstance(relayed, At) and relayed.record.ns == -1
    assert record.ns == time_to_ns(stamp) == key_to_ns(relayed.record.key[:2])
