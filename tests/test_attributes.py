"""A point's attributes (battery, accuracy, an alarm, ...) travel with its record through the
herd: REPORT in, POINT lines between servers, in the journal and for subscribers that ask
(SUBSCRIBE POINTS, WHEREIS <client> POINTS), while every line a plain client sees stays the
protocol's, byte for byte."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from helpers import Herd

from backend.protocol import format_attributes

pytestmark = pytest.mark.timeout(60)

ATTRIBUTES = {"battery": 87, "accuracy": 5.0, "alarm": "sos", "name": "iPhone 12 Pro"}


def report(client: str, stamp: float, attributes: dict[str, object] = ATTRIBUTES) -> bytes:
    return (
        f"REPORT {client} +34.068930-118.445127 {stamp:.9f} ".encode()
        + format_attributes(attributes)
        + b"\n"
    )


def attributes_of(point: bytes) -> dict[str, object]:
    fields = point.split()
    assert fields[0] == b"POINT" and len(fields) == 7, point
    loaded: dict[str, object] = json.loads(fields[6])
    return loaded


def subscribe(port: int, line: bytes, expected: int) -> list[bytes]:
    """The snapshot lines of a subscription (``expected`` of them, then SYNCED)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(line)
        data = b""
        while b"SYNCED " not in data:
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    lines = data.split(b"\n")
    assert lines[expected] == b"SYNCED %d" % expected
    return lines[:expected]


def test_attributes_reach_the_farthest_server_and_survive_kill_9(tmp_path: Path) -> None:
    with Herd(tmp_path) as herd:
        herd.wait_links()
        stamp = time.time()
        reply = herd.ask("Riley", report("phone", stamp))
        # The reply is exactly IAMAT's: an AT line, no attributes.
        assert reply.startswith(b"AT Riley ") and len(reply.split()) == 6
        plain = herd.ask("Riley", f"IAMAT plain +1+1 {stamp:.9f}\n".encode())
        # Campbell is two hops away; Bernard is reached by two paths.
        herd.wait_record("Campbell", "phone", reply)
        point = herd.ask("Campbell", b"WHEREIS phone POINTS\n")
        assert point == b"POINT" + reply[2:-1] + b" " + format_attributes(ATTRIBUTES) + b"\n"
        assert attributes_of(point) == ATTRIBUTES
        # A record without attributes is the same AT line either way.
        herd.wait_record("Campbell", "plain", plain)
        assert herd.ask("Campbell", b"WHEREIS plain POINTS\n") == plain

        # Plain subscribers see AT lines; SUBSCRIBE POINTS sees the attributes.
        port = herd.ports["Bernard"]
        herd.wait_record("Bernard", "phone", reply)
        assert reply.rstrip(b"\n") in subscribe(port, b"SUBSCRIBE\n", 2)
        assert point.rstrip(b"\n") in subscribe(port, b"SUBSCRIBE POINTS\n", 2)

        # The server that took it is killed -9, with its neighbours down so that only its
        # journal can give the point back: the attributes are there.
        for name in ("Riley", "Jaquez", "Juzang"):
            herd.kill(name)
        herd.start("Riley")
        assert herd.ask("Riley", b"WHEREIS phone POINTS\n") == point


def test_live_subscribers_get_points_and_plain_lines_in_order(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Solo",), links=()) as herd:
        port = herd.ports["Solo"]
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as plain,
            socket.create_connection(("127.0.0.1", port), timeout=10) as points,
        ):
            plain.sendall(b"SUBSCRIBE\n")
            points.sendall(b"SUBSCRIBE POINTS\n")
            for sock in (plain, points):
                assert sock.recv(100) == b"SYNCED 0\n"
            stamp = time.time()
            one = herd.ask("Solo", report("a", stamp))
            two = herd.ask("Solo", f"IAMAT b +1+1 {stamp:.9f}\n".encode())
            three = herd.ask("Solo", report("c", stamp, {"battery": 5}))

            def read(sock: socket.socket, lines: int) -> list[bytes]:
                data = b""
                while data.count(b"\n") < lines:
                    data += sock.recv(65536)
                return data.splitlines(keepends=True)

            assert read(plain, 3) == [one, two, three]
            got = read(points, 3)
            assert got[1] == two
            assert attributes_of(got[0]) == ATTRIBUTES and attributes_of(got[2]) == {"battery": 5}
            assert [b"AT" + line[5:].rsplit(b" ", 1)[0] + b"\n" for line in (got[0], got[2])] == [
                one,
                three,
            ]


def test_attributes_that_are_not_a_json_object_are_refused(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Solo",), links=()) as herd:
        for attributes in (b"[1]", b"{oops}", b"{" + b'"a":"' + b"x" * 3000 + b'"}'):
            line = b"REPORT kiwi +1+1 1700000000 " + attributes + b"\n"
            assert herd.ask("Solo", line) == b"? " + line
        # A plain client cannot pass a record off as a peer's.
        point = b"POINT Riley +0.1 kiwi +1+1 1700000000 {}\n"
        assert herd.ask("Solo", point) == b"? " + point


async def test_the_gateway_shows_attributes_and_pushes_events(tmp_path: Path) -> None:
    async with Herd(tmp_path, names=("Solo",), links=()) as herd:
        base = await herd.start_gateway_async()
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{base}/api/v1/ws") as ws:
                first = await ws.receive_json(timeout=10)
                assert first["type"] == "snapshot"
                stamp = time.time()
                await herd.ask_async("Solo", report("phone", stamp))
                transition = {"transition": {"event": "enter", "region": "Home Office"}}
                await herd.ask_async("Solo", report("phone", stamp + 1, transition))
                messages = []  # updates (two, or one if coalesced), and an event for each
                while sum(m["type"] == "event" for m in messages) < 2:
                    messages.append(await ws.receive_json(timeout=10))
            async with session.get(f"{base}/api/v1/clients/phone") as response:
                assert (await response.json())["record"]["attributes"] == transition
        events = [m["event"] for m in messages if m["type"] == "event"]
        assert [(e["type"], e["client_id"]) for e in events] == [
            ("alarm", "phone"),
            ("transition", "phone"),
        ]
        assert events[0]["alarm"] == "sos" and events[0]["point"]["attributes"] == ATTRIBUTES
        assert (events[1]["event"], events[1]["region"]) == ("enter", "Home Office")
        updates = [m["record"] for m in messages if m["type"] == "update"]
        assert updates and updates[-1]["attributes"] in (ATTRIBUTES, transition)


def test_a_data_directory_of_the_previous_version_loads_unchanged(tmp_path: Path) -> None:
    # The previous version wrote AT lines only, to a snapshot and journal segments.
    data = tmp_path / "data" / "Solo"
    data.mkdir(parents=True)
    old = b"AT Solo +0.000100000 old +34.068930-118.445127 1700000000.5\n"
    newer = b"AT Solo +0.000100000 moved +1+1 1700000001\n"
    (data / "snapshot").write_bytes(old + newer.replace(b"+1+1 1700000001", b"+2+2 1700000000"))
    (data / "journal.3").write_bytes(newer)
    with Herd(tmp_path, names=("Solo",), links=()) as herd:
        assert herd.ask("Solo", b"WHEREIS old\n") == old
        assert herd.ask("Solo", b"WHEREIS moved POINTS\n") == newer
        # New records with attributes go into the same directory beside them.
        reply = herd.ask("Solo", report("phone", time.time()))
        herd.kill("Solo")
        herd.start("Solo")
        assert attributes_of(herd.ask("Solo", b"WHEREIS phone POINTS\n")) == ATTRIBUTES
        assert herd.ask("Solo", b"WHEREIS phone\n") == reply
        assert herd.ask("Solo", b"WHEREIS old\n") == old


async def test_the_rest_api_and_the_websocket_take_attributes(tmp_path: Path) -> None:
    async with Herd(tmp_path, names=("Solo",), links=()) as herd:
        base = await herd.start_gateway_async()
        async with aiohttp.ClientSession() as session:
            body = {"client_id": "api", "lat": 34.07, "lon": -118.44, "attributes": ATTRIBUTES}
            async with session.post(f"{base}/api/v1/locations", json=body) as response:
                assert response.status == 200
                assert (await response.json())["record"]["attributes"] == ATTRIBUTES
            async with session.get(f"{base}/api/v1/clients/api") as response:
                assert (await response.json())["record"]["attributes"] == ATTRIBUTES
            for wrong, named in (
                ({"colour": "red"}, "attributes.colour"),
                ({"battery": 120}, "attributes.battery"),
                ({"alarm": ""}, "attributes.alarm"),
                ([1], "attributes must be an object"),
            ):
                bad = {**body, "attributes": wrong}
                async with session.post(f"{base}/api/v1/locations", json=bad) as response:
                    assert response.status == 400
                    assert named in (await response.json())["error"]["message"]
            async with session.ws_connect(f"{base}/api/v1/ws") as ws:
                assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
                command = {"type": "report", "id": 1, "client_id": "ws", "lat": 1, "lon": 2}
                await ws.send_json({**command, "attributes": {"battery": 50, "charging": True}})
                while (reply := await ws.receive_json(timeout=10))["type"] != "reply":
                    pass
                assert reply["record"]["attributes"] == {"battery": 50.0, "charging": True}
