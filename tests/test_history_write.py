"""Writing history through the gateway against a real herd: a GPX track written by gpxpy
imported and read back the same, imported again as duplicates, a file with one bad point
refused whole, bodies over ``max_import_bytes`` refused with 413, deletions replicated to
every server, the device token needed for both, and the counts in /metrics."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import gpxpy
import gpxpy.gpx
import pytest
from aiohttp.test_utils import TestClient
from helpers import NAMES, Herd, poll_async, until_synced

from backend.config import load_config
from backend.protocol import History, time_to_ns
from gateway.app import create_app
from gateway.keys import FEED
from gateway.metrics import HERD_HISTORY, herd_history

pytestmark = pytest.mark.timeout(120)

HERD_EXTRA = "[history]\nenabled = true\n"
# A small max_body_bytes and a larger max_import_bytes: an import is read past the first.
MAX_IMPORT = 200_000
HERD_GATEWAY = f"max_body_bytes = 16384\nmax_import_bytes = {MAX_IMPORT}\nbody_timeout = 1.0\n"
GPX = {"Content-Type": "application/gpx+xml"}
GEOJSON = {"Content-Type": "application/geo+json"}
# A day ago, to the microsecond (GPX keeps microseconds), well inside retention.
START = datetime.fromtimestamp(int(time.time()) - 86_400, UTC) + timedelta(microseconds=250_000)


def track(n: int, *, first: int = 0, start: datetime = START, bad: int | None = None) -> bytes:
    """A real track as gpxpy writes it: points ``first`` to ``first + n - 1`` of a walk, 1.5 s
    apart, with time and elevation; point ``bad`` (from 1) without its time."""
    gpx = gpxpy.gpx.GPX()
    gpx.tracks.append(gpxpy.gpx.GPXTrack(name="walk"))
    segment = gpxpy.gpx.GPXTrackSegment()
    gpx.tracks[0].segments.append(segment)
    for i in range(first, first + n):
        when = None if bad == i + 1 else start + timedelta(seconds=1.5 * i)
        segment.points.append(
            gpxpy.gpx.GPXTrackPoint(
                round(46.05 + i * 1e-4, 7),
                round(14.5 - i * 2e-4, 7),
                elevation=295.5 + i,
                time=when,
            )
        )
    return gpx.to_xml().encode()


def points_of(body: bytes) -> list[tuple[Decimal, float, float, float | None]]:
    """The file's points as gpxpy reads them: exact seconds, degrees, elevation."""
    return [
        (
            Decimal(int(p.time.timestamp())) + Decimal(p.time.microsecond) / 10**6,
            p.latitude,
            p.longitude,
            p.elevation,
        )
        for p in gpxpy.parse(body.decode()).walk(only_points=True)
        if p.time is not None
    ]


async def history(client: TestClient[Any, Any], client_id: str) -> list[dict[str, Any]]:
    """Every point of the client, page by page (GET .../history)."""
    points: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": "500"} | ({"cursor": cursor} if cursor else {})
        response = await client.get(f"/api/v1/clients/{client_id}/history", params=query)
        assert response.status == 200, await response.text()
        body = await response.json()
        points += body["points"]
        cursor = body["next_cursor"]
        if cursor is None:
            return points


def shown(point: dict[str, Any]) -> tuple[Decimal, float, float, float | None]:
    return (
        Decimal(point["client_time"]),
        point["lat"],
        point["lon"],
        point["attributes"].get("altitude"),
    )


async def post(
    client: TestClient[Any, Any], client_id: str, body: bytes, headers: dict[str, str], status: int
) -> dict[str, Any]:
    response = await client.post(f"/api/v1/clients/{client_id}/history", data=body, headers=headers)
    assert response.status == status, await response.text()
    payload: dict[str, Any] = await response.json()
    return payload


async def held_on(herd: Herd, name: str, client_id: str) -> list[bytes]:
    """The AT lines of every point the server ``name`` holds for the client."""
    reply = await herd.ask_async(
        name, History(client_id, 0, time.time_ns() + 10**12, 10_000).encode()
    )
    *lines, end = reply.splitlines()
    assert end.startswith(b"END "), reply[-200:]
    return lines


async def test_a_gpx_track_imports_and_reads_back_the_same_points(
    client: TestClient[Any, Any],
) -> None:
    body = track(300)
    assert len(body) > 16384  # past max_body_bytes: the import reads its own body
    answer = await post(client, "hiker", body, GPX, 200)
    assert answer == {"imported": 300, "duplicates": 0, "not_kept": 0}
    expected = sorted((t, round(la, 7), round(lo, 7), e) for t, la, lo, e in points_of(body))
    assert sorted(shown(p) for p in await history(client, "hiker")) == expected
    # Exported as GPX (GET .../history?format=gpx), gpxpy reads the same points back.
    export = await client.get("/api/v1/clients/hiker/history", params={"format": "gpx"})
    assert export.status == 200, await export.text()
    exported = points_of(await export.read())
    assert sorted((t, round(la, 7), round(lo, 7), e) for t, la, lo, e in exported) == expected
    # Again: every point is held already.
    again = await post(client, "hiker", body, GPX, 200)
    assert again == {"imported": 0, "duplicates": 300, "not_kept": 0}
    # Half of it again and 100 points after it: only the new ones are sent.
    longer = track(250, first=150)
    both = await post(client, "hiker", longer, GPX, 200)
    assert both == {"imported": 100, "duplicates": 150, "not_kept": 0}
    assert len(await history(client, "hiker")) == 400


async def test_geojson_imports_with_attributes_and_counts_repeats_in_the_file(
    client: TestClient[Any, Any],
) -> None:
    base = int(time.time()) - 3600
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [11.5755, 48.1374, 519.0]},
        "properties": {"time": f"{base}.123456789", "speed": 3.25, "battery": 80, "name": "Van 7"},
    }
    later = json.loads(json.dumps(feature))
    later["properties"]["time"] = base + 60
    document = {"type": "FeatureCollection", "features": [feature, feature, later]}
    answer = await post(client, "van-7", json.dumps(document).encode(), GEOJSON, 200)
    assert answer == {"imported": 2, "duplicates": 1, "not_kept": 0}
    first, second = await history(client, "van-7")
    assert first["client_time"] == f"{base}.123456789"  # every digit
    assert first["attributes"] == {
        "altitude": 519.0,
        "speed": 3.25,
        "battery": 80,
        "name": "Van 7",
    }
    assert second["time"] == base + 60


async def test_a_file_with_one_bad_point_imports_nothing(
    herd: Herd, client: TestClient[Any, Any]
) -> None:
    refused = await post(client, "careful", track(200, bad=150), GPX, 400)
    assert "track 1 segment 1 point 150" in refused["error"]["message"]
    future = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [1, 2]},
                "properties": {"time": t},
            }
            for t in (int(time.time()) - 60, int(time.time()) + 86_400)
        ],
    }
    ahead = await post(client, "careful", json.dumps(future).encode(), GEOJSON, 400)
    assert ahead["error"]["message"].startswith("feature 2: time ")
    assert "in the future" in ahead["error"]["message"]
    # Older than the herd keeps ([history] keep_days = 365): refused, not silently dropped.
    old = await post(client, "careful", track(3, start=START - timedelta(days=400)), GPX, 400)
    assert "keep_days = 365" in old["error"]["message"]
    assert await held_on(herd, "Riley", "careful") == []
    nothing = await post(client, "careful", b"just text", {"Content-Type": "text/plain"}, 415)
    assert "GPX" in nothing["error"]["message"]


async def test_bodies_over_max_import_bytes_are_413(client: TestClient[Any, Any]) -> None:
    big = track(3000)
    assert len(big) > MAX_IMPORT
    told = await post(client, "big", big, GPX, 413)  # Content-Length says so: nothing read
    assert f"{MAX_IMPORT:,}" in told["error"]["message"]

    async def chunks() -> Any:  # no Content-Length: refused once the body grows past it
        for start in range(0, len(big), 50_000):
            yield big[start : start + 50_000]

    response = await client.post("/api/v1/clients/big/history", data=chunks(), headers=GPX)
    assert response.status == 413, await response.text()
    assert await history(client, "big") == []


async def test_a_body_that_falls_behind_is_408(client: TestClient[Any, Any]) -> None:
    # 16 KiB (max_body_bytes) a second is the pace (body_timeout = 1): this one sends 100
    # bytes of its 100,000 and stops.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /api/v1/clients/slow/history HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/gpx+xml\r\nContent-Length: 100000\r\n\r\n" + b" " * 100
    )
    started = time.monotonic()
    status = await asyncio.wait_for(reader.readline(), 10)
    assert status.startswith(b"HTTP/1.1 408"), status
    assert 0.9 < time.monotonic() - started < 5
    writer.close()


async def test_a_deletion_reaches_every_server(herd: Herd, client: TestClient[Any, Any]) -> None:
    body = track(40)
    await post(client, "forgetful", body, GPX, 200)
    times = sorted(t for t, *_ in points_of(body))
    until = times[24]  # the first 25 points go

    async def holds(n: int) -> bool:
        counts = [len(await held_on(herd, name, "forgetful")) for name in NAMES]
        return all(count == n for count in counts)

    await poll_async(lambda: holds(40), 20, "the import on every server")
    response = await client.delete(
        "/api/v1/clients/forgetful/history", params={"until": str(until)}
    )
    assert response.status == 200, await response.text()
    assert await response.json() == {"client_id": "forgetful", "until": str(until)}
    await poll_async(lambda: holds(15), 20, "the deletion on every server")
    kept = await held_on(herd, "Bernard", "forgetful")
    assert all(time_to_ns(line.split()[-1].decode()) > time_to_ns(str(until)) for line in kept)
    # Deleted history stays deleted: importing it again keeps nothing before until.
    again = await post(client, "forgetful", body, GPX, 200)
    assert again == {"imported": 0, "duplicates": 15, "not_kept": 25}


async def test_a_deletion_needs_a_sane_until(client: TestClient[Any, Any]) -> None:
    ahead = str(int(time.time()) + 86_400)
    for query in ({}, {"until": "yesterday"}, {"until": ahead}, {"until": "253402300800"}):
        response = await client.delete("/api/v1/clients/kiwi/history", params=query)
        assert response.status == 400, (query, await response.text())
        assert "until" in (await response.json())["error"]["message"]


async def test_a_dense_history_is_asked_about_point_by_point(
    herd: Herd, client: TestClient[Any, Any]
) -> None:
    # 10,050 points held in the file's window, more than one HISTORY answers (10,000), and 3
    # in the file; the one held is past the first 10,000.
    base = int(time.time()) - 7200
    lines = b"".join(f"IAMAT dense +10.{i:05d}+20 {base}.{i:05d}\n".encode() for i in range(10_050))
    replies = await herd.ask_async("Riley", lines)
    assert replies.count(b"AT ") == 10_050
    document = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": coordinates},
                "properties": {"time": when},
            }
            for coordinates, when in (
                ([20, 10.5], f"{base}.00000"),  # the time of a held point, elsewhere
                ([20, 10.10049], f"{base}.10049"),  # held (sent as +10.10049+20)
                ([20, 10.5], f"{base}.99999"),
            )
        ],
    }
    answer = await post(client, "dense", json.dumps(document).encode(), GEOJSON, 200)
    assert answer == {"imported": 2, "duplicates": 1, "not_kept": 0}


# -- access: the client's device token --------------------------------------------------------

READ = "r-read-token-0123456789"
HIKER = "w-hiker-token-012345678"


@pytest.fixture
async def guarded(herd: Herd, tmp_path: Path, aiohttp_client: Any) -> TestClient[Any, Any]:
    """The gateway of ``herd`` with tokens: a read token, and HIKER for client "guarded"."""
    other = Herd(
        tmp_path,
        gateway=f'read_tokens = ["{READ}"]',
        extra=HERD_EXTRA + f'[gateway.write_tokens]\n"{HIKER}" = "guarded"\n',
    )
    other.ports = herd.ports
    other.write_config()
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(load_config(other.config, env={}))
    )
    return client


async def test_writing_history_needs_the_clients_device_token(
    guarded: TestClient[Any, Any],
) -> None:
    body = track(5)
    url = "/api/v1/clients/guarded/history"
    until = {"until": str(int(time.time()))}
    for token, status in ((None, 401), ("w-unknown-0123456789ab", 401), (READ, 403)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        posted = await guarded.post(url, data=body, headers=GPX | headers)
        assert posted.status == status, await posted.text()
        deleted = await guarded.delete(url, params=until, headers=headers)
        assert deleted.status == status, await deleted.text()
    mine = {"Authorization": f"Bearer {HIKER}"}
    other = await guarded.post(
        "/api/v1/clients/someone-else/history", data=body, headers=GPX | mine
    )
    assert other.status == 403 and "may not report" in await other.text()
    posted = await guarded.post(url, data=body, headers=GPX | mine)
    assert posted.status == 200, await posted.text()
    assert (await posted.json())["imported"] == 5
    deleted = await guarded.delete(url, params=until, headers=mine)
    assert deleted.status == 200, await deleted.text()


# -- metrics --------------------------------------------------------------------------------


async def test_imports_and_deletions_are_counted(herd: Herd, client: TestClient[Any, Any]) -> None:
    def value(text: str, name: str) -> float:
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        return float(line.split()[-1])

    async def scrape() -> str:
        response = await client.get("/metrics")
        assert response.status == 200
        return await response.text()

    await post(client, "counted", track(7), GPX, 200)
    await post(client, "counted", track(7), GPX, 200)
    await post(client, "counted", track(7, bad=2), GPX, 400)
    deleted = await client.delete("/api/v1/clients/counted/history", params={"until": "1"})
    assert deleted.status == 200
    text = await scrape()
    imports = 'herd_gateway_history_imports_total{result="%s"}'
    points = 'herd_gateway_history_import_points_total{outcome="%s"}'
    assert value(text, imports % "imported") == 2
    assert value(text, imports % "refused") == 1
    assert value(text, points % "imported") == 7
    assert value(text, points % "duplicate") == 7
    assert value(text, "herd_gateway_history_deletions_total") == 1
    # The followed server's own figures, from its STATUS.
    await until_synced(client)
    followed = client.app[FEED].subscribed_to

    async def the_servers_figures() -> bool:
        text = await scrape()
        figures = (await herd.status_async(followed))["history"]
        shown = {
            key: value(text, f'{name}{{server="{followed}"}}')
            for key, (name, _) in HERD_HISTORY.items()
        }
        steady = all(shown[key] == figures[key] for key in ("points", "late", "deletions"))
        return (
            steady and figures["points"] >= 7 and figures["deletions"] >= 1 and shown["bytes"] > 0
        )

    await poll_async(the_servers_figures, 20, "STATUS's history figures in /metrics")


@pytest.mark.parametrize(
    "status",
    [
        None,
        {},
        {"history": None},
        {"history": {"points": 1, "late": 0, "deletions": 0}},  # bytes missing
        {"history": {"points": -1, "late": 0, "deletions": 0, "bytes": 0}},
        {"history": {"points": True, "late": 0, "deletions": 0, "bytes": 0}},
        {"history": {"points": 1.5, "late": 0, "deletions": 0, "bytes": 0}},
    ],
)
def test_a_status_without_whole_history_figures_shows_none(status: Any) -> None:
    assert herd_history(status) is None
    figures = {"points": 3, "late": 1, "deletions": 0, "bytes": 4096}
    assert herd_history({"history": figures, "records": 1}) == figures


async def test_the_document_lists_both_writes_on_the_history_path(
    client: TestClient[Any, Any],
) -> None:
    spec = await (await client.get("/api/v1/openapi.json")).json()
    operations = spec["paths"]["/api/v1/clients/{client_id}/history"]
    assert {method: op["operationId"] for method, op in operations.items()} == {
        "get": "getHistory",
        "post": "importHistory",
        "delete": "deleteHistory",
    }
    assert f"{MAX_IMPORT:,}" in spec["info"]["description"]  # [gateway] max_import_bytes
