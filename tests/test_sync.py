"""SYNC: records dropped from a link's full queue reach the neighbour all the same, through
the digest exchange that SYNC asks for, long before the periodic one would run."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from helpers import Herd, iamat, poll

QUEUE = 50  # [limits] peer_queue: records a link holds beyond its socket before dropping
# Heartbeats and the periodic exchange far beyond the test: the link stays up while Juzang is
# stopped, and only SYNC can bring the dropped records over in time.
PEERS = "reconnect_max = 0.5\nheartbeat = 30.0\nsync_interval = 3600.0"
ID_BYTES = 1000  # long client IDs fill the link's socket buffers in few records
ROUND = 2000  # IAMATs per connection: about 2 MB
MAX_BYTES = 64 << 20  # far beyond any socket buffers: the queue must have overflowed by then
WARNING = "link to Juzang: queue full, dropping its oldest records"


def client(i: int) -> str:
    return f"sync-{i:06d}-".ljust(ID_BYTES, "x")


def converse(port: int, data: bytes) -> bytes:
    """``ask`` for megabytes: send from a thread while reading, as the server stops reading a
    client whose replies pile up (a single sendall would then wait forever)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:

        def send() -> None:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        sender.join()
        return b"".join(chunks)


def stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP has taken effect): state T in /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def test_records_dropped_from_a_full_link_queue_arrive_through_sync(tmp_path: Path) -> None:
    with Herd(
        tmp_path,
        names=("Riley", "Juzang"),
        links=[("Riley", "Juzang")],
        peers=PEERS,
        extra=f"[limits]\npeer_queue = {QUEUE}\n",
    ) as herd:
        herd.wait_links()
        riley = herd.ports["Riley"]
        # Stopped, Juzang keeps its socket open but reads nothing: Riley's records to it fill
        # the kernel's buffers, then the link's write buffer, then its queue. (Herd.kill would
        # wait for the process to exit; if the test fails, Herd's exit kills it, stopped or not.)
        juzang = herd.procs["Juzang"]
        juzang.send_signal(signal.SIGSTOP)
        poll(lambda: stopped(juzang.pid), what="Juzang to stop")

        replies: dict[str, bytes] = {}  # client -> Riley's AT line for it

        def report(clients: list[str]) -> None:
            reply = converse(riley, b"".join(iamat(c) for c in clients))
            lines = reply.splitlines(keepends=True)
            assert len(lines) == len(clients), reply[-300:]
            for c, line in zip(clients, lines, strict=True):
                assert line.startswith(b"AT Riley ") and c.encode() in line, line[:100]
                replies[c] = line

        sent = 0
        while WARNING not in herd.stderr("Riley"):  # --quiet: warnings only, a small file
            assert sent < MAX_BYTES, f"no overflow after {sent} bytes of records"
            report([client(len(replies) + i) for i in range(ROUND)])
            sent += ROUND * ID_BYTES
        # The queue is full and cannot move while Juzang is stopped: of these records, all but
        # the last QUEUE are pushed out of it by the ones behind them.
        late = [client(len(replies) + i) for i in range(4 * QUEUE)]
        report(late)
        dropped = late[:-QUEUE]
        total = len(replies)
        assert herd.status("Riley")["records"] == total

        juzang.send_signal(signal.SIGCONT)
        # Within seconds (it takes well under one on an idle machine), so not by the periodic
        # exchange, an hour away.
        poll(
            lambda: herd.status("Juzang")["records"] == total,
            timeout=20,
            what=f"Juzang to hold all {total} records",
        )

        # Every record, byte for byte as Riley answered it: the dropped ones too.
        for c in (dropped[0], dropped[len(dropped) // 2], dropped[-1]):
            assert herd.whereis("Juzang", c) == replies[c], c[:12]
        whereis = b"".join(b"WHEREIS %s\n" % c.encode() for c in replies)
        answers = converse(herd.ports["Juzang"], whereis)
        wrong = [
            c
            for c, line in zip(replies, answers.splitlines(keepends=True), strict=True)
            if line != replies[c]
        ]
        assert not wrong, f"{len(wrong)} records differ at Juzang, first {wrong[0][:12]}"

        # The repair was SYNC's exchange: Riley sent SYNC (both logs say so), Juzang answered
        # each with its digests and sent no others, and the link never went down (a new link
        # would exchange digests too).
        poll(lambda: "TRAFFIC Riley >> SYNC\n" in herd.log("Juzang"), what="SYNC in Juzang's log")
        syncs = herd.log("Juzang").count("TRAFFIC Riley >> SYNC\n")
        riley_log = herd.log("Riley")
        assert riley_log.count("TRAFFIC Juzang << SYNC\n") == syncs
        assert riley_log.count("TRAFFIC Juzang >> DIGESTS ") == 1 + syncs  # 1: at link up
        assert "sync with Juzang: " in riley_log  # the ranges that differed were sent
        assert riley_log.count("link to Juzang up") == 1
        assert "link to Juzang dropped" not in riley_log
