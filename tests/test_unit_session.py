"""A client's session without a socket: a real server's session on a memory transport, fed
lines, its replies read back (herd-protocol.md sections 2-4 and 7)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from in_memory import LOCATION, Places, ask, connect, herd_config, make_server, settle, until

from backend.places import render
from backend.server import HerdServer
from backend.session import ClientSession


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[HerdServer]:
    config = herd_config(tmp_path, extra="[limits]\nmax_invalid_lines = 3\nmax_line_bytes = 256\n")
    server = make_server(config)
    yield server
    await server.close()


def iamat(client: str = "kiwi", when: float | None = None) -> bytes:
    return f"IAMAT {client} {LOCATION} {time.time() if when is None else when:.9f}\n".encode()


async def test_iamat_is_answered_with_its_at_line_which_the_server_keeps(
    server: HerdServer,
) -> None:
    client = connect(server)
    line = iamat()
    reply = await ask(client, line)
    assert reply.startswith(b"AT Solo +") and reply.endswith(line[len(b"IAMAT") :])
    assert reply.count(b"\n") == 1 and client.writes == 1
    # What it answered is the record: WHEREIS gives the same line back, on any connection.
    assert await ask(connect(server, ("127.0.0.1", 40001)), b"WHEREIS kiwi\n") == reply


async def test_lines_of_one_chunk_are_answered_in_order_in_one_write(server: HerdServer) -> None:
    client = connect(server)
    reply = await ask(client, iamat("a") + b"\n  \n" + b"WHEREIS a\n" + b"WHEREIS b\n")
    first, second, third = reply.splitlines(keepends=True)
    assert first.startswith(b"AT Solo ") and second == first and third == b"? WHEREIS b\n"
    assert client.writes == 1  # the outbox gathers a chunk's replies


async def test_an_invalid_line_is_answered_with_a_question_mark_and_the_line(
    server: HerdServer,
) -> None:
    client = connect(server)
    for line in (b"IAMAT Clark +12-118", b"HELLO there", b"AT Solo +0.1 kiwi +1+1 1"):
        assert await ask(client, line + b"\r\n") == b"? " + line + b"\n"
    assert not client.is_closing()  # still served: the budget is 3 invalid lines
    assert (await ask(client, iamat())).startswith(b"AT Solo ")


async def test_past_its_budget_of_invalid_lines_the_client_is_hung_up(
    server: HerdServer,
) -> None:
    client = connect(server)
    reply = await ask(client, b"x\n" * 4 + iamat())
    # Each is answered, the fourth over the budget closes the connection after its reply.
    assert reply == b"? x\n" * 4
    assert client.is_closing() and not client.aborted


async def test_a_line_over_the_limit_gets_its_head_back_and_the_rest_is_skipped(
    server: HerdServer,
) -> None:
    client = connect(server)
    long = b"IAMAT " + b"k" * 300 + b" rest of it\n"
    # In pieces, as a socket may deliver it: the rest of the long line is skipped.
    assert await ask(client, long[:100]) == b""
    reply = await ask(client, long[100:] + b"WHEREIS nobody\n")
    assert reply == b"? " + long[:256] + b"\n? WHEREIS nobody\n"


async def test_a_last_line_without_newline_is_answered_at_end_of_stream_then_closed(
    server: HerdServer,
) -> None:
    client = connect(server)
    client.protocol.data_received(iamat().rstrip(b"\n"))
    await settle()
    assert client.take() == b""  # no newline yet: not a line
    assert client.protocol.eof_received() is True  # half-closed: still writing
    await settle()
    assert client.take().startswith(b"AT Solo ")
    assert client.is_closing()


async def test_whatsat_waits_for_places_and_the_lines_behind_it_wait_in_order(
    tmp_path: Path,
) -> None:
    places = Places()
    server = make_server(herd_config(tmp_path), places=places)
    try:
        client = connect(server)
        at = await ask(client, iamat())
        places.hold()
        assert await ask(client, b"WHATSAT kiwi 10 5\nWHEREIS kiwi\n") == b""
        assert not client.reading  # reading paused while a reply is made in a task
        # A chunk already on its way when reading paused waits behind it too.
        assert await ask(client, b"WHEREIS nobody\n") == b""
        places.release()
        await until(lambda: client.written, "the WHATSAT reply")
        await settle()
        whatsat = at + render(places.payload) + b"\n\n"
        assert client.take() == whatsat + at + b"? WHEREIS nobody\n"
        assert client.reading
        assert await ask(client, b"WHATSAT nobody 10 5\n") == b"? WHATSAT nobody 10 5\n"
    finally:
        await server.close()


async def test_the_session_owns_its_connection_and_the_state_counts_it(
    server: HerdServer,
) -> None:
    client = connect(server, ("10.0.0.7", 5555))
    session = client.protocol.consumer
    assert isinstance(session, ClientSession) and session.peer == "10.0.0.7:5555"
    assert session in server.state.clients and server.state.per_address == {"10.0.0.7": 1}
    client.close()
    await settle()
    assert session.closed and not server.state.clients and not server.state.per_address
