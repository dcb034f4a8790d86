"""Peer links over TLS: a herd CA signs each server's certificate; plain peers are refused."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from helpers import NAMES, Herd, iamat, poll


def make_ca(root: Path, name: str) -> tuple[Path, Path]:
    key, cert = root / f"{name}.key", root / f"{name}.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def make_cert(root: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, cert = root / f"{name}.key", root / f"{name}.csr", root / f"{name}.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr,
            "-subj",
            f"/CN={name}",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca[0],
            "-CAkey",
            ca[1],
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    ca = make_ca(tmp_path, "herd-ca")
    return {
        "ca": ca,
        "server": make_cert(tmp_path, "server", ca),
        "stranger": make_cert(tmp_path, "stranger", make_ca(tmp_path, "other-ca")),
    }


def test_links_run_over_tls_and_floods_cross_them(
    tmp_path: Path, pki: dict[str, tuple[Path, Path]]
) -> None:
    cert, key = pki["server"]
    tls = f'[tls]\ncert = "{cert}"\nkey = "{key}"\nca = "{pki["ca"][0]}"\n'
    with Herd(tmp_path, extra=tls) as herd:
        herd.wait_links()
        reply = herd.ask("Riley", iamat("secure"))
        for name in NAMES:
            herd.wait_record(name, "secure", reply)
        assert "over TLS" in herd.log("Riley")
        # A peer that skips STARTTLS is refused, secret or not.
        hello = b"PEER Jaquez " + b"0" * 32 + b"\n"
        assert herd.ask("Riley", hello) == b"? " + hello
        # A certificate from another CA does not get through the TLS handshake.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(pki["ca"][0])
        context.load_cert_chain(*pki["stranger"])
        with socket.create_connection(("127.0.0.1", herd.ports["Riley"]), timeout=10) as sock:
            sock.sendall(b"STARTTLS\n")
            assert sock.recv(100) == b"STARTTLS\n"
            with (
                pytest.raises((ssl.SSLError, ConnectionError)),
                context.wrap_socket(sock) as tls_sock,
            ):
                tls_sock.sendall(hello)
                assert tls_sock.recv(100) == b""  # TLS 1.3: refusal may come on first read
                raise ConnectionError("closed")
        poll(lambda: "refused TLS from 127.0.0.1" in herd.log("Riley"), what="the refusal logged")
        # Plain clients are untouched: STARTTLS is only for peers that want it.
        assert herd.ask("Jaquez", b"WHEREIS secure\n") == reply


def test_starttls_without_tls_configured_is_invalid(tmp_path: Path) -> None:
    with Herd(tmp_path, names=("Solo",), links=()) as herd:
        assert herd.ask("Solo", b"STARTTLS\n") == b"? STARTTLS\n"
