"""TLS contexts for peer links (mutual authentication against the herd's own CA)."""

from __future__ import annotations

import ssl

from .config import TlsConfig

__all__ = ["client_context", "server_context"]


def _context(purpose: int, tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    context.load_verify_locations(tls.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """For the accepting side: present our certificate, require the peer's."""
    return _context(ssl.PROTOCOL_TLS_SERVER, tls)


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    """For the dialling side. Host names are not checked: servers may sit behind any address
    (see ``dial``); the CA decides who may connect, the HMAC handshake proves which server."""
    context = _context(ssl.PROTOCOL_TLS_CLIENT, tls)
    context.check_hostname = False
    return context
