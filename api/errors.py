"""Translate our exception tree into HTTP answers: `{"error": {"code", "message"}}`, never a trace or a token."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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
