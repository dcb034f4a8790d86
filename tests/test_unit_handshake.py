"""The peer handshake without a socket: PEER, CHALLENGE, PROOF, WELCOME between two links on
a pair of memory transports, and through a server's client port, where the connection that
sends PEER changes consumer on the same transport (docs/protocol.md, "Peer links")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from in_memory import herd_config, make_server, settle, until
from memory_transport import MemoryTransport

from backend.config import HerdConfig
from backend.outbox import Outbox, TrafficLog
from backend.peers import HandshakeError, PeerLink
from backend.protocol import (
    PEER_LINE_LIMIT,
    Challenge,
    Peer,
    Proof,
    Welcome,
    derive_peer_key,
    parse_line,
)
from backend.server import HerdServer
from backend.session import ClientSession
from backend.store import Store
from backend.transport import LineTransport

LINKS = (("Riley", "Jaquez"),)
KEY = derive_peer_key("herd-unit-test-secret-0123456789-abcdefghij")


@pytest.fixture
def config(tmp_path: Path) -> HerdConfig:
    return herd_config(tmp_path, ("Riley", "Jaquez"), LINKS, "[peers]\nhandshake_timeout = 0.3\n")


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    outbox = Outbox(TrafficLog(tmp_path / "links.log"))
    yield outbox
    outbox.traffic.close()


def link(config: HerdConfig, outbox: Outbox, local: str, name: str, key: bytes = KEY) -> PeerLink:
    return PeerLink(config, local, name, lambda r, s: None, Store(), outbox, key)


class Wire:
    """Both ends of a connection, with every line each side wrote, in order."""

    def __init__(self) -> None:
        self.dialer = LineTransport(PEER_LINE_LIMIT)
        self.acceptor = LineTransport(PEER_LINE_LIMIT)
        self.said: list[tuple[str, bytes]] = []
        self.ends = MemoryTransport.pair(self.dialer, self.acceptor)
        self.ends[0].on_write = lambda data: self.said.append(("dialer", data))
        self.ends[1].on_write = lambda data: self.said.append(("acceptor", data))

    def words(self) -> list[str]:
        return [f"{who} {data.split()[0].decode()}" for who, data in self.said]


async def accept(acceptor: PeerLink, conn: LineTransport) -> None:
    """The acceptor's side from the top: read PEER (a server's session does), then the link."""
    hello = parse_line(await conn.readline())
    assert isinstance(hello, Peer)
    await acceptor.accept(hello, conn)


async def test_both_sides_prove_the_secret_and_the_link_comes_up(
    config: HerdConfig, outbox: Outbox
) -> None:
    riley, jaquez = link(config, outbox, "Riley", "Jaquez"), link(config, outbox, "Jaquez", "Riley")
    wire = Wire()
    accepting = asyncio.create_task(accept(jaquez, wire.acceptor))
    await riley.handshake.dial(wire.dialer, asyncio.get_running_loop().time() + 5)
    serving = asyncio.create_task(riley.serve(wire.dialer))
    await until(lambda: riley.up and jaquez.up, "both ends of the link up")
    await settle()
    assert wire.words() == [
        "dialer PEER",
        "acceptor CHALLENGE",
        "dialer PROOF",
        "acceptor WELCOME",
        "acceptor DIGESTS",
        "dialer DIGESTS",
    ]
    wire.ends[0].close()
    await asyncio.wait_for(asyncio.gather(accepting, serving), 5)
    assert not riley.up and not jaquez.up


async def test_a_dialler_without_the_secret_is_refused_and_learns_nothing(
    config: HerdConfig, outbox: Outbox
) -> None:
    stranger = link(config, outbox, "Riley", "Jaquez", key=derive_peer_key("x" * 40))
    jaquez = link(config, outbox, "Jaquez", "Riley")
    wire = Wire()
    accepting = asyncio.create_task(accept(jaquez, wire.acceptor))
    dialling = asyncio.create_task(
        stranger.handshake.dial(wire.dialer, asyncio.get_running_loop().time() + 5)
    )
    with pytest.raises(HandshakeError, match="failed to prove the herd secret"):
        await asyncio.wait_for(accepting, 5)
    wire.ends[1].close()  # as PeerManager does when the handshake fails
    with pytest.raises(ConnectionResetError):
        await dialling
    assert wire.words() == ["dialer PEER", "acceptor CHALLENGE", "dialer PROOF"]
    assert not jaquez.up


async def test_an_acceptor_without_the_secret_is_found_out_by_the_dialler(
    config: HerdConfig, outbox: Outbox
) -> None:
    riley = link(config, outbox, "Riley", "Jaquez")
    wire = Wire()

    async def impostor() -> None:
        # It answers PROOF with a WELCOME it cannot make right without the secret.
        conn = wire.acceptor
        hello = parse_line(await conn.readline())
        assert isinstance(hello, Peer)
        conn.write(Challenge("Jaquez", "1" * 32).encode())
        assert isinstance(parse_line(await conn.readline()), Proof)
        conn.write(Welcome("Jaquez", "2" * 64).encode())

    answering = asyncio.create_task(impostor())
    with pytest.raises(HandshakeError, match="does not know the herd secret"):
        await riley.handshake.dial(wire.dialer, asyncio.get_running_loop().time() + 5)
    await answering


async def test_a_silent_dialler_times_out_waiting_for_proof(
    config: HerdConfig, outbox: Outbox
) -> None:
    jaquez = link(config, outbox, "Jaquez", "Riley")
    wire = Wire()
    hello = Peer("Riley", "0" * 32)
    with pytest.raises(HandshakeError, match=r"timed out after 0\.3 s waiting for PROOF"):
        await jaquez.accept(hello, wire.acceptor)


async def test_a_silent_acceptor_times_out_the_dialler(config: HerdConfig, outbox: Outbox) -> None:
    riley = link(config, outbox, "Riley", "Jaquez")
    wire = Wire()
    with pytest.raises(HandshakeError, match="waiting for CHALLENGE"):
        await riley.handshake.dial(wire.dialer, asyncio.get_running_loop().time() + 0.2)


async def test_a_client_connection_that_sends_peer_becomes_a_link_on_the_same_transport(
    config: HerdConfig, outbox: Outbox
) -> None:
    server: HerdServer = make_server(config, "Jaquez")
    try:
        riley = link(config, outbox, "Riley", "Jaquez")
        dialer = LineTransport(PEER_LINE_LIMIT)
        accepted = server.connection()
        session = accepted.consumer
        assert isinstance(session, ClientSession)
        MemoryTransport.pair(dialer, accepted)
        await riley.handshake.dial(dialer, asyncio.get_running_loop().time() + 5)
        await until(lambda: server.peers.links["Riley"].up, "the link up at Jaquez")
        # The session let go of its transport, which the link now reads; no set_protocol.
        assert accepted.consumer is None and session.closed
        assert session not in server.state.clients
        assert server.peers.links["Riley"]._conn is accepted
    finally:
        await server.close()


async def test_a_link_that_came_in_as_a_client_reads_lines_up_to_the_peer_limit(
    tmp_path: Path, outbox: Outbox
) -> None:
    # Clients' lines are held to 256 bytes here; a record line of a neighbour (a long client
    # ID) is longer, and must still be taken once the connection has proved itself a peer.
    config = herd_config(
        tmp_path,
        ("Riley", "Jaquez"),
        LINKS,
        "[peers]\nhandshake_timeout = 0.3\n\n[limits]\nmax_line_bytes = 256\n",
    )
    server = make_server(config, "Jaquez")
    try:
        riley = link(config, outbox, "Riley", "Jaquez")
        dialer = LineTransport(PEER_LINE_LIMIT)
        MemoryTransport.pair(dialer, server.connection())
        await riley.handshake.dial(dialer, asyncio.get_running_loop().time() + 5)
        await until(lambda: server.peers.links["Riley"].up, "the link up at Jaquez")
        client_id = "k" * 600
        dialer.write(f"AT Riley +0.1 {client_id} +34-118 1700000000\n".encode())
        await until(lambda: server.store.get(client_id) is not None, "the record at Jaquez")
    finally:
        await server.close()


async def test_peer_from_a_stranger_is_refused_as_a_client_line(config: HerdConfig) -> None:
    server = make_server(config, "Jaquez")
    try:
        client = MemoryTransport(server.connection())
        client.protocol.data_received(b"PEER Campbell " + b"0" * 32 + b"\n")
        await settle()
        assert client.take() == b"? PEER Campbell " + b"0" * 32 + b"\n"
        assert not server.peers.links["Riley"].up
    finally:
        await server.close()
