"""Which routes need what, declared where each route is registered (``gateway/app.py``), and
the middleware that applies it.

Each :class:`Route` says what it asks of a caller once tokens are configured (its
:class:`Need`) and how a 401 challenges (Basic for OwnTracks, else Bearer). :class:`Guards`
registers the routes and keeps each one's declaration, which the middleware and the
cross-site check (``gateway/site.py``) read from the route a request matched: there is no
second table of paths to keep in step with the router. A route registered any other way, and
a request that matched none (404, 405), is a read.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.abc import AbstractView

from .auth import COOKIE, Access, Refused

__all__ = ["Guards", "Need", "Route", "middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Need(enum.Enum):
    """What a route asks of a caller when tokens are configured."""

    NOTHING = "nothing"  # documentation, liveness, static files: nothing the herd holds
    READ = "read"
    PAGE = "page"  # a read that opens the map: a token in its query becomes the cookie
    WRITE = "write"  # a report: its handler checks the client IDs (Access.check_reports)


# A need, or a function of the request for a route that is a read or a write by what it
# carries (``/``: the map, or Traccar reporting to the root URL).
NeedRule = Need | Callable[[web.Request], Need]


@dataclass(frozen=True, slots=True)
class Route:
    """A route of the gateway with its access rule."""

    method: str
    path: str
    handler: Handler | type[AbstractView]
    need: NeedRule
    name: str | None = None
    # OwnTracks authenticates with HTTP Basic: its routes challenge with Basic, the rest with
    # Bearer (a Basic challenge on the map would make browsers pop up a password dialog).
    basic: bool = False
    # The handler reads its own body, within its own limit (a history import, up to
    # ``max_import_bytes``): the body middleware leaves it unread (gateway/site.py).
    streamed: bool = False


class Guards:
    """The routes of one application with their declarations."""

    def __init__(self) -> None:
        self._routes: dict[web.AbstractRoute, Route] = {}

    def add(self, router: web.UrlDispatcher, routes: Iterable[Route]) -> None:
        """Register each route (a GET also answers HEAD, as aiohttp's ``add_get``)."""
        for route in routes:
            if route.method == hdrs.METH_GET:
                added = router.add_get(route.path, route.handler, name=route.name)
            else:
                added = router.add_route(route.method, route.path, route.handler, name=route.name)
            self._routes[added] = route
            if route.method == hdrs.METH_GET:  # the HEAD route add_get made with it
                for sibling in added.resource or ():
                    if sibling.method == hdrs.METH_HEAD and sibling.handler is route.handler:
                        self._routes[sibling] = route

    def add_static(self, router: web.UrlDispatcher, prefix: str, path: Path) -> None:
        """Serve the files under ``path`` at ``prefix``, to anyone."""
        resource = router.add_static(prefix, path, name="static")
        for added in resource:
            self._routes[added] = Route(added.method, prefix, added.handler, Need.NOTHING)

    def declared(self, route: web.AbstractRoute) -> Route | None:
        return self._routes.get(route)

    def rule(self, request: web.Request) -> Route | None:
        return self._routes.get(request.match_info.route)

    def need(self, request: web.Request) -> Need:
        """What ``request`` needs: its route's declaration; READ for anything undeclared."""
        declared = self.rule(request)
        if declared is None:
            return Need.READ
        need = declared.need
        return need if isinstance(need, Need) else need(request)


def middleware(access: Access, guards: Guards) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Rate-limit by address, check the route's need, answer refusals as JSON errors.

    Install it inside the JSON error middleware: writes without a write token are turned
    away here, before their body is read; the write handlers then call
    ``Access.check_reports`` once the client IDs are known."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            access.charge(request)
            cookie = None
            match guards.need(request):
                case Need.READ:
                    access.check_read(request)  # only opening the map page sets the cookie
                case Need.PAGE:
                    cookie = access.check_read(request)
                case Need.WRITE:
                    access.check_writer(request)
                case Need.NOTHING:
                    pass
            response = await handler(request)
        except Refused as exc:
            if exc.status == 401:
                declared = guards.rule(request)
                scheme = "Basic" if declared is not None and declared.basic else "Bearer"
                exc.headers[hdrs.WWW_AUTHENTICATE] = f'{scheme} realm="herd"'
            return exc.response()
        if cookie is not None and isinstance(response, web.Response) and not response.prepared:
            _set_cookie(request, response, cookie)
        return response

    return guard


def _set_cookie(request: web.Request, response: web.Response, token: str) -> None:
    # HttpOnly: the page's script never sees it; SameSite=Strict: no other site's page can
    # send it. A session cookie: opening /?token= again renews it.
    response.set_cookie(
        COOKIE, token, path="/", httponly=True, samesite="Strict", secure=request.secure
    )
    # The token is in this page's URL: send no more than the origin as Referer.
    response.headers["Referrer-Policy"] = "strict-origin"
