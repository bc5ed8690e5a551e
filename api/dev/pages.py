"""The development pages themselves: the Messages page (static HTML, CSS and JS shipped with the package)
and the raw status table."""

from __future__ import annotations

import html
from importlib import resources as package_files

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api.dev.session import acting_user, signed_in
from api.resources import resources
from instagram_dm import errors

_STATIC = {
    "messages.js": "text/javascript; charset=utf-8",
    "messages.css": "text/css; charset=utf-8",
}
_STATUS_FIELDS = (
    "instagram_username",
    "provider",
    "facebook_page_name",
    "status",
    "webhook_subscribed",
    "token_expires_at",
    "data_access_expires_at",
    "last_refreshed_at",
    "last_error_code",
)


def _read(name: str) -> str:
    return (package_files.files("api.dev") / "static" / name).read_text(encoding="utf-8")


async def messages_page(request: Request) -> Response:
    """``GET /dev``: the Messages page (it signs in, polls and acts through the /dev JSON routes)."""
    return HTMLResponse(_read("messages.html"), headers={"Cache-Control": "no-store"})


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _STATIC:
        raise errors.NotFoundError("There is nothing at this path.", code="not_found")
    return Response(_read(name), media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})


async def inbox_redirect(request: Request) -> Response:
    """The old inbox page's address leads to the Messages page."""
    return RedirectResponse("/dev", status_code=302)


async def home(request: Request) -> Response:
    return RedirectResponse("/dev", status_code=302)


async def status_page(request: Request) -> Response:
    """``GET /dev/status``: the signed-in user's rows of ``instagram_integration_status``, as a table."""
    if signed_in(request) is None:
        return RedirectResponse("/dev", status_code=302)
    demo, user = await acting_user(request)
    rows = await resources(request).service.status(user=user, imo_id=demo.imo_id)
    head = "".join(f"<th>{f}</th>" for f in _STATUS_FIELDS)
    lines = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(getattr(row, f)))}</td>" for f in _STATUS_FIELDS) + "</tr>"
        for row in rows
    )
    empty = f'<tr><td colspan="{len(_STATUS_FIELDS)}">no integrations yet</td></tr>'
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Instagram integrations</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:.4rem;text-align:left}}</style>
</head><body><h1>Instagram integrations</h1>
<p>Rows of <code>instagram_integration_status</code> as {html.escape(demo.name)} sees them.</p>
<table><tr>{head}</tr>{lines or empty}</table><p><a href="/dev">Messages</a></p></body></html>"""
    return HTMLResponse(body)
