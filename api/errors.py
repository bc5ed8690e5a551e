"""Translate our exception tree into HTTP answers: `{"error": {"code", "message"}}`, never a trace or a token."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instagram_dm import errors

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.InstagramDMError)  # noqa: S101 - registered for this class only
    status = exc.http_status
    if status >= 500:
        log.error("api.error", extra={"path": request.url.path, "error_code": exc.code})
    return error_response(status, exc.code, exc.message)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("api.unhandled", extra={"path": request.url.path, "exc_type": type(exc).__name__})
    return error_response(500, "internal_error", "Something went wrong on our side; please try again.")


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
_HTTP_MESSAGES = {404: "There is nothing at this path.", 405: "This path does not answer that method."}


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method, ...) in our error shape, headers (Allow) kept."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this class only
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
    response = error_response(exc.status_code, code, message)
    response.headers.update(exc.headers or {})
    return response


class LastResort:
    """The outermost middleware: an exception nothing else handled becomes the JSON 500 and one JSON log
    line (``api.unhandled``). Starlette's own last handler answers too but then re-raises, so the server
    printed a multi-line traceback outside the JSON log and dropped the keep-alive connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            response = await unexpected_error(Request(scope), exc)
            if not started:  # otherwise the client already has a status line: the connection just ends
                await response(scope, receive, send)
