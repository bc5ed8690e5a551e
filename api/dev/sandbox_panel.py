"""The page's sandbox panel (development only): make the Meta sandbox act as a prospect or as Meta.

"A prospect sends a DM" (text, image or story mention, now or some hours ago), "prospect reads",
"prospect reacts", "Meta refuses the next reply", "Meta outage" on / off. Each asks the sandbox's
control API (``/_sandbox/``, at the Graph origin, which is the sandbox in development); the sandbox signs
webhook deliveries and POSTs them to this API, and the worker turns them into messages, so the page sees
them as the CRM would. Which account and person to act for is read with the app-facing RPCs as the
signed-in user.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.dev.session import acting_user
from api.resources import resources
from api.routes import read_json_object
from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.port import ActingUser

_LIVE = {"connected", "reauth_required", "error"}
_DM_KINDS = {"text": "message", "image": "attachment", "story_mention": "story_mention"}
# A Graph path regex for "Meta is down": every Graph call (sends, profiles, refreshes), not the dialog.
_OUTAGE_PATH = r"^/v\d+\.\d+/(?!dialog/)"
MAX_AGO_HOURS = 24 * 30


async def _sandbox(request: Request, path: str, body: Mapping[str, Any], method: str = "POST") -> Any:
    res = resources(request)
    try:
        answer = await res.http.request(method, f"{res.settings.graph_base_url}/_sandbox/{path}", json=body)
    except Exception:
        raise errors.MetaError("The sandbox did not answer.", code="sandbox_unavailable") from None
    if not answer.is_success:
        raise errors.MetaError(f"The sandbox refused: {answer.text[:200]}", code="sandbox_refused")
    return answer.json()


async def _conversation(
    request: Request, user: ActingUser, imo_id: str, conversation_id: str
) -> Mapping[str, Any]:
    for conversation in await rpc.list_conversations(resources(request).db, user, imo_id=imo_id, limit=200):
        if conversation["id"] == conversation_id:
            return conversation
    raise errors.NotFoundError("No such conversation for this user.", code="not_found")


async def _account(request: Request, user: ActingUser, imo_id: str, integration_id: str | None) -> str:
    """The Instagram account id of `integration_id`, or of the first live integration."""
    for row in await rpc.integration_status(resources(request).db, user, imo_id=imo_id):
        if (integration_id is None and row.status in _LIVE) or row.id == integration_id:
            return row.instagram_business_account_id
    raise errors.BadRequestError("Connect an Instagram account first.", code="not_connected")


async def prospect_dm(request: Request) -> Response:
    """``POST /dev/sandbox/dm {kind: text|image|story_mention, text?, conversation_id? | person?, hours_ago?}``."""
    body = await read_json_object(request)
    demo, user = await acting_user(request)
    kind = _DM_KINDS.get(str(body.get("kind", "text")))
    if kind is None:
        raise errors.BadRequestError("kind must be text, image or story_mention.", code="invalid_kind")
    hours_ago = float(body.get("hours_ago") or 0)
    if not 0 <= hours_ago <= MAX_AGO_HOURS:
        raise errors.BadRequestError("hours_ago must be between 0 and 720.", code="invalid_hours_ago")
    spec: dict[str, Any] = {"kind": kind, "text": str(body.get("text") or "Hi! Is the position still open?")}
    if body.get("conversation_id"):
        conversation = await _conversation(request, user, demo.imo_id, str(body["conversation_id"]))
        spec["sender"] = conversation["participant"]["igsid"]
        spec["account_id"] = await _account(request, user, demo.imo_id, str(conversation["integration_id"]))
    else:
        person = int(body.get("person") or 1)
        if not 1 <= person <= 99:
            raise errors.BadRequestError("person must be between 1 and 99.", code="invalid_person")
        spec["person"] = person
        spec["account_id"] = await _account(request, user, demo.imo_id, None)
    # Attachments get a URL of the sandbox's CDN that expires as Meta's do; the worker copies them first.
    if hours_ago:
        spec["start_ms"] = int((time.time() - hours_ago * 3600) * 1000)
    return JSONResponse(await _sandbox(request, "webhooks/send", spec))


async def _newest_sent(request: Request, user: ActingUser, conversation_id: str) -> Mapping[str, Any]:
    messages = await rpc.list_messages(
        resources(request).db, user, conversation_id=conversation_id, limit=100
    )
    for message in messages:
        if message["direction"] == "outbound" and message["meta_message_id"]:
            return message
    raise errors.BadRequestError(
        "Reply first: nothing of ours reached the prospect yet.", code="nothing_sent"
    )


async def prospect_reads(request: Request) -> Response:
    """``POST /dev/sandbox/read {conversation_id}``: the prospect reads our newest sent reply."""
    conversation_id = str((await read_json_object(request)).get("conversation_id") or "")
    demo, user = await acting_user(request)
    await _conversation(request, user, demo.imo_id, conversation_id)
    message = await _newest_sent(request, user, conversation_id)
    return JSONResponse(
        await _sandbox(request, "webhooks/send", {"kind": "read", "target_mid": message["meta_message_id"]})
    )


async def prospect_reacts(request: Request) -> Response:
    """``POST /dev/sandbox/react {conversation_id, emoji?}``: the prospect reacts to our newest sent reply."""
    body = await read_json_object(request)
    conversation_id = str(body.get("conversation_id") or "")
    demo, user = await acting_user(request)
    await _conversation(request, user, demo.imo_id, conversation_id)
    message = await _newest_sent(request, user, conversation_id)
    spec = {
        "kind": "reaction",
        "target_mid": message["meta_message_id"],
        "emoji": str(body.get("emoji") or "❤️"),
    }
    return JSONResponse(await _sandbox(request, "webhooks/send", spec))


async def outage(request: Request) -> Response:
    """``POST /dev/sandbox/outage {on: bool}``: every Graph call answers Meta's 500 (code 2, transient)
    until switched off; off clears the sandbox's injected faults."""
    on = (await read_json_object(request)).get("on")
    if not isinstance(on, bool):
        raise errors.BadRequestError("on must be true or false.", code="invalid_on")
    await acting_user(request)  # signed in, like every other action
    await _sandbox(request, "faults", {}, method="DELETE")
    if on:
        await _sandbox(
            request,
            "faults",
            {"path": _OUTAGE_PATH, "count": -1, "http_status": 500, "code": 2, "is_transient": True},
        )
    return JSONResponse({"outage": on})


async def refuse_next_reply(request: Request) -> Response:
    """``POST /dev/sandbox/refuse-next``: the Send API refuses the next send with Meta's 551 ("This person
    isn't available right now"), a refusal the worker does not retry: the reply fails with its reason."""
    await acting_user(request)
    await _sandbox(
        request,
        "faults",
        {"path": r"/messages$", "method": "POST", "count": 1, "http_status": 400, "code": 551},
    )
    return JSONResponse({"refuse_next": True})


async def outage_state(request: Request) -> Response:
    """``GET /dev/sandbox/outage``: whether the outage fault is in place."""
    await acting_user(request)
    faults = (await _sandbox(request, "faults", {}, method="GET")).get("faults", [])
    return JSONResponse({"outage": any(f.get("path") == _OUTAGE_PATH for f in faults)})
