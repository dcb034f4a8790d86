"""Five real server processes on ephemeral ports: flooding, framing, invalid input, peers."""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import NAMES, Herd, ask, iamat, poll

AT_LINE = re.compile(rb"AT (\S+) [+-][0-9]+\.[0-9]{9} (\S+) (\S+) (\S+)\n")


def test_iamat_at_each_server_is_visible_at_all_others(herd: Herd) -> None:
    for origin in NAMES:
        client = f"phone-of-{origin}.example"
        request = iamat(client, "-33.8688+151.2093")
        reply = herd.ask(origin, request)
        m = AT_LINE.fullmatch(reply)
        assert m, reply
        assert m[1] == origin.encode()
        assert m.groups()[1:] == tuple(request.split()[1:])
        for other in NAMES:
            herd.wait_record(other, client, reply)
        # WHATSAT elsewhere answers with the origin's own AT line, byte for byte.
        far = next(n for n in NAMES if n != origin and n not in herd.neighbours(origin))
        assert herd.ask(far, f"WHATSAT {client} 10 1\n".encode()).startswith(reply)


def test_a_neighbour_holds_the_record_with_no_wait(herd: Herd) -> None:
    # Real clients send IAMAT to one server and at once WHATSAT to its neighbour.
    for a, b in herd.links:
        for origin, neighbour in ((a, b), (b, a)):
            for i in range(3):
                client = f"hurry-{origin}-{neighbour}-{i}"
                reply = herd.ask(origin, iamat(client))
                answer = herd.ask(neighbour, f"WHATSAT {client} 10 2\n".encode())
                assert answer.startswith(reply), (origin, neighbour, answer[:200])


def test_newer_record_wins_and_older_is_answered_but_not_stored(herd: Herd) -> None:
    new = herd.ask("Riley", iamat("racer", "+10+10", 2000.5))
    old = herd.ask("Campbell", iamat("racer", "+20+20", 1000))
    assert AT_LINE.fullmatch(old) and old.startswith(b"AT Campbell ")
    for name in NAMES:
        herd.wait_record(name, "racer", new)
    # Campbell's older report was answered but neither stored nor flooded.
    assert herd.whereis("Campbell", "racer") == new


def test_one_line_half_close_and_a_single_read_gets_the_whole_reply(herd: Herd) -> None:
    line = iamat("halfclose").rstrip(b"\n")  # no newline: ended by end-of-stream
    with socket.create_connection(("127.0.0.1", herd.ports["Juzang"]), timeout=10) as sock:
        sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        reply = sock.recv(1 << 20)
    assert reply.endswith(b"\n") and AT_LINE.fullmatch(reply), reply

    with socket.create_connection(("127.0.0.1", herd.ports["Juzang"]), timeout=10) as sock:
        sock.sendall(b"WHATSAT halfclose 50 20")
        sock.shutdown(socket.SHUT_WR)
        reply = sock.recv(1 << 20)
    at, _, rest = reply.partition(b"\n")
    assert at.startswith(b"AT Juzang ")
    assert rest.endswith(b"}\n\n") and b"\n\n" not in rest[:-2]
    places = json.loads(rest)
    assert places["status"] == "OK" and 1 <= len(places["results"]) <= 20


def test_pipelined_lines_are_answered_in_order_around_replies_that_wait(herd: Herd) -> None:
    # A WHATSAT waits for the places; the lines sent behind it in the same write must still
    # be answered after it, in the order sent.
    first, second = iamat("pipe-1", "+34.05-118.25"), iamat("pipe-2", "+40.7128-74.0060")
    reply = herd.ask(
        "Campbell",
        first
        + b"WHATSAT pipe-1 10 2\n"
        + b"WHEREIS pipe-1\n"
        + second
        + b"WHATSAT pipe-2 50 3\n"
        + b"not a command\n"
        + b"WHEREIS pipe-2",  # the last line ended by end-of-stream
    )
    at1, rest = reply.split(b"\n", 1)
    assert AT_LINE.fullmatch(at1 + b"\n") and at1.split()[3:] == first.split()[1:]
    places1, rest = rest.split(b"\n\n", 1)
    assert places1.startswith(at1 + b"\n{")
    assert len(json.loads(places1[len(at1) + 1 :])["results"]) <= 2
    whereis1, at2, rest = rest.split(b"\n", 2)
    assert whereis1 == at1
    assert at2.split()[3:] == second.split()[1:]
    places2, rest = rest.split(b"\n\n", 1)
    assert places2.startswith(at2 + b"\n{")
    assert rest == b"? not a command\n" + at2 + b"\n"


def test_a_client_that_does_not_read_is_not_read_either_and_gets_every_reply(herd: Herd) -> None:
    # 600 WHATSATs (20 places, some 18 KB) padded to 4 KB a line, sent in one go, replies
    # unread: once the replies fill the socket the server stops reading this client (the
    # rest of its requests wait in the kernel, not in the server's memory), serves others
    # meanwhile, and answers every line once the client reads.
    count = 600
    line = b"WHATSAT unread 50 20".ljust(4000) + b"\n"
    herd.ask("Jaquez", iamat("unread", "+34.052235-118.243683"))
    one = herd.ask("Jaquez", line)
    with socket.create_connection(("127.0.0.1", herd.ports["Jaquez"]), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(line * count,))
        sender.start()
        server_side = (herd.ports["Jaquez"], sock.getsockname()[1])

        def stalled() -> bool:
            # Requests are left unread and the server has stopped taking them.
            before = unread_by_server(*server_side)
            time.sleep(0.2)
            return before > 0 and unread_by_server(*server_side) == before

        poll(stalled, what="the server to stop reading a client that does not read")
        assert AT_LINE.fullmatch(herd.ask("Jaquez", iamat("bystander")))
        assert unread_by_server(*server_side) > 0
        replies = []
        while sum(map(len, replies)) < len(one) * count:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed the connection"
            replies.append(chunk)
        sender.join()
    assert b"".join(replies) == one * count


def unread_by_server(port: int, client_port: int) -> int:
    """Bytes waiting in the receive queue of the server's end of a loopback connection."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(a.split(":")[1], 16) for a in fields[1:3])
        if (local, remote) == (port, client_port):
            return int(fields[4].split(":")[1], 16)
    raise AssertionError("no such connection")


# Every kind of invalid line the protocol file names, sent on one connection.
INVALID = [
    b"IAMAT Clark +12-118",
    b"IAMAT Clark +12-118 160000 123",
    b"AS Clark +0.25 testuser +12-118 1234",
    b"iamat lower +1+1 1",
    b"IAMAT a 34.06-118.44 1",
    b"IAMAT a +91+0 1",
    b"IAMAT a +0-180.5 1",
    b"IAMAT a +1+1 -5",
    b"IAMAT a +1+1 1e9",
    b"IAMAT a +1+1 nan",
    b"WHATSAT nobody-knows-me 10 5",
    b"WHATSAT halfclose 0 5",
    b"WHATSAT halfclose 51 5",
    b"WHATSAT halfclose ten 5",
    b"WHATSAT halfclose 10 21",
    b"WHATSAT halfclose 10 0",
    b"WHATSAT halfclose 10 2.5",
    b"AT Riley +0.263873386 intruder +34.068930-118.445127 1614209128.918963997",
    b"IAMAT \xff\xfe +1+1 1",
    b"\xc3\x28",
]


def test_every_invalid_line_gets_a_question_mark_and_serving_goes_on(herd: Herd) -> None:
    herd.ask("Bernard", iamat("halfclose"))
    ok = iamat("still-served")
    reply = herd.ask("Bernard", b"".join(line + b"\n" for line in INVALID) + b"\n  \n" + ok)
    expected = b"".join(b"? " + line + b"\n" for line in INVALID)
    assert reply.startswith(expected)
    assert AT_LINE.fullmatch(reply[len(expected) :])
    # A CRLF line is answered without its terminator.
    assert herd.ask("Bernard", b"HELLO there\r\n") == b"? HELLO there\n"
    # The AT line from a plain client was refused, not stored, not flooded.
    for name in NAMES:
        assert herd.whereis(name, "intruder") == b"? WHEREIS intruder\n"


def test_an_over_long_line_gets_a_truncated_copy_and_the_connection_goes_on(herd: Herd) -> None:
    long_line = b"IAMAT " + b"x" * 100_000 + b" +1+1 1\n"
    reply = herd.ask("Riley", long_line + iamat("after-long"))
    first, _, second = reply.partition(b"\n")
    assert first == b"? " + long_line[:8192]
    assert AT_LINE.fullmatch(second)


def test_a_connection_without_the_secret_cannot_inject(herd: Herd) -> None:
    with socket.create_connection(("127.0.0.1", herd.ports["Riley"]), timeout=10) as sock:
        sock.sendall(f"PEER Jaquez {secrets.token_hex(16)}\n".encode())
        challenge = sock.makefile("rb").readline()
        assert challenge.startswith(b"CHALLENGE Riley ")
        sock.sendall(b"PROOF " + b"0" * 64 + b"\n")
        sock.sendall(b"AT Jaquez +0.1 injected +1+1 99999999999\n")
        assert sock.recv(1024) == b""  # hung up, nothing accepted
    # Not a neighbour at all: refused at the first line.
    stranger = f"PEER Campbell {secrets.token_hex(16)}\n".encode()
    assert herd.ask("Riley", stranger) == b"? " + stranger
    for name in NAMES:
        assert herd.whereis(name, "injected") == b"? WHEREIS injected\n"
    poll(lambda: "refused peer connection" in herd.log("Riley"), what="the refusal logged")


def test_subscribe_streams_a_snapshot_then_every_record(herd: Herd) -> None:
    with socket.create_connection(("127.0.0.1", herd.ports["Campbell"]), timeout=10) as sock:
        stream = sock.makefile("rb")
        sock.sendall(b"SUBSCRIBE\n")
        snapshot = []
        while not (line := stream.readline()).startswith(b"SYNCED "):
            snapshot.append(line)
        assert int(line.split()[1]) == len(snapshot) == herd.status("Campbell")["records"]
        sent = [herd.ask(origin, iamat(f"live-{origin}")) for origin in ("Riley", "Bernard")]
        pushed = []
        while len(pushed) < len(sent):
            line = stream.readline()
            if line != b"PING\n":  # heartbeats come every [peers] heartbeat seconds
                pushed.append(line)
        assert sorted(pushed) == sorted(sent)


def test_a_subscriber_that_stops_reading_is_cut_off_and_can_resubscribe(tmp_path: Path) -> None:
    # A subscriber that lets more than subscriber_buffer bytes pile up unread is disconnected
    # (its server's memory stays bounded); clients are served meanwhile and nothing is lost:
    # a new subscription's snapshot holds every record.
    limits = "[limits]\nsubscriber_buffer = 65536\n"
    with Herd(tmp_path, names=["Riley"], links=[], extra=limits) as herd:
        port = herd.ports["Riley"]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
            stalled.sendall(b"SUBSCRIBE\n")
            sent = 0
            # 1 KB records, a thousand at a time, until the server has had enough of it.
            while "too slow, disconnected" not in herd.stderr("Riley"):
                assert sent < 64_000, "a subscriber that never reads was never cut off"
                batch = b"".join(
                    iamat(f"slow-{i:05d}".ljust(1000, "x")) for i in range(sent, sent + 1000)
                )
                assert herd.ask("Riley", batch).count(b"\n") == 1000
                sent += 1000
            stalled.settimeout(10)
            with pytest.raises(OSError):  # the connection ends: EOF or reset
                while stalled.recv(1 << 20):
                    pass
                raise ConnectionResetError("closed")
        assert herd.status("Riley")["records"] == sent
        snapshot = herd.ask("Riley", b"SUBSCRIBE\n")  # half-closed: the snapshot, then EOF
        assert snapshot.count(b"\n") == sent + 1 and b"SYNCED %d\n" % sent in snapshot


def test_logs_hold_every_line_and_every_link(herd: Herd) -> None:
    reply = herd.ask("Juzang", iamat("logged"))
    expected = "<< " + reply.decode().strip()
    log = poll(
        lambda: (t := herd.log("Juzang")) and expected in t and t, what="the reply in the log"
    )
    assert ">> " in log and "IAMAT logged" in log
    for neighbour in herd.neighbours("Juzang"):
        assert f"link to {neighbour} up" in log
        assert f"{neighbour} << {reply.decode().strip()}" in log  # flooded on, also logged
        # The links' own lines too: the handshake and the digests, both ways.
        assert re.search(f"{neighbour} (<<|>>) (PEER|CHALLENGE|PROOF|WELCOME) ", log)
        assert f"{neighbour} << DIGESTS " in log and f"{neighbour} >> DIGESTS " in log


def test_a_full_log_is_rotated_and_the_servers_own_records_follow_it(tmp_path: Path) -> None:
    rotated = "[log_rotation]\nmax_bytes = 4096\nbackups = 2\n"
    with Herd(tmp_path, names=["Riley"], links=[], extra=rotated) as lone:
        logs = tmp_path / "logs"

        def rotated(batch: int) -> bool:
            old = logs / "Riley.log.1"
            return old.exists() and f" rotated{batch}.49 ".encode() in old.read_bytes()

        with socket.create_connection(("127.0.0.1", lone.ports["Riley"])) as conn:
            for batch in (1, 2, 3):
                for i in range(50):  # ~12 KB of traffic-log lines, written as one batch
                    conn.sendall(iamat(f"rotated{batch}.{i}"))
                    conn.recv(4096)
                poll(lambda b=batch: rotated(b), what=f"rotation {batch}")  # type: ignore[misc]
        assert b" rotated2.49 " in (logs / "Riley.log.2").read_bytes()
        assert not (logs / "Riley.log.3").exists(), "more old files kept than backups"
        # A warning written after the rotation lands in the new file, not in a renamed one.
        assert lone.ask("Riley", b"HELLO there\n") == b"? HELLO there\n"
        poll(
            lambda: re.search(r"WARNING .*invalid line from", lone.log("Riley")),
            what="the warning in the current log",
        )


# -- killing servers ---------------------------------------------------------------------

# The protocol file's graph with two servers down: these three leave the rest split.
PARTITIONED = {
    frozenset(("Riley", "Bernard")),
    frozenset(("Jaquez", "Juzang")),
    frozenset(("Juzang", "Bernard")),
}
PAIRS = [(a, b) for i, a in enumerate(NAMES) for b in NAMES[i + 1 :]]


def components(herd: Herd, alive: list[str]) -> list[set[str]]:
    left, parts = set(alive), []
    while left:
        todo, part = [left.pop()], set()
        while todo:
            name = todo.pop()
            part.add(name)
            todo += [n for n in herd.neighbours(name) if n in left]
            left -= set(todo)
        parts.append(part)
    return parts


@pytest.fixture(scope="module")
def herd2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herd]:
    with Herd(tmp_path_factory.mktemp("herd2")) as h:
        h.wait_links()
        yield h


@pytest.mark.parametrize("killed", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_killing_two_servers(herd2: Herd, killed: tuple[str, str]) -> None:
    herd = herd2
    for name in killed:
        herd.kill(name)
    alive = herd.alive()
    parts = components(herd, alive)
    assert (len(parts) > 1) == (frozenset(killed) in PARTITIONED)
    for origin in alive:
        client = f"survivor-{origin}-{'-'.join(killed)}"
        reply = herd.ask(origin, iamat(client))
        reach = next(p for p in parts if origin in p)
        for name in reach:
            herd.wait_record(name, client, reply)
        for name in set(alive) - reach:
            # No link joins the two sides (so nothing can arrive later either).
            links = herd.status(name)["links"]
            assert isinstance(links, dict)
            assert not any(state == "up" and peer in reach for peer, state in links.items())
            assert herd.whereis(name, client) == f"? WHEREIS {client}\n".encode()
    herd.start(*killed)
    herd.wait_links()


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_a_restarted_server_rejoins_the_floods(tmp_path: Path, sig: str) -> None:
    import signal

    with Herd(tmp_path) as herd:
        herd.wait_links()
        code = herd.kill("Jaquez", getattr(signal, sig))
        assert code == (0 if sig == "SIGTERM" else -signal.SIGKILL)
        missed = herd.ask("Riley", iamat("while-jaquez-was-down"))
        herd.start("Jaquez")
        herd.wait_links()
        fresh = herd.ask("Riley", iamat("after-restart"))
        herd.wait_record("Jaquez", "after-restart", fresh)
        from_jaquez = herd.ask("Jaquez", iamat("from-jaquez"))
        herd.wait_record("Campbell", "from-jaquez", from_jaquez)
        # Its neighbours kept what it missed in their link queues and sent it on reconnect.
        poll(
            lambda: herd.whereis("Jaquez", "while-jaquez-was-down") == missed, what="missed record"
        )


def test_a_server_does_not_depend_on_its_working_directory(tmp_path: Path) -> None:
    # Herd starts every process from "/": logs still land next to the config.
    with Herd(tmp_path, names=("Solo",), links=()) as herd:
        herd.ask("Solo", iamat("cwd"))
        assert (tmp_path / "logs" / "Solo.log").exists()
        assert ask(herd.ports["Solo"], b"WHEREIS cwd\n").startswith(b"AT Solo ")


def test_limits_idle_connections_and_invalid_line_budgets(tmp_path: Path) -> None:
    extra = "[limits]\nidle_timeout = 0.5\nmax_invalid_lines = 3\n"
    with Herd(tmp_path, names=("Solo",), links=(), extra=extra) as herd:
        with socket.create_connection(("127.0.0.1", herd.ports["Solo"]), timeout=10) as sock:
            assert sock.recv(1024) == b""  # closed by the server, not by our timeout
        with socket.create_connection(("127.0.0.1", herd.ports["Solo"]), timeout=10) as sock:
            sock.sendall(b"IAMAT x +1+1 1\n" + b"junk\n" * 10)
            got = b""
            while chunk := sock.recv(4096):
                got += chunk
        assert got.startswith(b"AT Solo ")
        assert got.count(b"? junk\n") == 4  # answered, then hung up past the budget of 3
        poll(lambda: "idle for 0.5 s" in (log := herd.log("Solo")) and "more than 3 invalid" in log)


def test_the_server_reports_places_loading_while_it_already_serves(tmp_path: Path) -> None:
    # `herd server` listens at once; the default gazetteer loads in the background meanwhile.
    with Herd(tmp_path, names=("Solo",), links=(), places='provider = "embedded"') as herd:
        assert herd.status("Solo")["places"] == "loading"
        assert herd.ask("Solo", iamat("early")).startswith(b"AT Solo ")
        reply = herd.ask("Solo", b"WHATSAT early 10 3\n")  # waits for the load, then answers
        assert b'"status" : "OK"' in reply
        assert herd.status("Solo")["places"] == "ready"


def test_tcp_rate_limits_answer_question_marks_past_the_budget(tmp_path: Path) -> None:
    extra = (
        "[limits]\nreports_per_client = 5.0\nlines_per_address = 50.0\nmax_invalid_lines = 1000\n"
    )
    with Herd(tmp_path, names=("Solo",), links=(), extra=extra) as herd:
        # One client ID: a burst of 10 (twice the rate), then "?".
        replies = herd.ask(
            "Solo", b"".join(iamat("chatty", when=1700000000 + i) for i in range(15))
        )
        lines = replies.splitlines()
        assert sum(line.startswith(b"AT ") for line in lines) == 10
        assert all(line.startswith(b"? IAMAT chatty") for line in lines[10:])
        # One address: a burst of 100 lines (15 spent above), then "?" whatever the client ID.
        many = herd.ask("Solo", b"".join(iamat(f"other-{i}") for i in range(150)))
        answered = [line.startswith(b"AT ") for line in many.splitlines()]
        assert 80 <= sum(answered) <= 95 and not answered[-1]
        poll(lambda: "lines/s from 127.0.0.1" in herd.log("Solo"), what="the refusal logged")
