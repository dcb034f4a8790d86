"""The outbox's stage order without a socket: what one IAMAT makes leaves in the order the
server promises, the subscribers, then the peer links, then the journal, then the reply
(backend/outbox.py), so that a neighbour and the disk hold a record before its client has the
answer, and a subscriber has it before any neighbour is woken."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from in_memory import LOCATION, ask, connect, herd_config, make_server, settle, until
from memory_transport import MemoryTransport

from backend.outbox import Outbox, TrafficLog
from backend.protocol import PEER_LINE_LIMIT
from backend.transport import LineTransport


async def test_the_stages_run_in_order_whatever_the_order_they_were_queued(
    tmp_path: Path,
) -> None:
    outbox = Outbox(TrafficLog(tmp_path / "traffic.log"))
    ran: list[str] = []
    outbox.later(Outbox.CLIENTS, lambda: ran.append("reply"))
    outbox.later(Outbox.JOURNAL, lambda: ran.append("journal"))
    outbox.later(Outbox.PEERS, lambda: ran.append("link"))
    outbox.later(Outbox.SUBSCRIBERS, lambda: ran.append("subscriber"))
    outbox.later(Outbox.CLIENTS, lambda: ran.append("reply 2"))
    assert ran == []  # nothing before the end of the iteration
    await settle()
    assert ran == ["subscriber", "link", "journal", "reply", "reply 2"]
    outbox.traffic.close()


async def test_an_iamat_reaches_the_neighbour_and_the_journal_before_its_client(
    tmp_path: Path,
) -> None:
    """With a subscriber, an IAMAT's record goes to it, then to the neighbour, then to the
    journal, then the reply to its client."""
    config = herd_config(tmp_path, ("Riley", "Jaquez"), (("Riley", "Jaquez"),))
    server = make_server(config, "Riley")
    order: list[str] = []
    try:
        # Jaquez's link is up, on a memory transport.
        conn = LineTransport(PEER_LINE_LIMIT)
        link_socket = MemoryTransport(conn, ("127.0.0.1", 40001))
        serving = asyncio.create_task(server.peers.links["Jaquez"].serve(conn))
        await until(lambda: server.peers.links["Jaquez"].up, "the link up")
        # History's digests go out on link-up (read in a worker thread): let them go first.
        # The thread needs the interpreter for a few milliseconds on a loaded machine, more
        # than a thousand turns of an idle loop: up to some seconds' worth of turns.
        sent = bytearray()
        await until(
            lambda: sent.extend(link_socket.take()) or b"HAVE forget" in sent,
            "HAVEs",
            turns=500_000,
        )
        await settle()
        link_socket.on_write = lambda data: order.append("link")
        journal_flush = server.journal.flush

        def flush() -> None:
            if server.journal._buffer:
                order.append("journal")
            journal_flush()

        server.journal.flush = flush  # type: ignore[method-assign]
        subscriber = connect(server, ("127.0.0.1", 40002))
        assert await ask(subscriber, b"SUBSCRIBE\n") == b"SYNCED 0\n"
        subscriber.on_write = lambda data: order.append("subscriber")
        client = connect(server, on_write=lambda data: order.append("reply"))
        line = f"IAMAT kiwi {LOCATION} {time.time():.9f}\n".encode()
        client.protocol.data_received(line)
        assert order == []
        await settle()
        assert order == ["subscriber", "link", "journal", "reply"]
        reply = client.take()
        assert reply.startswith(b"AT Riley ") and link_socket.take().endswith(reply)
        assert subscriber.take() == reply
        assert (tmp_path / "data" / "Riley").is_dir()
        journals = (tmp_path / "data" / "Riley").glob("journal.*")  # (history.db beside them)
        journaled = b"".join(p.read_bytes() for p in journals)
        assert journaled == reply
        link_socket.close()
        await asyncio.wait_for(serving, 5)
    finally:
        await server.close()
