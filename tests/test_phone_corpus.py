"""Every sample of the phone-app corpus (tests/payloads, see its README) replayed against a
real herd and gateway, and each sample's attributes out of the pure phone parsers.

Each sample's ``expect`` says what the payload itself holds, in the units the app sent. The
gateway's answers and client IDs follow docs/gateway.md ("Phone apps"); the helpers below
spell out those rules for the corpus, independently of gateway/phones/. Every failure of a
run is collected into one assertion message.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from aiohttp.test_utils import TestClient

from gateway import phones

pytestmark = pytest.mark.timeout(120)

CORPUS = Path(__file__).parent / "payloads"
SAMPLES = sorted(CORPUS.glob("*/*.json"))
NOW_NS = 1_800_000_000 * 10**9

# Where each app's requests go: the URLs of docs/gateway.md's phone table.
ENDPOINTS = {
    "owntracks": "/pub",
    "traccar": "/",
    "osmand": "/",
    "gpslogger": "/api/v1/phones/gpslogger",
    "overland": "/api/v1/phones/overland",
}
KEPT = {"accuracy", "altitude", "speed", "heading", "battery", "charging", "trigger"}
KEPT |= {"event", "alarm", "name", "transition", "motion", "regions", "heartbeat"}
KNOT = 1852 / 3600
KMH = 1000 / 3600


def load(path: Path) -> dict[str, Any]:
    sample: dict[str, Any] = json.loads(path.read_text())
    sample["family"] = path.parent.name
    sample["name"] = f"{path.parent.name}/{path.name}"
    return sample


def mapped(name: str) -> str:
    """docs/gateway.md: "%" and white space percent-encoded, all else kept."""
    return name.replace("%", "%25").replace(" ", "%20")


def header(sample: dict[str, Any], name: str) -> str | None:
    headers = sample["request"]["headers"]
    return next((v for k, v in headers.items() if k.lower() == name), None)


def client_id(sample: dict[str, Any], device: str | None) -> str | None:
    """The client ID a sample's positions are stored under; None where it is refused."""
    family = sample["family"]
    if family == "owntracks":
        user, phone = header(sample, "x-limit-u"), header(sample, "x-limit-d")
        if user or phone:
            user, phone = (user or "owntracks").lower(), (phone or "phone").lower()
            return f"owntracks/{mapped(user)}/{mapped(phone)}"
        if device and device.startswith("owntracks/"):
            parts = device.removesuffix("/event").split("/")
            return "/".join(mapped(part) for part in parts)
        return "owntracks/owntracks/phone"  # the Recorder's defaults; a tid is no ID
    if family in ("traccar", "osmand"):
        return None if device is None else mapped(device)  # no id: 400, as Traccar answers
    default = phones.GPSLOGGER_DEVICE if family == "gpslogger" else phones.OVERLAND_DEVICE
    return mapped(device) if device else default


def expected_status(sample: dict[str, Any]) -> int:
    body = sample["request"]["body"] or ""
    if sample["family"] == "owntracks" and body.strip():
        try:
            message = json.loads(body)
        except ValueError:
            return 400  # not JSON: no app sends it (the HA test checks only for no crash)
        if isinstance(message, dict) and message.get("_type") == "encrypted":
            return 400  # refused visibly: the gateway holds no keys
    positions = sample["expect"]["positions"]
    if any(client_id(sample, p["device"]) is None for p in positions):
        return 400
    return 200


def expected_attributes(app: str, given: dict[str, Any]) -> dict[str, Any]:
    """A sample's ``expect`` attributes in the gateway's keys and units (docs/gateway.md)."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        if value == -1:  # the apps' "unknown"
            continue
        if key == "hdop":  # OsmAnd's hdop is Location.getAccuracy(), in metres
            key = "accuracy"
        if key == "event" and app.startswith("owntracks"):
            key, value = "transition", {"event": value}
        elif key == "event" and app == "traccar-client-b":
            key = "trigger"  # the background-geolocation event (motionchange)
        if key not in KEPT:
            continue
        if key == "speed":
            if app.startswith("owntracks"):
                value *= KMH
            elif app in ("traccar-client-a", "traccar-client-c"):
                value *= KNOT
        if key == "battery" and app in ("traccar-client-b", "overland"):
            value *= 100
        out[key] = value
    return out


def attribute_problems(expected: dict[str, Any], actual: Any) -> list[str]:
    if not isinstance(actual, dict):
        return [f"attributes {actual!r}, expected {expected}"]
    problems = [f"unknown attribute {key!r}" for key in actual if key not in KEPT]
    for key, value in expected.items():
        got = actual.get(key)
        if key == "transition":
            ok = isinstance(got, dict) and got.get("event") == value["event"]
        elif isinstance(value, bool | str):
            ok = got == value
        else:
            ok = isinstance(got, int | float) and math.isclose(got, value, rel_tol=1e-9)
        if not ok:
            problems.append(f"{key}: {got!r}, expected {value!r}")
    return problems


def query(sample: dict[str, Any]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in parse_qsl(sample["request"]["query"], keep_blank_values=True):
        params.setdefault(key, value)
    return params


def parse(sample: dict[str, Any]) -> list[phones.Entry]:
    """The pure parser of a sample's app, as its endpoint calls it."""
    request = sample["request"]
    body = (request["body"] or "").encode()
    headers, params = request["headers"], query(sample)
    family = sample["family"]
    if family == "owntracks":
        return phones.owntracks(body, headers, params, NOW_NS)
    if family == "overland":
        return phones.overland(body, headers, params, NOW_NS)
    if family == "gpslogger":
        return phones.gpslogger(params, body, NOW_NS)
    return phones.traccar(params, header(sample, "content-type") or "", body, NOW_NS)


# -- pure: the attributes of every sample ------------------------------------------------------


def test_every_sample_yields_its_positions_and_attributes() -> None:
    problems = []
    for path in SAMPLES:
        sample = load(path)
        positions = sample["expect"]["positions"]
        if expected_status(sample) != 200:
            continue
        try:
            reports = [e for e in parse(sample) if isinstance(e, phones.Report)]
        except phones.PhoneError as exc:
            problems.append(f"{sample['name']}: refused: {exc.message}")
            continue
        if len(reports) != len(positions):
            problems.append(f"{sample['name']}: {len(reports)} reports for {len(positions)}")
            continue
        for report, position in zip(reports, positions, strict=True):
            where = sample["name"]
            if report.client_id != client_id(sample, position["device"]):
                problems.append(f"{where}: client ID {report.client_id!r}")
            if not math.isclose(report.lat, position["lat"], abs_tol=1e-7) or not math.isclose(
                report.lon, position["lon"], abs_tol=1e-7
            ):
                problems.append(f"{where}: at {report.lat},{report.lon}")
            if position["time"] is not None and Decimal(report.time) != Decimal(
                str(position["time"])
            ):
                problems.append(f"{where}: time {report.time}, expected {position['time']}")
            expected = expected_attributes(sample["app"], position.get("attributes") or {})
            problems += [f"{where}: {p}" for p in attribute_problems(expected, report.attributes)]
    assert not problems, "\n".join(problems)


def test_names_with_spaces_are_kept_as_sent() -> None:
    sample = load(CORPUS / "owntracks/031-ios-rec-line01.json")
    [report] = parse(sample)
    assert isinstance(report, phones.Report)
    assert report.client_id == "owntracks/test/iPhone%2012%20Pro"
    assert report.attributes["name"] == "iPhone 12 Pro"


# -- end to end: every sample against a real herd and gateway -----------------------------------


async def send(client: TestClient[Any, Any], sample: dict[str, Any]) -> tuple[int, bytes]:
    request = sample["request"]
    path = ENDPOINTS[sample["family"]]
    url = f"{path}?{request['query']}" if request["query"] else path
    body = request["body"]
    data = body.encode() if body is not None else None
    async with client.request(
        request["method"], url, data=data, headers=request["headers"]
    ) as response:
        return response.status, await response.read()


def body_problem(sample: dict[str, Any], status: int, body: bytes) -> str | None:
    if status != 200:
        return None
    family = sample["family"]
    if family == "owntracks":
        return None if json.loads(body) == [] else f"body {body!r}, expected []"
    if family == "overland":
        return None if json.loads(body) == {"result": "ok"} else f"body {body!r}"
    return None if body == b"" else f"body {body!r}, expected none"


def order(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each client's samples oldest first (an older report is not kept as the newest; no
    time is the arrival time, the newest), then those that store no position."""

    def key(sample: dict[str, Any]) -> tuple[int, str, float, str]:
        positions = sample["expect"]["positions"]
        if not positions or expected_status(sample) != 200:
            return (1, "", 0.0, sample["name"])
        last = positions[-1]
        when = math.inf if last["time"] is None else float(last["time"])
        return (0, str(client_id(sample, last["device"])), when, sample["name"])

    return sorted(samples, key=key)


async def test_every_sample_is_stored_where_its_app_expects(
    client: TestClient[Any, Any],
) -> None:
    problems: list[str] = []
    # Positions sent so far per (client, time): the herd keeps one of equal-time reports.
    sent: dict[tuple[str, float], list[tuple[float, float]]] = defaultdict(list)
    # What the WebSocket pushed, the newest per client; and what each client's newest
    # record must show there: (its AT line, the attributes expected, the sample).
    pushed: dict[str, dict[str, Any]] = {}
    newest: dict[str, tuple[str, dict[str, Any], str]] = {}
    ws = await client.ws_connect("/api/v1/ws")
    assert (await ws.receive_json())["type"] == "snapshot"

    async def listen() -> None:
        async for message in ws:
            update = json.loads(message.data)
            if update["type"] == "update":
                pushed[update["record"]["client_id"]] = update["record"]

    listener = asyncio.create_task(listen())
    for sample in order([load(path) for path in SAMPLES]):
        where = sample["name"]
        started = time.time()
        status, body = await send(client, sample)
        want = expected_status(sample)
        if status != want:
            problems.append(f"{where}: status {status}, expected {want}: {body[:200]!r}")
            continue
        if problem := body_problem(sample, status, body):
            problems.append(f"{where}: {problem}")
        positions = sample["expect"]["positions"]
        if status != 200 or not positions:
            continue
        last = positions[-1]
        cid = client_id(sample, last["device"])
        assert cid is not None
        when = last["time"]
        sent[cid, math.inf if when is None else float(when)].append((last["lat"], last["lon"]))
        response = await client.get(f"/api/v1/clients/{quote(cid, safe='/')}")
        if response.status != 200:
            problems.append(f"{where}: GET {cid!r}: {response.status}")
            continue
        record = (await response.json())["record"]
        candidates = sent[cid, math.inf if when is None else float(when)]
        if not any(
            math.isclose(record["lat"], lat, abs_tol=1e-7)
            and math.isclose(record["lon"], lon, abs_tol=1e-7)
            for lat, lon in candidates
        ):
            problems.append(f"{where}: {cid!r} at {record['lat']},{record['lon']}")
        if when is None:
            if not started - 1 <= record["time"] <= time.time() + 1:
                problems.append(f"{where}: arrival time {record['time']}")
        elif not math.isclose(record["time"], float(when), abs_tol=1e-3):
            problems.append(f"{where}: time {record['time']}, expected {when}")
        expected = expected_attributes(sample["app"], last.get("attributes") or {})
        problems += [
            f"{where}: {p}" for p in attribute_problems(expected, record.get("attributes"))
        ]
        newest[cid] = (record["at"], expected, where)
    # The same attributes reach the WebSocket with each client's newest record (a later
    # heartbeat may have made a newer one: then it must match what GET shows).
    final = {}
    for cid in newest:
        response = await client.get(f"/api/v1/clients/{quote(cid, safe='/')}")
        final[cid] = (await response.json())["record"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        pushed.get(cid, {}).get("at") != record["at"] for cid, record in final.items()
    ):
        await asyncio.sleep(0.02)
    listener.cancel()
    await ws.close()
    for cid, (at, expected, where) in newest.items():
        record = pushed.get(cid)
        if record is None or record["at"] != final[cid]["at"]:
            problems.append(f"{where}: WebSocket: no update for {cid!r} with {at!r}")
            continue
        if record["attributes"] != final[cid]["attributes"]:
            problems.append(f"{where}: WebSocket shows {record['attributes']}, GET {final[cid]}")
        if at == record["at"]:
            problems += [
                f"{where}: WebSocket: {p}"
                for p in attribute_problems(expected, record.get("attributes"))
            ]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
