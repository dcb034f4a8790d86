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
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import ipaddress
import logging
import math
import re
import time
from base64 import b64decode
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from aiohttp import hdrs, web

from backend.config import GatewayConfig
from backend.ratelimit import MAX_BUCKETS, RateLimiter

from .errors import ApiError
from .phones import traccar_query

__all__ = [
    "COOKIE",
    "MAX_BUCKETS",
    "ROUTES",
    "Access",
    "Grant",
    "Need",
    "RateLimiter",
    "Refused",
    "address_key",
    "fingerprint",
    "redact",
    "redact_access_logs",
]

log = logging.getLogger("herd.gateway.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The cookie ``/?token=`` sets so that the map's own fetch and WebSocket calls carry the token
# with no change to the page's script.
COOKIE = "herd_token"
# Hex digits of a token's SHA-256 shown in logs: enough to tell tokens apart, useless to
# recover one.
FINGERPRINT_HEX = 8
# Loggers that write aiohttp's access lines: ``herd gateway``'s, and aiohttp's default one
# (test servers, other runners). Their request lines and Referer headers may carry ?token=.
ACCESS_LOGGERS = ("herd.gateway.access", "aiohttp.access")


class Need(enum.Enum):
    """What a route asks of a caller when tokens are configured."""

    NOTHING = "nothing"
    READ = "read"
    WRITE = "write"


# Every route of gateway/app.py and gateway/api.py by canonical path. A route missing here is
# a read (tests/test_security.py checks that none is missing); a new write route belongs in
# this table and must send its reports through ``Access.check_reports``.
ROUTES: Mapping[str, Need] = {
    # Documentation and liveness show nothing the herd holds.
    "/healthz": Need.NOTHING,
    "/api/docs": Need.NOTHING,
    "/api/v1/openapi.json": Need.NOTHING,
    "/static": Need.NOTHING,
    # ``/`` is the map, unless Traccar or OsmAnd report to it (see ``need``).
    "/": Need.READ,
    "/api/v1/ws": Need.READ,
    "/api/v1/clients": Need.READ,
    "/api/v1/clients/{client_id}": Need.READ,
    "/api/v1/clients/{client_id}/nearby": Need.READ,
    "/api/v1/herd": Need.READ,
    "/metrics": Need.READ,
    "/api/v1/locations": Need.WRITE,
    "/pub": Need.WRITE,
    "/api/v1/phones/owntracks": Need.WRITE,
    "/api/v1/phones/traccar": Need.WRITE,
    "/api/v1/phones/overland": Need.WRITE,
    "/api/v1/phones/gpslogger": Need.WRITE,
}
# OwnTracks authenticates with HTTP Basic; its endpoints challenge with Basic, the rest with
# Bearer (a Basic challenge on the map would make browsers pop up a password dialog).
_BASIC_ROUTES = frozenset({"/pub", "/api/v1/phones/owntracks"})


def need(request: web.Request) -> Need:
    """What ``request`` needs: by its route, and for ``/`` by what it carries."""
    resource = request.match_info.route.resource
    if resource is None:  # no route matched: the 404 or 405 is a read like any other
        return Need.READ
    path = resource.canonical
    # Traccar Client and OsmAnd report to the root URL (gateway/app.py ``index``).
    if path == "/" and (request.method == hdrs.METH_POST or traccar_query(request.query)):
        return Need.WRITE
    return ROUTES.get(path, Need.READ)


def fingerprint(token: str) -> str:
    """A short SHA-256 prefix of ``token``, for logs: never log the token itself."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT_HEX]


# Credentials in headers: the token cookie, and Bearer/Basic credentials.
_SECRETS = re.compile(r"(?P<key>herd_token=|\b(?:Bearer|Basic)\s+)(?P<secret>[^&;\s\"#]+)", re.I)
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

    ``middleware`` (install it inside the JSON error middleware) charges every request to its
    address, checks reads, and turns away writes without a write token before their body is
    read; the write handlers then call ``check_reports`` once the client IDs are known.
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
        if status == 401:
            resource = request.match_info.route.resource
            basic = resource is not None and resource.canonical in _BASIC_ROUTES
            headers = {hdrs.WWW_AUTHENTICATE: f'{"Basic" if basic else "Bearer"} realm="herd"'}
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

    # -- the middleware -------------------------------------------------------------------

    def charge(self, request: web.Request) -> None:
        """Count one request (an HTTP request, or a command on a WebSocket) against its
        address's rate; raise Refused (429) past it."""
        if self.per_address is not None:
            wait = self.per_address.take([address_key(request.remote)])
            if wait:
                retry = _retry_after(wait)
                message = f"too many requests; retry in {retry[hdrs.RETRY_AFTER]} s"
                raise self.refuse(request, 429, message, headers=retry)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Rate-limit by address, check the route's need, answer refusals as JSON errors."""
        try:
            self.charge(request)
            cookie = None
            match need(request):
                case Need.READ:
                    cookie = self.check_read(request)
                    resource = request.match_info.route.resource
                    if resource is None or resource.canonical != "/":
                        cookie = None  # only opening the map page sets the cookie
                case Need.WRITE:
                    # Refused before the body is read; the handler checks the client IDs.
                    self.check_writer(request)
                case Need.NOTHING:
                    pass
            response = await handler(request)
        except Refused as exc:
            return exc.response()
        if cookie is not None and isinstance(response, web.Response) and not response.prepared:
            # HttpOnly: the page's script never sees it; SameSite=Strict: no other site's
            # page can send it. A session cookie: opening /?token= again renews it.
            response.set_cookie(
                COOKIE,
                cookie,
                path="/",
                httponly=True,
                samesite="Strict",
                secure=request.secure,
            )
            # The token is in this page's URL: send no more than the origin as Referer.
            response.headers["Referrer-Policy"] = "strict-origin"
        return response
