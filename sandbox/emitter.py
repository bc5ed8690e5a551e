"""`POST /_sandbox/webhooks/send`: turn a JSON description into deliveries (sandbox/webhooks.py), sign
them with the app secret and POST them to the webhook URL, keeping a log of what was sent.

Mids continue per seed across calls (the first message after a reset is ``mid("sandbox", 1)``), so a
test can predict them; people are ``igsid(seed, n)``. Every message or postback a person sends opens
(restarts) that person's 24-hour window with the account for the Send API (sandbox/send.py), whether
or not the webhook URL answers. A ``target_mid`` that the Send API issued makes the reaction, read,
... come from that message's recipient to its account unless ``sender``/``person``/``account_id`` say
otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from sandbox import cdn
from sandbox.state import WEBHOOK_LOG_LIMIT, SandboxConfig, State
from sandbox.webhooks import (
    ATTACHMENT_TYPES,
    MAX_EVENTS,
    Container,
    Delivery,
    Event,
    EventFactory,
    dashboard_test,
    deliver,
    event_mid,
    igsid,
    out_of_order,
)

__all__ = [
    "DEFAULT_SEED",
    "KINDS",
    "WINDOW_KINDS",
    "SendPlan",
    "WebhookUnreachable",
    "check_url",
    "default_account",
    "plan_send",
    "send",
]

DEFAULT_SEED = "sandbox"
MAX_DUPLICATES = 100
_NEW_MESSAGE_KINDS = frozenset(
    {"message", "batch", "echo", "attachment", "story_mention", "postback", "non_ascii", "unsupported"}
)
_TARGET_KINDS = frozenset({"reaction", "unreact", "read", "unsend", "edit"})
# Events from the person that open the Send API's 24-hour window (an echo is the account's own).
WINDOW_KINDS = _NEW_MESSAGE_KINDS - {"echo"}
KINDS = _NEW_MESSAGE_KINDS | _TARGET_KINDS | {"referral", "unknown", "dashboard_test"}
Signature = Literal["valid", "wrong", "missing"]


class WebhookUnreachable(Exception):
    """The webhook URL could not be reached (connection refused, timeout, ...)."""

    def __init__(self, reason: str, result: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result


@dataclass
class SendPlan:
    url: str
    kind: str
    account_id: str
    deliveries: list[Delivery]
    duplicates: int = 1
    concurrent: bool = False
    signature: Signature = "valid"
    timeout: float = 10.0
    last_new_mid: str | None = None  # what reactions, reads, edits and unsends refer to by default
    statuses: list[list[int]] = field(default_factory=list)


def check_url(value: object) -> str:
    """An absolute http(s) URL, else ValueError (a 400 from the control call)."""
    if (
        not isinstance(value, str)
        or urlsplit(value).scheme not in {"http", "https"}
        or not urlsplit(value).netloc
    ):
        raise ValueError("url must be an absolute http(s) URL")
    return value


def default_account(state: State) -> str:
    """The IG account of the first subscribed Page, else of the first Page that has one."""
    pages = [state.pages[p] for p in state.subscriptions if p in state.pages] + list(state.pages.values())
    for page in pages:
        if page.ig_account_id is not None:
            return page.ig_account_id
    raise ValueError("no Page with an Instagram account in the sandbox: give account_id")


def _last_mid(state: State, account_id: str) -> str:
    for entry in reversed(state.webhook_log):
        if entry["account_id"] == account_id and entry.get("last_new_mid"):
            return str(entry["last_new_mid"])
    raise ValueError("give target_mid: no message was sent to this account yet")


def _int(body: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = int(body.get(key, default))
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low} and {high}")
    return value


MediaURL = Callable[
    [str], "str | None"
]  # attachment type -> a CDN URL of the sandbox (or None: Meta's shape)


def _no_media(_kind: str) -> str | None:
    return None


def _one(
    kind: str,
    events: EventFactory,
    sender: str,
    body: Mapping[str, Any],
    *,
    target: str,
    n: int,
    media: MediaURL = _no_media,
) -> Event:
    text = body.get("text")
    numbered = f"{text or 'hello from the sandbox'}" + (f" {n + 1}" if int(body.get("count", 1)) > 1 else "")
    if kind in {"message", "batch"}:
        return events.message(
            sender,
            numbered,
            reply_to=_reply_to(body),
            quick_reply=str(body["quick_reply"]) if body.get("quick_reply") is not None else None,
            referral=body["referral"] if isinstance(body.get("referral"), Mapping) else None,
            is_unsupported=bool(body.get("is_unsupported", False)),
        )
    builders: dict[str, Callable[[], Event]] = {
        "echo": lambda: events.echo(sender, numbered),
        "attachment": lambda: events.attachment(
            sender,
            str(body.get("attachment_type") or "image"),
            body.get("attachment_url") or media(str(body.get("attachment_type") or "image")),
        ),
        "story_mention": lambda: events.story_mention(
            sender, body.get("attachment_url") or media("story_mention")
        ),
        "postback": lambda: events.postback(
            sender, str(body.get("title", "Get started")), str(body.get("payload", "GET_STARTED"))
        ),
        "unsupported": lambda: events.unsupported(sender),
        "reaction": lambda: events.reaction(
            sender, target, str(body.get("emoji", "❤️")), str(body.get("reaction", "love"))
        ),
        "unreact": lambda: events.unreact(sender, target, body.get("emoji"), body.get("reaction")),
        "read": lambda: events.read(sender, target),
        "unsend": lambda: events.unsend(sender, target),
        "edit": lambda: events.edit(sender, target, str(text or "edited"), int(body.get("num_edit", 1))),
        "referral": lambda: events.referral(sender, str(body.get("ref", "sandbox"))),
        "unknown": lambda: events.unknown(sender),
    }
    return builders[kind]()


def _reply_to(body: Mapping[str, Any]) -> dict[str, Any] | None:
    if body.get("reply_to_mid"):
        return {"mid": str(body["reply_to_mid"])}
    story = body.get("reply_to_story")
    if isinstance(story, Mapping):
        return {"story": {"url": str(story.get("url", "")), "id": str(story.get("id", ""))}}
    return None


def _events(
    kind: str, factory: EventFactory, body: Mapping[str, Any], state: State, media: MediaURL = _no_media
) -> list[Event]:
    if kind == "attachment" and body.get("attachment_type") == "all":
        sender = _sender(factory, body, 1)
        return [
            factory.attachment(sender, t, body.get("attachment_url") or media(t)) for t in ATTACHMENT_TYPES
        ]
    if kind == "non_ascii":
        return factory.non_ascii(_sender(factory, body, 1))
    batch = kind == "batch"
    count = _int(body, "count", 100 if batch else 1, 1, MAX_EVENTS)
    if body.get("out_of_order") and count < 2:
        count = 2
    people = _int(body, "people", min(10, count) if batch else 1, 1, count)
    target = ""
    if kind in _TARGET_KINDS:
        target = str(body.get("target_mid") or _last_mid(state, factory.account_id))
    spec = {**body, "count": count}
    return [
        _one(
            kind,
            factory,
            _sender(factory, body, n % people + 1, rotate=people > 1),
            spec,
            target=target,
            n=n,
            media=media,
        )
        for n in range(count)
    ]


def _sender(factory: EventFactory, body: Mapping[str, Any], n: int, *, rotate: bool = False) -> str:
    if body.get("sender") and not rotate:
        return str(body["sender"])
    first = int(body.get("person", 1))
    return igsid(factory.seed, first + n - 1)


def plan_send(
    state: State, config: SandboxConfig, body: Mapping[str, Any], *, origin: str | None = None
) -> SendPlan:
    """What to send, from the control body (advancing the seed's mid counter); ValueError, KeyError or
    TypeError on bad input (a 400). With `origin` (the sandbox's own), attachments without an
    ``attachment_url`` get a URL of the sandbox's CDN (sandbox/cdn.py) that works for ``media_ttl_seconds``
    (default: the configured one), with the bytes of ``media`` (default: a small real file of the type)."""
    kind = str(body.get("kind", "message"))
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(sorted(KINDS))}")
    url = check_url(body.get("url") or state.webhook_url)
    sent = state.sent_by_mid.get(str(body.get("target_mid") or ""))
    if sent is not None and kind in _TARGET_KINDS:
        if not body.get("sender") and body.get("person") is None:
            body = {**body, "sender": sent.recipient_id}
        body = {**body, "account_id": body.get("account_id") or sent.account_id}
    account_id = str(body.get("account_id") or default_account(state))
    signature = body.get("signature", "valid")
    if signature not in {"valid", "wrong", "missing"}:
        raise ValueError("signature must be valid, wrong or missing")
    container = body.get("container", "messaging")
    if container not in {"messaging", "standby", "changes"}:
        raise ValueError("container must be messaging, standby or changes")
    seed = str(body.get("seed", DEFAULT_SEED))
    last_new_mid = None
    if kind == "dashboard_test":
        deliveries = [dashboard_test()]
    else:
        start_ms = int(body.get("start_ms") or (time.time() + state.clock_offset) * 1000)
        factory = EventFactory(
            account_id, seed=seed, start_ms=start_ms, first_mid=state.webhook_counters[seed] + 1
        )
        events = _events(kind, factory, body, state, _media_urls(state, origin, body))
        state.webhook_counters[seed] = factory.next_mid_number - 1
        if kind in WINDOW_KINDS:
            for event in events:
                state.note_inbound(account_id, str(event["sender"]["id"]), int(event["timestamp"]) // 1000)
        if kind in _NEW_MESSAGE_KINDS:
            last_new_mid = event_mid(events[-1])
        if body.get("out_of_order"):
            events = out_of_order(events)
        deliveries = _wrap(account_id, events, container, body)
    return SendPlan(
        url=url,
        kind=kind,
        account_id=account_id,
        deliveries=deliveries,
        duplicates=_int(body, "duplicates", 1, 1, MAX_DUPLICATES),
        concurrent=bool(body.get("concurrent", False)),
        signature=signature,
        timeout=float(body.get("timeout_seconds") or config.webhook_timeout_seconds),
        last_new_mid=last_new_mid,
    )


def _media_urls(state: State, origin: str | None, body: Mapping[str, Any]) -> MediaURL:
    if origin is None:
        return _no_media
    ttl = _int(body, "media_ttl_seconds", state.media_ttl_seconds, 0, 90 * 86_400)
    spec = body.get("media")
    if spec is not None and not isinstance(spec, Mapping):
        raise ValueError("media must be an object {base64?, content_type?, size?}")
    return lambda kind: cdn.register(state, origin, kind, spec, ttl)


def _wrap(
    account_id: str, events: list[Event], container: Container, body: Mapping[str, Any]
) -> list[Delivery]:
    per_event = bool(body.get("entry_per_event", False))
    if body.get("split"):
        return [deliver(account_id, [e], container=container) for e in events]
    return [deliver(account_id, events, container=container, entry_per_event=per_event)]


def _headers(delivery: Delivery, secret: str, signature: Signature) -> dict[str, str]:
    headers = delivery.headers(secret if signature == "valid" else secret + "-wrong")
    if signature == "missing":
        headers.pop("X-Hub-Signature-256")
        headers.pop("X-Hub-Signature")
    return headers


def _result(plan: SendPlan, secret: str) -> dict[str, Any]:
    return {
        "url": plan.url,
        "kind": plan.kind,
        "account_id": plan.account_id,
        # The mids that reached the webhook (every one, unless the URL stopped answering part way).
        "mids": [m for d, row in zip(plan.deliveries, plan.statuses, strict=False) if row for m in d.mids],
        "statuses": [s for row in plan.statuses for s in row],
        "deliveries": [
            {
                "mids": list(d.mids),
                "bytes": len(d.body),
                "sha256": d.sha256,
                "signature": d.headers(secret)["X-Hub-Signature-256"],
                "statuses": plan.statuses[i] if i < len(plan.statuses) else [],
            }
            for i, d in enumerate(plan.deliveries)
        ],
    }


def _log(state: State, plan: SendPlan, delivery: Delivery, statuses: list[int], error: str | None) -> None:
    state.webhooks_sent += 1
    state.webhook_log.append(
        {
            "seq": state.webhooks_sent,
            "at": state.now(),
            "kind": plan.kind,
            "url": plan.url,
            "account_id": plan.account_id,
            "mids": list(delivery.mids),
            "last_new_mid": plan.last_new_mid if error is None else None,
            "statuses": statuses,
            "bytes": len(delivery.body),
            "sha256": delivery.sha256,
            "error": error,
        }
    )
    del state.webhook_log[:-WEBHOOK_LOG_LIMIT]


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default verification, built once: building it costs ~40 ms, and every echo is a client."""
    return httpx.create_ssl_context(trust_env=False)


async def send(state: State, plan: SendPlan, secret: str) -> dict[str, Any]:
    """POST every delivery `duplicates` times (all copies at once when `concurrent`), in order; the
    result lists mids and statuses. WebhookUnreachable when a POST gets no HTTP answer."""
    async with httpx.AsyncClient(timeout=plan.timeout, trust_env=False, verify=_ssl_context()) as client:
        for delivery in plan.deliveries:
            headers = _headers(delivery, secret, plan.signature)

            async def post(body: bytes = delivery.body, headers: dict[str, str] = headers) -> int:
                response = await client.post(plan.url, content=body, headers=headers)
                return response.status_code

            if plan.concurrent:
                answers = await asyncio.gather(
                    *(post() for _ in range(plan.duplicates)), return_exceptions=True
                )
            else:
                answers = []
                for _ in range(plan.duplicates):
                    try:
                        answers.append(await post())
                    except (httpx.HTTPError, httpx.InvalidURL) as exc:
                        answers.append(exc)
                        break
            statuses = [a for a in answers if isinstance(a, int)]
            failure = next((a for a in answers if isinstance(a, BaseException)), None)
            plan.statuses.append(statuses)
            if failure is not None:
                reason = f"{type(failure).__name__} posting to the webhook URL"
                _log(state, plan, delivery, statuses, reason)
                raise WebhookUnreachable(reason, _result(plan, secret))
            _log(state, plan, delivery, statuses, None)
    return _result(plan, secret)
