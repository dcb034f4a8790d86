"""Each gateway rule is written once (gateway/rules.py): the REST API, the WebSocket, the phone
formats and the OpenAPI document all apply or state the same one. Socket-free."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.protocol import MAX_BOUND, MAX_RADIUS_KM, IAmAt, make_record
from gateway import phones, rules
from gateway.errors import ApiError
from gateway.openapi import spec_at
from gateway.records import RECORD_KEYS, record_json

SPEC = spec_at(1_750_000_000, 600)
SCHEMAS = SPEC["components"]["schemas"]


def parameter(path: str, name: str) -> dict[str, Any]:
    [found] = [p for p in SPEC["paths"][path]["get"]["parameters"] if p["name"] == name]
    schema: dict[str, Any] = found["schema"]
    return schema


@given(st.text(max_size=rules.MAX_CLIENT_ID + 2))
def test_the_documented_client_id_pattern_is_the_rule(text: str) -> None:
    schema = SCHEMAS["Report"]["properties"]["client_id"]
    documented = (
        len(text) <= schema["maxLength"] and re.fullmatch(schema["pattern"], text) is not None
    )
    if any("\ud800" <= c <= "\udfff" for c in text):
        return  # a lone surrogate is no JSON string: the schema cannot speak of it
    assert documented == (rules.client_id_problem(text) is None), repr(text)
    assert documented == _phone_takes(text)


def _phone_takes(client_id: str) -> bool:
    try:
        phones.check_client_id(client_id)
    except phones.PhoneError:
        return False
    return True


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x" * 257, "client ID is longer than 256 characters"),
        ("a b", "client ID contains white space"),
        ("a\x0bb", "client ID contains white space"),
        ("", "client ID is empty"),
    ],
)
def test_client_id_problems_are_worded_as_before(text: str, problem: str) -> None:
    assert rules.client_id_problem(text) == problem
    assert rules.client_id_problem("a\u00a0b") is None  # a Unicode space is part of an ID


def test_the_document_states_the_rules_bounds() -> None:
    nearby = "/api/v1/clients/{client_id}/nearby"
    assert parameter(nearby, "limit")["maximum"] == MAX_BOUND == rules.BOUND.high
    assert parameter(nearby, "radius_km")["maximum"] == MAX_RADIUS_KM
    assert parameter(nearby, "radius_km")["default"] == rules.DEFAULT_RADIUS_KM
    assert parameter("/api/v1/clients", "limit")["maximum"] == rules.PAGE.high == 1000
    assert parameter("/api/v1/clients", "limit")["default"] == rules.PAGE.default
    body = SPEC["paths"]["/api/v1/locations"]["post"]["requestBody"]
    batch = body["content"]["application/json"]["schema"]["oneOf"][1]
    assert batch["maxItems"] == rules.MAX_BATCH == phones.MAX_BATCH
    report = SCHEMAS["Report"]["properties"]
    assert report["lat"]["maximum"] == rules.MAX_LAT and report["lon"]["minimum"] == -180
    assert SCHEMAS["Record"]["required"] == list(RECORD_KEYS)


def test_a_record_shows_exactly_the_documented_keys() -> None:
    command = IAmAt("kiwi", "+34.06893-118.445127", "1700000000.5")
    record = make_record("Riley", 1_700_000_000_500_123_000, command)
    assert tuple(record_json(record)) == RECORD_KEYS


def test_responses_are_listed_by_status_code() -> None:
    for path in SPEC["paths"].values():
        for operation in path.values():
            assert list(operation["responses"]) == sorted(operation["responses"])


def test_whole_ranges_word_their_refusals_per_transport() -> None:
    # A query parameter (REST) and a JSON member (WebSocket) keep their own wording.
    with pytest.raises(ApiError, match=r"^limit must be in 1\.\.20$"):
        rules.BOUND.from_text("21")
    with pytest.raises(ApiError, match=r"^limit must be a whole number in 1\.\.20$"):
        rules.BOUND.from_json(21)
    with pytest.raises(ApiError, match=r"^offset must be a whole number"):
        rules.OFFSET.from_text("-1")
    with pytest.raises(ApiError, match=r"^limit must be a whole number in 1\.\.20$"):
        rules.BOUND.from_json(True)
    assert rules.BOUND.from_text(None) == 5 and rules.PAGE.from_text(None) == 100
    assert rules.PAGE.from_text("1000") == 1000


@pytest.mark.parametrize("value", [0, "0", "50.0000001", "-1", "nan", 1e400, "x", None])
def test_a_radius_outside_its_range_is_refused(value: object) -> None:
    with pytest.raises(ApiError, match=r"^radius_km must be a number in \(0, 50\]") as caught:
        rules.radius_km(value)
    assert caught.value.status == 400


def test_a_radius_inside_is_written_plainly() -> None:
    assert rules.plain(rules.radius_km("50")) == "50"
    assert rules.plain(rules.radius_km(Decimal("0.50"))) == "0.5"
    assert rules.plain(rules.radius_km(rules.DEFAULT_RADIUS_KM)) == "10"


# -- history reads -------------------------------------------------------------------------

# Decimal degrees as a client may write them (no leading zeros), some out of range, some with
# more decimals than the herd's AREA reads.
_DEGREES = st.from_regex(r"[+-]?(0|[1-9][0-9]{0,2})(\.[0-9]{1,16})?", fullmatch=True)


@given(st.lists(_DEGREES, min_size=4, max_size=4))
def test_a_bbox_is_documented_exactly_when_it_is_within_the_globe(corners: list[str]) -> None:
    text = ",".join(corners)
    documented = re.fullmatch(parameter("/api/v1/trails", "bbox")["pattern"], text) is not None
    west, south, east, north = (Decimal(c) for c in corners)
    within = (
        all(-180 <= v <= 180 for v in (west, east))
        and all(-90 <= v <= 90 for v in (south, north))
        and all(len(c.partition(".")[2]) <= 15 for c in corners)
    )
    assert documented == within, text
    if documented:
        box = rules.bbox(text)
        assert box is not None and (box.west, box.south, box.east, box.north) == (
            west,
            south,
            east,
            north,
        )
    else:
        with pytest.raises(ApiError, match=r"^bbox must be"):
            rules.bbox(text)


def test_a_box_across_the_antimeridian_is_asked_as_two() -> None:
    box = rules.bbox("170,-10,-170.5,10")
    assert box is not None
    assert [part.fields() for part in box.parts()] == ["170 -10 180 10", "-180 -10 -170.5 10"]
    assert rules.WORLD.parts() == (rules.WORLD,)
    empty = rules.bbox("0,10,1,5")
    assert empty is not None and empty.empty and empty.parts() == ()


def test_the_document_states_the_history_rules() -> None:
    history = "/api/v1/clients/{client_id}/history"
    assert parameter(history, "format")["enum"] == list(rules.HISTORY_FORMATS)
    assert parameter(history, "simplify")["maximum"] == rules.MAX_SIMPLIFY_M
    assert parameter(history, "limit")["maximum"] == rules.HISTORY_PAGE.high
    area = "/api/v1/history"
    assert parameter(area, "limit")["maximum"] == rules.AREA_PAGE.high == 10_000
    assert parameter(area, "limit")["default"] == rules.AREA_PAGE.default
    assert parameter("/api/v1/trails", "simplify") == parameter(history, "simplify")
    trails = SCHEMAS["Trails"]["properties"]
    assert trails["trails"]["maxItems"] == rules.MAX_TRAIL_CLIENTS


@pytest.mark.parametrize("value", ["0", "-1", "1000000.001", "1e7", "nan", "x", ""])
def test_a_tolerance_outside_its_range_is_refused(value: str) -> None:
    with pytest.raises(ApiError, match=r"^simplify must be a number of metres in \(0, 1000000\]"):
        rules.simplify_m(value)
    assert rules.simplify_m(None) == 0 and rules.simplify_m("2.5") == 2.5
    assert rules.simplify_m("1e6") == rules.MAX_SIMPLIFY_M
