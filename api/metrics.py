"""``GET /metrics`` and the middleware that counts every HTTP request by route template and status.

The route label is the template of the mounted route that matched (``/functions/v1/instagram-webhook``,
``/dev/inbox``, …), never the raw path: a path no route knows counts as ``unmatched``, so a scanner cannot
grow the label set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.resources import resources
from instagram_dm import metrics

UNMATCHED = "unmatched"


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route that answers `scope` (a wrong method still names its route)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", UNMATCHED))
    return UNMATCHED


class HTTPMetrics:
    """Outermost middleware: one count and one latency observation per answered request."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        # (path, method) -> template, for routes without path parameters only: a finite set, so the cache
        # stays bounded whatever paths clients try.
        self._templates: dict[tuple[str, str], str] = {}

    def _template(self, scope: Scope) -> str:
        key = (scope["path"], scope["method"])
        template = self._templates.get(key)
        if template is None:
            template = route_template(self.routes, scope)
            if template == scope["path"]:
                self._templates[key] = template
        return template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = "none"  # the client left before an answer

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
                metrics.HTTP_DURATION.labels(route, scope["method"]).observe(time.perf_counter() - started)
            await send(message)

        route = self._template(scope)
        try:
            await self.app(scope, receive, counting_send)
        finally:
            metrics.HTTP_REQUESTS.labels(route, scope["method"], status).inc()


async def metrics_endpoint(request: Request) -> Response:
    res = resources(request)
    allowed = metrics.authorized(
        token=res.settings.metrics_token.reveal(),
        authorization=request.headers.get("authorization"),
        client_host=request.client.host if request.client else None,
    )
    if not allowed:
        if res.settings.metrics_token:
            response = error_response(401, "invalid_token", "GET /metrics needs the metrics bearer token.")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return error_response(
            403, "forbidden", "GET /metrics answers loopback clients only (set INSTAGRAM_METRICS_TOKEN)."
        )
    return Response(await metrics.render(res.db), media_type=metrics.CONTENT_TYPE)
