"""A peer link's handshake: STARTTLS if the herd uses TLS, then a challenge-response (HMAC-SHA256,
keyed by an scrypt of the herd secret, over both names and two fresh nonces) in which each side
proves it knows the secret without sending it; the dialler proves itself first. See
``docs/protocol.md`` ("Peer links").
"""

from __future__ import annotations

import asyncio
import secrets
import ssl

from ..outbox import Outbox, TrafficLog
from ..protocol import (
    Challenge,
    Command,
    Peer,
    Proof,
    StartTls,
    Welcome,
    parse_line,
    peer_proof,
)
from ..transport import LineTransport

__all__ = ["Handshake", "HandshakeError"]


class HandshakeError(Exception):
    """The other side of a peer connection failed to prove itself."""


class Handshake:
    """Our side of the handshake with the neighbour ``name``, on any connection to it."""

    def __init__(
        self,
        key: bytes,
        local: str,
        name: str,
        outbox: Outbox,
        timeout: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.key = key  # the HMAC key (derive_peer_key)
        self.local = local
        self.name = name
        self.timeout = timeout
        self.tls = tls  # the dialler's TLS context
        self._outbox = outbox
        self._tag_in, self._tag_out = TrafficLog.tag(name, ">>"), TrafficLog.tag(name, "<<")

    def say(self, conn: LineTransport, line: bytes) -> None:
        """Write a line of the link's own (handshake, DIGESTS, SYNC, PING), logged like all."""
        self._outbox.log(self._tag_out, line)
        conn.write(line)

    async def hear(self, conn: LineTransport, what: str, deadline: float) -> bytes:
        """The next handshake line from the peer (``what`` we wait for), logged; by
        ``deadline`` (loop time), else HandshakeError saying what did not come."""
        try:
            async with asyncio.timeout_at(deadline):
                line = await conn.readline()
        except TimeoutError:
            raise self.timed_out(what) from None
        self._outbox.log(self._tag_in, line)
        return line

    def timed_out(self, what: str) -> HandshakeError:
        return HandshakeError(f"timed out after {self.timeout:g} s waiting for {what}")

    async def dial(self, conn: LineTransport, deadline: float) -> None:
        """The dialler's side: prove ourselves first, then check the acceptor's proof before
        anything else is sent or taken."""
        if self.tls is not None:
            await self._start_tls(conn, self.tls, deadline)
        nonce_d = secrets.token_hex(16)
        self.say(conn, Peer(self.local, nonce_d).encode())
        reply = parse_line(await self.hear(conn, "CHALLENGE", deadline))
        if not isinstance(reply, Challenge) or reply.server_id != self.name:
            raise HandshakeError(f"expected CHALLENGE from {self.name}, got {reply!r}")
        proof = peer_proof(self.key, "dialer", self.local, self.name, nonce_d, reply.nonce)
        self.say(conn, Proof(proof).encode())
        welcome = parse_line(await self.hear(conn, "WELCOME", deadline))
        if not isinstance(welcome, Welcome) or welcome.server_id != self.name:
            raise HandshakeError(f"{self.name} refused our proof: {welcome!r}")
        expected = peer_proof(self.key, "acceptor", self.local, self.name, nonce_d, reply.nonce)
        if not secrets.compare_digest(expected, welcome.proof):
            raise HandshakeError(f"{self.name} does not know the herd secret")

    async def _start_tls(
        self, conn: LineTransport, context: ssl.SSLContext, deadline: float
    ) -> None:
        self.say(conn, StartTls().encode())
        if await self.hear(conn, "STARTTLS", deadline) != StartTls().encode():
            raise HandshakeError(f"{self.name} did not agree to STARTTLS")
        if conn.buffered:
            raise HandshakeError(f"{self.name} sent data in the clear after STARTTLS")
        try:
            async with asyncio.timeout_at(deadline):
                upgraded = await conn.start_tls(context, server_side=False)
        except TimeoutError:
            raise self.timed_out("the TLS handshake") from None
        if not upgraded:
            raise ConnectionResetError("closed during the TLS handshake")

    async def challenge(self, conn: LineTransport, deadline: float) -> tuple[str, Command | None]:
        """The acceptor's first step, after the dialler's PEER: send CHALLENGE and wait for
        the answer; returns our nonce and the parsed answer, for ``welcome``.

        The acceptor proves nothing until the dialler has: whoever can reach the port gets
        only a nonce, nothing to test guesses at the secret against offline."""
        nonce_a = secrets.token_hex(16)
        self.say(conn, Challenge(self.local, nonce_a).encode())
        return nonce_a, parse_line(await self.hear(conn, "PROOF", deadline))

    def welcome(
        self, conn: LineTransport, hello: Peer, nonce_a: str, answer: Command | None
    ) -> None:
        """Check the dialler's PROOF (HandshakeError if wrong), then prove ourselves."""
        expected = peer_proof(self.key, "dialer", self.name, self.local, hello.nonce, nonce_a)
        if not isinstance(answer, Proof) or not secrets.compare_digest(expected, answer.proof):
            raise HandshakeError(f"{self.name} failed to prove the herd secret")
        proof = peer_proof(self.key, "acceptor", self.name, self.local, hello.nonce, nonce_a)
        self.say(conn, Welcome(self.local, proof).encode())
