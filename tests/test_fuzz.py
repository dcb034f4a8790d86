"""Hostile input: properties of the parser, and a live server under random bytes, over-long and
half lines, slow writers and thousands of idle connections, while a normal client is served."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from pathlib import Path

import pytest
from helpers import Herd, iamat
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.framing import LineBuffer
from backend.protocol import (
    MAX_CLIENT_ID_BYTES,
    MAX_LOCATION_BYTES,
    MAX_RECORD_LINE,
    MAX_SERVER_ID_BYTES,
    MAX_TIME_BYTES,
    MAX_TIME_S,
    PEER_LINE_LIMIT,
    At,
    IAmAt,
    ProtocolError,
    WhatsAt,
    format_time_diff,
    invalid_reply,
    make_record,
    parse_fields,
    parse_line,
    time_to_ns,
)

pytestmark = pytest.mark.timeout(180)

WS = b" \t\r\n\x0b\x0c"
field_text = st.text(
    alphabet=st.characters(blacklist_characters=WS.decode(), blacklist_categories=("Cs",)),
    min_size=1,
)


@given(st.binary(max_size=300))
@settings(max_examples=2000, deadline=None)
def test_any_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_line(data)


def outcome(parse: object, line: bytes) -> object:
    try:
        command = parse(line)  # type: ignore[operator]
    except ProtocolError:
        return ProtocolError
    if isinstance(command, At):
        return command, command.record.key, command.record.line
    if isinstance(command, IAmAt):
        return command, command.time_key, command.time_ns
    return command


# IAMAT and AT lines made of plausible and implausible pieces, for the fast paths' sake.
number = st.sampled_from(
    [
        b"0",
        b"1",
        b"90",
        b"180",
        b"89.999999",
        b"90.0",
        b"180.0000001",
        b"1.",
        b".5",
        b"007",
        b"1e3",
        b"nan",
    ]
) | st.from_regex(rb"\A[0-9]{1,4}(\.[0-9]{0,12})?\Z")
sign = st.sampled_from([b"+", b"-", b""])
gap = st.sampled_from([b" ", b"  ", b"\t", b" \x0b", b""])
piece = st.sampled_from(
    [b"kiwi", b"\xff\xfe", b"caf\xc3\xa9", b"a\xc2\xa0b", b"Riley"]
) | st.binary(min_size=1, max_size=6)
end = st.sampled_from([b"\n", b"\r\n", b"", b" \n", b"\n\n"])


@given(
    st.sampled_from(
        [
            *(b"IAMAT", b"AT", b"IAMAT ", b" IAMAT", b"IAMATX", b"AT  "),
            *(b"PUT", b"PUT point", b"PUT point AT", b"PUT Point", b"PUT  forget", b"PUTX"),
        ]
    ),
    st.lists(
        st.one_of(
            piece,
            st.builds(lambda *p: b"".join(p), sign, number, sign, number),
            st.builds(lambda *p: b"".join(p), sign, number),
        ),
        max_size=6,
    ),
    gap,
    end,
)
@settings(max_examples=3000, deadline=None)
def test_the_fast_paths_parse_exactly_as_the_general_one(
    word: bytes, fields: list[bytes], sep: bytes, terminator: bytes
) -> None:
    line = (sep or b" ").join([word, *fields]) + terminator
    assert outcome(parse_line, line) == outcome(parse_fields, line)


@given(
    client=field_text,
    lat=st.decimals(min_value=-90, max_value=90, places=7),
    lng=st.decimals(min_value=-180, max_value=180, places=7),
    fraction=st.text(alphabet="0123456789", max_size=12),
)
@settings(max_examples=500, deadline=None)
def test_the_fast_paths_agree_on_valid_lines(
    client: str, lat: object, lng: object, fraction: str
) -> None:
    stamp = f"1614209128.{fraction}" if fraction else "1614209128"
    for line in (
        f"IAMAT {client} {lat:+f}{lng:+f} {stamp}\n".encode(),
        f"AT Riley +0.263873386 {client} {lat:+f}{lng:+f} {stamp}\n".encode(),
    ):
        fast = outcome(parse_line, line)
        assert fast == outcome(parse_fields, line)
        assert fast is not ProtocolError


@given(
    client=field_text,
    lat=st.decimals(min_value=-90, max_value=90, places=6),
    lng=st.decimals(min_value=-180, max_value=180, places=6),
    seconds=st.integers(min_value=0, max_value=MAX_TIME_S),
    fraction=st.text(alphabet="0123456789", max_size=12),
    received=st.integers(min_value=0, max_value=2 * 10**21),
)
@settings(max_examples=500, deadline=None)
def test_iamat_round_trips_into_an_at_line_that_parses_back(
    client: str, lat: object, lng: object, seconds: int, fraction: str, received: int
) -> None:
    location = f"{lat:+f}{lng:+f}"
    stamp = f"{seconds}.{fraction}" if fraction else str(seconds)
    command = parse_line(f"IAMAT {client} {location} {stamp}\n".encode())
    assert command == IAmAt(client, location, stamp)
    # The nanoseconds the parse computes, and the time difference made from them, are the
    # reference functions' exactly.
    assert isinstance(command, IAmAt) and command.time_ns == time_to_ns(stamp)
    record = make_record("Riley", received, command)
    assert record.time_diff == format_time_diff(received - time_to_ns(stamp))
    again = parse_line(record.line)
    assert isinstance(again, At) and again.record.line == record.line
    assert (again.record.client_id, again.record.location, again.record.client_time) == (
        client,
        location,
        stamp,
    )
    assert re.fullmatch(rb"[+-][0-9]+\.[0-9]{9}", record.time_diff.encode())


# -- every bound, and around it ------------------------------------------------------------


def around(*bounds: int) -> st.SearchStrategy[int]:
    """Sizes at, just under and just over each bound, and far over it."""
    return st.sampled_from(sorted({max(0, b + d) for b in bounds for d in (-1, 0, 1)} | {9000}))


def digits(n: int) -> bytes:
    return (b"1234567890" * (n // 10 + 1))[:n]


client_ids = st.builds(
    lambda n, wide: ("é" * (n // 2) if wide else "c" * n).encode() or b"c",
    around(1, 256, MAX_CLIENT_ID_BYTES, MAX_CLIENT_ID_BYTES // 2 * 2),
    st.booleans(),
)
# A latitude and longitude with this many decimals between them.
locations = st.builds(
    lambda lat_decimals, lng_decimals: (
        b"+34." + digits(lat_decimals) + b"-118." + digits(lng_decimals)
    ),
    around(1, 6, (MAX_LOCATION_BYTES - 9) // 2),
    around(1, 6, (MAX_LOCATION_BYTES - 9) // 2, MAX_LOCATION_BYTES - 9 - 6),
)
times = st.one_of(
    # Whole seconds around the latest time accepted, and far past it.
    st.integers(MAX_TIME_S - 2, MAX_TIME_S + 2).map(lambda t: str(t).encode()),
    st.sampled_from([b"1" + b"0" * 400, b"9" * 201, b"1" * 4000, b"1e3", b"1e-200000000"]),
    # A fraction that brings the time to, just under and just over its byte bound.
    around(1, 9, 30, MAX_TIME_BYTES - 11).map(lambda n: b"1614209128." + digits(n)),
    # Leading zeros: a small time written long.
    around(MAX_TIME_BYTES).map(lambda n: b"0" * (n - 10) + b"1614209128"),
)


@given(
    client=client_ids,
    location=locations,
    stamp=times,
    server=st.sampled_from(["Riley", "S" * MAX_SERVER_ID_BYTES]),
    received=st.integers(0, MAX_TIME_S * 1_000_000_000),
)
@settings(max_examples=1500, deadline=None)
def test_every_record_a_server_accepts_is_one_every_peer_accepts(
    client: bytes, location: bytes, stamp: bytes, server: str, received: int
) -> None:
    line = b"IAMAT " + client + b" " + location + b" " + stamp + b"\n"
    try:
        command = parse_line(line)
    except ProtocolError:
        return  # refused where it entered: it never becomes a record
    assert isinstance(command, IAmAt)
    record = make_record(server, received, command)
    at = record.line + b"\n"
    assert len(record.line) <= MAX_RECORD_LINE
    # A peer reads it whole (framing) and parses it to the same record: no link can refuse
    # what a server accepted, in a flood, a digest exchange, a journal or a snapshot.
    assert LineBuffer(PEER_LINE_LIMIT).feed(at) == [at]
    again = parse_line(at)
    assert isinstance(again, At) and again.record.key == record.key
    assert again.record.line == record.line
    # And the fast paths agree with the general ones at every bound.
    assert outcome(parse_line, line) == outcome(parse_fields, line)
    assert outcome(parse_line, at) == outcome(parse_fields, at)


@given(client=client_ids, location=locations, stamp=times, diff=around(9, 32, 40))
@settings(max_examples=800, deadline=None)
def test_peer_lines_at_every_bound_parse_the_same_both_ways(
    client: bytes, location: bytes, stamp: bytes, diff: int
) -> None:
    at = b"AT Riley +" + digits(max(1, diff - 11)) + b".000000000 " + client + b" "
    at += location + b" " + stamp + b"\n"
    assert outcome(parse_line, at) == outcome(parse_fields, at)


@given(
    radius=st.one_of(around(32).map(lambda n: b"0" * (n - 2) + b"10"), st.just(b"1" * 5000)),
    bound=st.one_of(around(32).map(lambda n: b"0" * (n - 1) + b"5"), st.just(b"1" * 5000)),
)
@settings(max_examples=100, deadline=None)
def test_whatsat_numbers_of_any_length_parse_or_raise_protocol_error(
    radius: bytes, bound: bytes
) -> None:
    with contextlib.suppress(ProtocolError):
        parse_line(b"WHATSAT kiwi " + radius + b" " + bound + b"\n")


@given(
    st.lists(
        st.tuples(st.integers(0, 10**10), st.text("0123456789", max_size=10)),
        min_size=2,
        max_size=8,
    )
)
@settings(max_examples=300, deadline=None)
def test_newer_is_a_total_order_that_matches_the_numeric_time(times: list[tuple[int, str]]) -> None:
    from decimal import Decimal

    records = []
    for seconds, fraction in times:
        stamp = f"{seconds}.{fraction}" if fraction else str(seconds)
        records.append(make_record("Riley", 0, IAmAt("c", "+1+1", stamp)))
    for a in records:
        for b in records:
            if Decimal(a.client_time) > Decimal(b.client_time):
                assert a.newer_than(b) and not b.newer_than(a)
            elif a.line == b.line:
                assert not a.newer_than(b)
            else:  # same time, different text ("1.5" and "1.50"): exactly one is newer
                assert a.newer_than(b) != b.newer_than(a)


@given(st.binary(min_size=1, max_size=200).filter(lambda b: b"\n" not in b))
@settings(max_examples=500, deadline=None)
def test_an_invalid_reply_is_one_line_with_the_bytes_as_received(line: bytes) -> None:
    # The line as received, minus its terminator (LF, or CRLF).
    body = line.removesuffix(b"\r")
    assert invalid_reply(line + b"\n") == b"? " + body + b"\n"
    assert invalid_reply(line) == b"? " + line + b"\n"  # ended by end-of-stream


@given(
    st.from_regex(
        re.compile(rb"WHATSAT [a-z]{1,8} -?([0-9]{1,3}(\.[0-9]{0,3})?|\.[0-9]{1,3}) -?[0-9]{1,3}"),
        fullmatch=True,
    )
)
@settings(max_examples=300, deadline=None)
def test_whatsat_accepts_exactly_the_documented_ranges(line: bytes) -> None:
    _, _, radius, bound = line.split()
    try:
        command = parse_line(line)
    except ProtocolError:
        ok = False
    else:
        assert isinstance(command, WhatsAt)
        ok = True
    from decimal import Decimal, InvalidOperation

    try:
        r = Decimal(radius.decode())
        valid_radius = not radius.startswith(b"-") and 0 < r <= 50
    except InvalidOperation:
        valid_radius = False
    valid_bound = bound.isdigit() and 1 <= int(bound) <= 20
    assert ok == (valid_radius and valid_bound)


# -- a live server under attack ----------------------------------------------------------

IDLE_CONNECTIONS = 2000
GARBAGE_CONNECTIONS = 60


async def normal_client(port: int, rounds: int, latencies: list[float]) -> None:
    for i in range(rounds):
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(iamat(f"normal-{i}"))
        reply = await asyncio.wait_for(reader.readuntil(b"\n"), 5)
        writer.close()
        latencies.append(time.monotonic() - started)
        assert reply.startswith(b"AT Solo "), reply
        await asyncio.sleep(0.02)


async def garbage(port: int, rng: random.Random, replies: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    kind = rng.choice(["random", "long", "half", "slow", "invalid-utf8"])
    if kind == "random":
        writer.write(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 5000))))
    elif kind == "long":
        writer.write(b"IAMAT " + b"A" * rng.randint(9000, 200_000) + b" +1+1 1\n")
    elif kind == "half":
        writer.write(b"IAMAT half-line +1+1")  # and then never finish the line
    elif kind == "slow":
        for byte in b"WHATSAT nobody 10 5\n":
            writer.write(bytes([byte]))
            await asyncio.sleep(0.01)
    else:
        writer.write(b"IAMAT \xff\xfe\xfd +1+1 1\n")
    try:
        await asyncio.wait_for(writer.drain(), 5)
        writer.write_eof()
        replies.append(await asyncio.wait_for(reader.read(), 10))
    except (OSError, TimeoutError):
        replies.append(b"")
    finally:
        writer.close()


async def test_a_live_server_survives_hostile_input_and_keeps_serving(
    tmp_path: Path, rng: random.Random, many_files: None
) -> None:
    herd = Herd(tmp_path, names=("Solo",), links=(), extra="[limits]\nmax_connections = 3000\n")
    idle: list[asyncio.StreamWriter] = []
    try:
        await herd.start_async("Solo")
        port = herd.ports["Solo"]
        for _ in range(IDLE_CONNECTIONS):
            idle.append((await asyncio.open_connection("127.0.0.1", port))[1])
        replies: list[bytes] = []
        latencies: list[float] = []
        await asyncio.gather(
            normal_client(port, 40, latencies),
            *(garbage(port, rng, replies) for _ in range(GARBAGE_CONNECTIONS)),
        )
        # Every reply is one the protocol defines: "? ..." lines (or AT lines), nothing else.
        for reply in replies:
            for line in reply.split(b"\n")[:-1]:
                assert line.startswith((b"? ", b"AT ")), line[:80]
        assert herd.procs["Solo"].poll() is None, "the server is still running"
        worst = max(latencies) * 1000
        print(f"\nnormal client under attack: worst {worst:.1f} ms over {len(latencies)} requests")
        assert max(latencies) < 2.0  # served promptly throughout: no stall of seconds
    finally:
        for writer in idle:
            writer.close()
        await herd.stop_async()
