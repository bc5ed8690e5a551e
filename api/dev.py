"""Development-only pages (INSTAGRAM_DM_ENV=development): a person can click through the whole
connect flow against the sandbox — Connect button, Meta's (sandbox) consent page, back to a status
page that reads the status RPC. Never mounted in production.

The pages act as the demo IMO's admin the way the web app would: they mint a short-lived user JWT
(HS256, SUPABASE_JWT_SECRET), verify it with the app's verifier, and call the app-facing RPCs as that
user, so RLS and the membership checks decide here too.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from api.resources import resources
from instagram_dm.auth import mint_user_token
from instagram_dm.db.port import ActingUser
from instagram_dm.demo import DEMO_ADMIN, DEMO_IMO

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:.4rem;text-align:left}}
button{{font-size:1rem;padding:.5rem 1rem}} .note{{background:#f4f4f4;padding:.6rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _dev_token(request: Request) -> str:
    return mint_user_token(resources(request).settings.supabase_jwt_secret.reveal(), DEMO_ADMIN, ttl=900)


async def _dev_user(request: Request) -> ActingUser:
    """The demo admin, through the same verification as any caller's bearer token."""
    user = await resources(request).verifier.verify(f"Bearer {_dev_token(request)}")
    return user.acting_user()


async def connect_page(request: Request) -> Response:
    body = f"""
<p>Signed in (development) as <code>admin@demo-agency.test</code>, admin of <strong>Demo Agency</strong>
(Team plan). The button calls <code>POST /functions/v1/instagram-oauth-init</code> with a user JWT and follows
the returned Meta dialog URL — here the local sandbox's consent page.</p>
<button id="connect">Connect Instagram</button> <a href="/dev/status">integration status</a>
<p id="out" class="note" hidden></p>
<script>
document.getElementById('connect').onclick = async () => {{
  const r = await fetch('/functions/v1/instagram-oauth-init', {{method: 'POST', credentials: 'include',
    headers: {{'Authorization': 'Bearer {_dev_token(request)}', 'Content-Type': 'application/json'}},
    body: JSON.stringify({{imo_id: '{DEMO_IMO}'}})}});
  const data = await r.json();
  if (r.ok) {{ window.location = data.url; }}
  else {{ const o = document.getElementById('out'); o.hidden = false; o.textContent = data.error.message; }}
}};
</script>"""
    return HTMLResponse(_PAGE.format(title="Instagram DM — development", body=body))


async def status_page(request: Request) -> Response:
    rows = await resources(request).service.status(user=await _dev_user(request), imo_id=DEMO_IMO)
    outcome = html.escape(str(request.url.query)) or "—"
    fields = [
        "instagram_username",
        "facebook_page_name",
        "status",
        "webhook_subscribed",
        "token_expires_at",
        "data_access_expires_at",
        "last_refreshed_at",
        "last_error_code",
    ]
    head = "".join(f"<th>{f}</th>" for f in fields) + "<th></th>"
    lines = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(getattr(row, f)))}</td>" for f in fields)
        + f"""<td><form method="post" action="/dev/disconnect"><input type="hidden" name="id"
        value="{html.escape(row.id)}"><button>Disconnect</button></form></td></tr>"""
        for row in rows
    )
    body = f"""<p class="note">Callback result: <code>{outcome}</code></p>
<p>Rows from <code>instagram_integration_status</code> for Demo Agency:</p>
<table><tr>{head}</tr>{lines or '<tr><td colspan="9">no integrations yet</td></tr>'}</table>
<p><a href="/dev">Connect another account</a></p>"""
    return HTMLResponse(_PAGE.format(title="Instagram integrations — Demo Agency", body=body))


async def disconnect(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))  # no python-multipart needed
    await resources(request).service.disconnect(
        user=await _dev_user(request), integration_id=(form.get("id") or [""])[0]
    )
    return RedirectResponse("/dev/status?disconnected=1", status_code=303)


def routes() -> list[Route]:
    return [
        Route("/dev", connect_page, methods=["GET"]),
        Route("/dev/status", status_page, methods=["GET"]),
        Route("/dev/disconnect", disconnect, methods=["POST"]),
    ]
