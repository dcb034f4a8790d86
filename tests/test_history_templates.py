"""History answers written by templates (gateway.history.templates) against the per-line way:
the JSON records and the GPX of random lines are byte for byte those of the points read one
line at a time, the coordinates a template copies are the text floats print, a phone's trail
is taken by the templates whole, and a page read only at its ends (LinePoints) pages as the
page read whole. Through a HerdClient over TCP, and a gateway in front of a real server, the
REST page and the GPX export are the bytes the per-line way writes."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from helpers import Herd
from test_history_lines import _attributes, answer, fake_herd, random_line, reference

from bench.history_data import TRAIL, DataSet
from gateway.history import GpxWriter
from gateway.history.export import _minute, around_time
from gateway.history.lines import BadAnswer, LinePoints, read_body
from gateway.history.reading import Window, next_window, window_after
from gateway.history.templates import _LAT, _LON, gpx_text, json_records
from gateway.keys import HERD
from gateway.records import point_json, records_body

pytestmark = pytest.mark.timeout(120)

HERD_EXTRA = "[history]\nenabled = true\n"  # (off by default)


def phone_line(rng: random.Random) -> bytes:
    """A line as phones' points are: plain IDs, coordinates of a few to many decimals (some
    a template leaves: whole degrees, zeros), times of any precision, any attributes."""

    def number(bound: int) -> str:
        whole = str(rng.randrange(bound)) if rng.random() < 0.9 else "0"
        decimals = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 14)))
        return rng.choice("+-") + whole + ("." + decimals if decimals else "")

    seconds = str(rng.randrange(1, 10 ** rng.randint(1, 11)))
    fraction = "".join(rng.choice("0123456789") for _ in range(rng.choice([0, 3, 9, 9, 15, 52])))
    fields = [
        rng.choice(["Riley", "Juzang", "n\u00e9", "✓"]),
        f"+{rng.random():.9f}",
        rng.choice(["kiwi", "van/7", "bench-trail", "ünï", "{x}"]),
        number(90) + number(180),
        seconds + ("." + fraction if fraction else ""),
    ]
    attributes = _attributes(rng)
    if rng.random() < 0.2:
        return ("AT " + " ".join(fields) + "\n").encode()
    return ("POINT " + " ".join(fields) + " ").encode() + attributes + b"\n"


def trail(n: int = 2000) -> bytes:
    """The bench workload's phone trail as the lines of a HISTORY ... POINTS answer."""
    data = DataSet(points=n + 4000, clients=3, export=2000, trail=n, end_ns=1_765_000_000 * 10**9)
    rows = [row for row in data.rows() if row.client_id == TRAIL]
    return b"".join(b"POINT" + r.at_line()[2:] + b" " + r.attributes + b"\n" for r in rows)


def per_line_json(body: bytes) -> bytes:
    """The items of the JSON array of the body's points, read the per-line way."""
    return records_body([point_json(p) for p in read_body(body)])[1:-1]


def per_line_gpx(body: bytes) -> bytes:
    writer = GpxWriter("van")
    return b"".join(c for c in [writer.add_points(read_body(body)), writer.close()] if c)


def templated_gpx(body: bytes) -> bytes:
    writer = GpxWriter("van")
    return b"".join(c for c in [writer.add_lines(body), writer.close()] if c)


@pytest.mark.parametrize("make", [random_line, phone_line])
def test_random_lines_as_json_are_the_records_read_per_line(
    rng: random.Random, make: Callable[[random.Random], bytes]
) -> None:
    lines = [line for line in (make(rng) for _ in range(3000)) if reference(line)]
    taken = 0
    for line in lines:  # each alone: the template takes it or leaves it to the caller
        records = json_records(line)
        if records is not None:
            taken += 1
            assert records.json(0, 1) == per_line_json(line)
            record = reference(line)
            assert record is not None and records.times == [record.client_time.encode()]
    if make is phone_line:
        assert len(lines) // 2 < taken < len(lines) - 100  # both ways are well represented
    else:
        assert taken > 20
    body = b"".join(line for line in lines if json_records(line) is not None)
    records = json_records(body)
    assert records is not None and len(records) == body.count(b"\n")
    assert records.json(0, len(records)) == per_line_json(body)
    assert records.json(5, 9) == per_line_json(b"".join(body.splitlines(keepends=True)[5:9]))


@pytest.mark.parametrize("make", [random_line, phone_line])
def test_random_lines_as_gpx_are_the_gpx_written_per_line(
    rng: random.Random, make: Callable[[random.Random], bytes]
) -> None:
    lines = [line for line in (make(rng) for _ in range(2000)) if reference(line)]
    body = b"".join(lines)
    assert templated_gpx(body) == per_line_gpx(body)  # mixed: the per-line way
    taken = b"".join(line for line in lines if _gpx_takes(line))
    assert len(taken.splitlines()) > (len(lines) // 2 if make is phone_line else 100)
    assert _gpx_takes(taken)
    assert templated_gpx(taken) == per_line_gpx(taken)


def _gpx_takes(line: bytes) -> bool:
    return gpx_text(line, around_time, _minute) is not None


def test_a_phones_trail_is_taken_whole_by_the_templates() -> None:
    body = trail()
    records = json_records(body)
    assert records is not None and len(records) == 2000
    assert records.json(0, 2000) == per_line_json(body)
    assert _gpx_takes(body)
    assert templated_gpx(body) == per_line_gpx(body)


def test_lines_the_templates_leave_to_the_per_line_way() -> None:
    base = b'POINT Riley +0.1 kiwi %s 1733580000.5 {"speed":1.5}\n'
    for location in (b"+34.000000-118.5", b"+034.5-118.5", b"+0.05-118.5", b"+34-118.5"):
        line = base % location
        assert json_records(line) is None and not _gpx_takes(line), line
        assert templated_gpx(line) == per_line_gpx(line)
    for line in (
        b'POINT Riley +0.1 ki"wi +34.5-118.5 1 {}\n',  # JSON would escape the quote
        b'POINT Riley +0.1 kiwi +34.5-118.5 1 {"a":"b\\u0020c"}\n',  # orjson writes a space
    ):
        records = json_records(line)
        assert records is None or records.json(0, 1) == per_line_json(line)
    # Attributes orjson reads but cannot write back (an integer past 64 bits): per line.
    wide = b'POINT Riley +0.1 kiwi +34.5-118.5 1 {"big":123456789012345678901234}\n'
    assert json_records(wide) is None
    assert templated_gpx(wide) == per_line_gpx(wide)
    with pytest.raises(BadAnswer):
        GpxWriter("van").add_lines(b"POINT Riley +0.1 kiwi +34.5-118.5 1 {not json\n")


@pytest.mark.parametrize(
    "line",
    [
        b"AT %s +0.1 kiwi +34.5-118.5 1\n" % (b"R" * 65),  # a server ID past its bound
        b"AT Riley +0.1 %s +34.5-118.5 1\n" % (b"k" * 1025),  # a client ID past its bound
        b"AT Ri\tley +0.1 kiwi +34.5-118.5 1\n",  # white space inside a field
        b'POINT Riley +0.1 kiwi +34.5-118.5 1 {"a": 1}\n',  # a space in the attributes
        b'POINT Riley +0.1 kiwi +34.5-118.5 1 {"a":"\x0b"}\n',
        b'POINT Riley +0.1 kiwi +34.5-118.5 1 {"a":"%s"}\n' % (b"x" * 2042),  # 2,049 bytes
    ],
)
def test_lines_no_server_writes_are_left_to_the_per_line_way(line: bytes) -> None:
    """The JSON template takes IDs and attributes loosely, then holds each distinct one to its
    exact form: a line outside it is left to the per-line way, which refuses it."""
    assert json_records(line) is None
    assert json_records(trail(3) + line) is None
    with pytest.raises(BadAnswer):
        read_body(line)
    ok = line.replace(b"R" * 65, b"R" * 64).replace(b"k" * 1025, b"k" * 1024)
    if ok != line:  # at its bound, the same line is taken
        assert json_records(ok) is not None


def _decimal(rng: random.Random, bound: int) -> str:
    whole = rng.choice([str(rng.randrange(bound)), "0", str(bound - 1), "1"])
    decimals = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
    zeros = "0" * rng.choice([0, 0, 1, 5, 40])
    return rng.choice("+-") + whole + "." + rng.choice(["", "0", "000", "0000"]) + decimals + zeros


@pytest.mark.parametrize(("pattern", "bound"), [(_LAT, 90), (_LON, 180)])
def test_a_coordinate_a_template_copies_is_what_floats_print(
    rng: random.Random, pattern: bytes, bound: int
) -> None:
    compiled = re.compile(pattern)
    copied = 0
    for _ in range(20000):
        text = _decimal(rng, bound)
        m = compiled.fullmatch(text.encode())
        if m is None:
            continue
        copied += 1
        number = float(text)
        assert m[1].decode() == repr(number) == orjson.dumps(number).decode(), text
    assert copied > 5000


def test_a_page_read_at_its_ends_pages_as_the_page_read_whole(rng: random.Random) -> None:
    base = 1_733_580_000
    for _ in range(200):
        n = rng.randint(0, 12)
        times = sorted(base + rng.randrange(4) for _ in range(n))
        body = b"".join(
            b"AT Riley +0.1 kiwi +%d.5-118.5 %d\n" % (rng.randrange(3), t) for t in times
        )
        page = LinePoints(body)
        assert len(page) == n
        assert [page[i] for i in range(n)] == read_body(body) == page[:]
        given = frozenset(f"+{k}.5-118.5" for k in range(3) if rng.random() < 0.5)
        window = Window((base + rng.randrange(2)) * 10**9, (base + 10) * 10**9, given)
        asked = max(1, rng.choice([n, n + 1, n - 1]))
        fresh, after = next_window(window, read_body(body), asked)
        kept, rest, after_ends = window_after(window, LinePoints(body), asked)
        lines = LinePoints(body)
        assert after_ends == after
        assert read_body(b"".join([*(lines.line(i) for i in kept), lines.lines_from(rest)])) == (
            fresh
        )


async def test_a_herd_client_pages_lines_as_it_pages_points(rng: random.Random) -> None:
    body = trail(2000)
    async for herd in fake_herd(answer(body.splitlines(keepends=True))):
        # One page (a short one ends the window): the lines are the answer's.
        pages = [page async for page in herd.history_lines("kiwi", 0, 10**19)]
        assert pages == [body]
        [points] = [page async for page in herd.history_pages("kiwi", 0, 10**19)]
        assert read_body(pages[0]) == points
        records = await herd.history_json("kiwi", 0, 10**19, 10_000)
        assert not isinstance(records, list)
        assert records.json(0, len(records)) == per_line_json(body)


@pytest.mark.parametrize(
    ("who", "lats"),
    [
        ("kiwi", [34.0689, 5.5, -0.25]),  # every point taken by the templates
        ("weka", [34.0689, 34.0, 5.5, 0.05]),  # with whole degrees, hundredths: per line
    ],
)
async def test_the_rest_page_and_gpx_are_the_bytes_written_per_line(
    herd: Herd, client: Any, who: str, lats: list[float]
) -> None:
    """A history through a real server: the REST page (whole, cut at a limit, and the next
    page) and the GPX export are what the per-line way makes of the herd's own answer."""
    start = int(time.time()) - 3600
    for i in range(60):
        body = {
            "client_id": who,
            "lat": lats[i % len(lats)] + i * 1e-6,
            "lon": -118.445127,
            "time": f"{start + i}.{i:03d}",
            "attributes": {"speed": 1.5, "battery": 50 + i % 3, "trigger": "drive home"},
        }
        response = await client.post("/api/v1/locations", json=body)
        assert response.status == 200, await response.text()
    herd_client = client.server.app[HERD]
    since, until = (start - 1) * 10**9, (start + 100) * 10**9
    points = await herd_client.history_points(who, since, until, 10_000)
    assert len(points) == 60
    templated = await herd_client.history_json(who, since, until, 10_000)
    assert isinstance(templated, list) == (who == "weka")
    query = {"since": str(start - 1), "until": str(start + 100), "limit": "10000"}
    url = f"/api/v1/clients/{who}/history"
    page = await client.get(url, params=query)
    assert page.status == 200
    expected = {"client_id": who, "points": [point_json(p) for p in points], "next_cursor": None}
    assert await page.read() == records_body(expected)
    # A page cut at its limit, and the next one from its cursor.
    first = await (await client.get(url, params={**query, "limit": "7"})).read()
    cursor = orjson.loads(first)["next_cursor"]
    assert cursor is not None
    assert first == records_body(
        {"client_id": who, "points": [point_json(p) for p in points[:7]], "next_cursor": cursor}
    )
    after = await client.get(url, params={**query, "limit": "7", "cursor": cursor})
    assert orjson.loads(await after.read())["points"] == [
        orjson.loads(orjson.dumps(point_json(p))) for p in points[7:14]
    ]
    gpx = await client.get(url, params={**query, "format": "gpx"})
    assert gpx.status == 200
    writer = GpxWriter(who)
    assert await gpx.read() == b"".join(c for c in [writer.add_points(points), writer.close()] if c)
