"""Defences against a hostile outsider who can reach a server's port: the peer handshake and
the herd secret, subscribers' memory, the connection budget, and what reaches files and logs.
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import Herd, ask, iamat, poll

from backend.config import ConfigError, load_config
from backend.outbox import TrafficLog

STRONG = secrets.token_urlsafe(32)


def herd_file(tmp_path: Path, head: str, host: str = "127.0.0.1") -> Path:
    path = tmp_path / "herd.toml"
    path.write_text(
        f'{head}\nlinks = [["A", "B"]]\n'
        f'[servers.A]\nhost = "{host}"\nport = 1\n[servers.B]\nhost = "127.0.0.1"\nport = 2\n'
    )
    return path


# -- the herd secret ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("test-secret", "it has 11 characters"),
        ("correct horse battery staple and more words", "white space"),
        ("é" * 40, "non-ASCII"),
        ("x" * 31, "it has 31 characters"),
    ],
)
def test_a_weak_secret_is_refused_with_how_to_make_one(
    tmp_path: Path, secret: str, why: str
) -> None:
    path = herd_file(tmp_path, f'secret = "{secret}"')
    with pytest.raises(ConfigError, match="at least 32 characters of printable ASCII") as error:
        load_config(path, env={})
    message = str(error.value)
    assert why in message and "secrets.token_urlsafe(32)" in message
    assert secret not in message  # never echoed into logs or terminals
    # Every command refuses to start, with status 2.
    result = subprocess.run(
        [sys.executable, "-m", "backend", "config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "at least 32 characters" in result.stderr


def test_a_strong_secret_is_accepted(tmp_path: Path) -> None:
    assert load_config(herd_file(tmp_path, f'secret = "{STRONG}"'), env={}).secret == STRONG


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "herd.example.org"])
def test_the_built_in_secret_is_refused_off_loopback(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match=r"built-in one .* is public") as error:
        load_config(herd_file(tmp_path, "", host=host), env={})
    assert f"A ({host})" in str(error.value) and "secrets.token_urlsafe(32)" in str(error.value)
    # With its own secret, the same herd may listen anywhere.
    assert load_config(herd_file(tmp_path, f'secret = "{STRONG}"', host=host), env={})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_the_built_in_secret_is_allowed_on_loopback(tmp_path: Path, host: str) -> None:
    assert load_config(herd_file(tmp_path, "", host=host), env={}).secret == "change-me"


# -- the peer handshake ---------------------------------------------------------------------


class Started:
    """Start some of a herd's servers; stop them on exit."""

    def __init__(self, herd: Herd, *names: str) -> None:
        self.herd, self.names = herd, names

    def __enter__(self) -> Herd:
        try:
            self.herd.start(*self.names)
        except BaseException:
            self.herd.stop()
            raise
        return self.herd

    def __exit__(self, *exc: object) -> None:
        self.herd.stop()


def peer_herd(tmp_path: Path, extra_peers: str = "") -> Herd:
    return Herd(
        tmp_path,
        names=["Jaquez", "Riley"],
        links=[("Jaquez", "Riley")],
        peers=f"reconnect_max = 0.5\nheartbeat = 1.0\n{extra_peers}",
    )


def test_the_acceptor_proves_nothing_before_the_dialler_has(tmp_path: Path) -> None:
    herd = peer_herd(tmp_path, "handshake_timeout = 0.5")
    with Started(herd, "Riley"):  # the test plays Jaquez
        with socket.create_connection(("127.0.0.1", herd.ports["Riley"]), timeout=10) as sock:
            sock.sendall(f"PEER Jaquez {secrets.token_hex(16)}\n".encode())
            challenge = sock.makefile("rb").readline()
            # Only a name and a nonce: nothing that a guess at the secret could be tested on.
            assert re.fullmatch(rb"CHALLENGE Riley [0-9a-f]{32}\n", challenge), challenge
            sock.sendall(b"PROOF " + b"0" * 64 + b"\n")
            assert sock.recv(1024) == b""  # a wrong proof: hung up on, no WELCOME
        poll(lambda: "Jaquez failed to prove the herd secret" in herd.log("Riley"))
        # A handshake that stalls is refused with the reason in the log.
        with socket.create_connection(("127.0.0.1", herd.ports["Riley"]), timeout=10) as sock:
            sock.sendall(f"PEER Jaquez {secrets.token_hex(16)}\n".encode())
            assert sock.makefile("rb").readline().startswith(b"CHALLENGE Riley ")
            assert sock.recv(1024) == b""  # closed at handshake_timeout
        poll(lambda: "timed out after 0.5 s waiting for PROOF" in herd.log("Riley"))


def test_the_dialler_checks_the_acceptors_proof_before_anything_else(tmp_path: Path) -> None:
    # The test plays Riley, which Jaquez dials: it answers PROOF with a WELCOME whose proof is
    # wrong. Jaquez must send nothing more (no DIGESTS, no records) and hang up.
    herd = peer_herd(tmp_path)
    with socket.create_server(("127.0.0.1", herd.ports["Riley"])) as listener:
        listener.settimeout(10)
        with Started(herd, "Jaquez"):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                stream = conn.makefile("rb")
                hello = stream.readline()
                assert re.fullmatch(rb"PEER Jaquez [0-9a-f]{32}\n", hello), hello
                conn.sendall(f"CHALLENGE Riley {secrets.token_hex(16)}\n".encode())
                proof = stream.readline()
                assert re.fullmatch(rb"PROOF [0-9a-f]{64}\n", proof), proof  # it goes first
                conn.sendall(f"WELCOME Riley {'0' * 64}\n".encode())
                assert stream.read() == b""  # nothing more, and closed
            poll(lambda: "Riley does not know the herd secret" in herd.log("Jaquez"))
            assert herd.status("Jaquez")["links"] == {"Riley": "down"}


# -- files and logs -------------------------------------------------------------------------


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_journal_snapshot_and_logs_are_private(tmp_path: Path) -> None:
    # A log file left readable by an older version is tightened too.
    (tmp_path / "logs").mkdir(mode=0o755)
    old_log = tmp_path / "logs" / "Riley.log"
    old_log.write_text("")
    old_log.chmod(0o644)
    herd = Herd(tmp_path, names=["Riley"], links=[], extra="[durability]\ncompact_min = 10\n")
    with Started(herd, "Riley"):
        for i in range(30):
            herd.ask("Riley", iamat("private", when=1_700_000_000 + i))
        data = tmp_path / "data" / "Riley"
        poll(lambda: (data / "snapshot").exists(), what="a compaction")
        assert mode(tmp_path / "data") == 0o700 and mode(data) == 0o700
        journals = list(data.glob("journal.*"))
        assert journals and all(mode(p) == 0o600 for p in journals)
        assert mode(data / "snapshot") == 0o600
        assert mode(old_log) == 0o600
        assert mode(tmp_path / "logs") == 0o755  # a directory that existed is left as it was


def test_control_bytes_from_clients_are_escaped_in_the_logs(tmp_path: Path) -> None:
    herd = Herd(tmp_path, names=["Riley"], links=[])
    with Started(herd, "Riley"):
        # An escape sequence (OSC: set the terminal's title) in a client ID, C1 CSI in UTF-8,
        # bytes that are not UTF-8, and a neighbour's name with a screen-clearing sequence.
        herd.ask("Riley", b"IAMAT evil\x1b]0;pwned\x07 +1+1 1700000000\n")
        herd.ask("Riley", b"WHEREIS c1\xc2\x9b2J\n")
        herd.ask("Riley", b"IAMAT \xff\xfe +1+1 1700000000\n")
        herd.ask("Riley", f"PEER Evil\x1b[2J {secrets.token_hex(16)}\n".encode())
        herd.ask("Riley", iamat("plain-after"))
        poll(lambda: "plain-after +" in herd.log("Riley"), what="the traffic logged")
        poll(lambda: "Evil" in herd.log("Riley").split("WARNING", 1)[-1], what="the warning")
        raw = (tmp_path / "logs" / "Riley.log").read_bytes()
        assert not any((c < 0x20 and c != 0x0A) or c == 0x7F for c in raw), "a control byte"
        text = raw.decode()  # and all of it UTF-8
        assert "\u009b" not in text
        assert ">> IAMAT evil\\x1b]0;pwned\\x07 +1+1 1700000000\n" in text
        assert ">> WHEREIS c1\\u009b2J\n" in text
        assert ">> IAMAT \\xff\\xfe +1+1 1700000000\n" in text
        assert "(Evil\\x1b[2J is not a neighbour of Riley)" in text


def test_the_traffic_log_escapes_only_the_lines_that_need_it(tmp_path: Path) -> None:
    traffic = TrafficLog(tmp_path / "t.log")
    tag = TrafficLog.tag("1.2.3.4:5", ">>")
    plain = [b"IAMAT kiwi +1+1 1\n", "IAMAT Zoë +1+1 1\n".encode(), b"WHATSAT a 1 1\r\n"]
    for line in plain:
        traffic.add(tag, line)
    traffic.flush()
    traffic.add(tag, b"IAMAT kiwi +1+1 1\n")
    traffic.add(tag, b"AT x\n{\n\x1b[31m\n}\n\n")
    traffic.close()
    lines = (tmp_path / "t.log").read_bytes().splitlines()
    bodies = [line.split(b" >> ", 1)[1] for line in lines]
    assert bodies == [
        b"IAMAT kiwi +1+1 1",
        "IAMAT Zoë +1+1 1".encode(),  # UTF-8 text stays readable
        b"WHATSAT a 1 1",
        b"IAMAT kiwi +1+1 1",
        b"AT x\\n{\\n\\x1b[31m\\n}",
    ]


# -- the connection budget ------------------------------------------------------------------


def closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (it reads nothing more than the end of stream)."""
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_slow_clients_holding_every_slot_do_not_keep_a_neighbour_out(tmp_path: Path) -> None:
    # Every client slot of Riley is held by a client that sent a byte and no line; Jaquez
    # (which dials Riley) starts, or restarts, and its link must come up all the same.
    herd = Herd(
        tmp_path,
        names=["Jaquez", "Riley"],
        links=[("Jaquez", "Riley")],
        extra="[limits]\nmax_connections = 20\nidle_timeout = 60.0\n",
    )
    with Started(herd, "Riley"):
        slow = [socket.create_connection(("127.0.0.1", herd.ports["Riley"])) for _ in range(20)]
        try:
            for sock in slow:
                sock.sendall(b"I")
                sock.settimeout(0.05)
            # Full: one more connection may only begin a peer handshake; a client line ends it.
            with socket.create_connection(("127.0.0.1", herd.ports["Riley"]), timeout=10) as late:
                late.sendall(b"STATUS\n")
                assert late.recv(1024) == b""
            herd.start("Jaquez")
            poll(lambda: herd.status("Jaquez")["links"] == {"Riley": "up"}, what="the link")
            herd.kill("Jaquez")
            herd.start("Jaquez")  # a restarted neighbour redials and is let in again
            poll(lambda: herd.status("Jaquez")["links"] == {"Riley": "up"}, what="the relink")
            assert not any(closed(sock) for sock in slow)  # the clients keep their slots
        finally:
            for sock in slow:
                sock.close()


def test_a_client_dribbling_bytes_without_a_newline_is_closed_at_idle_timeout(
    tmp_path: Path,
) -> None:
    herd = Herd(tmp_path, names=["Riley"], links=[], extra="[limits]\nidle_timeout = 1.0\n")
    with (
        Started(herd, "Riley"),
        socket.create_connection(("127.0.0.1", herd.ports["Riley"])) as sock,
    ):
        sock.settimeout(0.2)
        start = time.monotonic()
        while time.monotonic() - start < 6.0:
            try:
                sock.sendall(b"x")  # one byte every 0.2 s, never a whole line
            except ConnectionError:
                break
            if closed(sock):
                break
        # idle_timeout, plus up to a quarter of it for the sweep, plus scheduling slack
        assert time.monotonic() - start < 3.0, "still open"
        poll(lambda: "idle for 1 s" in herd.log("Riley"), what="the close logged")


def test_connections_per_address_caps_one_address(tmp_path: Path) -> None:
    limits = "[limits]\nconnections_per_address = 3\n"
    herd = Herd(tmp_path, names=["Riley"], links=[], extra=limits)
    with Started(herd, "Riley"):
        held = [socket.create_connection(("127.0.0.1", herd.ports["Riley"])) for _ in range(3)]
        try:
            for sock in held:
                sock.sendall(b"STATUS\n")
                assert sock.makefile("rb").readline().startswith(b"STATUS ")
            # Riley has no neighbour, so no handshake slots either: refused at once.
            assert refused_or_answer(herd.ports["Riley"]) == b""
        finally:
            for sock in held:
                sock.close()
        # The server sees the three closes a moment later: until then it still refuses.
        poll(
            lambda: refused_or_answer(herd.ports["Riley"]).startswith(b"STATUS "),
            what="a slot freed",
        )


def refused_or_answer(port: int) -> bytes:
    """STATUS's answer, or b"" for a connection the server refused: closed at once, so our
    line may arrive after the close and the kernel answers it with a reset instead of EOF."""
    try:
        return ask(port, b"STATUS\n")
    except ConnectionResetError:
        return b""


# -- subscribers ----------------------------------------------------------------------------


def load(port: int, count: int, prefix: str, when: int = 1_700_000_000) -> list[bytes]:
    """Report ``count`` clients on one connection; their AT lines."""
    lines = b"".join(iamat(f"{prefix}-{i}", when=when) for i in range(count))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sender = threading.Thread(target=sock.sendall, args=(lines,))
        sender.start()
        chunks, got = [], 0
        while got < count:
            chunk = sock.recv(1 << 20)
            assert chunk, "closed"
            chunks.append(chunk)
            got += chunk.count(b"\n")
        sender.join()
    return b"".join(chunks).splitlines(keepends=True)


def rss(pid: int) -> int:
    """Resident memory of process ``pid``, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match[1]) * 1024


def test_subscribers_that_never_read_pin_bounded_memory_and_are_cut_off(tmp_path: Path) -> None:
    herd = Herd(tmp_path, names=["Riley"], links=[])
    with Started(herd, "Riley"):
        port, pid = herd.ports["Riley"], herd.procs["Riley"].pid
        load(port, 50_000, "m" * 160)  # a snapshot of 12 MB, more than the kernel buffers
        before = rss(pid)
        subscribers = []
        try:
            for _ in range(24):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel keeps
                sock.connect(("127.0.0.1", port))  # little of it: the rest is the server's
                sock.sendall(b"SUBSCRIBE\n")
                subscribers.append(sock)
            firsts = [sock.recv(11) for sock in subscribers]  # every one answered
            grown = rss(pid) - before
            # Each holds at most its window of the snapshot (256 KiB and a chunk) and the
            # references to its records (400 KB), not the snapshot.
            assert grown < 48 * 1024 * 1024, f"{grown / 1e6:.0f} MB for stalled subscribers"
            # max_subscribers (16) get their snapshot; the others are refused.
            assert firsts.count(b"? SUBSCRIBE") == 8
            assert all(first.startswith(b"AT Riley ") for first in firsts if first[0:1] != b"?")
            assert herd.ask("Riley", iamat("still-served")).startswith(b"AT Riley ")
            # Three heartbeats (1 s here) without reading, and each is cut off.
            poll(lambda: herd.log("Riley").count("read nothing for 3 s") == 16, timeout=15)
        finally:
            for sock in subscribers:
                sock.close()
        # Their places are free again.
        assert herd.ask("Riley", b"SUBSCRIBE\n").endswith(b"SYNCED 50001\n")


def test_a_slow_subscriber_gets_the_whole_snapshot_then_synced_then_live(tmp_path: Path) -> None:
    herd = Herd(tmp_path, names=["Riley"], links=[])
    with Started(herd, "Riley"):
        port = herd.ports["Riley"]
        load(port, 100_000, "big")
        live: list[bytes] = []
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(b"SUBSCRIBE\n")
            data = sock.recv(65536)
            # Live records while the snapshot is still on its way: updates of clients in it,
            # and new clients.
            writer = threading.Thread(
                target=lambda: live.extend(
                    load(port, 300, "big", when=1_750_000_000) + load(port, 300, "new")
                )
            )
            writer.start()
            while b"SYNCED " not in data:
                time.sleep(0.002)  # a slow reader: some 20 MB/s at most
                chunk = sock.recv(65536)
                assert chunk, "cut off"
                data += chunk
            writer.join()
            while data.count(b"\n") < 100_000 + 1 + 600 + data.count(b"PING\n"):
                data += sock.recv(65536)
        lines = data.splitlines(keepends=True)
        snapshot, synced, after = lines[:100_000], lines[100_000], lines[100_001:]
        assert synced == b"SYNCED 100000\n"
        clients = {line.split()[3] for line in snapshot}
        assert clients == {f"big-{i}".encode() for i in range(100_000)}
        assert all(line.endswith(b" 1700000000.000000000\n") for line in snapshot)
        assert sorted(line for line in after if line != b"PING\n") == sorted(live)
