"""History on real servers: late points are kept and replicated but never become the newest
record, every point is stored once however many copies a flood brings, acknowledged points
survive kill -9, a data directory of the previous version loads, deletions replicate, and
HISTORY answers as docs/history.md says."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from helpers import Herd, iamat, poll

from backend.protocol import End, History, parse_line

pytestmark = pytest.mark.timeout(120)

ON = "[history]\nenabled = true\n"

NOW = time.time()


def history(herd: Herd, name: str, client: str, points: bool = False) -> list[bytes]:
    """Every point ``name`` holds of ``client`` (the last hour), as its answer's lines; the
    answer must end with ``END <n>`` for its n lines."""
    ask = History(client, int((NOW - 3600) * 1e9), int((NOW + 60) * 1e9), 10_000, points)
    lines = herd.ask(name, ask.encode()).splitlines(keepends=True)
    assert lines and parse_line(lines[-1]) == End(len(lines) - 1), lines[-3:]
    return lines[:-1]


def converse(port: int, lines: list[bytes]) -> list[bytes]:
    """Send every line on one connection; the replies, one per line, in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"".join(lines))
        replies = sock.makefile("rb")
        return [replies.readline() for _ in lines]


def test_late_points_are_kept_and_replicated_but_never_newest(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Riley", "Jaquez"), links=[("Riley", "Jaquez")], extra=ON) as herd:
        herd.wait_links()
        newest = herd.ask("Riley", iamat("kiwi", when=NOW - 10))
        herd.wait_record("Jaquez", "kiwi", newest)
        # A subscriber's plain stream carries only records that became the newest.
        with socket.create_connection(("127.0.0.1", herd.ports["Jaquez"]), timeout=30) as sub:
            sub.sendall(b"SUBSCRIBE\n")
            stream = sub.makefile("rb")
            assert stream.readline() == newest
            assert stream.readline() == b"SYNCED 1\n"
            late = [herd.ask("Riley", iamat("kiwi", when=NOW - 100 - i)) for i in range(3)]
            assert all(reply.startswith(b"AT Riley ") for reply in late)  # answered as today
            marker = herd.ask("Riley", iamat("kiwi", when=NOW - 5))
            assert stream.readline() == marker, "a late point went down the plain stream"
        for name in ("Riley", "Jaquez"):
            assert herd.whereis(name, "kiwi") == marker  # the newest record is the newest
            poll(lambda name=name: len(history(herd, name, "kiwi")) == 5, what=name)
            assert history(herd, name, "kiwi") == [*reversed(late), newest, marker]


def test_a_point_is_stored_once_however_many_copies_arrive(tmp_path: Path) -> None:
    # Three servers in a triangle: each late point reaches every server twice.
    names = ("Riley", "Jaquez", "Juzang")
    links = [("Riley", "Jaquez"), ("Jaquez", "Juzang"), ("Juzang", "Riley")]
    with Herd(tmp_path, names=names, links=links, extra=ON) as herd:
        herd.wait_links()
        herd.ask("Riley", iamat("kiwi", when=NOW))
        late = converse(herd.ports["Riley"], [iamat("kiwi", when=NOW - i - 1) for i in range(50)])
        # The same report to a second server is the same point (another server's AT line).
        herd.ask("Juzang", iamat("kiwi", when=NOW - 1))
        for name in names:
            poll(lambda name=name: len(history(herd, name, "kiwi")) >= 51, what=f"{name}")
        for name in names:
            points = history(herd, name, "kiwi")
            assert len(points) == 51
            assert {p.split()[-1] for p in points} >= {r.split()[-1] for r in late}


def test_acknowledged_points_survive_kill_9(tmp_path: Path) -> None:
    extra = ON + "[durability]\ncompact_min = 40\n"  # compactions while points are written
    with Herd(tmp_path, names=("Solo",), links=(), extra=extra) as herd:
        herd.ask("Solo", iamat("kiwi", when=NOW))
        lines = [iamat("kiwi", when=NOW - i - 1, location=f"+34.{i:06d}-118.4") for i in range(300)]
        replies = converse(herd.ports["Solo"], lines)
        assert all(r.startswith(b"AT Solo ") for r in replies)
        herd.kill("Solo", signal.SIGKILL)  # at once: some points are only in the journal
        herd.start("Solo")
        assert len(history(herd, "Solo", "kiwi")) == 301


def test_a_data_directory_of_the_previous_version_loads(tmp_path: Path) -> None:
    """Before history a server's data directory held only the journal: its records become
    the first points of history, and nothing else changes."""
    data = tmp_path / "data" / "Solo"
    data.mkdir(parents=True)
    old = [f"AT Solo +0.000100000 c{i} +34.1-118.4 {NOW - 60 + i:.3f}\n".encode() for i in range(5)]
    (data / "snapshot").write_bytes(b"".join(old[:3]))
    (data / "journal.1").write_bytes(b"".join(old[3:]))
    with Herd(tmp_path, names=("Solo",), links=(), extra=ON) as herd:
        for i, line in enumerate(old):
            assert herd.whereis("Solo", f"c{i}") == line
            assert history(herd, "Solo", f"c{i}") == [line]


def test_history_reads_as_the_protocol_says(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Solo",), links=(), extra=ON) as herd:
        replies = converse(
            herd.ports["Solo"],
            [iamat("kiwi", when=NOW - i) for i in range(10)]
            + [b'REPORT kiwi +1+1 %.3f {"battery":50}\n' % (NOW - 20)],
        )
        t0, t9 = (r.split()[-1].decode() for r in (replies[9], replies[0]))
        # Both ends inclusive, oldest first, paged by limit; an unknown client has none.
        window = herd.ask("Solo", f"HISTORY kiwi {t0} {t9} 4\n".encode()).splitlines(True)
        assert window == [*reversed(replies[6:10]), b"END 4\n"]
        assert herd.ask("Solo", b"HISTORY nobody 0 1 10\n") == b"END 0\n"
        # The README's window, to a time past what 64-bit nanoseconds hold.
        everything = herd.ask("Solo", b"HISTORY kiwi 0 9999999999 100\n").splitlines(True)
        assert len(everything) == 12 and everything[-1] == b"END 11\n"
        points = history(herd, "Solo", "kiwi", points=True)
        assert points[0] == b"POINT" + replies[10][2:-1] + b' {"battery":50}\n'
        for bad in (b"HISTORY kiwi 2 1 10\n", b"HISTORY kiwi 0 1 10001\n", b"HISTORY kiwi\n"):
            assert herd.ask("Solo", bad) == b"? " + bad


def test_area_finds_who_was_there_and_status_counts_history(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Solo",), links=(), extra=ON) as herd:
        port = herd.ports["Solo"]
        converse(port, [iamat("owl", "+34.1-118.4", NOW - 9), iamat("owl", "+10-10", NOW - 5)])
        converse(port, [iamat("kiwi", "+34.2-118.3", NOW - 1), iamat("kiwi", "+1+1", NOW - 3)])
        converse(port, [iamat("emu", "+50+10", NOW - 2)])
        since, until = f"{NOW - 60:.3f}", f"{NOW + 60:.3f}"
        area = f"AREA -119 34 -118 35 {since} {until} 100".encode()
        points = herd.ask("Solo", area + b"\n").splitlines()
        assert [p.split()[3] for p in points[:-1]] == [b"kiwi", b"owl"]
        assert points[-1] == b"END 2"
        clients = herd.ask("Solo", area + b" CLIENTS\n")
        assert clients == b"IN kiwi\nIN owl\nEND 2\n"
        status = herd.status("Solo")["history"]
        assert status["points"] == 5 and status["late"] == 1 and status["bytes"] > 0


def test_a_deletion_reaches_every_server(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Riley", "Jaquez"), links=[("Riley", "Jaquez")], extra=ON) as herd:
        herd.wait_links()
        converse(herd.ports["Riley"], [iamat("kiwi", when=NOW - i) for i in range(20)])
        poll(lambda: len(history(herd, "Jaquez", "kiwi")) == 20, what="replication")
        until = f"{NOW - 10:.9f}"
        assert herd.ask("Riley", f"FORGET kiwi {until}\n".encode()).startswith(b"FORGOTTEN kiwi ")
        for name in ("Riley", "Jaquez"):
            poll(lambda name=name: len(history(herd, name, "kiwi")) == 10, what=name)
        # A deleted point does not come back, from a phone's queue or a peer.
        herd.ask("Jaquez", iamat("kiwi", when=NOW - 15))
        assert len(history(herd, "Jaquez", "kiwi")) == 10


def test_history_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    with Herd(tmp_path / "on", names=("Solo",), links=()) as herd:
        reply = herd.ask("Solo", iamat("kiwi", when=NOW))
        assert herd.ask("Solo", b"HISTORY kiwi 0 9999999999 10\n") == reply + b"END 1\n"
    off = "[history]\nenabled = false\n"
    with Herd(tmp_path / "off", names=("Solo",), links=(), extra=off) as herd:
        herd.ask("Solo", iamat("kiwi", when=NOW))
        assert herd.ask("Solo", b"HISTORY kiwi 0 1 10\n") == b"? HISTORY kiwi 0 1 10\n"
        assert not (tmp_path / "off" / "data" / "Solo" / "history.db").exists()


def test_points_learnt_while_apart_reach_everyone_when_the_link_returns(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Riley", "Jaquez"), links=[("Riley", "Jaquez")], extra=ON) as herd:
        herd.wait_links()
        herd.ask("Riley", iamat("kiwi", when=NOW))
        herd.kill("Jaquez", signal.SIGKILL)
        # Late points only Riley hears of, and some only Jaquez will hold from before.
        converse(herd.ports["Riley"], [iamat("kiwi", when=NOW - i - 1) for i in range(100)])
        herd.start("Jaquez")
        converse(herd.ports["Jaquez"], [iamat("owl", when=NOW - i) for i in range(30)])
        herd.wait_links()
        for name in ("Riley", "Jaquez"):
            poll(lambda name=name: len(history(herd, name, "kiwi")) == 101, 20, f"kiwi at {name}")
            poll(lambda name=name: len(history(herd, name, "owl")) == 30, 20, f"owl at {name}")


def test_a_deletion_made_while_apart_is_applied_when_the_link_returns(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Riley", "Jaquez"), links=[("Riley", "Jaquez")], extra=ON) as herd:
        herd.wait_links()
        converse(herd.ports["Riley"], [iamat("kiwi", when=NOW - i) for i in range(20)])
        poll(lambda: len(history(herd, "Jaquez", "kiwi")) == 20, what="replication")
        herd.kill("Jaquez", signal.SIGKILL)
        herd.ask("Riley", f"FORGET kiwi {NOW - 10:.9f}\n".encode())
        herd.start("Jaquez")
        herd.wait_links()
        poll(lambda: len(history(herd, "Jaquez", "kiwi")) == 10, 20, "the deletion at Jaquez")
        # Jaquez offered its old points back before it heard of the deletion: Riley refused.
        assert len(history(herd, "Riley", "kiwi")) == 10


def test_late_points_reach_the_subscribers_that_ask_for_them(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Solo",), links=(), extra=ON) as herd:
        newest = herd.ask("Solo", iamat("kiwi", when=NOW))
        port = herd.ports["Solo"]
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as late,
            socket.create_connection(("127.0.0.1", port), timeout=30) as plain,
        ):
            late.sendall(b"SUBSCRIBE POINTS LATE\n")
            plain.sendall(b"SUBSCRIBE\n")
            late_stream, plain_stream = late.makefile("rb"), plain.makefile("rb")
            for stream in (late_stream, plain_stream):
                # The snapshot is the newest records only, as for any SUBSCRIBE.
                assert [stream.readline(), stream.readline()] == [newest, b"SYNCED 1\n"]
            old = herd.ask("Solo", b'REPORT kiwi +1+1 %.3f {"battery":5}\n' % (NOW - 60))
            again = herd.ask("Solo", b'REPORT kiwi +1+1 %.3f {"battery":5}\n' % (NOW - 60))
            marker = herd.ask("Solo", iamat("kiwi", when=NOW + 1))
            # Once each (the copy is no new point), in order, as LATE with its POINT line.
            assert late_stream.readline() == b"LATE POINT" + old[2:-1] + b' {"battery":5}\n'
            assert late_stream.readline() == marker
            assert plain_stream.readline() == marker
            assert again.startswith(b"AT Solo ")
