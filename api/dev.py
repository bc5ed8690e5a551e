"""Development-only pages (INSTAGRAM_DM_ENV=development): a person can click through the whole
connect flow against the sandbox — Connect button, Meta's (sandbox) consent page, back to a status
page that reads the status RPC — and watch DMs arrive: the inbox page's "receive a DM" button asks the
sandbox to send a signed webhook to this API, and the page shows the conversation once the worker has
processed it. Never mounted in production.

The pages act as the demo IMO's admin the way the web app would: they mint a short-lived user JWT
(HS256, SUPABASE_JWT_SECRET), verify it with the app's verifier, and call the app-facing RPCs as that
user, so RLS and the membership checks decide here too.
"""

from __future__ import annotations

import html
import uuid
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from api.resources import resources
from api.routes import read_json_object
from instagram_dm import errors
from instagram_dm.auth import mint_user_token
from instagram_dm.db import rpc
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
<button id="connect">Connect Instagram</button> <a href="/dev/status">integration status</a> ·
<a href="/dev/inbox">inbox (receive a DM)</a>
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
<p><a href="/dev">Connect another account</a> · <a href="/dev/inbox">inbox (receive a DM)</a></p>"""
    return HTMLResponse(_PAGE.format(title="Instagram integrations — Demo Agency", body=body))


async def disconnect(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))  # no python-multipart needed
    await resources(request).service.disconnect(
        user=await _dev_user(request), integration_id=(form.get("id") or [""])[0]
    )
    return RedirectResponse("/dev/status?disconnected=1", status_code=303)


_INBOX_SCRIPT = """
const out = document.getElementById('out');
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;',
  '"': '&quot;', "'": '&#39;'}[c]));
async function refresh() {
  const r = await fetch('/dev/inbox/data');
  if (!r.ok) return;
  const data = await r.json();
  document.getElementById('conversations').innerHTML = data.conversations.map((c) =>
    `<tr><td>${esc(c.participant.username || c.participant.igsid)}</td><td>${esc(c.last_message_preview)}</td>
     <td>${esc(c.unread_count)}</td><td>${esc(c.last_message_at)}</td><td>${esc(c.recruiting_lead_id || '')}</td>
     </tr>`).join('') || '<tr><td colspan="5">no conversations yet</td></tr>';
  document.getElementById('messages').innerHTML = data.messages.map((m) =>
    `<li><strong>${esc(m.direction)}</strong> ${esc(m.deleted ? '(unsent)' : m.text)}
     ${m.attachments?.[0]?.media?.status === 'stored' && m.message_type === 'image'
       ? `<img src="/dev/media/${esc(m.id)}" alt="photo" height="80">` : esc(m.attachments?.[0]?.media?.status ?? '')}
     <small>${esc(m.sent_at)}</small>${m.direction === 'outbound' ? ` <em class="status">${esc(m.status)}</em>` : ''}
     ${m.error_code ? `<small>${esc(m.error_code)}: ${esc(m.error_message)}</small>
       <button data-retry="${esc(m.id)}">retry</button>` : ''}</li>`).join('');
}
async function post(path, body) {
  const r = await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify(body)});
  const data = await r.json();
  out.hidden = false;
  out.textContent = r.ok ? JSON.stringify(data) : data.error.message;
  refresh();
}
document.getElementById('reply').onclick = () => post('/dev/reply', {text: document.getElementById('answer').value});
document.getElementById('read').onclick = () => post('/dev/read', {});
document.getElementById('messages').onclick = (e) => {
  if (e.target.dataset.retry) post('/dev/retry', {message_id: e.target.dataset.retry});
};
const receive = async (photo) => {
  const text = document.getElementById('text').value;
  const r = await fetch('/dev/receive', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({text, photo})});
  const data = await r.json();
  out.hidden = false;
  out.textContent = r.ok ? `Sent by the sandbox as a signed webhook: ${JSON.stringify(data)}`
                         : data.error.message;
};
document.getElementById('receive').onclick = () => receive(false);
document.getElementById('photo').onclick = () => receive(true);
refresh(); setInterval(refresh, 1000);
"""


async def inbox_page(request: Request) -> Response:
    body = f"""
<p>Conversations of Demo Agency from <code>instagram_list_conversations</code> (as the demo admin), refreshed
every second. <strong>Receive a DM</strong> asks the sandbox to make a fake person DM your first connected
account: it signs the exact bytes with the app secret and POSTs them to
<code>/functions/v1/instagram-webhook</code>; the worker turns the stored delivery into a message.</p>
<p><input id="text" value="Hi! Is the recruiting call still on? äöü 😀" size="50">
<button id="receive">Receive a DM</button> <button id="photo">Receive a photo</button>
<a href="/dev">connect</a> · <a href="/dev/status">status</a></p>
<p id="out" class="note" hidden></p>
<table><thead><tr><th>participant</th><th>last message</th><th>unread</th><th>at</th><th>lead</th></tr></thead>
<tbody id="conversations"></tbody></table>
<h2>Newest conversation</h2>
<p><input id="answer" value="Thanks! Yes, 3 pm works." size="50"> <button id="reply">Reply</button>
<button id="read">Prospect reads</button> (the reply goes queued → sending → sent through
<code>instagram_send_message</code> and the worker; the sandbox echoes it; "Prospect reads" makes it read)</p>
<ul id="messages"></ul>
<script>{_INBOX_SCRIPT}</script>"""
    return HTMLResponse(_PAGE.format(title="Instagram inbox — Demo Agency", body=body))


async def inbox_data(request: Request) -> Response:
    res = resources(request)
    user = await _dev_user(request)
    conversations = await rpc.list_conversations(res.db, user, imo_id=DEMO_IMO, limit=20)
    messages = (
        await rpc.list_messages(res.db, user, conversation_id=str(conversations[0]["id"]), limit=20)
        if conversations
        else []
    )
    return JSONResponse({"conversations": conversations, "messages": messages})  # RPC results are plain JSON


async def receive_dm(request: Request) -> Response:
    """Ask the sandbox to DM the demo IMO's first live account (the sandbox POSTs the signed webhook here)."""
    res = resources(request)
    body = await read_json_object(request)
    text = str(body.get("text") or "Hello from the sandbox")
    accounts = [
        row.instagram_business_account_id
        for row in await res.service.status(user=await _dev_user(request), imo_id=DEMO_IMO)
        if row.status in {"connected", "reauth_required", "error"}
    ]
    if not accounts:
        raise errors.BadRequestError("Connect an Instagram account first (on /dev).", code="not_connected")
    try:
        answer = await res.http.post(
            f"{res.settings.graph_base_url}/_sandbox/webhooks/send",
            json={"kind": "message", "account_id": accounts[0], "text": text}
            if not body.get("photo")
            else {"kind": "attachment", "attachment_type": "image", "account_id": accounts[0]},
        )
    except Exception:
        raise errors.MetaError("The sandbox did not answer.", code="sandbox_unavailable") from None
    return JSONResponse(answer.json(), status_code=200 if answer.is_success else 502)


async def _newest_conversation(request: Request, user: ActingUser) -> str:
    conversations = await rpc.list_conversations(resources(request).db, user, imo_id=DEMO_IMO, limit=1)
    if not conversations:
        raise errors.BadRequestError("No conversation yet: receive a DM first.", code="no_conversation")
    return str(conversations[0]["id"])


async def reply(request: Request) -> Response:
    """Send a reply in the newest conversation as the demo admin, through the app's send RPC."""
    text = (await read_json_object(request)).get("text")
    user = await _dev_user(request)
    conversation_id = await _newest_conversation(request, user)
    message = await rpc.send_message(
        resources(request).db,
        user,
        conversation_id=conversation_id,
        text=text if isinstance(text, str) else None,
    )
    return JSONResponse(message)


async def retry(request: Request) -> Response:
    message_id = str((await read_json_object(request)).get("message_id") or "")
    try:
        message_id = str(uuid.UUID(message_id))
    except ValueError:
        raise errors.BadRequestError(
            "message_id must be a message's UUID.", code="invalid_message_id"
        ) from None
    message = await rpc.retry_message(resources(request).db, await _dev_user(request), message_id=message_id)
    return JSONResponse(message)


async def prospect_reads(request: Request) -> Response:
    """Ask the sandbox to send the prospect's read of our newest reply that Meta (the sandbox) accepted."""
    res = resources(request)
    user = await _dev_user(request)
    conversation_id = await _newest_conversation(request, user)
    messages = await rpc.list_messages(res.db, user, conversation_id=conversation_id, limit=50)
    sent = [m for m in messages if m["direction"] == "outbound" and m["meta_message_id"]]
    if not sent:
        raise errors.BadRequestError("Reply first: there is no sent reply to read.", code="nothing_to_read")
    try:
        answer = await res.http.post(
            f"{res.settings.graph_base_url}/_sandbox/webhooks/send",
            json={"kind": "read", "target_mid": sent[0]["meta_message_id"]},
        )
    except Exception:
        raise errors.MetaError("The sandbox did not answer.", code="sandbox_unavailable") from None
    return JSONResponse(answer.json(), status_code=200 if answer.is_success else 502)


async def home(request: Request) -> Response:
    return RedirectResponse("/dev", status_code=302)


def routes() -> list[Route]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/dev", connect_page, methods=["GET"]),
        Route("/dev/status", status_page, methods=["GET"]),
        Route("/dev/disconnect", disconnect, methods=["POST"]),
        Route("/dev/inbox", inbox_page, methods=["GET"]),
        Route("/dev/inbox/data", inbox_data, methods=["GET"]),
        Route("/dev/receive", receive_dm, methods=["POST"]),
        Route("/dev/reply", reply, methods=["POST"]),
        Route("/dev/retry", retry, methods=["POST"]),
        Route("/dev/read", prospect_reads, methods=["POST"]),
    ]
