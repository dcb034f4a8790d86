"""Access control for the gateway: tokens, who may read or report, and rate limits.

With no tokens configured everything is open, as a loopback-only gateway always was. Once any
token is configured (``[gateway] read_tokens`` or ``[gateway.write_tokens]``):

- reads (the map ``/``, ``GET /api/v1/...``, the WebSocket, ``/metrics``) need a read token:
  ``Authorization: Bearer``, a Basic password, ``?token=`` or the ``herd_token`` cookie that
  ``/?token=`` sets;
- writes (``POST /api/v1/locations``, the phone endpoints, ``/`` with Traccar parameters, a
  WebSocket ``report``) need a write token, and a write token reports for its own client ID
  only. Cookies never authorise a write, so a page on another site cannot make one.

Missing or unknown token: 401; a token of the wrong kind, or for another client ID: 403.
Rate limits (on by default once tokens are configured or the host is not loopback) charge
every request to its remote address and every report to its client ID; past the budget the
answer is 429 with ``Retry-After``. Every refusal is logged with the remote address and at
most a short hash of the token, never the token itself. See ``docs/security.md``.

Which routes are reads and which are writes is declared with the routes (``gateway/app.py``)
and applied by ``gateway/access.py``; tokens in the access log are masked by
``gateway/redact.py``.
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import logging
import math
import time
from base64 import b64decode
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import hdrs, web

from backend.config import GatewayConfig
from backend.ratelimit import MAX_BUCKETS, RateLimiter

from .errors import ApiError

__all__ = [
    "COOKIE",
    "MAX_BUCKETS",
    "Access",
    "Grant",
    "RateLimiter",
    "Refused",
    "address_key",
    "fingerprint",
]

log = logging.getLogger("herd.gateway.auth")

# The cookie ``/?token=`` sets so that the map's own fetch and WebSocket calls carry the token
# with no change to the page's script.
COOKIE = "herd_token"
# Hex digits of a token's SHA-256 shown in logs: enough to tell tokens apart, useless to
# recover one.
FINGERPRINT_HEX = 8


def fingerprint(token: str) -> str:
    """A short SHA-256 prefix of ``token``, for logs: never log the token itself."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT_HEX]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a configured token allows: reading, or reporting for one client ID."""

    read: bool
    client_id: str | None = None


class Refused(ApiError):
    """A refused request: 401, 403 or 429."""

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def address_key(remote: str | None) -> str:
    """The key an address is rate-limited by: an IPv4 address, or an IPv6 /64 (one host
    usually holds a whole /64, so single IPv6 addresses would cost nothing to rotate)."""
    if remote is None:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _retry_after(seconds: float) -> dict[str, str]:
    return {hdrs.RETRY_AFTER: str(max(1, math.ceil(seconds)))}  # whole seconds, at least 1


class Access:
    """The gateway's access rules, built from ``[gateway]``; one per application.

    ``gateway.access.middleware`` charges every request to its address (``charge``), checks
    reads (``check_read``), and turns away writes without a write token (``check_writer``)
    before their body is read; the write handlers then call ``check_reports`` once the
    client IDs are known.
    """

    def __init__(self, config: GatewayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        # Tokens are looked up by SHA-256 digest: the lookup's timing depends on the digest
        # of a guess, not on how much of a real token it shares.
        self._grants: dict[bytes, Grant] = {
            _digest(t): Grant(read=True) for t in config.read_tokens
        }
        for token, client_id in config.write_tokens.items():
            self._grants[_digest(token)] = Grant(read=False, client_id=client_id)
        self.enabled = bool(self._grants)
        self.per_client = self._limiter(config.rate_per_client, clock)
        self.per_address = self._limiter(config.rate_per_address, clock)

    @staticmethod
    def _limiter(rate: float, clock: Callable[[], float]) -> RateLimiter | None:
        # 0 turns a limit off. The burst is twice the rate, and at least one request.
        return RateLimiter(rate, max(1.0, 2 * rate), clock=clock) if rate > 0 else None

    # -- tokens ---------------------------------------------------------------------------

    @staticmethod
    def presented(request: web.Request, *, cookie: bool) -> tuple[str | None, str]:
        """The token a request carries and where: ``Authorization`` (Bearer, or a Basic
        password), else ``?token=``, else (for reads only) the cookie."""
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return credentials, "header"
        if scheme.lower() == "basic" and credentials:
            try:
                decoded = b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return "", "header"  # present but unreadable: an unknown token
            return decoded.partition(":")[2], "header"
        if "token" in request.query:
            return request.query["token"], "query"
        if cookie and COOKIE in request.cookies:
            return request.cookies[COOKIE], "cookie"
        return None, ""

    def grant(self, token: str) -> Grant | None:
        """What ``token`` allows, or None for a token that is not configured."""
        return self._grants.get(_digest(token))

    def refuse(
        self,
        request: web.Request,
        status: int,
        message: str,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Refused:
        """Log a refusal (remote address, never the token) and return it to raise."""
        shown = f" (token #{fingerprint(token)})" if token else ""
        log.warning(
            "refused %s %s from %s: %d %s%s",
            request.method,
            request.rel_url.raw_path,  # percent-encoded: no line breaks forged into the log
            request.remote,
            status,
            message,
            shown,
        )
        # A 401's challenge (Basic or Bearer) is the route's: gateway/access.py adds it.
        return Refused(status, message, headers)

    def _authenticate(self, request: web.Request, token: str | None) -> Grant:
        if token is None:
            raise self.refuse(request, 401, "a token is required")
        grant = self.grant(token)
        if grant is None:
            raise self.refuse(request, 401, "unknown token", token)
        return grant

    def check_read(self, request: web.Request) -> str | None:
        """Raise Refused unless the request may read; returns a token to put in the cookie
        (one that came in the query string), else None."""
        if not self.enabled:
            return None
        token, source = self.presented(request, cookie=True)
        grant = self._authenticate(request, token)
        if not grant.read:
            raise self.refuse(request, 403, "a write token cannot read", token)
        return token if source == "query" else None

    def check_writer(self, request: web.Request, token: str | None = None) -> Grant | None:
        """Raise Refused unless the request carries a write token (``token``, else the one
        the request presents, never a cookie). None when no tokens are configured."""
        if not self.enabled:
            return None
        if token is None:
            token, _ = self.presented(request, cookie=False)
        grant = self._authenticate(request, token)
        if grant.read:
            raise self.refuse(request, 403, "a read token cannot report", token)
        return grant

    def check_reports(
        self, request: web.Request, client_ids: Iterable[str], token: str | None = None
    ) -> None:
        """Before reports reach the herd: raise Refused (403) if the write token may not
        report for one of ``client_ids``, or (429) if one of them is over its rate.

        ``token`` is a token given in a WebSocket command; by default, the request's own.
        """
        ids = list(dict.fromkeys(client_ids))
        grant = self.check_writer(request, token)
        if grant is not None:
            for client_id in ids:
                if client_id != grant.client_id:
                    raise self.refuse(
                        request,
                        403,
                        f"this token may not report for client {client_id!r}",
                        token or self.presented(request, cookie=False)[0],
                    )
        if self.per_client is not None and ids:
            wait = self.per_client.take(ids)
            if wait:
                whom = f"client {ids[0]!r}" if len(ids) == 1 else "these clients"
                retry = _retry_after(wait)
                message = f"too many reports for {whom}; retry in {retry[hdrs.RETRY_AFTER]} s"
                raise self.refuse(request, 429, message, headers=retry)

    def charge(self, request: web.Request) -> None:
        """Count one request (an HTTP request, or a command on a WebSocket) against its
        address's rate; raise Refused (429) past it."""
        if self.per_address is not None:
            wait = self.per_address.take([address_key(request.remote)])
            if wait:
                retry = _retry_after(wait)
                message = f"too many requests; retry in {retry[hdrs.RETRY_AFTER]} s"
                raise self.refuse(request, 429, message, headers=retry)
