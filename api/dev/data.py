"""The Messages page's JSON routes (development only): one read the page polls, and one route per action.

Every route runs the app-facing RPCs as the signed-in demo user (:func:`api.dev.session.acting_user`),
never a service-role shortcut: what the page shows and refuses is what RLS and the RPCs' own checks
decide for that user.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from api.dev.session import acting_user
from api.resources import resources
from api.routes import read_json_object
from instagram_dm import errors
from instagram_dm.db import rpc

SAMPLE_TEMPLATES = (
    ("Welcome", "greeting", "Hi {{first_name|there}}! Thanks for reaching out to {{agency_name}}. 😊"),
    (
        "Book a call",
        "scheduling",
        "Hi {{first_name|there}}, it's {{agent_name}}. Would a 15-minute call tomorrow work for you?",
    ),
    (
        "Follow-up",
        "follow_up",
        "Just checking in, {{first_name|there}}: any questions about joining the team?",
    ),
)


def _uuid(value: object, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise errors.BadRequestError(f"{what} must be a UUID.", code=f"invalid_{what}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


async def inbox(request: Request) -> Response:
    """``GET /dev/api/inbox[?conversation_id=]``: everything the page shows, as the signed-in user."""
    res = resources(request)
    demo, user = await acting_user(request)
    access = await rpc.messaging_access(res.db, user, imo_id=demo.imo_id)
    body: dict[str, Any] = {
        "now": datetime.now(UTC).isoformat(),
        "user": {"key": demo.key, "name": demo.name, "email": demo.email},
        "access": asdict(access),
        "human_agent_enabled": res.settings.human_agent_enabled,
        # The ways to connect this API offers (Instagram Login only when INSTAGRAM_LOGIN_* is set).
        "providers": sorted(res.service.providers),
        "accounts": [],
        "conversations": [],
        "messages": [],
        "templates": [],
        "usage": None,
    }
    if not access.instagram_messaging:
        return JSONResponse(body)
    accounts = await rpc.integration_status(res.db, user, imo_id=demo.imo_id)
    body["accounts"] = [_jsonable(asdict(a)) for a in accounts]
    body["conversations"] = await rpc.list_conversations(res.db, user, imo_id=demo.imo_id, limit=50)
    wanted = request.query_params.get("conversation_id")
    body["scheduled"] = []
    if wanted:
        conversation_id = _uuid(wanted, "conversation_id")
        body["messages"] = await rpc.list_messages(res.db, user, conversation_id=conversation_id, limit=100)
        body["scheduled"] = await rpc.list_scheduled_messages(res.db, user, conversation_id=conversation_id)
    body["templates"] = await rpc.list_templates(res.db, user, imo_id=demo.imo_id)
    body["usage"] = await rpc.usage_summary(res.db, user, imo_id=demo.imo_id)
    return JSONResponse(_jsonable(body))


async def mark_read(request: Request) -> Response:
    """``POST /dev/api/read {conversation_id}``: ``instagram_mark_conversation_read``."""
    conversation_id = _uuid((await read_json_object(request)).get("conversation_id"), "conversation_id")
    _, user = await acting_user(request)
    await rpc.mark_conversation_read(resources(request).db, user, conversation_id=conversation_id)
    return JSONResponse({"id": conversation_id, "unread_count": 0})


async def send(request: Request) -> Response:
    """``POST /dev/api/send {conversation_id, text, client_message_id?}``: ``instagram_send_message``."""
    body = await read_json_object(request)
    conversation_id = _uuid(body.get("conversation_id"), "conversation_id")
    client_id = body.get("client_message_id")
    text = body.get("text")
    _, user = await acting_user(request)
    message = await rpc.send_message(
        resources(request).db,
        user,
        conversation_id=conversation_id,
        text=text if isinstance(text, str) else None,
        client_message_id=_uuid(client_id, "client_message_id") if client_id else None,
    )
    return JSONResponse(_jsonable(message))


async def retry(request: Request) -> Response:
    """``POST /dev/api/retry {message_id}``: ``instagram_retry_message``."""
    message_id = _uuid((await read_json_object(request)).get("message_id"), "message_id")
    _, user = await acting_user(request)
    return JSONResponse(
        _jsonable(await rpc.retry_message(resources(request).db, user, message_id=message_id))
    )


async def render(request: Request) -> Response:
    """``POST /dev/api/render {template_id, conversation_id}``: ``instagram_render_template``."""
    body = await read_json_object(request)
    template_id = _uuid(body.get("template_id"), "template_id")
    conversation_id = _uuid(body.get("conversation_id"), "conversation_id")
    _, user = await acting_user(request)
    rendered = await rpc.render_template(
        resources(request).db, user, template_id=template_id, conversation_id=conversation_id
    )
    return JSONResponse(_jsonable(rendered))


async def sample_templates(request: Request) -> Response:
    """``POST /dev/api/templates/samples``: an admin adds the sample templates (``instagram_upsert_template``)."""
    demo, user = await acting_user(request)
    db = resources(request).db
    existing = {t["name"] for t in await rpc.list_templates(db, user, imo_id=demo.imo_id)}
    added = [
        await rpc.upsert_template(db, user, imo_id=demo.imo_id, name=name, body=text, category=category)
        for name, category, text in SAMPLE_TEMPLATES
        if name not in existing
    ]
    return JSONResponse({"added": len(added)})


def _when(value: object) -> datetime:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise errors.BadRequestError("send_at must be an ISO 8601 time.", code="invalid_send_at") from None
    if when.tzinfo is None:
        raise errors.BadRequestError("send_at needs a time zone.", code="invalid_send_at")
    return when


async def schedule(request: Request) -> Response:
    """``POST /dev/api/schedule {conversation_id, send_at, text? | template_id?}``: ``instagram_schedule_message``."""
    body = await read_json_object(request)
    conversation_id = _uuid(body.get("conversation_id"), "conversation_id")
    template_id = _uuid(body["template_id"], "template_id") if body.get("template_id") else None
    text = body.get("text")
    _, user = await acting_user(request)
    scheduled = await rpc.schedule_message(
        resources(request).db,
        user,
        conversation_id=conversation_id,
        send_at=_when(body.get("send_at")),
        text=text if isinstance(text, str) and template_id is None else None,
        template_id=template_id,
    )
    return JSONResponse(_jsonable(scheduled))


async def cancel_scheduled(request: Request) -> Response:
    """``POST /dev/api/scheduled/cancel {id}``: ``instagram_cancel_scheduled_message``."""
    scheduled_id = _uuid((await read_json_object(request)).get("id"), "id")
    _, user = await acting_user(request)
    result = await rpc.cancel_scheduled_message(resources(request).db, user, id=scheduled_id)
    return JSONResponse(_jsonable(result))


async def reschedule(request: Request) -> Response:
    """``POST /dev/api/scheduled/reschedule {id, send_at}``: ``instagram_reschedule_message``."""
    body = await read_json_object(request)
    scheduled_id = _uuid(body.get("id"), "id")
    _, user = await acting_user(request)
    result = await rpc.reschedule_message(
        resources(request).db, user, id=scheduled_id, send_at=_when(body.get("send_at"))
    )
    return JSONResponse(_jsonable(result))


async def disconnect(request: Request) -> Response:
    """``POST /dev/api/disconnect {integration_id}``: ``instagram_disconnect`` (admins)."""
    integration_id = (await read_json_object(request)).get("integration_id")
    _, user = await acting_user(request)
    result = await resources(request).service.disconnect(user=user, integration_id=integration_id)
    return JSONResponse(asdict(result))


async def media(request: Request) -> Response:
    """``GET /dev/media/{message_id}?index=``: the stored copy of an attachment, as the web app shows one —
    ``instagram_media_url`` as the user, then a redirect to the signed URL (the page's ``<img src>``)."""
    _, user = await acting_user(request)
    index = request.query_params.get("index", "0")
    signed = await rpc.media_url(
        resources(request).db,
        user,
        message_id=_uuid(request.path_params["message_id"], "message_id"),
        index=int(index) if index.isdigit() else 0,
    )
    return RedirectResponse(signed.url, status_code=302, headers={"Cache-Control": "no-store"})
