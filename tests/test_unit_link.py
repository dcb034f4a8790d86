"""A peer link without a socket: records leave at the end of the loop iteration in one write;
a link that is down or cannot take more queues them, bounded, and after dropping the oldest
asks for a digest exchange (SYNC) that repairs what was lost; the flood skips the source and
the origin (STYLE.md habit 6, docs/anti-entropy.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from in_memory import herd_config, settle, until
from memory_transport import MemoryTransport

from backend.config import HerdConfig
from backend.outbox import Outbox, TrafficLog
from backend.peers import PeerLink, PeerManager
from backend.peers import link as link_module
from backend.peers.link import WRITE_HIGH_WATER
from backend.protocol import PEER_LINE_LIMIT, Record, format_digests, parse_line
from backend.store import Store
from backend.transport import LineTransport

QUEUE = 5


@pytest.fixture
def config(tmp_path: Path) -> HerdConfig:
    return herd_config(
        tmp_path,
        ("Riley", "Jaquez", "Juzang", "Bernard"),
        (("Riley", "Jaquez"), ("Riley", "Juzang"), ("Riley", "Bernard")),
        f"[limits]\npeer_queue = {QUEUE}\n",
    )


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    outbox = Outbox(TrafficLog(tmp_path / "links.log"))
    yield outbox
    outbox.traffic.close()


def at(client: str, origin: str = "Riley") -> bytes:
    return f"AT {origin} +0.000100000 {client} +34.068930-118.445127 1614209128.5\n".encode()


class Up:
    """A link serving a connection on a memory transport."""

    def __init__(self, link: PeerLink) -> None:
        self.link = link
        self.conn = LineTransport(PEER_LINE_LIMIT)
        self.socket = MemoryTransport(self.conn)
        self.task = asyncio.create_task(link.serve(self.conn))

    async def __aenter__(self) -> Up:
        await until(lambda: self.link.up, "the link up")
        await settle()
        return self

    def take(self) -> bytes:
        """What the link wrote since it came up, after the digests it opens with."""
        digests = format_digests(self.link.store.digests)
        data = self.socket.take()
        assert data.startswith(digests)
        return data[len(digests) :]

    async def __aexit__(self, *exc: object) -> None:
        self.socket.close()
        await asyncio.wait_for(self.task, 5)


def riley_link(config: HerdConfig, outbox: Outbox) -> PeerLink:
    return PeerLink(config, "Riley", "Jaquez", lambda r, s: None, Store(), outbox, b"key")


async def test_lines_sent_in_one_iteration_go_out_in_one_write_at_its_end(
    config: HerdConfig, outbox: Outbox
) -> None:
    link = riley_link(config, outbox)
    async with Up(link) as up:
        assert up.take() == b""
        writes = up.socket.writes
        for client in ("a", "b", "c"):
            link.send(at(client))
        assert up.socket.take() == b""  # nothing before the end of the iteration
        await settle()
        assert up.socket.take() == at("a") + at("b") + at("c")
        assert up.socket.writes == writes + 1


async def test_a_full_socket_buffer_sends_records_to_the_queue_and_out_as_it_drains(
    config: HerdConfig, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_module, "FLUSH_BATCH", 2)
    link = riley_link(config, outbox)
    async with Up(link) as up:
        assert up.take() == b""
        up.socket.fill(WRITE_HIGH_WATER)  # the neighbour reads nothing: writing paused
        for client in "abcde":
            link.send(at(client))
        await settle()
        # Past the high-water mark records go to the queue; its flusher writes a batch, then
        # waits for the socket to drain before the next.
        assert up.socket.take() == at("a") + at("b") and len(link._queue) == 3
        up.socket.fill(0)  # the neighbour read it all: resume_writing
        await until(lambda: not link._queue, "the queue flushed")
        await settle()
        assert up.socket.take() == at("c") + at("d") + at("e")
        assert not link.overflowed


async def test_an_overflowing_queue_keeps_the_newest_and_asks_for_sync(
    config: HerdConfig, outbox: Outbox
) -> None:
    link = riley_link(config, outbox)
    # Down: every record waits in the queue, bounded at peer_queue; the oldest go.
    clients = [f"c{i}" for i in range(QUEUE + 3)]
    for client in clients:
        link.send(at(client))
    assert list(link._queue) == [at(c) for c in clients[-QUEUE:]] and link.overflowed
    async with Up(link) as up:
        await until(lambda: b"SYNC" in up.socket.written, "SYNC")
        # What was kept, then SYNC: the neighbour answers with its digests, and the ranges
        # that differ (the dropped records among them) are sent again.
        assert up.take() == b"".join(at(c) for c in clients[-QUEUE:]) + b"SYNC\n"
        assert not link.overflowed
        # The neighbour's digests (all zero: it holds nothing) make the link send its records.
        for client in clients:
            command = parse_line(at(client))
            assert command is not None
            link.store.offer(command.record)  # type: ignore[attr-defined]
        up.conn.data_received(format_digests([0] * len(link.store.digests)))
        await until(lambda: up.socket.written.count(b"\n") == len(clients), "the resync")
        assert sorted(up.socket.take().splitlines(keepends=True)) == sorted(at(c) for c in clients)


async def test_the_flood_skips_the_source_and_the_origin(
    config: HerdConfig, outbox: Outbox
) -> None:
    peers = PeerManager(config, "Riley", lambda r, s: None, Store(), outbox)
    sent: dict[str, list[bytes]] = {name: [] for name in peers.links}
    for name, link in peers.links.items():
        link.send = sent[name].append  # type: ignore[method-assign]

    def record(line: bytes) -> Record:
        command = parse_line(line)
        assert command is not None
        return command.record  # type: ignore[attr-defined,no-any-return]

    mine = at("mine")
    peers.flood(record(mine), mine, None)  # from a client here: to every neighbour
    relayed = at("theirs", origin="Juzang")
    peers.flood(record(relayed), relayed, "Jaquez")  # from Jaquez, made at Juzang
    assert sent == {"Jaquez": [mine], "Juzang": [mine], "Bernard": [mine, relayed]}


@pytest.mark.parametrize("late_line", [True, False])
async def test_a_silent_link_is_dropped_unless_a_line_was_waiting(
    tmp_path: Path, outbox: Outbox, monkeypatch: pytest.MonkeyPatch, late_line: bool
) -> None:
    """Three heartbeats without a line drop the link, but only once the loop had a chance to
    read what was waiting: a loop held past its timers sees the silence before the reads."""
    config = herd_config(
        tmp_path, ("Riley", "Jaquez"), (("Riley", "Jaquez"),), "[peers]\nheartbeat = 0.05\n"
    )
    monkeypatch.setattr(link_module, "CONFIRM_SILENCE_S", 0.5)
    link = riley_link(config, outbox)
    async with Up(link) as up:
        link._last_line -= 10  # as after a held loop
        await asyncio.sleep(0.2)  # the heartbeat saw the silence, and waits to confirm it
        assert link.up
        if late_line:
            up.conn.data_received(b"PING\n")
        await asyncio.sleep(0.45)
        assert link.up is late_line
