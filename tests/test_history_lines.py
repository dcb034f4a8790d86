"""The bulk reader of history answers (gateway.history.lines) against ``parse_line``: random
lines (Unicode and escapes in IDs and attributes, negative and edge coordinates, nine-decimal
and longer times, odd spacing) read to the same fields, and shown, exported as GPX and as
GeoJSON to the same bytes as the records ``parse_line`` makes; any line ``parse_line``
refuses refuses the whole answer, also through a HerdClient over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from backend.config import ServerAddress
from backend.protocol import (
    MAX_ATTRIBUTES_BYTES,
    MAX_CLIENT_ID_BYTES,
    MAX_SERVER_ID_BYTES,
    MAX_TIME_S,
    At,
    ProtocolError,
    Record,
    format_attributes,
    parse_line,
)
from gateway.herd_client import PARSE_BYTES, HerdClient, HerdUnavailable, Server
from gateway.history import GeoJsonWriter, GpxWriter, geojson_chunks, gpx_chunks
from gateway.history.lines import BadAnswer, Point, read_body, read_points
from gateway.records import attributes_json, point_json, record_json, records_body

pytestmark = pytest.mark.timeout(120)

TEXTS = ["p", "drive", 'say "hi"', "back\\slash", "naïve ünïcode", "tab\there", "✓", "\u2028"]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _number(rng: random.Random, bound: int) -> str:
    """A coordinate as clients write it: sign, degrees, perhaps decimals (edges often)."""
    roll = rng.random()
    if roll < 0.05:
        return rng.choice("+-") + str(bound) + rng.choice(["", ".0", ".000000"])
    if roll < 0.08:
        return rng.choice("+-") + str(bound) + ".0000001"  # past the edge: refused
    if roll < 0.11:
        return rng.choice("+-") + "0" * rng.randint(2, 4) + "1.5"  # leading zeros
    whole = str(rng.randrange(bound))
    decimals = rng.choice([0, 1, 6, 9, 15, rng.randint(0, 60)])
    return rng.choice("+-") + whole + ("." + _digits(rng, decimals) if decimals else "")


def _time(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return str(MAX_TIME_S + rng.choice([0, 1])) + rng.choice(["", ".5"])
    if roll < 0.08:
        return "0" * rng.randint(1, 3) + "1700000000"
    seconds = str(rng.randrange(0, 2_000_000_000))
    decimals = rng.choice([0, 3, 9, 9, 9, 12, 30, 52, 53])
    return seconds + ("." + _digits(rng, decimals) if decimals else "")


def _identity(rng: random.Random, bound: int) -> str:
    roll = rng.random()
    if roll < 0.05:
        return "é" * (bound // 2 + rng.choice([0, 1]))  # 2 bytes each: at or past the bound
    if roll < 0.1:
        return "x" * (bound + rng.choice([0, 1]))
    alphabet = 'abcXYZ019._-/"\\{}é✓\x01\x1c\x85'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))


def _attributes(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.04:
        return rng.choice([b"{not json", b"[1,2]", b'{"a":1e400}', b'{"a":NaN}', b"{}x"])
    if roll < 0.06:
        return b'{"name":"' + b"n" * (MAX_ATTRIBUTES_BYTES - 10 + rng.randint(0, 2)) + b'"}'
    value: dict[str, object] = {
        "accuracy": rng.choice([5, 5.0, 12.5]),
        "altitude": rng.uniform(-100, 3000),
        "speed": rng.choice([0.0, 3.25, 1e-7]),
        "battery": rng.randint(0, 100),
        "charging": rng.random() < 0.5,
        "trigger": rng.choice(TEXTS),
        "motion": rng.sample(TEXTS, 2),
        "transition": {"event": "enter", "region": rng.choice(TEXTS)},
    }
    keys = rng.sample(list(value), rng.randint(1, len(value)))
    text = format_attributes({key: value[key] for key in keys})
    if roll < 0.12:  # an integer past 64 bits, which orjson reads as a double and json exactly
        text = text[:-1] + b',"big":' + b"1" + _digits(rng, rng.randint(18, 25)).encode() + b"}"
    return text


def random_line(rng: random.Random) -> bytes:
    """An AT or POINT line, mostly as servers write it; now and then one that parse_line
    refuses, or takes only the general way (other spacing, a CR)."""
    fields = [
        _identity(rng, MAX_SERVER_ID_BYTES).encode(),
        rng.choice([b"+0.263873386", b"-99.999812004", b"+0.000000000", b"+1." + b"5" * 15]),
        _identity(rng, MAX_CLIENT_ID_BYTES).encode(),
        (_number(rng, 90) + _number(rng, 180)).encode(),
        _time(rng).encode(),
    ]
    if rng.random() < 0.03:
        fields[1] = rng.choice([b"0.1", b"+1", b"+" + b"1" * 40 + b".0"])  # malformed diffs
    words = [b"POINT", *fields, _attributes(rng)] if rng.random() < 0.7 else [b"AT", *fields]
    if rng.random() < 0.02:
        words = words[:-1] if rng.random() < 0.5 else [*words, b"extra"]  # a field short or over
    separator = b"  " if rng.random() < 0.02 else b"\t" if rng.random() < 0.02 else b" "
    end = b"\r\n" if rng.random() < 0.02 else b"\n"
    return separator.join(words) + end


def reference(line: bytes) -> Record | None:
    """The record ``parse_line`` makes of a line, or None if it refuses it as a point."""
    try:
        command = parse_line(line)
    except ProtocolError:
        return None
    return command.record if isinstance(command, At) else None


def same(point: Point, record: Record) -> None:
    assert "AT " + point.body == record.line.decode()
    assert (point.server_id, point.time_diff, point.client_id) == (
        record.server_id,
        record.time_diff,
        record.client_id,
    )
    assert (point.location, point.client_time) == (record.location, record.client_time)
    assert point.lat + point.lon == record.location
    assert (float(point.lat), float(point.lon)) == record.lat_lng
    assert (point.attributes or "").encode() == record.attributes
    assert point.shown == attributes_json(record.attributes)
    assert point_json(point) == record_json(record)


def answer(lines: list[bytes]) -> bytes:
    return b"".join(lines) + b"END %d\n" % len(lines)


def test_random_lines_read_as_parse_line_reads_them(rng: random.Random) -> None:
    lines = [random_line(rng) for _ in range(3000)]
    records = [reference(line) for line in lines]
    good = [(line, r) for line, r in zip(lines, records, strict=True) if r is not None]
    assert 2000 < len(good) < 3000  # both kinds are well represented
    points = read_points(answer([line for line, _ in good]))
    assert len(points) == len(good)
    for point, (_, record) in zip(points, good, strict=True):
        same(point, record)
    for line, record in zip(lines, records, strict=True):
        if record is None:  # alone, and among good lines: the whole answer is refused
            with pytest.raises(BadAnswer):
                read_points(answer([line]))
            k = rng.randrange(len(good))
            with pytest.raises(BadAnswer):
                read_points(answer([g for g, _ in good[:k]] + [line] + [g for g, _ in good[k:]]))


@pytest.mark.parametrize(
    "line",
    [
        b"AT Riley +0.1 kiwi +34.068930-118.445127 1614209128.918963997",  # no newline (last)
        b"POINT Riley +0.1 kiwi +34-118 1614209128 {}\n",
        b'POINT Riley +0.1 kiwi -90.000-180 0.000000001 {"a":"b\\u0020c"}\n',
        b"AT  Riley +0.1 kiwi +1+1 1\n",  # two spaces: the general way
        b"AT Riley +0.1 ki\xc3\xa9 +1+1 1\r\n",
    ],
)
def test_lines_the_general_way_takes(line: bytes) -> None:
    record = reference(line)
    assert record is not None
    [point] = read_points(answer([line]) if line.endswith(b"\n") else line + b"\nEND 1\n")
    same(point, record)


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"AT Riley +0.1 kiwi +1+1 1\n",  # no END
        b"AT Riley +0.1 kiwi +1+1 1\nEND",  # END without its count
        b"AT Riley +0.1 kiwi +1+1 1\nIN kiwi\nEND 2\n",  # another command's line
        b"AT Riley +0.1 kiwi +91+1 1\nEND 1\n",  # out of range
        b"AT Riley +0.1 kiwi +1+1 253402300800\nEND 1\n",  # after the year 9999
        b"POINT Riley +0.1 kiwi +1+1 1\nEND 1\n",  # a POINT without attributes
        b"AT Riley +0.1 kiwi +1+1 1 {}\nEND 1\n",  # an AT with them
        b'POINT Riley +0.1 kiwi +1+1 1 {"a": 1}\nEND 1\n',  # a space in the attributes
        b"AT Riley +0.1 k\xffwi +1+1 1\nEND 1\n",  # not UTF-8
        b"AT R\x0biley +0.1 kiwi +1+1 1\nEND 1\n",  # a vertical tab splits the server
        b"AT Riley +0.1 kiwi\x1c +1+1 1\nAT Riley +0.1 kiwi +1+1 x\nEND 2\n",  # a bad time
    ],
)
def test_answers_no_server_writes_are_refused(reply: bytes) -> None:
    with pytest.raises(BadAnswer):
        read_points(reply)


def test_a_body_read_in_pieces_reads_as_the_whole(rng: random.Random) -> None:
    lines = [line for line in (random_line(rng) for _ in range(500)) if reference(line)]
    body = b"".join(lines)
    whole = read_body(body)
    cuts = sorted(rng.sample(range(1, len(lines)), 20))
    pieces = [b"".join(lines[a:b]) for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True)]
    assert [p for piece in pieces for p in read_body(piece)] == whole


def exported(
    make: Callable[[list[Point]], bytes], show: Callable[[list[Record]], bytes], rng: random.Random
) -> None:
    lines = [line for line in (random_line(rng) for _ in range(1500)) if reference(line)]
    records = [r for r in map(reference, lines) if r is not None]
    assert make(read_points(answer(lines))) == show(records)


def test_gpx_from_points_is_the_gpx_of_the_shown_records(rng: random.Random) -> None:
    def make(points: list[Point]) -> bytes:
        writer = GpxWriter('van "7" <&>')
        chunks = [writer.add_points(points[i : i + 97]) for i in range(0, len(points), 97)]
        return b"".join(c for c in [*chunks, writer.close()] if c)

    def show(records: list[Record]) -> bytes:
        return b"".join(gpx_chunks('van "7" <&>', [record_json(r) for r in records]))

    exported(make, show, rng)


def test_geojson_from_points_is_the_geojson_of_the_shown_records(rng: random.Random) -> None:
    def make(points: list[Point]) -> bytes:
        writer = GeoJsonWriter("van/7")
        chunks = [writer.add_trail_points(points[:1]), writer.add_trail_points(points[1:])]
        chunks += [writer.end_trail(), writer.add_points(points[:3]), writer.add_points(points[3:])]
        return b"".join(c for c in [*chunks, writer.close()] if c)

    def show(records: list[Record]) -> bytes:
        return b"".join(geojson_chunks("van/7", lambda: iter([record_json(r) for r in records])))

    exported(make, show, rng)


def test_the_json_page_is_byte_for_byte_the_records(rng: random.Random) -> None:
    lines = [line for line in (random_line(rng) for _ in range(1500)) if reference(line)]
    records = [r for r in map(reference, lines) if r is not None]
    points = read_points(answer(lines))
    # Integers past 64 bits, which orjson cannot write, are on their own page.
    wide = [i for i, p in enumerate(points) if b'"big"' in (p.attributes or "").encode()]
    assert wide
    narrow = [i for i in range(len(points)) if i not in set(wide)]
    for kept in (narrow, wide):
        page = records_body([point_json(points[i]) for i in kept])
        assert page == records_body([record_json(records[i]) for i in kept])
        shown = json.loads(page)  # the integers as they are
        assert shown == [json.loads(json.dumps(record_json(records[i]))) for i in kept]
    assert records_body([point_json(points[i]) for i in narrow]) == orjson.dumps(
        [point_json(points[i]) for i in narrow]
    )


# -- through a HerdClient, over TCP --------------------------------------------------------


async def fake_herd(reply: bytes) -> AsyncIterator[HerdClient]:
    """A herd server that answers every line with ``reply``, and a client of it."""

    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.readline():
            writer.write(reply)
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    herd = HerdClient([Server("Riley", ServerAddress("127.0.0.1", port))], timeout=10)
    try:
        yield herd
    finally:
        await herd.close()
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


async def test_a_herd_client_reads_a_long_answer_in_pieces_and_refuses_a_bad_line(
    rng: random.Random,
) -> None:
    lines = [line for line in (random_line(rng) for _ in range(6000)) if reference(line)]
    assert len(b"".join(lines)) > 2 * PARSE_BYTES  # read in several pieces
    async for herd in fake_herd(answer(lines)):
        points = await herd.history_points("kiwi", 0, 10**18, 10_000)
        assert points == read_points(answer(lines))
        assert len(points) == len(lines)
    bad = [*lines[:4000], b"AT Riley +0.1 kiwi +1+1 1e9\n", *lines[4000:]]
    async for herd in fake_herd(answer(bad)):
        with pytest.raises(HerdUnavailable, match="unexpected reply from the herd"):
            await herd.history_points("kiwi", 0, 10**18, 10_000)
