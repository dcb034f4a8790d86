"""Defences against a hostile outsider who can reach a server's port: the peer handshake and
the herd secret, subscribers' memory, the connection budget, and what reaches files and logs.
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Herd, poll

from backend.config import ConfigError, load_config

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
