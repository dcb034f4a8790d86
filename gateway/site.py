"""Which requests the gateway takes at all: its own names, same-site writes, bounded bodies.

- **Host.** A request whose ``Host`` is not one of the gateway's names (``[gateway]
  allowed_hosts``, loopback names always) is refused with 421 before anything else: a page
  that rebinds its own DNS name to 127.0.0.1 sends its own name as ``Host``, so it reaches
  nothing, not even the client list.
- **Cross-site writes and WebSocket upgrades.** A browser says where a request comes from
  (``Sec-Fetch-Site``, and ``Origin`` on every POST and WebSocket); phone apps send neither.
  A write (any request that reports a location) or a WebSocket upgrade that a browser marks
  as coming from another site or origin is refused with 403, so no web page can report a
  location through the visitor's browser (an ``<img>``, a form) or open the live feed.
- **Bodies.** A request body must arrive whole within ``[gateway] body_timeout`` seconds and
  ``max_body_bytes``: 408 or 413, and the connection is closed. (Headers are bounded by
  ``header_timeout``, set on the HTTP server in gateway/app.py.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from .access import Guards, Need
from .settings import ANY_HOST, LOOPBACK_NAMES

__all__ = [
    "ANY_HOST",
    "LOOPBACK_NAMES",
    "body_middleware",
    "cross_site",
    "host_allowed",
    "host_name",
    "read_bounded",
    "site_middleware",
]

log = logging.getLogger("herd.gateway.site")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Sec-Fetch-Site values a browser sends for the gateway's own page and for a request the user
# typed or bookmarked; "same-site" is another origin (another port of localhost, say).
_OWN_SITE = frozenset({"same-origin", "none"})
# Characters of a Host header shown in a refusal: enough to recognise it.
_SHOWN = 100


def host_name(host: str) -> str:
    """The name part of a Host header, lower-cased, without port or trailing dot
    (``[::1]:8131`` -> ``[::1]``, ``LocalHost.:80`` -> ``localhost``)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, bracket, _ = host.partition("]")
        return name + bracket
    name, colon, port = host.rpartition(":")
    if colon and (port.isdigit() or not port) and ":" not in name:
        host = name
    return host.rstrip(".")


def host_allowed(host: str | None, allowed: Collection[str]) -> bool:
    """True if a request with this Host header may be answered. No Host at all (HTTP/1.0)
    is allowed: every browser sends one."""
    if host is None or ANY_HOST in allowed:
        return True
    name = host_name(host)
    return name in LOOPBACK_NAMES or name in allowed


def cross_site(headers: Mapping[str, str], host: str) -> str | None:
    """Why a browser marked this request as coming from another site or origin, or None.

    ``headers`` are the request's (case-insensitive) headers; ``host`` its Host."""
    fetch_site = headers.get(hdrs.SEC_FETCH_SITE)
    if fetch_site is not None and fetch_site.strip().lower() not in _OWN_SITE:
        return f"Sec-Fetch-Site: {fetch_site[:_SHOWN]}"
    origin = headers.get(hdrs.ORIGIN)
    if origin is not None:
        try:
            netloc = urlsplit(origin.strip()).netloc
        except ValueError:
            netloc = ""
        if not netloc or netloc.lower() != host.lower():
            return f"Origin {origin[:_SHOWN]}"
    return None


def _upgrade(request: web.Request) -> bool:
    return "websocket" in request.headers.get(hdrs.UPGRADE, "").lower()


def site_middleware(
    allowed_hosts: Collection[str], guards: Guards
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The Host check, then the cross-site check for writes (by the routes' declarations in
    ``guards``) and WebSocket upgrades."""
    allowed = frozenset(allowed_hosts)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get(hdrs.HOST)
        if not host_allowed(host, allowed):
            assert host is not None
            log.warning(
                "refused %s from %s: Host %r", request.method, request.remote, host[:_SHOWN]
            )
            raise web.HTTPMisdirectedRequest(
                text=f"this gateway does not answer for the host {host[:_SHOWN]!r}: add it to "
                "[gateway] allowed_hosts"
            )
        if guards.need(request) is Need.WRITE or _upgrade(request):
            why = cross_site(request.headers, request.host)
            if why is not None:
                log.warning(
                    "refused cross-site %s %s from %s (%s)",
                    request.method,
                    request.rel_url.raw_path,
                    request.remote,
                    why,
                )
                what = "WebSocket" if _upgrade(request) else "report"
                raise web.HTTPForbidden(text=f"cross-site {what} refused ({why})")
        return await handler(request)

    return middleware


def body_middleware(timeout: float, guards: Guards) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Read a request's whole body, within ``timeout`` seconds and the application's
    ``client_max_size``, before the handler runs (its own read then returns it at once).
    A route declared ``streamed`` reads its own body (``read_bounded``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        declared = guards.rule(request)
        if request.body_exists and not (declared is not None and declared.streamed):
            try:
                async with asyncio.timeout(timeout):
                    await request.read()  # 413 past client_max_size, however it is sent
            except TimeoutError:
                log.warning("request body from %s not whole after %g s", request.remote, timeout)
                raise web.HTTPRequestTimeout(
                    text=f"the request body did not arrive within {timeout:g} s"
                ) from None
        return await handler(request)

    return middleware


# Bytes read from a streamed body at a time.
_READ_CHUNK = 64 * 1024


async def read_bounded(request: web.Request, limit: int, timeout: float, pace: int) -> bytes:
    """The whole body of a ``streamed`` route, at most ``limit`` bytes (413 past it: at once
    when ``Content-Length`` says so, else as soon as the body grows past it).

    The body must keep the pace of the other routes' bodies: ``timeout`` seconds for its
    first ``pace`` bytes (``max_body_bytes``), and ``timeout`` more for each ``pace`` bytes
    received, so a large file on a fair link arrives whole, and a client trickling bytes is
    cut off (408) as soon as it falls behind."""
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    loop = asyncio.get_running_loop()
    start = loop.time()
    chunks: list[bytes] = []
    received = 0
    while True:
        deadline = start + timeout * (1 + received // pace)
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await request.content.read(_READ_CHUNK)
        except TimeoutError:
            log.warning("request body from %s fell behind after %d bytes", request.remote, received)
            raise web.HTTPRequestTimeout(
                text=f"the request body did not arrive at {pace:,} bytes per {timeout:g} s"
            ) from None
        if not chunk:
            return b"".join(chunks)
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        chunks.append(chunk)


def _too_large(limit: int) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(
        max_size=limit, actual_size=limit + 1, text=f"the body is over {limit:,} bytes"
    )
