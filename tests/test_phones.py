"""Phone-app payloads to herd reports, with no sockets: the exact examples of
``shared/reference/phone-apps.md``, every error path, and properties (hypothesis)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.protocol import IAmAt, parse_line, parse_location
from gateway import phones
from gateway.errors import ApiError
from gateway.phones import (
    MAX_BATCH,
    MAX_CLIENT_ID,
    MAX_JSON_DEPTH,
    Entry,
    Heartbeat,
    PhoneError,
    Report,
    Skipped,
    load_json,
    parse_time,
    report,
)

NOW_NS = 1_750_000_123_456_789_012
NOW = "1750000123.456789012"
JSON = "application/json; charset=utf-8"
FORM = "application/x-www-form-urlencoded"
# No example database: the suite must not write files into the tree.
FEW = settings(max_examples=150, deadline=None, database=None)


# These tests are about positions, IDs and times: the parsers below leave out attributes,
# which tests/test_phone_corpus.py and tests/test_phone_fixes.py check.
def bare(entries: list[Entry]) -> list[Entry]:
    return [dataclasses.replace(e, attributes={}) if isinstance(e, Report) else e for e in entries]


def owntracks(*args: Any, **kwargs: Any) -> list[Entry]:
    return bare(phones.owntracks(*args, **kwargs))


def traccar(*args: Any, **kwargs: Any) -> list[Entry]:
    return bare(phones.traccar(*args, **kwargs))


def overland(*args: Any, **kwargs: Any) -> list[Entry]:
    return bare(phones.overland(*args, **kwargs))


def query_of(url: str) -> dict[str, str]:
    """The query of a URL as aiohttp's ``request.query`` presents it (first value wins)."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        params.setdefault(key, value)
    return params


def iamat(r: Report) -> IAmAt:
    command = parse_line(r.command())
    assert isinstance(command, IAmAt)
    return command


def fails(message: str, call: Callable[[], object]) -> None:
    with pytest.raises(PhoneError) as caught:
        call()
    assert caught.value.status == 400
    assert caught.value.message == message
    assert str(caught.value) == message


def skipped(message: str, entries: list[Entry]) -> None:
    assert message in [e.message for e in entries if isinstance(e, Skipped)], entries


# -- OwnTracks -----------------------------------------------------------------------------

OWNTRACKS_ANDROID = (
    b'{"_type":"location","created_at":25,"_id":"dummyTestId","batt":30,"bs":2,"acc":10,'
    b'"vac":1,"lat":50.1,"lon":60.2,"alt":20,"vel":5,"cog":56,"tst":123456789,"m":1,'
    b'"conn":"TestConn","inregions":["Testregion1","Testregion2"],"BSSID":"12:34:56:78",'
    b'"SSID":"Wifi SSID"}'
)
OWNTRACKS_WIRE = OWNTRACKS_ANDROID[:-1] + b',"tid":"JJ","topic":"owntracks/jane/phone"}'


def test_owntracks_android_example_without_topic_gets_recorder_defaults() -> None:
    assert owntracks(OWNTRACKS_ANDROID, {}, {}, NOW_NS) == [
        Report("owntracks/owntracks/phone", 50.1, 60.2, "123456789")
    ]


def test_owntracks_topic_is_the_id_as_it_is() -> None:
    [r] = owntracks(OWNTRACKS_WIRE, {"Content-Type": JSON}, {}, NOW_NS)
    assert r == Report("owntracks/jane/phone", 50.1, 60.2, "123456789")
    assert r.command() == b"IAMAT owntracks/jane/phone +50.1+60.2 123456789\n"
    mixed = OWNTRACKS_ANDROID[:-1] + b',"topic":"owntracks/Jane/Phone"}'
    assert owntracks(mixed, {}, {}, NOW_NS)[0].client_id == "owntracks/Jane/Phone"


@pytest.mark.parametrize(
    ("headers", "query", "client_id"),
    [
        ({"X-Limit-U": "Jane", "X-Limit-D": "Pixel"}, {}, "owntracks/jane/pixel"),
        ({"x-limit-u": "jane", "X-LIMIT-D": "pixel"}, {}, "owntracks/jane/pixel"),
        ({"X-Limit-U": "user", "X-Limit-D": "device"}, {}, "owntracks/user/device"),  # iOS
        ({"X-Limit-U": "jane"}, {}, "owntracks/jane/phone"),
        ({}, {"u": "Bob", "d": "Tab"}, "owntracks/bob/tab"),
        ({}, {"d": "tab"}, "owntracks/owntracks/tab"),
        ({"X-Limit-U": "jane"}, {"u": "bob", "d": "tab"}, "owntracks/jane/tab"),
        ({"X-Limit-U": ""}, {"u": "bob"}, "owntracks/bob/phone"),
    ],
)
def test_owntracks_id_from_headers_then_query_before_topic(
    headers: dict[str, str], query: dict[str, str], client_id: str
) -> None:
    [r] = owntracks(OWNTRACKS_WIRE, headers, query, NOW_NS)
    assert r == Report(client_id, 50.1, 60.2, "123456789")


@pytest.mark.parametrize("topic", ["owntracks/jane", "other/jane/phone", "owntracks/a/b/c", 7])
def test_owntracks_other_topics_are_ignored(topic: object) -> None:
    body = json.dumps({"_type": "location", "lat": 1, "lon": 2, "tst": 3, "topic": topic})
    assert owntracks(body.encode(), {}, {}, NOW_NS)[0].client_id == "owntracks/owntracks/phone"


@pytest.mark.parametrize(
    "kind",
    [
        *("waypoint", "waypoints", "card", "lwt", "status", "steps", "beacon"),
        *("cmd", "configuration", "LOCATION"),
    ],
)
def test_owntracks_other_messages_report_nothing(kind: str) -> None:
    body = json.dumps({"_type": kind, "lat": 1, "lon": 2, "tst": 3, "data": "x"})
    assert owntracks(body.encode(), {}, {}, NOW_NS) == []


def test_owntracks_empty_body_reports_nothing() -> None:
    assert owntracks(b"", {}, {}, NOW_NS) == []


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (
            b'{"_type":"location",}',
            {},
            "malformed JSON at character 20: Expecting property name enclosed in double quotes",
        ),
        (b'{"_type":"location","lon":2,"tst":3}', {}, "OwnTracks location has no lat"),
        (b'{"_type":"location","lat":1,"tst":3}', {}, "OwnTracks location has no lon"),
        (
            b'{"_type":"location","lat":91,"lon":2,"tst":3}',
            {},
            "lat must be a number between -90 and 90",
        ),
        (
            b'{"_type":"location","lat":1,"lon":"e","tst":3}',
            {},
            "lon must be a number between -180 and 180",
        ),
        (b'{"_type":"location","lat":1,"lon":2,"tst":-3}', {}, "tst is negative"),
    ],
)
def test_owntracks_errors(body: bytes, headers: dict[str, str], message: str) -> None:
    fails(message, lambda: owntracks(body, headers, {}, NOW_NS))


# -- Traccar / OsmAnd ----------------------------------------------------------------------

GEN_A = (
    "http://localhost:5055?id=123456789012345&timestamp=619315200&lat=0.0&lon=0.0&speed=0.0"
    "&bearing=0.0&altitude=0.0&accuracy=0.0&batt=0.0"
)
GEN_B = (
    b'{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,'
    b'"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,'
    b'"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},'
    b'"activity":{"type":"still"},"extras":{},"_":"&id=48241179&lat=37.4219983&lon=-122.084'
    b'&timestamp=2025-06-15T13:45:12.862Z&"},"device_id":"48241179"}'
)
GEN_C_FORM = (
    b"id=48241179&lat=37.4219983&lon=-122.084&timestamp=1750000000&accuracy=5.0&altitude=5.0"
    b"&speed=0.0&bearing=0.0&batt=87&charge=false"
)
GEN_C_JSON = (
    b'[{"id":"48241179","lat":37.42,"lon":-122.08,"timestamp":1750000000,"speed":0.0,"batt":87},'
    b'{"id":"48241179","lat":37.43,"lon":-122.09,"timestamp":1750000300,"speed":1.5,"batt":86}]'
)
OSMAND = "http://demo.traccar.org:5055/?id=123456&lat={0}&lon={1}&timestamp={2}&hdop={3}&altitude={4}&speed={5}"
NO_FIX = (
    "no lat/lon: cell- or wifi-only positions are not supported "
    "(the gateway keeps no last known location to reuse)"
)


def test_traccar_generation_a_query_with_empty_body() -> None:
    [r] = traccar(query_of(GEN_A), "", b"", NOW_NS)
    assert r == Report("123456789012345", 0.0, 0.0, "619315200")
    assert r.command() == b"IAMAT 123456789012345 +0+0 619315200\n"
    extras = query_of(GEN_A + "&charge=true&mock=true&alarm=alert%20message")
    assert traccar(extras, "", b"", NOW_NS) == [r]


def test_traccar_generation_b_json() -> None:
    [r] = traccar({}, "application/json", GEN_B, NOW_NS)
    assert r == Report("48241179", 37.4219983, -122.084, "1749995112.862")
    assert r.command() == b"IAMAT 48241179 +37.4219983-122.084 1749995112.862\n"


def test_traccar_generation_c_form_body() -> None:
    assert traccar({}, FORM, GEN_C_FORM, NOW_NS) == [
        Report("48241179", 37.4219983, -122.084, "1750000000")
    ]
    # Traccar reads the body whatever the content type says, when the query has no id.
    assert traccar({"other": "1"}, "", GEN_C_FORM, NOW_NS)[0].client_id == "48241179"


def test_traccar_generation_c_json_array() -> None:
    assert traccar({}, JSON, GEN_C_JSON, NOW_NS) == [
        Report("48241179", 37.42, -122.08, "1750000000"),
        Report("48241179", 37.43, -122.09, "1750000300"),
    ]
    assert traccar({}, JSON, b"[]", NOW_NS) == []


def test_traccar_classic_osmand_template_with_milliseconds() -> None:
    url = OSMAND.format("52.5163", "13.3777", "1750000000123", "1.2", "34.0", "0.5")
    assert traccar(query_of(url), "", b"", NOW_NS) == [
        Report("123456", 52.5163, 13.3777, "1750000000.123")
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"deviceid": "abc", "lat": "1", "lon": "2"}, Report("abc", 1.0, 2.0, NOW)),
        ({"id": "", "deviceid": "abc", "lat": "1", "lon": "2"}, Report("abc", 1.0, 2.0, NOW)),
        ({"id": "x", "location": "37.5,-122.1"}, Report("x", 37.5, -122.1, NOW)),
        ({"id": "x", "location": "37.5, -122.1 "}, Report("x", 37.5, -122.1, NOW)),
        ({"id": "x", "lat": "1", "lon": "2", "location": "3,4"}, Report("x", 1.0, 2.0, NOW)),
        (
            {"id": "x", "lat": "1", "lon": "2", "timestamp": "2016-01-27T18:55:47Z"},
            Report("x", 1.0, 2.0, "1453920947"),
        ),
        (
            {"id": "x", "lat": "1", "lon": "2", "timestamp": "2025-06-15 13:45:12"},
            Report("x", 1.0, 2.0, "1749995112"),
        ),
        ({"id": "x", "lat": "1", "lon": "2", "timestamp": ""}, Report("x", 1.0, 2.0, NOW)),
        ({"id": "猫", "lat": "-1e1", "lon": "+2.5"}, Report("猫", -10.0, 2.5, NOW)),
    ],
)
def test_traccar_query_variants(query: dict[str, str], expected: Report) -> None:
    assert traccar(query, "", b"ignored=1", NOW_NS) == [expected]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id":"x","lat":1,"lon":2,"timestamp":1750000000}', Report("x", 1.0, 2.0, "1750000000")),
        (b'{"deviceid":"x","location":"1,2"}', Report("x", 1.0, 2.0, NOW)),
        (b'{"device_id":42,"lat":"1","lon":"2"}', Report("42", 1.0, 2.0, NOW)),
        (
            b'{"id":"x","lat":1,"lon":2,"timestamp":1614209128.918963997}',
            Report("x", 1.0, 2.0, "1614209128.918963997"),
        ),
        (
            b'{"id":"x","lat":1,"lon":2,"timestamp":1750000000862}',
            Report("x", 1.0, 2.0, "1750000000.862"),
        ),
    ],
)
def test_traccar_flat_json_objects(body: bytes, expected: Report) -> None:
    assert traccar({"id": "ignored"}, "Application/JSON", body, NOW_NS) == [expected]


@pytest.mark.parametrize(
    ("query", "content_type", "body", "message"),
    [
        ({}, "", b"", "Traccar position has no id (or deviceid): add id= to the URL"),
        ({}, FORM, b"lat=1&lon=2", "Traccar position has no id (or deviceid): add id= to the URL"),
        ({"id": ""}, "", b"", "Traccar position has no id (or deviceid): add id= to the URL"),
        ({"id": "x", "location": "1;2"}, "", b"", "location must be lat,lon"),
        ({"id": "x", "location": "1,2,3"}, "", b"", "location must be lat,lon"),
        ({"id": "x", "lat": "nan", "lon": "2"}, "", b"", "lat must be a number between -90 and 90"),
        (
            {"id": "x", "lat": "1", "lon": "180.5"},
            "",
            b"",
            "lon must be a number between -180 and 180",
        ),
        (
            {"id": "x", "lat": "1", "lon": "2", "timestamp": "yesterday"},
            "",
            b"",
            "timestamp must be POSIX seconds, milliseconds or an ISO 8601 date-time",
        ),
        ({}, FORM, b"id=%ff&lat=1&lon=2", "body is not a form of at most 256 UTF-8 fields"),
        ({}, FORM, b"\xff", "body is not a form of at most 256 UTF-8 fields"),
        (
            {},
            FORM,
            b"&".join(b"k%d=1" % i for i in range(300)),
            "body is not a form of at most 256 UTF-8 fields",
        ),
        ({}, JSON, b"", "body is empty; expected JSON"),
        ({}, JSON, b"42", "Traccar JSON is an object or an array of objects"),
        ({}, JSON, b'{"lat":1,"lon":2}', "Traccar position has no id (or deviceid, device_id)"),
        ({}, JSON, b'{"id":1.5,"lat":1,"lon":2}', "client ID must be a string"),
        ({}, JSON, b'{"id":true,"lat":1,"lon":2}', "client ID must be a string"),
        (
            {},
            JSON,
            b'{"device_id":"x","location":{"coords":{"latitude":1,"longitude":2},"timestamp":"x"}}',
            "location.timestamp must be POSIX seconds, milliseconds or an ISO 8601 date-time",
        ),
        ({}, JSON, b'{"id":"x","location":[1,2]}', "location must be lat,lon"),
        (
            {},
            JSON,
            b'[{"id":"x","lat":1,"lon":2},{"id":"x","lat":99,"lon":2}]',
            "position 1: lat must be a number between -90 and 90",
        ),
        (
            {},
            JSON,
            b'[{"id":"x","lat":1,"lon":2},7]',
            "position 1: Traccar JSON is an object or an array of objects",
        ),
        (
            {},
            JSON,
            ("[" + ",".join(["{}"] * (MAX_BATCH + 1)) + "]").encode(),
            "a batch holds at most 1000 locations",
        ),
    ],
)
def test_traccar_errors(
    query: dict[str, str], content_type: str, body: bytes, message: str
) -> None:
    if message.startswith("position "):  # one entry of a batch: skipped, not the batch
        skipped(message, traccar(query, content_type, body, NOW_NS))
    else:
        fails(message, lambda: traccar(query, content_type, body, NOW_NS))


# -- Overland ------------------------------------------------------------------------------


def feature(lon: object, lat: object, **properties: object) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": properties,
    }


OVERLAND_BATCH = (
    b'{"locations":['
    b'{"type":"Feature","geometry":{"type":"Point","coordinates":[-122.030581,37.3318]},'
    b'"properties":{"timestamp":"2025-06-15T13:45:12Z","altitude":0,"speed":4,'
    b'"horizontal_accuracy":30,"vertical_accuracy":-1,"motion":["driving"],'
    b'"battery_state":"unplugged","battery_level":0.89,"device_id":"iphone","wifi":""}},'
    b'{"type":"Feature","geometry":{"type":"Point","coordinates":[-122.0306,37.3319]},'
    b'"properties":{"timestamp":"2025-06-15T15:45:42.5+02:00","speed":3,"device_id":"iphone"}},'
    b'{"type":"Feature","geometry":{"type":"Point","coordinates":[-122.0307,37.332,12.0]},'
    b'"properties":{"timestamp":"2025-06-15T13:46:12.250-00:00","device_id":""}}'
    b'],"current":{"type":"Feature"}}'
)


def test_overland_batch_in_geojson_order() -> None:
    assert overland(
        OVERLAND_BATCH, {"Authorization": "Bearer t"}, {"device_id": "ipad"}, NOW_NS
    ) == [
        Report("iphone", 37.3318, -122.030581, "1749995112"),
        Report("iphone", 37.3319, -122.0306, "1749995142.5"),
        Report("ipad", 37.332, -122.0307, "1749995172.25"),
    ]


def test_overland_empty_batch() -> None:
    assert overland(b'{"locations":[]}', {}, {}, NOW_NS) == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], 'Overland sends {"locations": [...]}'),
        ({"locations": {}}, 'Overland sends {"locations": [...]}'),
        ({"locations": [7]}, "location 0: must be a GeoJSON Feature object"),
        ({"locations": [{"type": "Feature"}]}, "location 0: has no GeoJSON Point geometry"),
        (
            {"locations": [{"geometry": {"type": "LineString", "coordinates": [[1, 2]]}}]},
            "location 0: has no GeoJSON Point geometry",
        ),
        (
            {"locations": [{"geometry": {"type": "Point", "coordinates": [1]}}]},
            "location 0: coordinates must be [lon, lat]",
        ),
        (
            {
                "locations": [
                    {"geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": []}
                ]
            },
            "location 0: properties must be an object",
        ),
        (
            {
                "locations": [
                    feature(1, 2, device_id="p", timestamp="2025-06-15T13:45:12Z"),
                    feature(1, 2, device_id="p"),
                ]
            },
            "location 1: properties.timestamp is missing",
        ),
        (
            {"locations": [feature(1, 95, device_id="p", timestamp="2025-06-15T13:45:12Z")]},
            "location 0: coordinates[1] (lat) must be a number between -90 and 90",
        ),
        (
            {"locations": [feature(None, 5, device_id="p", timestamp="2025-06-15T13:45:12Z")]},
            "location 0: coordinates[0] (lon) is missing",
        ),
        (
            {"locations": [feature(1, 2, device_id="p", timestamp="2025-02-30T00:00:00Z")]},
            "location 0: properties.timestamp is not a valid date and time",
        ),
        (
            {"locations": [feature(1, 2, device_id=["p"], timestamp="2025-06-15T13:45:12Z")]},
            "location 0: client ID must be a string",
        ),
        (
            {
                "locations": [feature(1, 2, device_id="p", timestamp="2025-06-15T13:45:12Z")]
                * (MAX_BATCH + 1)
            },
            "a batch holds at most 1000 locations",
        ),
    ],
)
def test_overland_errors(payload: object, message: str) -> None:
    body = json.dumps(payload).encode()
    if message.startswith("location "):  # one entry of a batch: skipped, not the batch
        skipped(message, overland(body, {}, {}, NOW_NS))
    else:
        fails(message, lambda: overland(body, {}, {}, NOW_NS))


def test_overland_full_batch_is_accepted() -> None:
    one = feature(1, 2, device_id="p", timestamp="2025-06-15T13:45:12Z")
    body = json.dumps({"locations": [one] * MAX_BATCH}).encode()
    assert len(overland(body, {}, {}, NOW_NS)) == MAX_BATCH


# -- times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, NOW),
        ("", NOW),
        (0, "0"),
        (619315200, "619315200"),
        (2**31 - 2, "2147483646"),  # the last value read as seconds
        (2**31 - 1, "2147483.647"),  # Traccar: from here on, milliseconds
        (1750000000000, "1750000000"),
        ("1750000000123", "1750000000.123"),
        ("1750000000000.5", "1750000000.0005"),
        (1750000000.5, "1750000000.5"),
        (Decimal("1614209128.918963997"), "1614209128.918963997"),
        ("1614209128.918963997", "1614209128.918963997"),
        ("1750000000.000", "1750000000"),
        ("0.001", "0.001"),
        ("1.5e3", "1500"),
        (" 42 ", "42"),
        ("2025-06-15T13:45:12.862Z", "1749995112.862"),
        ("2025-06-15T15:45:12.862+02:00", "1749995112.862"),
        ("2025-06-15T08:45:12.862-05", "1749995112.862"),
        ("2025-06-15T13:45:12.862+0000", "1749995112.862"),
        ("2025-06-15T13:45:12,862z", "1749995112.862"),
        ("2025-06-15t13:45:12.123456789123Z", "1749995112.123456789123"),
        ("2025-06-15T13:45:12.500000Z", "1749995112.5"),
        ("2025-06-15T13:45Z", "1749995100"),
        ("2025-06-15T13:45:12", "1749995112"),  # naive: UTC
        ("2025-06-15 13:45:12", "1749995112"),  # Traccar's other format, read as UTC
        ("2026-08-21T10:15:30.000+00:00", "1787307330"),
        ("1970-01-01T00:00:00Z", "0"),
    ],
)
def test_parse_time(value: object, expected: str) -> None:
    assert parse_time(value, NOW_NS) == expected


def test_now_has_nine_decimals() -> None:
    assert parse_time(None, 5) == "0.000000005"
    assert parse_time(None, 1_750_000_000_000_000_000) == "1750000000.000000000"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "time is negative"),
        ("-0.5", "time is negative"),
        (Decimal("-1"), "time is negative"),
        (10**16, "time is after the year 9999"),  # microseconds
        ("1e400", "time is after the year 9999"),
        ("1e-30", "time has more than 18 decimals"),
        ("1969-12-31T23:59:59Z", "time is before 1970"),
        ("1970-01-01T00:00:00+01:00", "time is before 1970"),
        ("2025-02-30T00:00:00Z", "time is not a valid date and time"),
        ("2025-06-15T24:00:00Z", "time is not a valid date and time"),
        ("2025-06-15T13:45:12+24:00", "time has an invalid UTC offset"),
        ("2025-06-15T13:45:12." + "1" * 19 + "Z", "time has more than 18 decimals"),
    ]
    + [
        (bad, "time must be POSIX seconds, milliseconds or an ISO 8601 date-time")
        for bad in [
            *(float("nan"), float("inf"), Decimal("NaN"), "nan", "inf", "abc", True, [], {}),
            *("١٢٣", "1_000", "0x10", "2025-06-15", "1" * 65),
        ]
    ],
)
def test_parse_time_errors(value: object, message: str) -> None:
    fails(message, lambda: parse_time(value, NOW_NS))


# -- Report and report() -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "location"),
    [
        (34.06893, -118.445127, "+34.06893-118.445127"),
        (-33.8688, 151.2093, "-33.8688+151.2093"),
        (0.0, -0.0, "+0+0"),
        (-0.00000001, 0.00000001, "+0+0"),
        (90, -180, "+90-180"),
        (89.99999999, 12.345678951, "+90+12.345679"),
        (37.4219983, -122.084, "+37.4219983-122.084"),
    ],
)
def test_location_is_iso_6709_with_seven_decimals(lat: float, lon: float, location: str) -> None:
    r = Report("c", lat, lon, "1")
    assert r.location == location
    assert iamat(r) == IAmAt("c", location, "1")


def test_report_keeps_fields_exact() -> None:
    r = report("kiwi.cs.ucla.edu", "+34.068930", "-118.445127", "1614209128.918963997", NOW_NS)
    assert r == Report("kiwi.cs.ucla.edu", 34.06893, -118.445127, "1614209128.918963997")
    assert r.command() == b"IAMAT kiwi.cs.ucla.edu +34.06893-118.445127 1614209128.918963997\n"
    assert report("c", 1, Decimal("2.5"), None, NOW_NS) == Report("c", 1.0, 2.5, NOW)
    assert isinstance(Report("c", 1, 2, "3").lat, float)


@pytest.mark.parametrize(
    "client_id", ["猫", "a\u00a0b", "a\u2028b", "a\x1cb", "x" * MAX_CLIENT_ID, "IAMAT", "a/b?c=d"]
)
def test_unicode_and_odd_client_ids_without_white_space_are_fine(client_id: str) -> None:
    r = report(client_id, 1, 2, 3, NOW_NS)
    assert iamat(r) == IAmAt(client_id, "+1+2", "3")


@pytest.mark.parametrize(
    ("client_id", "lat", "lon", "message"),
    [
        (None, 1, 2, "client ID is missing"),
        (42, 1, 2, "client ID must be a string"),
        ("", 1, 2, "client ID is empty"),
        ("x" * (MAX_CLIENT_ID + 1), 1, 2, "client ID is longer than 256 characters"),
        ("\ud800", 1, 2, "client ID is not valid Unicode"),
        ("c", None, 2, "lat is missing"),
        ("c", "", 2, "lat is missing"),
        ("c", 1, None, "lon is missing"),
        ("c", True, 2, "lat must be a number between -90 and 90"),
        ("c", "90.0000000001", 2, "lat must be a number between -90 and 90"),
        ("c", 10**400, 2, "lat must be a number between -90 and 90"),
        ("c", Decimal("NaN"), 2, "lat must be a number between -90 and 90"),
        ("c", float("-inf"), 2, "lat must be a number between -90 and 90"),
        ("c", [1], 2, "lat must be a number between -90 and 90"),
        ("c", 1, "1e999999999999999999999", "lon must be a number between -180 and 180"),
    ]
    + [("a" + ws + "b", 1, 2, "client ID contains white space") for ws in " \t\r\n\x0b\x0c"],
)
def test_report_errors(client_id: object, lat: object, lon: object, message: str) -> None:
    fails(message, lambda: report(client_id, lat, lon, "1", NOW_NS))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("c", 91.0, 0.0, "1"), "lat must be a number between -90 and 90"),
        (("c", 0.0, float("nan"), "1"), "lon must be a number between -180 and 180"),
        (("c", False, 0.0, "1"), "lat must be a number"),
        (("c", 0.0, 0.0, "1e5"), "time must be POSIX seconds as text"),
        (("c", 0.0, 0.0, "-1"), "time must be POSIX seconds as text"),
        (("c d", 0.0, 0.0, "1"), "client ID contains white space"),
    ],
)
def test_report_checks_itself(args: tuple[Any, ...], message: str) -> None:
    fails(message, lambda: Report(*args))


def test_phone_error_carries_status_and_pickles() -> None:
    error = PhoneError(400, "lat is missing")
    assert isinstance(error, ApiError)  # the gateway's one error type, one envelope
    assert error.body() == {"error": {"status": 400, "message": "lat is missing"}}
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.status, copy.message, str(copy)) == (400, "lat is missing", "lat is missing")


# -- JSON limits ---------------------------------------------------------------------------


def test_load_json_keeps_numbers_exact() -> None:
    assert load_json(b'{"a":1.5,"b":2,"c":[1e2]}') == {
        "a": Decimal("1.5"),
        "b": 2,
        "c": [Decimal("1e2")],
    }


def test_json_depth_limit_is_exact() -> None:
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert load_json(deepest.encode()) is not None
    deeper = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    fails("JSON nested deeper than 32 levels", lambda: load_json(deeper.encode()))
    nested = '{"a":' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH
    assert load_json(nested.encode()) is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "JSON nested deeper than 32 levels"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "JSON nested deeper than 32 levels"),
        (b"[" * 200_000, "JSON nested deeper than 32 levels"),
        (b"[[]" * 100_000 + b"]" * 100_000, "JSON nested deeper than 32 levels"),
        (b"[" * 32, "malformed JSON: unbalanced brackets"),
        (b'{"a":[' * 10, "malformed JSON: unbalanced brackets"),
        # An unterminated string full of escaped quotes: linear, not quadratic, to scan.
        (b'["' + b'\\"' * 300_000, "malformed JSON: unbalanced brackets"),
        (b'"' + b'\\"' * 300_000, "malformed JSON at character 0: Unterminated string starting at"),
        (b"[1]]", "malformed JSON: unbalanced brackets"),
        (b"[NaN]", "malformed JSON: NaN is not a JSON number"),
        (b"-Infinity", "malformed JSON: -Infinity is not a JSON number"),
        (b"1" * 5000, "malformed JSON: a number has too many digits"),
        (b"1e999999999999999999999", "malformed JSON: a number is out of range"),
        (b"[1,]", "malformed JSON at character 3: Expecting value"),
        (
            b"\xef\xbb\xbf{}",
            "malformed JSON at character 0: Unexpected UTF-8 BOM (decode using utf-8-sig)",
        ),
        (b"\xff", "body is not UTF-8"),
        (b"", "body is empty; expected JSON"),
        (b"\r\n", "body is empty; expected JSON"),
    ],
)
def test_load_json_errors(body: bytes, message: str) -> None:
    fails(message, lambda: load_json(body))


def test_brackets_inside_strings_do_not_count() -> None:
    text = '["' + "[" * 1000 + '", "\\"{{{{", "}]"]'
    assert load_json(text.encode()) == ["[" * 1000, '"{{{{', "}]"]


# -- properties ----------------------------------------------------------------------------

client_ids = st.text(
    st.characters(codec="utf-8", exclude_characters=" \t\r\n\x0b\x0c"),
    min_size=1,
    max_size=MAX_CLIENT_ID,
)
lats = st.floats(-90, 90)
lons = st.floats(-180, 180)
# Up to 11 digits of seconds: the herd's times end with the year 9999 (12 digits).
posix_times = st.from_regex(r"[0-9]{1,11}(\.[0-9]{1,12})?", fullmatch=True)


@FEW
@given(client_ids, lats, lons, posix_times)
def test_any_valid_report_round_trips_through_the_herd_parser(
    client_id: str, lat: float, lon: float, time: str
) -> None:
    r = Report(client_id, lat, lon, time)
    assert iamat(r) == IAmAt(client_id, r.location, time)
    herd_lat, herd_lon = parse_location(r.location.encode())
    assert abs(herd_lat - lat) <= 5.1e-8 and abs(herd_lon - lon) <= 5.1e-8


canonical_times = st.builds(
    lambda whole, fraction: f"{whole}.{fraction}" if fraction else str(whole),
    st.integers(0, 2**31 - 2),
    st.from_regex(r"([0-9]{0,8}[1-9])?", fullmatch=True),
)


@FEW
@given(client_ids, lats, lons, canonical_times)
def test_report_keeps_canonical_times_verbatim(
    client_id: str, lat: float, lon: float, time: str
) -> None:
    r = report(client_id, repr(lat), repr(lon), time, NOW_NS)
    assert (r.time, r.lat, r.lon) == (time, lat, lon)
    assert iamat(r).client_time == time


# Leaves aimed at the parsers' edges, then any JSON around them.
edge_values = st.sampled_from(
    [
        *("", " ", "nan", "1e999", "-1", "0", "1,2", "a b", "\ud800", "owntracks/a/b"),
        *("2025-06-15T13:45:12.862Z", "2025-06-15 13:45:12", 2**31 - 1, 10**30, -0.0, 1e308),
        *("x" * 300, 91, -181, 1750000000123, "Point", "Feature"),
    ]
)
leaves = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | edge_values
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)


def mostly(valid: st.SearchStrategy[Any], fallback: Any = None) -> st.SearchStrategy[Any]:
    """Nine times in ten a plausible value, so the success paths are fuzzed too; else any
    JSON value (or ``fallback``)."""
    other = json_values if fallback is None else fallback
    return st.integers(0, 9).flatmap(lambda n: other if n == 9 else valid)


ids = st.text("ab1/猫-", min_size=1, max_size=8)
degrees = (
    st.floats(-90, 90)
    | st.integers(-90, 90)
    | st.from_regex(r"-?[0-8]?[0-9]\.[0-9]{0,9}", fullmatch=True)
)
stamps = st.integers(0, 2**42) | st.sampled_from(
    ["2025-06-15T13:45:12.862Z", "2025-06-15 13:45:12", "2025-06-15T15:45:12+02:00", "1750000000.5"]
)
text_values = (
    ids
    | st.text(max_size=12)
    | edge_values.filter(lambda v: isinstance(v, str))
    | degrees.map(str)
    | stamps.map(str)
    | st.sampled_from(["37.42,-122.08", "1,2,3"])
)
maps = st.dictionaries(
    st.sampled_from(["id", "deviceid", "device_id", "lat", "lon", "location", "timestamp"])
    | st.sampled_from(["u", "d", "X-Limit-U", "x-limit-d", "X-LIMIT-D", "Content-Type"])
    | st.text(max_size=6),
    text_values,
    max_size=6,
)


traccar_queries = st.fixed_dictionaries(
    {
        "id": mostly(ids, text_values),
        "lat": mostly(degrees.map(str), text_values),
        "lon": mostly(degrees.map(str), text_values),
    },
    optional={k: text_values for k in ("timestamp", "location", "deviceid", "batt")},
)


def owntracks_messages() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {
            "_type": mostly(st.sampled_from(["location", "location", "transition", "card"])),
            "lat": mostly(degrees),
            "lon": mostly(degrees),
            "tst": mostly(stamps),
        },
        optional={"topic": mostly(st.just("owntracks/jane/phone") | ids), "tid": json_values},
    )


def traccar_objects() -> st.SearchStrategy[Any]:
    flat = st.fixed_dictionaries(
        {"id": mostly(ids | st.integers()), "lat": mostly(degrees), "lon": mostly(degrees)},
        optional={
            "deviceid": mostly(ids),
            "device_id": mostly(ids),
            "location": mostly(st.sampled_from(["37.42,-122.08", "1,2,3"])),
            "timestamp": mostly(stamps),
        },
    )
    coords = st.fixed_dictionaries({"latitude": mostly(degrees), "longitude": mostly(degrees)})
    location = st.fixed_dictionaries(
        {"coords": mostly(coords)}, optional={"timestamp": mostly(stamps)}
    )
    gen_b = st.fixed_dictionaries({"location": mostly(location), "device_id": mostly(ids)})
    return flat | gen_b | st.lists(flat | gen_b, max_size=3)


def overland_batches() -> st.SearchStrategy[Any]:
    props = st.fixed_dictionaries({"timestamp": mostly(stamps), "device_id": mostly(ids)})
    geometry = st.fixed_dictionaries(
        {
            "type": mostly(st.just("Point")),
            "coordinates": mostly(st.lists(degrees, min_size=2, max_size=3)),
        }
    )
    feature = st.fixed_dictionaries({"geometry": mostly(geometry), "properties": mostly(props)})
    return st.fixed_dictionaries({"locations": mostly(st.lists(mostly(feature), max_size=3))})


def dump(value: Any) -> bytes:
    return json.dumps(value).encode()


def only_phone_errors(call: Callable[[], list[Entry]]) -> None:
    """Either valid reports the herd accepts, or a PhoneError; anything else is a bug."""
    try:
        reports = call()
    except PhoneError as error:
        assert error.status == 400 and error.message
        return
    for r in reports:
        if isinstance(r, Report):
            assert iamat(r).client_id == r.client_id
        elif isinstance(r, Heartbeat):
            assert iamat(r.at(1.0, 2.0)).client_id == r.client_id


bodies = st.binary(max_size=200) | json_values.map(dump)


@FEW
@given(bodies | owntracks_messages().map(dump), maps, maps)
def test_owntracks_only_raises_phone_errors(
    body: bytes, headers: dict[str, str], query: dict[str, str]
) -> None:
    only_phone_errors(lambda: owntracks(body, headers, query, NOW_NS))


def form_body(query: dict[str, str]) -> bytes:
    # A lone surrogate in a generated value becomes invalid UTF-8 in the body, as a broken
    # client could send; plain urlencode would fail here, in the test, instead.
    return urlencode(query, errors="surrogatepass").encode()


@FEW
@given(
    bodies | traccar_objects().map(dump) | traccar_queries.map(form_body),
    maps | traccar_queries,
    st.sampled_from(["", JSON, FORM, "APPLICATION/JSON"]),
)
def test_traccar_only_raises_phone_errors(
    body: bytes, query: dict[str, str], content_type: str
) -> None:
    only_phone_errors(lambda: traccar(query, content_type, body, NOW_NS))


@FEW
@given(bodies | overland_batches().map(dump), maps, maps)
def test_overland_only_raises_phone_errors(
    body: bytes, headers: dict[str, str], query: dict[str, str]
) -> None:
    only_phone_errors(lambda: overland(body, headers, query, NOW_NS))


@FEW
@given(json_values, json_values, json_values, json_values)
def test_report_only_raises_phone_errors(client_id: Any, lat: Any, lon: Any, time: Any) -> None:
    only_phone_errors(lambda: [report(client_id, lat, lon, time, NOW_NS)])
