"""Credentials kept out of the logs: aiohttp's access lines mask every token they carry.

A token reaches a request line as ``?token=`` (Traccar, OsmAnd, the map's ``/?token=``), a
Referer, the ``herd_token`` cookie or an ``Authorization`` header; :func:`redact` masks each,
however its name is percent-encoded. Refusals log a token's :func:`gateway.auth.fingerprint`
only.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from .auth import COOKIE

__all__ = ["ACCESS_LOGGERS", "CREDENTIAL_NAMES", "redact", "redact_access_logs"]

# Loggers that write aiohttp's access lines: ``herd gateway``'s, and aiohttp's default one
# (test servers, other runners). Their request lines and Referer headers may carry ?token=.
ACCESS_LOGGERS = ("herd.gateway.access", "aiohttp.access")

# Credentials in headers: the token cookie, and Bearer/Basic credentials.
_SECRETS = re.compile(rf"(?P<key>{COOKIE}=|\b(?:Bearer|Basic)\s+)(?P<secret>[^&;\s\"#]+)", re.I)
# A query parameter (or a cookie): its name as sent, "=", its value as sent.
_PARAMETER = re.compile(r"(?P<key>[?&;]\s*(?P<name>[^=&;#\s\"?]*)=)(?P<secret>[^&;\s\"#]*)")
# User and password in a URL (a Referer): //user:password@host.
_USERINFO = re.compile(r"(?P<key>//[^/@\s\"]*?:)(?P<secret>[^/@\s\"]*)(?=@)")
# Parameter names whose values are credentials, after decoding: aiohttp decodes %74oken to
# token before the gateway reads it, so the log must not be fooled by the spelling.
CREDENTIAL_NAMES = frozenset({"token", COOKIE, "access_token", "password", "secret"})
# Rounds of percent-decoding applied to a name: %2574 is %74 after one, t after two.
_DECODE_ROUNDS = 4


def _credential(name: str) -> bool:
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().lower() in CREDENTIAL_NAMES


def _mask_parameter(match: re.Match[str]) -> str:
    return match["key"] + "***" if _credential(match["name"]) else match[0]


def redact(text: str) -> str:
    """``text`` with every credential masked: a query parameter or cookie whose name decodes
    to ``token`` (or another of CREDENTIAL_NAMES) however it is percent-encoded, the token
    cookie, Bearer/Basic credentials, and a password in a URL."""
    text = _PARAMETER.sub(_mask_parameter, text)
    text = _USERINFO.sub(r"\g<key>***", text)
    return _SECRETS.sub(r"\g<key>***", text)


class _RedactTokens(logging.Filter):
    """Masks tokens in aiohttp's access lines (the request line and Referer carry ?token=)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        # AccessLogger also puts each field on the record, for structured handlers.
        for name in ("first_request_line", "request_header"):
            value = record.__dict__.get(name)
            if isinstance(value, str):
                record.__dict__[name] = redact(value)
            elif isinstance(value, dict):
                record.__dict__[name] = {k: redact(str(v)) for k, v in value.items()}
        return True


_REDACT_TOKENS = _RedactTokens()


def redact_access_logs() -> None:
    """Mask tokens in the access logs (idempotent: one filter instance, added once)."""
    for name in ACCESS_LOGGERS:
        logging.getLogger(name).addFilter(_REDACT_TOKENS)
