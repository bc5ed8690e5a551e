"""The Send API: ``POST /{version}/{page-id}/messages`` (and ``/{version}/me/messages``, the token's Page).

Checked in this order, each with Meta's error envelope: the Page token (190, 190/463, 210 for a user
token, 200 for another Page's token, 200 for a missing scope), the per-account rate (613/2534040 above
``send_rate_per_second`` calls in one sandbox second), the body (100: recipient, message, text of at
most 1000 UTF-8 bytes, attachment type and https URL, messaging_type, tag), the recipient (100/2534014
unless the person ever wrote to the Page's Instagram account), then the window (10/2534022: 24 hours
from the person's last message; up to 7 days with ``MESSAGE_TAG`` + ``HUMAN_AGENT`` while
``human_agent_approved``). An accepted send is recorded (``GET /_sandbox/messages``), answered
``{"recipient_id", "message_id"}`` with ``X-Business-Use-Case-Usage``, and echoed to the webhook URL
after ``echo_delay_ms`` as Meta does (``is_echo``, the same mid).

The parsing and the window rule are pure functions; the handler holds the state changes.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.routing import Route

from sandbox.core import SENT_SCOPE_KEY, Answer, Params, Sandbox, graph_route
from sandbox.emitter import SendPlan, WebhookUnreachable, send
from sandbox.faults import DEFAULT_MESSAGES, SUBCODE_MESSAGES
from sandbox.state import DAY, GraphFailure, PageRec, SentMessage, State, TokenRec
from sandbox.webhooks import deliver, echo_event, mid

__all__ = [
    "ATTACHMENT_TYPES",
    "DEPRECATED_TAGS",
    "HUMAN_AGENT_SECONDS",
    "MAX_TEXT_BYTES",
    "MESSAGING_TYPES",
    "TAGS",
    "WINDOW_SECONDS",
    "Outgoing",
    "parse_outgoing",
    "send_routes",
    "usage_header",
    "window_failure",
]

MAX_TEXT_BYTES = 1000
MAX_IMAGES = 10  # message.attachments[]: images only
ATTACHMENT_TYPES = ("audio", "file", "image", "video")
MESSAGING_TYPES = ("MESSAGE_TAG", "RESPONSE", "UPDATE")
TAGS = frozenset({"HUMAN_AGENT"})
DEPRECATED_TAGS = frozenset({"ACCOUNT_UPDATE", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE"})
WINDOW_SECONDS = DAY
HUMAN_AGENT_SECONDS = 7 * DAY


@dataclass(frozen=True)
class Outgoing:
    """A send request that passed the body checks."""

    recipient: str
    text: str | None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    messaging_type: str | None = None
    tag: str | None = None


def _bad(message: str) -> GraphFailure:
    return GraphFailure(f"(#100) {message}", code=100)


def _object_param(params: Params, name: str) -> dict[str, Any]:
    raw = params.get(name)
    if raw is None or raw == "":
        raise _bad(f"The parameter {name} is required")
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise _bad(f"Param {name} must be a JSON object")
    return value


def _attachment(value: object, where: str, types: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(f"Param {where} must be a JSON object")
    kind = value.get("type")
    if kind not in types:
        raise _bad(f'Param {where}[type] must be one of {{{", ".join(types)}}} - got "{kind}"')
    payload = value.get("payload")
    url = payload.get("url") if isinstance(payload, Mapping) else None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not parts.netloc:
        raise _bad(f"Param {where}[payload][url] must be a valid https URL")
    return {"type": kind, "payload": {"url": url}}


def parse_outgoing(params: Params) -> Outgoing:
    """The recipient, text or attachments, messaging_type and tag of a send; #100 for anything Meta
    refuses. ``recipient`` and ``message`` are JSON text (form fields or a JSON body's objects)."""
    recipient = _object_param(params, "recipient").get("id")
    if not isinstance(recipient, str | int) or isinstance(recipient, bool) or str(recipient) == "":
        raise _bad("Param recipient[id] is required")
    message = _object_param(params, "message")
    text = message.get("text")
    if text is not None and not isinstance(text, str):
        raise _bad("Param message[text] must be a string")
    text = text or None
    attachments: list[dict[str, Any]] = []
    if message.get("attachment") is not None:
        attachments = [_attachment(message["attachment"], "message[attachment]", ATTACHMENT_TYPES)]
    elif message.get("attachments") is not None:
        items = message["attachments"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_IMAGES:
            raise _bad(f"Param message[attachments] must be a list of 1 to {MAX_IMAGES} images")
        attachments = [_attachment(a, f"message[attachments][{i}]", ("image",)) for i, a in enumerate(items)]
    if text is None and not attachments:
        raise _bad("Message cannot be empty, must provide valid attachment or text")
    if text is not None and attachments:
        raise _bad("Only one of message[text] and message[attachment] may be set")
    if text is not None and len(text.encode()) > MAX_TEXT_BYTES:
        raise _bad(f"Length of param message[text] must be less than or equal to {MAX_TEXT_BYTES}")
    messaging_type = params.get("messaging_type") or None
    if messaging_type is not None and messaging_type not in MESSAGING_TYPES:
        allowed = ", ".join(MESSAGING_TYPES)
        raise _bad(f'Param messaging_type must be one of {{{allowed}}} - got "{messaging_type}"')
    tag = params.get("tag") or None
    if tag is not None and messaging_type != "MESSAGE_TAG":
        raise _bad("Param tag is only allowed with messaging_type MESSAGE_TAG")
    if tag is None and messaging_type == "MESSAGE_TAG":
        raise _bad("Param tag is required with messaging_type MESSAGE_TAG")
    if tag in DEPRECATED_TAGS:
        raise _bad(f"The tag {tag} is deprecated and can no longer be used")
    if tag is not None and tag not in TAGS:
        raise _bad(f'Param tag must be one of {{{", ".join(sorted(TAGS))}}} - got "{tag}"')
    return Outgoing(str(recipient), text, attachments, messaging_type, tag)


def window_failure(
    last_message_at: int, now: int, *, tag: str | None, human_agent_approved: bool
) -> GraphFailure | None:
    """None when a message may go out at `now`: before 24 h have passed since the person's last
    message, or before 7 days with the approved HUMAN_AGENT tag; else Meta's 10/2534022."""
    if now < last_message_at + WINDOW_SECONDS:
        return None
    if tag == "HUMAN_AGENT" and human_agent_approved and now < last_message_at + HUMAN_AGENT_SECONDS:
        return None
    return GraphFailure(SUBCODE_MESSAGES[2534022], code=10, subcode=2534022)


def usage_header(buc_id: str, call_count: int, forced: Mapping[str, int] | None = None) -> str:
    """``X-Business-Use-Case-Usage`` for one Page: the messenger use case at `call_count` %, with any
    value `forced` (``POST /_sandbox/config {"send_usage": {...}}``) winning."""
    usage = {
        "type": "messenger",
        "call_count": call_count,
        "total_cputime": call_count // 2,
        "total_time": call_count // 2,
        "estimated_time_to_regain_access": 0,
    }
    usage.update(forced or {})
    return json.dumps({buc_id: [usage]}, separators=(",", ":"))


# ---- the handler ---------------------------------------------------------------------------------


def _page(sandbox: Sandbox, rec: TokenRec, node_id: str) -> PageRec:
    """The Page the send is from: the path's, which must be the Page token's own."""
    if rec.kind != "page" or rec.page_id is None:
        raise GraphFailure("(#210) A page access token is required to request this resource.", code=210)
    page_id = rec.page_id if node_id == "me" else node_id
    page = sandbox.state.pages.get(page_id)
    if page is None:
        raise sandbox.unsupported(node_id, "post")
    if page.id != rec.page_id:
        raise GraphFailure(DEFAULT_MESSAGES[200], code=200)
    return page


def _over_rate(state: State, account_id: str) -> bool:
    """Count the call in its sandbox second; True when that second has seen more than the rate."""
    second = state.now()
    start, calls = state.send_second.get(account_id, (second, 0))
    calls = calls + 1 if start == second else 1
    state.send_second[account_id] = (second, calls)
    return calls > state.send_rate_per_second


def _call_count(state: State, account_id: str) -> int:
    """Sends accepted this sandbox minute as a percentage of a minute at the full rate."""
    minute = state.now() // 60
    start, sends = state.send_minute.get(account_id, (minute, 0))
    sends = sends + 1 if start == minute else 1
    state.send_minute[account_id] = (minute, sends)
    return min(100, math.ceil(sends * 100 / (state.send_rate_per_second * 60)))


async def send_message(sandbox: Sandbox, request: Request, params: Params) -> Answer:
    state = sandbox.state
    rec = sandbox.token(request, params)
    page = _page(sandbox, rec, request.path_params["node_id"])
    sandbox.need_scope(rec, "instagram_basic")
    sandbox.need_scope(rec, "instagram_manage_messages")
    account_id = page.ig_account_id
    if account_id is not None and _over_rate(state, account_id):
        usage = usage_header(page.id, 100, state.send_usage)
        raise GraphFailure(
            SUBCODE_MESSAGES[2534040],
            code=613,
            subcode=2534040,
            headers={"x-business-use-case-usage": usage},
        )
    out = parse_outgoing(params)
    last = state.last_message_at.get(out.recipient, {}).get(account_id or "")
    if account_id is None or last is None:
        raise GraphFailure(SUBCODE_MESSAGES[2534014], code=100, subcode=2534014)
    failure = window_failure(last, state.now(), tag=out.tag, human_agent_approved=state.human_agent_approved)
    if failure is not None:
        raise failure
    state.sent_counters[account_id] += 1
    sent = SentMessage(
        seq=len(state.sent) + 1,
        mid=mid(f"send:{account_id}", state.sent_counters[account_id]),
        page_id=page.id,
        account_id=account_id,
        recipient_id=out.recipient,
        text=out.text,
        attachments=out.attachments,
        messaging_type=out.messaging_type,
        tag=out.tag,
        at=state.now(),
        at_ms=state.now_ms(),
    )
    state.sent.append(sent)
    state.sent_by_mid[sent.mid] = sent
    request.scope[SENT_SCOPE_KEY] = sent  # for a fault that loses the answer (sandbox/faults.py)
    _schedule_echo(sandbox, sent)
    headers = {
        "x-business-use-case-usage": usage_header(page.id, _call_count(state, account_id), state.send_usage)
    }
    return Answer({"recipient_id": out.recipient, "message_id": sent.mid}, headers)


# ---- the echo ------------------------------------------------------------------------------------


def _schedule_echo(sandbox: Sandbox, sent: SentMessage, secret: str | None = None) -> None:
    """The echo of `sent`, signed with `secret` (the app that sent it; the Meta app's by default)."""
    state = sandbox.state
    if state.echoes != "on":
        sent.echo = "off" if state.echoes == "off" else "dropped"
        return
    task = asyncio.get_running_loop().create_task(
        _echo(
            sandbox, sent, state.webhook_url, state.echo_delay_ms / 1000, secret or sandbox.config.app_secret
        )
    )
    state.pending_echoes.add(task)
    task.add_done_callback(state.pending_echoes.discard)


async def _echo(sandbox: Sandbox, sent: SentMessage, url: str, delay: float, secret: str) -> None:
    """After `delay`, POST the signed echo of `sent` to `url` (logged like any webhook delivery)."""
    await asyncio.sleep(delay)
    state = sandbox.state
    event = echo_event(
        sent.account_id,
        sent.recipient_id,
        sent.mid,
        text=sent.text,
        attachments=sent.attachments,
        timestamp_ms=sent.at_ms,
    )
    plan = SendPlan(
        url=url,
        kind="echo",
        account_id=sent.account_id,
        deliveries=[deliver(sent.account_id, [event], time_ms=state.now_ms())],
        timeout=sandbox.config.webhook_timeout_seconds,
        last_new_mid=sent.mid,
    )
    try:
        await send(state, plan, secret)
    except WebhookUnreachable:
        sent.echo = "failed"
        return
    sent.echo = "delivered"
    sent.echo_http_status = plan.statuses[0][0]


def send_routes() -> list[Route]:
    """``/{version}/{page-id}/messages``; ``me`` as the Page id is the token's Page."""
    return [Route("/{version}/{node_id}/messages", graph_route(send_message), methods=["POST"])]
