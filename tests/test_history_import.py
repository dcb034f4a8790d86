"""History imports, with no sockets: GPX written by gpxpy imported and exported again, real
files from other programs (tests/payloads/gpx and geojson, see their READMEs), refusals that
name the bad point, and hostile XML (entity expansion, external entities, deep nesting)."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import gpxpy
import gpxpy.gpx
import pytest

from gateway.history import (
    ImportedPoint,
    ImportRefused,
    geojson_chunks,
    gpx_chunks,
    parse_geojson,
    parse_gpx,
    parse_import,
)

pytestmark = pytest.mark.timeout(60)

PAYLOADS = Path(__file__).parent / "payloads"
NOW = 1_800_000_000.0
LIMITS: dict[str, Any] = {"now": NOW, "max_future": 60.0, "max_bytes": 1 << 20}
START = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
FULL = {
    "altitude": 12.5,
    "speed": 3.25,
    "heading": 271.0,
    "accuracy": 5.0,
    "battery": 80.0,
    "charging": True,
    "heartbeat": False,
    "trigger": "p",
    "event": "ping",
    "alarm": "sos",
    "name": 'Van <7> & "co"',
    "motion": ["driving", "stationary"],
    "regions": ["home", "work"],
    "transition": {"event": "enter", "region": "home"},
}


def gpxpy_track(n: int) -> bytes:
    """A real track as gpxpy writes it: one trk, one trkseg, n points a second apart."""
    gpx = gpxpy.gpx.GPX()
    track = gpxpy.gpx.GPXTrack(name="walk")
    gpx.tracks.append(track)
    segment = gpxpy.gpx.GPXTrackSegment()
    track.segments.append(segment)
    for i in range(n):
        segment.points.append(
            gpxpy.gpx.GPXTrackPoint(
                46.05 + i * 1e-4,
                14.5 - i * 2e-4,
                elevation=295.5 + i,
                time=START + timedelta(seconds=i),
            )
        )
    return gpx.to_xml().encode()


def shown(point: ImportedPoint) -> dict[str, Any]:
    """An imported point as the gateway would show it once the herd holds it."""
    return {
        "lat": point.lat,
        "lon": point.lon,
        "client_time": point.client_time,
        "attributes": point.attributes,
    }


# -- round trips --------------------------------------------------------------------------------


def test_gpxpy_track_imports_then_exports_the_same_points() -> None:
    imported = parse_import(gpxpy_track(50), "application/gpx+xml", **LIMITS)
    assert imported.format == "gpx" and imported.duplicates == 0
    assert len(imported.points) == 50
    first = imported.points[0]
    assert (first.lat, first.lon, first.client_time) == (46.05, 14.5, "1714564800.25")
    assert first.attributes == {"altitude": 295.5}

    exported = b"".join(gpx_chunks("walker", [shown(p) for p in imported.points]))
    again = gpxpy.parse(exported.decode()).tracks[0].segments[0].points
    original = gpxpy.parse(gpxpy_track(50).decode()).tracks[0].segments[0].points
    assert [(p.latitude, p.longitude, p.elevation, p.time) for p in again] == [
        (p.latitude, p.longitude, p.elevation, p.time) for p in original
    ]
    assert parse_gpx(exported, **LIMITS).points == imported.points


def test_geojson_export_imports_to_the_same_points() -> None:
    points = parse_import(gpxpy_track(20), None, **LIMITS).points
    exported = b"".join(geojson_chunks("walker", lambda: iter([shown(p) for p in points])))
    again = parse_import(exported, "application/geo+json", **LIMITS)
    assert again.format == "geojson" and again.points == points  # the trail is skipped


@pytest.mark.parametrize("writer", ["gpx", "geojson"])
def test_every_attribute_survives_an_export_and_import(writer: str) -> None:
    point = {"lat": -33.9, "lon": 151.2, "client_time": "1733580000.123456", "attributes": FULL}
    if writer == "gpx":
        body = b"".join(gpx_chunks("van", [point]))
    else:
        body = b"".join(geojson_chunks("van", lambda: iter([point])))
    (imported,) = parse_import(body, None, **LIMITS).points
    assert imported.attributes == FULL
    assert imported.client_time == "1733580000.123456"


def test_nanoseconds_survive_geojson_and_microseconds_gpx() -> None:
    point = {"lat": 1.0, "lon": 2.0, "client_time": "1733580000.123456789", "attributes": {}}
    geojson = b"".join(geojson_chunks("van", lambda: iter([point])))
    assert parse_import(geojson, None, **LIMITS).points[0].client_time == "1733580000.123456789"
    gpx = b"".join(gpx_chunks("van", [point]))  # gpxpy reads times to the microsecond
    assert parse_import(gpx, None, **LIMITS).points[0].client_time == "1733580000.123456"


# -- real files ---------------------------------------------------------------------------------

FIXTURES = [
    # file, points, duplicates, (lat, lon, time) of the first and of the last
    ("gpx/gpxpy-sloth-at-lemans.gpx", 17, 0, (47.951649874, 0.206558027, "1372183600"),
     (47.951649873, 0.206558028, "1372270020")),
    ("gpx/gpxpy-garmin-tpx.gpx", 3, 0, (43.8, 9.7, "1511090587"), (1.1, 2.2, "1511091852")),
    ("gpx/dawarich-gpslogger.gpx", 1, 0, (10.758321212464024, 106.64234449272531,
     "1730626211.331"), (10.758321212464024, 106.64234449272531, "1730626211.331")),
    ("gpx/dawarich-arc.gpx", 7, 0, (16.822590884135522, 100.26450188975753, "1734439205"),
     (16.821949486294397, 100.26482772930362, "1734486285")),
    ("geojson/dawarich-gpslogger.geojson", 1, 0, (10.758321212464024, 106.64234449272531,
     "1730626211.331"), (10.758321212464024, 106.64234449272531, "1730626211.331")),
    ("geojson/dawarich-export.geojson", 10, 0, (0.1, 0.1, "1609459201"),
     (1.0, 1.0, "1609459210")),
    ("geojson/togeojson-empty-ele.geojson", 1, 1, (38.892101, -77.01059, "1178896926"),
     (38.892101, -77.01059, "1178896926")),
    ("geojson/togeojson-missing-hr.geojson", 16, 0, (47.8728961386, 13.8153798692,
     "1495857600"), (47.8728688974, 13.8153921068, "1495857722")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "count", "duplicates", "first", "last"), FIXTURES)
def test_real_files(
    name: str,
    count: int,
    duplicates: int,
    first: tuple[float, float, str],
    last: tuple[float, float, str],
) -> None:
    result = parse_import((PAYLOADS / name).read_bytes(), None, **LIMITS)
    assert (len(result.points), result.duplicates) == (count, duplicates)
    assert (result.points[0].lat, result.points[0].lon, result.points[0].client_time) == first
    assert (result.points[-1].lat, result.points[-1].lon, result.points[-1].client_time) == last
    assert [p.seconds for p in result.points] == sorted(p.seconds for p in result.points)


def test_real_files_attributes() -> None:
    def points(name: str) -> list[ImportedPoint]:
        return parse_import((PAYLOADS / name).read_bytes(), None, **LIMITS).points

    # GPSLogger's speed in Garmin's TrackPointExtension v2; its hdop/sat are not attributes.
    assert points("gpx/dawarich-gpslogger.gpx")[0].attributes == {
        "speed": 2.8,
        "altitude": 17.634344400269068,
    }
    assert points("geojson/dawarich-gpslogger.geojson")[0].attributes == {
        "accuracy": 4.7551565,
        "altitude": 17.634344400269068,
        "speed": 1.2,
    }
    assert points("geojson/dawarich-export.geojson")[0].attributes == {
        "battery": 1.0,
        "altitude": 1.0,
        "trigger": "background_event",
        "accuracy": 1.0,
    }
    assert points("geojson/togeojson-missing-hr.geojson")[0].attributes == {"altitude": 434.94}


def test_real_file_without_times_is_refused_whole() -> None:
    body = (PAYLOADS / "gpx/gpxpy-gpx11-all-fields.gpx").read_bytes()
    with pytest.raises(ImportRefused, match=r"^route 1 point 2: no time") as refused:
        parse_import(body, "application/gpx+xml", **LIMITS)
    assert refused.value.status == 400


# -- refusals name the point --------------------------------------------------------------------


def gpx(points: str, version: str = "1.1") -> bytes:
    return (
        f'<?xml version="1.0"?><gpx version="{version}" creator="t" '
        f'xmlns="http://www.topografix.com/GPX/1/{version[-1]}">{points}</gpx>'
    ).encode()


def trkpt(i: int, lat: str = "46.0", lon: str = "14.0", inner: str | None = None) -> str:
    inner = inner if inner is not None else f"<time>2024-05-01T12:00:{i % 60:02d}Z</time>"
    return f'<trkpt lat="{lat}" lon="{lon}">{inner}</trkpt>'


def track(*points: str) -> str:
    return f"<trk><trkseg>{''.join(points)}</trkseg></trk>"


GOOD = [trkpt(i) for i in range(36)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (gpx(track(*GOOD, trkpt(36, inner=""))), "track 1 segment 1 point 37: no time"),
        (gpx(track(*GOOD, trkpt(36, inner="<time>yesterday</time>"))),
         "track 1 segment 1 point 37: no time (missing, or not ISO 8601)"),
        (gpx(track(trkpt(0)) + track(trkpt(0), trkpt(1, lat="91"))),
         "track 2 segment 1 point 2: latitude must be from -90 to 90"),
        (gpx(track(trkpt(0, lon="east"))), "track 1 segment 1 point 1: longitude is not a number"),
        (gpx(track(trkpt(0, lon="nan"))), "track 1 segment 1 point 1: longitude is not a number"),
        (gpx('<wpt lat="1"><time>2024-05-01T12:00:00Z</time></wpt>'), "waypoint 1: no longitude"),
        (gpx(track(trkpt(0, inner="<ele>high</ele><time>2024-05-01T12:00:00Z</time>"))),
         "track 1 segment 1 point 1: <ele> is not a number"),
        (gpx(track(trkpt(0, inner="<time>2024-05-01T12:00:00Z</time><speed>x</speed>")), "1.0"),
         "track 1 segment 1 point 1: <speed> is not a number"),
        (gpx('<rte><rtept lat="1" lon="2"><time>1969-12-31T23:59:59Z</time></rtept></rte>'),
         "route 1 point 1: time is before 1970"),
        (gpx(track(trkpt(0, inner="<time>2027-01-15T08:01:01Z</time>"))),
         "track 1 segment 1 point 1: time 2027-01-15T08:01:01Z is more than 60 s in the future"),
    ],
)  # fmt: skip
def test_gpx_refusals_name_the_point(body: bytes, message: str) -> None:
    with pytest.raises(ImportRefused) as refused:
        parse_gpx(body, **LIMITS)
    assert refused.value.status == 400
    assert refused.value.message.startswith(message), refused.value.message


def test_a_gpx_10_speed_is_read_and_a_gpx_11_one_ignored() -> None:
    inner = "<time>2024-05-01T12:00:00Z</time><course>90</course><speed>2.5</speed>"
    (point,) = parse_gpx(gpx(track(trkpt(0, inner=inner)), "1.0"), **LIMITS).points
    assert point.attributes == {"heading": 90.0, "speed": 2.5}
    (point,) = parse_gpx(gpx(track(trkpt(0, inner=inner))), **LIMITS).points
    assert point.attributes == {}  # not GPX 1.1 elements: gpxpy does not read them


def feature(geometry: Any, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def point(lon: Any, lat: Any, **properties: Any) -> dict[str, Any]:
    return feature({"type": "Point", "coordinates": [lon, lat]}, **properties)


def collection(*features: Any) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


LINE = {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (collection(point(1, 2, time=1e9), point(1, 2)), "feature 2: no time"),
        (collection(point(1, 2, time="noon")), "feature 1: time must be POSIX seconds"),
        (collection(point(1, 95, time=1e9)), "feature 1: latitude must be from -90 to 90"),
        (collection(point(1, True, time=1e9)), "feature 1: latitude is not a number"),
        (collection(point(181, 0, time=1e9)), "feature 1: longitude must be from -180 to 180"),
        (collection(feature({"type": "Point", "coordinates": [1]}, time=1e9)),
         "feature 1: a position must be"),
        (collection(feature(LINE)), "feature 1 point 1: no time (a line needs coordTimes"),
        (collection(feature(LINE, coordTimes=[1e9])), "feature 1 point 1: no time"),
        (collection(feature(LINE, times=[1e9, None])), "feature 1 point 2: no time"),
        (collection(feature({"type": "MultiLineString", "coordinates": [[[1, 2]]]})),
         "feature 1 line 1 point 1: no time"),
        (collection(feature({"type": "Polygon", "coordinates": []}, time=1)),
         "feature 1: a Polygon is not a point or a track"),
        (collection(feature(None, time=1)), "feature 1: a feature needs a geometry"),
        (collection(point(1, 2, time=NOW + 61)), "feature 1: time 2027-01-15T08:01:01Z is more"),
        (collection(point(1, 2, time=-1)), "feature 1: time is negative"),
        (b'{"type": "Topology"}', "expected a GeoJSON FeatureCollection or Feature"),
        (b'{"type": "FeatureCollection", "features": [', "not GeoJSON: malformed JSON"),
        (b"[" * 100 + b"]" * 100, "not GeoJSON: JSON nested deeper than 32 levels"),
    ],
)  # fmt: skip
def test_geojson_refusals_name_the_point(body: bytes, message: str) -> None:
    with pytest.raises(ImportRefused) as refused:
        parse_geojson(body, **LIMITS)
    assert refused.value.status == 400
    assert refused.value.message.startswith(message), refused.value.message


@pytest.mark.parametrize(
    ("time_value", "client_time"),
    [
        (1714564800, "1714564800"),
        ("1714564800.5", "1714564800.5"),
        (1714564800500, "1714564800.5"),  # milliseconds, the phones' rule
        ("2024-05-01T14:00:00.5+02:00", "1714564800.5"),
        ("2024-05-01T12:00:00", "1714564800"),  # naive is UTC
    ],
)
def test_geojson_times(time_value: Any, client_time: str) -> None:
    (imported,) = parse_geojson(collection(point(1, 2, time=time_value)), **LIMITS).points
    assert imported.client_time == client_time
    assert imported.seconds == Decimal(client_time)


def test_geojson_line_times_and_elevations() -> None:
    line = {"type": "LineString", "coordinates": [[1, 2, 300], ["3", "4"]]}
    nested = feature(line, coordinateProperties={"times": ["2024-05-01T12:00:00Z", 1714564801]})
    result = parse_geojson(collection(nested), **LIMITS)
    assert [(p.lat, p.lon, p.client_time, p.attributes) for p in result.points] == [
        (2.0, 1.0, "1714564800", {"altitude": 300.0}),
        (4.0, 3.0, "1714564801", {}),
    ]


def test_duplicates_are_counted_not_returned() -> None:
    same = trkpt(0)
    elsewhere = trkpt(0, lat="46.5")  # the same time at another place is another point
    result = parse_gpx(gpx(track(same, same, elsewhere) + track(same)), **LIMITS)
    assert (len(result.points), result.duplicates) == (2, 2)


def test_out_of_range_attributes_are_left_out_not_refused() -> None:
    body = collection(point(1, 2, time=1e9, battery=150, speed=-1, accuracy=3, unknown="x"))
    (imported,) = parse_geojson(body, **LIMITS).points
    assert imported.attributes == {"accuracy": 3.0}


# -- limits and media types ---------------------------------------------------------------------


def test_byte_limit() -> None:
    with pytest.raises(ImportRefused, match="over 100 bytes") as refused:
        parse_import(gpxpy_track(5), None, now=NOW, max_future=60, max_bytes=100)
    assert refused.value.status == 413


@pytest.mark.parametrize("kind", ["gpx", "geojson"])
def test_point_limit(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.history import _gpx, _points

    monkeypatch.setattr(_points, "MAX_IMPORT_POINTS", 10)
    monkeypatch.setattr(_gpx, "MAX_IMPORT_POINTS", 10)
    if kind == "gpx":
        body = gpx(track(*(trkpt(i) for i in range(11))))
    else:
        body = collection(*(point(1, 2, time=1e9 + i) for i in range(11)))
    with pytest.raises(ImportRefused, match="more than 10 points") as refused:
        parse_import(body, None, **LIMITS)
    assert refused.value.status == 413


@pytest.mark.parametrize(
    ("content_type", "body", "kind"),
    [
        ("application/gpx+xml; charset=utf-8", gpx(track(trkpt(0))), "gpx"),
        ("text/xml", gpx(track(trkpt(0))), "gpx"),
        ("application/octet-stream", b"\xef\xbb\xbf" + gpx(track(trkpt(0))), "gpx"),
        ("application/geo+json", collection(point(1, 2, time=1e9)), "geojson"),
        (None, b"  " + collection(point(1, 2, time=1e9)), "geojson"),
        (None, b"\xef\xbb\xbf" + collection(point(1, 2, time=1e9)), "geojson"),
    ],
)
def test_media_types(content_type: str | None, body: bytes, kind: str) -> None:
    assert parse_import(body, content_type, **LIMITS).format == kind


def test_neither_gpx_nor_geojson_is_415() -> None:
    with pytest.raises(ImportRefused) as refused:
        parse_import(b"lat,lon,time\n1,2,3\n", "text/csv", **LIMITS)
    assert refused.value.status == 415


# -- hostile XML --------------------------------------------------------------------------------

LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE gpx [\n<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{i} "{(f"&lol{i - 1};" if i > 1 else "&lol;") * 10}">\n' for i in range(1, 10)
    )
    + ']>\n<gpx version="1.1" creator="&lol9;"><wpt lat="1" lon="2"><name>&lol9;</name>'
    "<time>2024-05-01T12:00:00Z</time></wpt></gpx>"
).encode()


@pytest.mark.parametrize(
    "body",
    [
        LAUGHS,
        b'<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<gpx version="1.1"><wpt lat="1" lon="2"><name>&x;</name></wpt></gpx>',
        b'<!DOCTYPE gpx SYSTEM "http://example.invalid/gpx.dtd"><gpx version="1.1"/>',
    ],
    ids=["billion-laughs", "external-entity", "external-dtd"],
)
def test_a_dtd_is_refused_before_anything_expands(body: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(ImportRefused, match="DOCTYPE and entity declarations are refused"):
        parse_import(body, "application/gpx+xml", **LIMITS)
    assert time.perf_counter() - started < 1.0


def test_repeated_xmlns_is_refused_before_gpxpy_scans_it() -> None:
    # gpxpy's namespace regex rescans the rest of the text at every " xmlns": quadratic.
    body = gpx(track(trkpt(0)) + "<!--" + " xmlns" * 100_000 + "-->")
    started = time.perf_counter()
    with pytest.raises(ImportRefused, match="more than 64 xmlns"):
        parse_gpx(body, **LIMITS)
    assert time.perf_counter() - started < 1.0


LATIN = gpx(track(trkpt(0))).replace(b'"1.0"?', b'"1.0" encoding="latin-1"?')


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'<gpx version="1.1"><trk></gpx>', "not well-formed XML: mismatched tag, line 1"),
        (gpx(track(trkpt(0))).replace(b'"t"', b'"\xe9"'), "not well-formed XML: not well-formed"),
        (LATIN.replace(b'"t"', b'"\xe9"'), "the GPX file is not UTF-8"),
        (
            b'<kml xmlns="http://www.opengis.net/kml/2.2"/>',
            "not a GPX file: its root element is <kml>",
        ),
        (gpx("<extensions>" * 40 + "</extensions>" * 40), "XML nested deeper than 32 elements"),
    ],
)
def test_malformed_gpx_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(ImportRefused) as refused:
        parse_gpx(body, **LIMITS)
    assert refused.value.message.startswith(message), refused.value.message


def test_uploads_do_not_change_elementtrees_namespace_prefixes() -> None:
    prefixes = dict(ElementTree._namespace_map)  # type: ignore[attr-defined]
    body = gpx(track(trkpt(0))).replace(b"<gpx ", b'<gpx xmlns:evil="urn:evil" ')
    parse_gpx(body, **LIMITS)
    assert ElementTree._namespace_map == prefixes  # type: ignore[attr-defined]
