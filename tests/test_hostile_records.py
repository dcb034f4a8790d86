"""Records at and past the protocol's bounds: nothing a server accepts may be refused by its
peers, a record past the bounds is refused where it enters the herd, and a herd that already
holds one (a journal written by an earlier version) drops it and carries on.

The bounds are in backend/protocol.py and docs/protocol.md ("Bounds").
"""

from __future__ import annotations

import asyncio
import socket
import string
import time
from pathlib import Path

import pytest
from helpers import Herd, iamat, poll
from memory_transport import MemoryTransport

from backend.config import load_config
from backend.outbox import Outbox, TrafficLog
from backend.peers import PeerLink
from backend.protocol import MAX_CLIENT_ID_BYTES, MAX_TIME_S, PEER_LINE_LIMIT, Record
from backend.store import Store
from backend.transport import LineTransport as LineConnection

pytestmark = pytest.mark.timeout(120)

LOCATION = "+34.068930-118.445127"


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Herd:
    with Herd(tmp_path_factory.mktemp("solo"), names=("Solo",), links=()) as herd:
        yield herd


def reply_to(herd: Herd, line: bytes) -> bytes:
    return herd.ask("Solo", line + b"\n")


def refused(herd: Herd, line: bytes) -> bool:
    return reply_to(herd, line) == b"? " + line + b"\n"


def accepted(herd: Herd, line: bytes) -> bool:
    return reply_to(herd, line).startswith(b"AT Solo ")


def test_what_the_courses_tests_send_is_still_accepted(solo: Herd) -> None:
    now = time.time()
    printable = string.printable.strip().replace(" ", "")  # no white space inside a field
    long_id = (printable * 4)[:256]
    assert accepted(solo, f"IAMAT {long_id} {LOCATION} {now:.9f}".encode())
    assert accepted(solo, f"IAMAT kiwi {LOCATION} {int(now)}.{'1' * 30}".encode())
    assert accepted(solo, f"IAMAT kiwi {LOCATION} {now + 100:.9f}".encode())
    assert accepted(solo, f"IAMAT {'é' * (MAX_CLIENT_ID_BYTES // 2)} {LOCATION} {now}".encode())


@pytest.mark.parametrize(
    "client, stamp",
    [
        # An IAMAT just under the 8 KiB line limit: its AT line would be over it.
        ("x" * 8140, "1614209128.918963997"),
        ("x" * (MAX_CLIENT_ID_BYTES + 1), "1614209128.918963997"),
        # A time of 4,000 digits (its time difference repeats them), 1e400 (a float's inf),
        # 201 digits (past what a date can show), and past the int-conversion limit.
        (None, "1" * 4000),
        (None, "1" + "0" * 400),
        (None, "9" * 201),
        (None, "1614209128." + "1" * 5000),
        (None, str(MAX_TIME_S + 1)),
        # Year 3000: would pin the client's newest record forever.
        (None, "32503680000"),
    ],
    ids=[
        "id-8140",
        "id-over-bound",
        "time-4000",
        "time-1e400",
        "time-201",
        "fraction-5000",
        "after-9999",
        "year-3000",
    ],
)
def test_a_record_past_a_bound_is_refused_where_it_enters(
    solo: Herd, client: str | None, stamp: str, request: pytest.FixtureRequest
) -> None:
    client = client or request.node.callspec.id
    assert refused(solo, f"IAMAT {client} {LOCATION} {stamp}".encode())
    assert solo.whereis("Solo", client).startswith(b"? ")


def test_numbers_past_the_int_conversion_limit_get_an_answer(solo: Herd) -> None:
    assert accepted(solo, f"IAMAT dig {LOCATION} {time.time()}".encode())
    for line in (
        b"WHATSAT dig 10 " + b"1" * 5000,
        b"WHATSAT dig " + b"1" * 5000 + b" 5",
        b"WHATSAT dig 10 " + b"0" * 40 + b"5",
        b"IAMAT dig +" + b"1" * 5000 + b"+1 1",
    ):
        assert refused(solo, line)
    assert solo.procs["Solo"].poll() is None
    assert "Traceback" not in solo.stderr("Solo") + solo.log("Solo")


def test_the_time_bound_is_max_future_ahead_of_the_servers_clock(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Solo",), links=(), extra="[limits]\nmax_future = 30\n") as herd:
        now = time.time()
        assert accepted(herd, f"IAMAT soon {LOCATION} {now + 20:.9f}".encode())
        assert refused(herd, f"IAMAT later {LOCATION} {now + 40:.9f}".encode())


def test_a_peer_never_refuses_a_forwarded_record_for_its_time(tmp_path: Path) -> None:
    # A's clients may be 600 s ahead; B itself would refuse its own clients past 1 s. What A
    # accepted, B must take: nothing a server accepts may be refused by its peers.
    herd = Herd(
        tmp_path, names=("A", "B"), links=[("A", "B")], extra="[limits]\nmax_future = 600\n"
    )
    with herd:
        herd.procs["B"].kill()
        herd.procs["B"].wait()
        herd._extra = "[limits]\nmax_future = 1\n"
        herd.write_config()
        herd.start("B")
        herd.wait_links()
        line = f"IAMAT ahead {LOCATION} {time.time() + 300:.9f}\n".encode()
        record = herd.ask("A", line)
        assert record.startswith(b"AT A ")
        herd.wait_record("B", "ahead", record)
        assert herd.ask("B", line.replace(b"ahead", b"local")).startswith(b"? ")


def poison_line(server: str = "Old") -> bytes:
    # What an earlier version accepted: an 8,165-byte client ID, whose AT line is longer
    # than the 8 KiB that a peer link read as one line.
    return f"AT {server} +0.000100000 {'p' * 8165} {LOCATION} 1614209128.5\n".encode()


def test_a_journal_holding_a_poison_record_is_loaded_without_it(tmp_path: Path) -> None:
    good = f"AT A +0.000100000 good {LOCATION} 1614209128.5\n".encode()
    journal = tmp_path / "data" / "A" / "journal.1"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(good + poison_line() + good.replace(b"good", b"fine"))
    herd = Herd(tmp_path, names=("A", "B"), links=[("A", "B")])
    with herd:
        herd.wait_links()
        # Both good records reach B through the digest exchange; the poison never does.
        herd.wait_record("B", "good", good)
        herd.wait_record("B", "fine", good.replace(b"good", b"fine"))
        assert herd.whereis("A", "p" * 8165).startswith(b"? ")
        assert herd.log("A").count("journal: dropped a line") == 1
        # The poison is rewritten out of the journal, so the next start does not meet it.
        poll(
            lambda: all(b"p" * 8165 not in path.read_bytes() for path in journal.parent.iterdir()),
            what="the journal to be compacted",
        )
        # The link never dropped: no record could make it flap.
        for name in ("A", "B"):
            assert "dropped" not in herd.log(name).replace("journal: dropped", "")
        assert herd.status("A")["links"] == {"B": "up"}


async def test_a_peer_link_skips_a_poison_line_from_an_older_peer_and_stays_up(
    tmp_path: Path,
) -> None:
    # Socket-free: the link's protocol object on a transport in memory, fed what a server of
    # an earlier version would send from a herd that holds a poison record.
    config = load_config(None)
    received: list[Record] = []
    outbox = Outbox(TrafficLog(tmp_path / "A.log"))
    on_record = lambda r, _: received.append(r)  # noqa: E731
    link = PeerLink(config, "Riley", "Jaquez", on_record, Store(), outbox, b"key")
    conn = LineConnection(PEER_LINE_LIMIT)
    transport = MemoryTransport(conn, ("127.0.0.1", 1))
    serving = asyncio.create_task(link.serve(conn))
    await asyncio.sleep(0)
    good = f"AT Jaquez +0.000100000 good {LOCATION} 1614209128.5\n".encode()
    huge = b"AT Jaquez +0.1 " + b"h" * PEER_LINE_LIMIT + b" +1+1 1\n"
    conn.data_received(poison_line("Jaquez") + huge + good)
    assert [r.client_id for r in received] == ["good"]
    assert link.up and not transport.aborted
    transport.close()
    await asyncio.wait_for(serving, 5)
    outbox.traffic.close()


def test_a_client_elsewhere_cannot_spend_another_addresss_report_budget(tmp_path: Path) -> None:
    # reports_per_client counts per remote address and client ID: a TCP client at another
    # address (here 127.0.0.2) that exhausts its budget for "kiwi" leaves the budget of the
    # gateway's address (127.0.0.1) for "kiwi" untouched.
    with Herd(
        tmp_path, names=("Solo",), links=(), extra="[limits]\nreports_per_client = 1\n"
    ) as herd:
        port = herd.ports["Solo"]

        def report_from(source: str, n: int) -> list[bytes]:
            with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as s:
                now = time.time()
                s.sendall(b"".join(iamat("kiwi", when=now - 100 + i) for i in range(n)))
                s.shutdown(socket.SHUT_WR)
                return recv_all(s).splitlines()

        stranger = report_from("127.0.0.2", 10)
        assert stranger[0].startswith(b"AT Solo ") and stranger[-1].startswith(b"? ")
        assert report_from("127.0.0.1", 1)[0].startswith(b"AT Solo ")


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
