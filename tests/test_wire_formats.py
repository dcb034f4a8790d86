"""Every line the herd, the gateway and the benchmark write is formatted by the wire module, and
reads back through ``parse_line`` as what was formatted: one format per word, written once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.protocol import (
    Bye,
    Challenge,
    Command,
    IAmAt,
    Peer,
    Ping,
    Proof,
    StartTls,
    Status,
    Subscribe,
    Sync,
    Synced,
    Welcome,
    WhatsAt,
    WhereIs,
    format_attributes,
    format_digests,
    format_status,
    invalid_reply,
    parse_invalid_reply,
    parse_line,
    parse_status,
)

NONCE = "0123456789abcdef" * 2
PROOF = "fedcba9876543210" * 4

COMMANDS: list[Command] = [
    Bye(),
    Ping(),
    Status(),
    StartTls(),
    Sync(),
    Synced(0),
    Synced(12345),
    Subscribe(),
    Subscribe(points=True),
    WhereIs("kiwi.cs.ucla.edu"),
    WhereIs("kiwi", points=True),
    WhatsAt("kiwi", Decimal("10"), 5),
    WhatsAt("kiwi", Decimal("0.5"), 20),
    Peer("Riley", NONCE),
    Challenge("Jaquez", NONCE),
    Proof(PROOF),
    Welcome("Jaquez", PROOF),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.encode().decode().strip())
def test_each_command_reads_back_as_itself(command: Command) -> None:
    line = command.encode()  # type: ignore[union-attr]  # every one listed has encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_line(line) == command


@given(
    client=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64),
    lat=st.integers(-89_999_999, 89_999_999),
    lng=st.integers(-179_999_999, 179_999_999),
    seconds=st.integers(0, 2**33),
    attributes=st.dictionaries(
        st.sampled_from(["acc", "batt", "name"]), st.integers(-(10**6), 10**6)
    ),
)
def test_iamat_and_report_read_back(
    client: str, lat: int, lng: int, seconds: int, attributes: dict[str, object]
) -> None:
    location = f"{lat / 1e6:+.6f}{lng / 1e6:+.6f}"
    sent = IAmAt(client, location, f"{seconds}.5", attributes=format_attributes(attributes))
    line = sent.encode()
    assert line.startswith(b"REPORT " if attributes else b"IAMAT ")
    got = parse_line(line)
    assert isinstance(got, IAmAt)
    assert (got.client_id, got.location, got.client_time, got.attributes) == (
        client,
        location,
        f"{seconds}.5",
        sent.attributes,
    )


@pytest.mark.parametrize("line", [b"IAMAT x", b"WHATSAT ? 1 1\r\n", b"", b"\xff\xfe\n"])
def test_a_refusal_reads_back_as_the_line_it_refuses(line: bytes) -> None:
    assert parse_invalid_reply(invalid_reply(line)) == line.removesuffix(b"\n").removesuffix(b"\r")
    assert parse_invalid_reply(b"AT Riley +0.1 kiwi +1+1 1\n") is None


def test_status_and_digests_read_back() -> None:
    status = {"server": "Riley", "records": 3, "links": {"Jaquez": "up"}}
    assert parse_status(format_status(status)) == status
    assert parse_status(b"STATUS [1]\n") is None
    digests = parse_line(format_digests([1, 2**64 - 1]))
    assert digests is not None and getattr(digests, "values", None) == (1, 2**64 - 1)
