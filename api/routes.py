"""HTTP handlers: parse, authorise, call the service, answer. Nothing else."""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api.body import read_capped
from api.resources import resources
from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.service import STATE_TTL_SECONDS, binding_cookie_name

MAX_BODY_BYTES = 16 * 1024


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    body = await read_capped(request, MAX_BODY_BYTES)
    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError):  # RecursionError: [[[[... nested deeper than the parser goes
        raise errors.BadRequestError("The request body must be JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise errors.BadRequestError("The request body must be a JSON object.", code="invalid_json")
    return data


async def oauth_init(request: Request) -> Response:
    res = resources(request)
    user = await res.verifier.verify(request.headers.get("authorization"))
    body = await read_json_object(request)
    if "imo_id" not in body:
        raise errors.BadRequestError("imo_id is required.", code="invalid_imo_id")
    start = await res.service.start_connection(
        user_id=user.user_id,
        imo_id=body["imo_id"],
        return_to=body.get("return_to"),
        provider=body.get("provider"),  # facebook_login when absent; instagram_login when configured
    )
    response = JSONResponse({"url": start.url, "expires_at": start.expires_at, "provider": start.provider})
    if start.binding_cookie is not None:
        name, value = start.binding_cookie
        response.set_cookie(name, value, **_binding_cookie_options(request))
    return response


def _binding_cookie_options(request: Request) -> dict[str, Any]:
    """HttpOnly, sent back only to the callback path, for the state's lifetime; Secure behind https."""
    redirect = urlsplit(resources(request).settings.oauth_redirect_uri)
    return {
        "max_age": STATE_TTL_SECONDS,
        "path": redirect.path or "/",
        "secure": redirect.scheme == "https",
        "httponly": True,
        "samesite": "lax",
    }


INVALID_STATE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Instagram connection link expired</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto;">
<h1>This connection link is no longer valid</h1>
<p>It expired, was already used, or did not come from this app. Nothing was connected.</p>
<p><a href="{return_url}">Go back to Messages</a> and choose <strong>Connect Instagram</strong> again.</p>
</body></html>"""


async def oauth_callback(request: Request) -> Response:
    # Repeated parameters: the first one counts, like Meta's own parsing; the rest are ignored.
    params = {k: v for k, v in reversed(request.query_params.multi_items())}
    res = resources(request)
    result = await res.service.complete_connection(params, request.cookies)
    target = result.redirect_url()
    response: Response
    if target is None:
        return_url = html.escape(res.settings.return_url, quote=True)
        response = HTMLResponse(
            INVALID_STATE_PAGE.format(return_url=return_url),
            status_code=400,
            headers={"Cache-Control": "no-store"},
        )
    else:
        response = RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})
    cookie = binding_cookie_name(params.get("state", ""))
    if cookie in request.cookies:  # the state is spent either way
        options = _binding_cookie_options(request)
        response.delete_cookie(
            cookie, path=options["path"], secure=options["secure"], httponly=True, samesite="lax"
        )
    return response


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        health = await rpc.health(resources(request).db)
    except errors.InstagramDMError as exc:
        return JSONResponse({"status": "unavailable", "database": exc.code}, status_code=503)
    ready = health.pgcrypto and health.pg_cron
    return JSONResponse(
        {"status": "ok" if ready else "degraded", "database": "ok", "pg_cron": health.pg_cron},
        status_code=200 if ready else 503,
    )
