"""The words peers say to each other before and beside records: the handshake (PEER,
CHALLENGE, PROOF, WELCOME) with its key and proofs, and DIGESTS for anti-entropy."""

from __future__ import annotations

import hashlib
import hmac
import re

from ._commands import Challenge, Digests, Peer, Proof, Welcome
from ._fields import ProtocolError, _text

_NONCE = re.compile(rb"[0-9a-f]{32}")
_PROOF = re.compile(rb"[0-9a-f]{64}")


# The peer handshake's version: in every proof and in the key's salt, so servers of different
# versions fail the handshake (logged) instead of misunderstanding each other.
PEER_LABEL = "herd-peer-v2"
# scrypt's cost: 2**14 blocks of 8 x 128 bytes (16 MiB) take some 35 ms on one core, paid once
# when a server starts, and again by anyone for each guess at the secret from a captured proof.
# Memory-hard, so a GPU or ASIC gains far less over a CPU than with a plain hash.
KDF_N, KDF_R, KDF_P = 2**14, 8, 1
KDF_MAXMEM = 64 * 1024 * 1024  # over scrypt's 128 * N * R bytes (OpenSSL's default is 32 MiB)


def derive_peer_key(secret: str) -> bytes:
    """The HMAC key of the peer handshake, derived from the herd secret with scrypt (salted
    with the protocol label, the same for the whole herd): slow once, at start."""
    return hashlib.scrypt(
        secret.encode(),
        salt=f"{PEER_LABEL} key".encode(),
        n=KDF_N,
        r=KDF_R,
        p=KDF_P,
        maxmem=KDF_MAXMEM,
        dklen=32,
    )


def peer_proof(
    key: bytes, role: str, dialer: str, acceptor: str, nonce_d: str, nonce_a: str
) -> str:
    """HMAC-SHA256 proof that a side knows the herd secret (``key``: from ``derive_peer_key``),
    bound to both names, both nonces and the side's role, so a proof can be neither replayed
    nor reflected back."""
    message = "|".join((PEER_LABEL, role, dialer, acceptor, nonce_d, nonce_a)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _parse_peer(f: list[bytes]) -> Peer:
    if len(f) != 3 or _NONCE.fullmatch(f[2]) is None:
        raise ProtocolError("PEER takes a name and a 32-hex-digit nonce")
    return Peer(_text(f[1]), f[2].decode())


def _parse_challenge(f: list[bytes]) -> Challenge:
    if len(f) == 4:
        raise ProtocolError(
            "a CHALLENGE with a proof is herd-peer-v1: upgrade every server of the herd together"
        )
    if len(f) != 3 or _NONCE.fullmatch(f[2]) is None:
        raise ProtocolError("CHALLENGE takes a name and a nonce")
    return Challenge(_text(f[1]), f[2].decode())


def _parse_proof(f: list[bytes]) -> Proof:
    if len(f) != 2 or _PROOF.fullmatch(f[1]) is None:
        raise ProtocolError("PROOF takes a 64-hex-digit proof")
    return Proof(f[1].decode())


# DIGESTS carries 256 digests of 16 hex digits each as one field.
_DIGESTS = re.compile(rb"(?:[0-9a-f]{16})+")


def _parse_digests(f: list[bytes]) -> Digests:
    if len(f) != 2 or _DIGESTS.fullmatch(f[1]) is None:
        raise ProtocolError("DIGESTS takes one field of 16-hex-digit digests")
    raw = f[1]
    return Digests(tuple(int(raw[i : i + 16], 16) for i in range(0, len(raw), 16)))


def format_digests(values: list[int]) -> bytes:
    return b"DIGESTS " + "".join(f"{v:016x}" for v in values).encode() + b"\n"


def _parse_welcome(f: list[bytes]) -> Welcome:
    if len(f) == 2:
        raise ProtocolError(
            "a WELCOME without a proof is herd-peer-v1: upgrade every server of the herd together"
        )
    if len(f) != 3 or _PROOF.fullmatch(f[2]) is None:
        raise ProtocolError("WELCOME takes a name and a 64-hex-digit proof")
    return Welcome(_text(f[1]), f[2].decode())
