"""The history exports, with no sockets: GPX 1.1 and GeoJSON read back by gpxpy and json,
escaping, left-out points, chunk sizes, and bounded memory over 200,000 points."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import gpxpy
import pytest

from gateway.history import (
    CHUNK_BYTES,
    GPXTPX_NAMESPACE,
    HERD_NAMESPACE,
    ExportStats,
    geojson_chunks,
    gpx_chunks,
    iso_time,
)

pytestmark = pytest.mark.timeout(120)

FULL = {
    "altitude": 12.5,
    "speed": 3.25,
    "heading": 271.0,
    "accuracy": 5.0,
    "battery": 80.0,
    "charging": True,
    "trigger": "p",
    "name": 'Van <7> & "co"',
    "motion": ["driving", "stationary"],
    "regions": ["home"],
    "transition": {"event": "enter", "region": "home"},
}


def shown(i: int, **extra: Any) -> dict[str, Any]:
    """A point as records.record_json shows it."""
    point: dict[str, Any] = {
        "client_id": "van",
        "lat": 48.0 + i * 1e-4,
        "lon": 11.0 - i * 1e-4,
        "location": "",
        "client_time": f"{1_733_580_000 + i}.25",
        "time": 1_733_580_000 + i + 0.25,
        "server": "Riley",
        "time_diff": "+0.000100000",
        "at": "",
        "attributes": {},
    }
    point.update(extra)
    return point


def gpx_text(points: list[dict[str, Any]], client_id: str = "van", **kw: Any) -> str:
    return b"".join(gpx_chunks(client_id, points, **kw)).decode()


def geojson(points: list[dict[str, Any]], client_id: str = "van", **kw: Any) -> Any:
    return json.loads(b"".join(geojson_chunks(client_id, lambda: iter(points), **kw)))


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ({"client_time": "1733580000.123456789"}, "2024-12-07T14:00:00.123456789Z"),
        ({"client_time": "1733580000.1234567891234"}, "2024-12-07T14:00:00.123456789Z"),
        ({"client_time": "1733580000.500"}, "2024-12-07T14:00:00.5Z"),
        ({"client_time": "1733580000.000"}, "2024-12-07T14:00:00Z"),
        ({"client_time": "0"}, "1970-01-01T00:00:00Z"),
        ({"client_time": "253402300799"}, "9999-12-31T23:59:59Z"),
        ({"client_time": "253402300800"}, None),  # past the herd's latest time
        ({"client_time": "1e9", "time": 1.5}, "1970-01-01T00:00:01.5Z"),  # shown time instead
        ({"client_time": "nope", "time": None}, None),
        ({"time": float("nan")}, None),
        ({"time": -1.0}, None),
        ({}, None),
    ],
)
def test_iso_time(point: dict[str, Any], expected: str | None) -> None:
    assert iso_time(point) == expected


def test_gpx_reads_back_with_gpxpy() -> None:
    points = [shown(0, attributes=FULL), shown(1), shown(2, attributes={"altitude": -3.0})]
    gpx = gpxpy.parse(gpx_text(points))
    assert gpx.version == "1.1" and gpx.creator == "herd"
    (track,) = gpx.tracks
    assert track.name == "van"
    read = track.segments[0].points
    assert [(p.latitude, p.longitude) for p in read] == [(p["lat"], p["lon"]) for p in points]
    assert [p.elevation for p in read] == [12.5, None, -3.0]
    assert read[0].time == datetime(2024, 12, 7, 14, 0, 0, 250000, tzinfo=UTC)
    tags = {e.tag.partition("}")[0][1:] for e in read[0].extensions}
    assert tags == {GPXTPX_NAMESPACE, HERD_NAMESPACE}
    garmin = next(e for e in read[0].extensions if e.tag.endswith("TrackPointExtension"))
    assert [(c.tag.rpartition("}")[2], c.text) for c in garmin] == [
        ("speed", "3.25"),
        ("course", "271.0"),
    ]
    ours = [(e.tag.rpartition("}")[2], e.text, e.attrib) for e in read[0].extensions[1:]]
    assert ("name", 'Van <7> & "co"', {}) in ours
    assert ("motion", "driving", {}) in ours and ("motion", "stationary", {}) in ours
    assert ("transition", None, {"event": "enter", "region": "home"}) in ours
    assert ("charging", "true", {}) in ours
    assert not read[1].extensions


def test_gpx_escapes_what_xml_cannot_hold() -> None:
    client_id = "a<b>&\"c'\x01\ud800"
    text = gpx_text([shown(0, attributes={"name": "x\x1fy]]>"})], client_id=client_id)
    gpx = gpxpy.parse(text)  # well-formed, whatever the client ID holds
    assert gpx.tracks[0].name == "a<b>&\"c'\ufffd\ufffd"
    (name,) = (e for e in gpx.tracks[0].segments[0].points[0].extensions)
    assert name.text == "x\ufffdy]]>"


def test_gpx_leaves_out_unusable_attributes_and_keys() -> None:
    attributes = {"bad key": 1, "xmlfoo": 2, "speed": float("nan"), "nested": [[1]], "ok": 1}
    text = gpx_text([shown(0, attributes=attributes)])
    assert "bad key" not in text and "xmlfoo" not in text and "nan" not in text.lower()
    assert "<herd:ok>1</herd:ok>" in text
    gpxpy.parse(text)


def test_points_without_location_or_time_are_left_out_and_counted() -> None:
    points = [shown(0), shown(1, lat=None, lon=None), shown(2, client_time="x", time=None)]
    stats = ExportStats()
    text = gpx_text(points, stats=stats)
    assert stats == ExportStats(written=1, skipped=2)
    assert "points left out (no location or time): 2" in text
    assert len(gpxpy.parse(text).tracks[0].segments[0].points) == 1
    stats = ExportStats()
    document = geojson(points, stats=stats)
    assert stats == ExportStats(written=1, skipped=2) and document["skipped"] == 2


def test_an_empty_history_is_a_valid_document() -> None:
    gpx = gpxpy.parse(gpx_text([]))
    assert gpx.tracks[0].segments[0].points == []
    assert geojson([]) == {
        "type": "FeatureCollection",
        "client_id": "van",
        "features": [],
        "skipped": 0,
    }


def test_geojson_shape() -> None:
    points = [shown(0, attributes=FULL), shown(1), shown(2)]
    document = geojson(points)
    assert document["type"] == "FeatureCollection" and document["client_id"] == "van"
    line, *features = document["features"]
    assert line["properties"] == {"client_id": "van", "herd": "trail"}
    assert line["geometry"] == {
        "type": "LineString",
        "coordinates": [[p["lon"], p["lat"]] for p in points],  # longitude first
    }
    assert [f["geometry"]["coordinates"] for f in features] == line["geometry"]["coordinates"]
    first = features[0]["properties"]
    assert first == {
        "time": "2024-12-07T14:00:00.25Z",
        "client_time": "1733580000.25",
        "server": "Riley",
        "time_diff": "+0.000100000",
        **FULL,
    }


def test_geojson_has_no_linestring_under_two_points() -> None:
    (feature,) = geojson([shown(0)])["features"]  # RFC 7946: a LineString has two or more
    assert feature["geometry"]["type"] == "Point"


def test_geojson_reads_its_source_twice_and_stays_json() -> None:
    calls = 0
    points = [shown(0, attributes={"big": 2**70, "nan": float("nan"), "time": "mine"})]

    def source() -> Iterator[dict[str, Any]]:
        nonlocal calls
        calls += 1
        return iter(points * 2)

    document = json.loads(b"".join(geojson_chunks("van", source)))
    assert calls == 2
    properties = document["features"][1]["properties"]
    # A record key wins over an attribute of the same name; nothing makes it invalid JSON.
    assert properties["time"] == "2024-12-07T14:00:00.25Z"
    assert properties["big"] == 2**70 and properties["nan"] is None


def test_geojson_needs_a_fresh_iterator_for_its_second_pass() -> None:
    once = iter([shown(0), shown(1)])
    with pytest.raises(ValueError, match="fresh iterator"):
        list(geojson_chunks("van", lambda: once))


@pytest.mark.parametrize("writer", ["gpx", "geojson"])
def test_chunks_are_bounded(writer: str) -> None:
    points = [shown(i, attributes=FULL) for i in range(5000)]
    if writer == "gpx":
        chunks = list(gpx_chunks("van", points))
    else:
        chunks = list(geojson_chunks("van", lambda: iter(points)))
    assert len(chunks) > 5
    # A chunk is cut after the point that reaches CHUNK_BYTES: at most one point over.
    assert all(len(chunk) < CHUNK_BYTES + 2048 for chunk in chunks)


def lazy_points(n: int) -> Iterator[dict[str, Any]]:
    """n points made one at a time; one dict, updated in place, so that the allocations
    tracemalloc traces (and slows) are the writer's, not the generator's."""
    point = shown(0, attributes={"altitude": 500.0, "speed": 1.5, "battery": 50.0})
    for i in range(n):
        point["lat"] = 48.0 + (i % 1000) * 1e-4
        point["client_time"] = str(1_733_580_000 + i)
        yield point


@pytest.mark.parametrize("writer", ["gpx", "geojson"])
def test_200000_points_stream_in_bounded_memory(writer: str) -> None:
    n = 200_000
    stats = ExportStats()
    tracemalloc.start()
    try:
        if writer == "gpx":
            chunks = gpx_chunks("van", lazy_points(n), stats)
        else:
            chunks = geojson_chunks("van", lambda: lazy_points(n), stats)
        size = sum(len(chunk) for chunk in chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.written == n
    assert size > 40 * 1024 * 1024  # tens of MB written ...
    assert peak < 3 * 1024 * 1024, f"peak {peak} bytes"  # ... through a few hundred KB
