"""The control API under `/_sandbox/`: reset, inspect, create users, mint and revoke tokens, inject
faults and latency, script the dialog, move the clock, send webhooks, shape people (IGSIDs) and their
last message to an account (the Send API's window), list the messages the Send API accepted.
JSON in, JSON out; never faulted or delayed.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import cdn
from sandbox.emitter import DEFAULT_SEED, WebhookUnreachable, check_url, default_account, plan_send, send
from sandbox.fixtures import create_user, describe_user, parse_time
from sandbox.people import apply_spec, looks_like_igsid, picture_png
from sandbox.state import DialogScript, Fault, LatencyRule, State
from sandbox.webhooks import igsid

if TYPE_CHECKING:
    from sandbox.core import Sandbox

_KINDS = {"short": "user_short", "long": "user_long", "page": "page"}


class ControlError(Exception):
    """A bad control request (400)."""


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ControlError("body must be JSON") from None


async def _object(request: Request) -> dict[str, Any]:
    body = await _body(request)
    if not isinstance(body, dict):
        raise ControlError("body must be a JSON object")
    return body


def _regex(value: object) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise ControlError("path must be a non-empty regular expression")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ControlError(f"path is not a valid regular expression: {exc}") from None


def _handles_errors(func: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            return await func(request)  # type: ignore[no-any-return]
        except (ControlError, ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": {"code": "bad_request", "message": str(exc)}}, status_code=400)

    return endpoint


async def reset(request: Request) -> Response:
    _sandbox(request).state.reset()
    return JSONResponse({"ok": True})


async def state_view(request: Request) -> Response:
    sandbox = _sandbox(request)
    state = sandbox.state
    body: dict[str, Any] = {
        "now": state.now(),
        "config": {
            "app_id": sandbox.config.app_id,
            "page_size": state.page_size,
            "long_lived_reexchange": state.long_lived_reexchange,
            "require_appsecret_proof": state.require_appsecret_proof,
            "require_pkce": state.require_pkce,
            "webhook_url": state.webhook_url,
            "media_ttl_seconds": state.media_ttl_seconds,
            **_send_knobs(state),
        },
        "calls": dict(state.calls),
        "total_calls": sandbox.total_calls,
        "exchanges": dict(state.exchanges),
        "code_exchanges": dict(state.code_exchanges),
        "ig_refreshes": dict(state.refreshes),
        "ig_subscriptions": dict(state.ig_subscriptions),
        "tokens_issued": dict(state.issued),
        "token_count": len(state.tokens),
        "user_count": len(state.users),
        "subscriptions": {k: list(v) for k, v in state.subscriptions.items()},
        "faults": [f.public() for f in state.faults],
        "latency": [{"path": r.pattern.pattern, "ms": r.ms, "jitter_ms": r.jitter_ms} for r in state.latency],
        "dialog": {
            "mode": state.dialog.mode,
            "user_id": state.dialog.user_id,
            "declined_scopes": sorted(state.dialog.declined_scopes),
        },
        "webhooks": {
            "url": state.webhook_url,
            "sent": state.webhooks_sent,
            "last": state.webhook_log[-1] if state.webhook_log else None,
        },
        "messages": {"sent": len(state.sent), "last": state.sent[-1].public() if state.sent else None},
    }
    if request.query_params.get("tokens") in {"1", "true"}:
        body["tokens"] = [rec.public() for rec in state.tokens.values()]
    if request.query_params.get("users") in {"1", "true"}:
        body["users"] = [describe_user(state, u) for u in state.users.values()]
    return JSONResponse(body)


async def users(request: Request) -> Response:
    state = _sandbox(request).state
    body = await _body(request)
    specs = body.get("users") if isinstance(body, dict) and "users" in body else body
    many = isinstance(specs, list)
    items = specs if isinstance(specs, list) else [specs]
    created = []
    for spec in items:
        if not isinstance(spec, dict):
            raise ControlError("a user spec must be an object")
        if str(spec.get("id", "")) in state.users:
            raise ControlError(f"user {spec['id']} already exists")
        created.append(create_user(state, spec))
    return JSONResponse({"users": created} if many else created[0], status_code=201)


async def user_detail(request: Request) -> Response:
    state = _sandbox(request).state
    user = state.users.get(request.path_params["user_id"])
    if user is None:
        return JSONResponse({"error": {"code": "not_found", "message": "no such user"}}, status_code=404)
    if request.method == "PATCH":
        body = await _object(request)
        if "data_access_expires_at" in body:
            user.data_access_expires_at = parse_time(body["data_access_expires_at"])
        if "declined_scopes" in body:
            user.declined_scopes = frozenset(map(str, body["declined_scopes"]))
    return JSONResponse(describe_user(state, user))


def _mint_one(sandbox: Sandbox, spec: dict[str, Any]) -> list[str]:
    state = sandbox.state
    user = state.users.get(str(spec.get("user_id", "")))
    if user is None:
        raise ControlError(f"unknown user_id {spec.get('user_id')!r}")
    kind = _KINDS.get(str(spec.get("kind", "long")))
    if kind is None:
        raise ControlError("kind must be short, long or page")
    count = int(spec.get("count", 1))
    if not 1 <= count <= 100_000:
        raise ControlError("count must be between 1 and 100000")
    scopes = tuple(spec["scopes"]) if isinstance(spec.get("scopes"), list) else state.granted_scopes(user)
    now = state.now()
    default_ttl = {"user_short": sandbox.config.short_lived_ttl, "user_long": sandbox.state.long_lived_ttl}
    expires_in = spec.get("expires_in", default_ttl.get(kind))
    expires_at = None if expires_in in (None, 0) else now + int(expires_in)
    page_id = None
    if kind == "page":
        page_id = str(spec.get("page_id") or (user.page_ids[0] if user.page_ids else ""))
        if page_id not in user.page_ids:
            raise ControlError(f"user {user.id} does not manage Page {page_id!r}")
    kind_literal: Any = kind
    return [
        state.issue(user.id, kind_literal, scopes, expires_at=expires_at, page_id=page_id).value
        for _ in range(count)
    ]


async def tokens(request: Request) -> Response:
    sandbox = _sandbox(request)
    body = await _body(request)
    if isinstance(body, list):
        return JSONResponse({"tokens": [_mint_one(sandbox, spec) for spec in body]}, status_code=201)
    if not isinstance(body, dict):
        raise ControlError("body must be an object or a list of objects")
    return JSONResponse({"tokens": _mint_one(sandbox, body)}, status_code=201)


async def token_detail(request: Request) -> Response:
    rec = _sandbox(request).state.tokens.get((await _object(request)).get("token", ""))
    if rec is None:
        return JSONResponse({"error": {"code": "not_found", "message": "no such token"}}, status_code=404)
    return JSONResponse(rec.public())


async def revoke(request: Request) -> Response:
    state = _sandbox(request).state
    body = await _object(request)
    subcode = int(body.get("subcode", 460))
    if "user_id" in body:
        return JSONResponse({"revoked": state.revoke_user(str(body["user_id"]), subcode)})
    if not state.revoke(str(body.get("token", "")), subcode):
        return JSONResponse({"error": {"code": "not_found", "message": "no such token"}}, status_code=404)
    return JSONResponse({"revoked": 1})


async def faults(request: Request) -> Response:
    state = _sandbox(request).state
    if request.method == "DELETE":
        state.faults.clear()
        return JSONResponse({"ok": True})
    if request.method == "GET":
        return JSONResponse({"faults": [f.public() for f in state.faults]})
    body = await _object(request)
    headers = {
        str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (body.get("headers") or {}).items()
    }
    if body.get("regain_minutes") is not None:
        usage = {
            str(body.get("buc_id", "0")): [
                {
                    "type": "pages",
                    "call_count": 100,
                    "total_cputime": 30,
                    "total_time": 40,
                    "estimated_time_to_regain_access": int(body["regain_minutes"]),
                }
            ]
        }
        headers.setdefault("x-business-use-case-usage", json.dumps(usage))
    timeout = bool(body.get("timeout", False)) or body.get("timeout_seconds") is not None
    fault = Fault(
        pattern=_regex(body.get("path")),
        method=str(body["method"]).upper() if body.get("method") else None,
        remaining=int(body.get("count", 1)),
        http_status=int(body.get("http_status", 504 if timeout else 400)),
        code=int(body["code"]) if body.get("code") is not None else None,
        subcode=int(body["subcode"]) if body.get("subcode") is not None else None,
        type=str(body.get("type", "OAuthException")),
        message=str(body.get("message", "")),
        body=str(body["body"]) if body.get("body") is not None else None,
        headers=headers,
        timeout=timeout,
        hang_seconds=float(body["timeout_seconds"]) if body.get("timeout_seconds") is not None else None,
        is_transient=body.get("is_transient") if isinstance(body.get("is_transient"), bool) else None,
        query=_regex(body["query"]) if body.get("query") else None,
        after_delivery=_flag(body, "after_delivery"),
    )
    state.faults.append(fault)
    return JSONResponse(fault.public(), status_code=201)


async def latency(request: Request) -> Response:
    state = _sandbox(request).state
    if request.method == "DELETE":
        state.latency.clear()
        return JSONResponse({"ok": True})
    body = await _object(request)
    ms, jitter = float(body.get("ms", 0)), float(body.get("jitter_ms", 0))
    if ms < 0 or jitter < 0:
        raise ControlError("ms and jitter_ms must not be negative")
    rule = LatencyRule(_regex(body.get("path", ".*")), ms, jitter)
    state.latency.append(rule)
    return JSONResponse({"path": rule.pattern.pattern, "ms": ms, "jitter_ms": jitter}, status_code=201)


async def clock(request: Request) -> Response:
    state = _sandbox(request).state
    body = await _object(request)
    if "set" in body:
        state.set_now(datetime.fromtimestamp(parse_time(body["set"]), UTC))
    elif "advance_seconds" in body:
        state.clock_offset += float(body["advance_seconds"])
    else:
        raise ControlError("give advance_seconds or set")
    return JSONResponse({"now": state.now()})


async def dialog(request: Request) -> Response:
    state = _sandbox(request).state
    body = await _object(request)
    mode = body.get("mode", "interactive")
    if mode not in {"approve", "deny", "interactive"}:
        raise ControlError("mode must be approve, deny or interactive")
    user_id = body.get("user_id")
    if user_id is not None and str(user_id) not in state.users:
        raise ControlError(f"unknown user_id {user_id!r}")
    state.dialog = DialogScript(
        mode, str(user_id) if user_id else None, frozenset(body.get("declined_scopes") or ())
    )
    return JSONResponse({"mode": mode, "user_id": state.dialog.user_id})


async def config(request: Request) -> Response:
    state = _sandbox(request).state
    body = await _object(request)
    if "long_lived_reexchange" in body:
        if body["long_lived_reexchange"] not in {"extend", "keep_expiry"}:
            raise ControlError("long_lived_reexchange must be extend or keep_expiry")
        state.long_lived_reexchange = body["long_lived_reexchange"]
    if "page_size" in body:
        size = int(body["page_size"])
        if not 1 <= size <= 100:
            raise ControlError("page_size must be between 1 and 100")
        state.page_size = size
    if "require_appsecret_proof" in body:
        state.require_appsecret_proof = bool(body["require_appsecret_proof"])
    if "require_pkce" in body:
        state.require_pkce = _flag(body, "require_pkce")
    if "long_lived_seconds" in body:
        seconds = int(body["long_lived_seconds"])
        if not 3600 <= seconds <= 90 * 86400:
            raise ControlError("long_lived_seconds must be between 3600 and 7776000")
        state.long_lived_ttl = seconds
    if "webhook_url" in body:
        state.webhook_url = check_url(body["webhook_url"])
    if "ig_token_shape" in body:
        if body["ig_token_shape"] not in {"data", "flat"}:
            raise ControlError("ig_token_shape must be data or flat")
        state.ig_token_shape = body["ig_token_shape"]
    if "media_ttl_seconds" in body:
        ttl = int(body["media_ttl_seconds"])
        if not 0 <= ttl <= 90 * 86_400:
            raise ControlError("media_ttl_seconds must be between 0 and 7776000")
        state.media_ttl_seconds = ttl
    _configure_send(state, body)
    return JSONResponse(
        {
            "long_lived_reexchange": state.long_lived_reexchange,
            "long_lived_seconds": state.long_lived_ttl,
            "page_size": state.page_size,
            "require_appsecret_proof": state.require_appsecret_proof,
            "require_pkce": state.require_pkce,
            "webhook_url": state.webhook_url,
            "ig_token_shape": state.ig_token_shape,
            "media_ttl_seconds": state.media_ttl_seconds,
            **_send_knobs(state),
        }
    )


_USAGE_KEYS = frozenset({"call_count", "total_cputime", "total_time", "estimated_time_to_regain_access"})


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ControlError(f"{key} must be true or false")
    return value


def _configure_send(state: State, body: dict[str, Any]) -> None:
    """The Send API's knobs (sandbox/send.py)."""
    if "human_agent_approved" in body:
        state.human_agent_approved = _flag(body, "human_agent_approved")
    if "send_rate_per_second" in body:
        rate = int(body["send_rate_per_second"])
        if not 1 <= rate <= 100_000:
            raise ControlError("send_rate_per_second must be between 1 and 100000")
        state.send_rate_per_second = rate
    if "echoes" in body:
        if body["echoes"] not in {"on", "off", "drop"}:
            raise ControlError("echoes must be on, off or drop")
        state.echoes = body["echoes"]
    if "echo_delay_ms" in body:
        delay = float(body["echo_delay_ms"])
        if not 0 <= delay <= 3_600_000:
            raise ControlError("echo_delay_ms must be between 0 and 3600000")
        state.echo_delay_ms = delay
    if "send_usage" in body:
        usage = body["send_usage"]
        if usage is not None and (
            not isinstance(usage, dict)
            or not set(usage) <= _USAGE_KEYS
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in usage.values())
        ):
            raise ControlError(f"send_usage must be null or an object of {', '.join(sorted(_USAGE_KEYS))}")
        state.send_usage = None if usage is None else {str(k): int(v) for k, v in usage.items()}


def _send_knobs(state: State) -> dict[str, Any]:
    return {
        "human_agent_approved": state.human_agent_approved,
        "send_rate_per_second": state.send_rate_per_second,
        "echoes": state.echoes,
        "echo_delay_ms": state.echo_delay_ms,
        "send_usage": state.send_usage,
    }


async def webhooks_send(request: Request) -> Response:
    sandbox = _sandbox(request)
    body = await _object(request)
    plan = plan_send(sandbox.state, sandbox.config, body, origin=_origin(request))
    # Signed by the app the account's deliveries come from: "app" says, else the Instagram app when only it
    # is subscribed to the account (connected through Instagram Login), else the Meta app.
    app = body.get("app")
    if app not in {None, "facebook_login", "instagram_login"}:
        raise ControlError("app must be facebook_login or instagram_login")
    if app is None:
        state = sandbox.state
        account = state.ig_accounts.get(plan.account_id)
        page_subscribed = account is not None and account.page_id in state.subscriptions
        app = "instagram_login" if plan.account_id in state.ig_subscriptions and not page_subscribed else None
    secret = sandbox.config.ig_app_secret if app == "instagram_login" else sandbox.config.app_secret
    try:
        result = await send(sandbox.state, plan, secret)
    except WebhookUnreachable as exc:
        error = {"code": "webhook_unreachable", "message": exc.reason, "url": plan.url}
        return JSONResponse({"error": error, **exc.result}, status_code=502)
    return JSONResponse(result)


async def media(request: Request) -> Response:
    """A file on the sandbox's CDN, as the emitter makes for each attachment: ``{type, media?, ttl_seconds?}``
    → ``{url, expires_at}`` (sandbox/cdn.py)."""
    state = _sandbox(request).state
    body = await _object(request)
    spec = body.get("media")
    if spec is not None and not isinstance(spec, dict):
        raise ControlError("media must be an object {base64?, content_type?, size?}")
    ttl = int(body.get("ttl_seconds", state.media_ttl_seconds))
    if not 0 <= ttl <= 90 * 86_400:
        raise ControlError("ttl_seconds must be between 0 and 7776000")
    url = cdn.register(state, _origin(request), str(body.get("type", "image")), spec, ttl)
    return JSONResponse({"url": url, "expires_at": state.now() + ttl})


async def webhooks_log(request: Request) -> Response:
    state = _sandbox(request).state
    return JSONResponse(
        {"url": state.webhook_url, "sent": state.webhooks_sent, "deliveries": state.webhook_log}
    )


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _person_id(spec: dict[str, Any]) -> str:
    if spec.get("igsid"):
        if not looks_like_igsid(str(spec["igsid"])):
            raise ControlError("igsid must be 5 to 20 digits")
        return str(spec["igsid"])
    if spec.get("person") is not None:
        return igsid(str(spec.get("seed", DEFAULT_SEED)), int(spec["person"]))
    raise ControlError("give igsid, or person (and seed)")


def _last_message(state: State, person_id: str, spec: dict[str, Any]) -> None:
    """``last_message_at`` (epoch seconds, ISO 8601, ``"now"``, or null to forget) of the person with
    ``account_id`` (default: the account `/_sandbox/webhooks/send` writes to): the Send API's window."""
    account = str(spec.get("account_id") or default_account(state))
    if account not in state.ig_accounts:
        raise ControlError(f"account_id {account!r} is no Instagram account of the sandbox")
    value = spec["last_message_at"]
    seen = state.last_message_at.setdefault(person_id, {})
    if value is None:
        seen.pop(account, None)
    else:
        seen[account] = state.now() if value == "now" else parse_time(value)


def _person_out(state: State, person_id: str, origin: str, spec: dict[str, Any]) -> dict[str, Any]:
    out = apply_spec(state, person_id, origin, spec).public()
    out["last_message_at"] = dict(state.last_message_at.get(person_id, {}))
    return out


async def people(request: Request) -> Response:
    state = _sandbox(request).state
    body = await _body(request)
    specs = body.get("people") if isinstance(body, dict) and "people" in body else body
    items = specs if isinstance(specs, list) else [specs]
    out = []
    for spec in items:
        if not isinstance(spec, dict):
            raise ControlError("a person spec must be an object")
        person_id = _person_id(spec)
        if "last_message_at" in spec:
            _last_message(state, person_id, spec)
        out.append(_person_out(state, person_id, _origin(request), spec))
    return JSONResponse({"people": out} if isinstance(specs, list) else out[0])


async def person_detail(request: Request) -> Response:
    if not looks_like_igsid(request.path_params["igsid"]):
        return JSONResponse({"error": {"code": "not_found", "message": "not an IGSID"}}, status_code=404)
    return JSONResponse(
        _person_out(_sandbox(request).state, request.path_params["igsid"], _origin(request), {})
    )


async def messages(request: Request) -> Response:
    """The sends the Send API accepted, oldest first; ``?recipient_id=``, ``?page_id=``,
    ``?account_id=``, ``?mid=`` filter."""
    state = _sandbox(request).state
    keys = {"recipient_id", "page_id", "account_id", "mid"}
    wanted = {k: v for k, v in request.query_params.items() if k in keys}
    rows = [m.public() for m in state.sent]
    rows = [r for r in rows if all(r[k] == v for k, v in wanted.items())]
    return JSONResponse({"count": len(rows), "messages": rows})


async def person_picture(request: Request) -> Response:
    return Response(picture_png(request.path_params["igsid"]), media_type="image/png")


def control_routes() -> list[Route]:
    return [
        Route("/_sandbox/reset", _handles_errors(reset), methods=["POST"]),
        Route("/_sandbox/state", _handles_errors(state_view), methods=["GET"]),
        Route("/_sandbox/stats", _handles_errors(state_view), methods=["GET"]),
        Route("/_sandbox/users", _handles_errors(users), methods=["POST"]),
        Route("/_sandbox/users/{user_id}", _handles_errors(user_detail), methods=["GET", "PATCH"]),
        Route("/_sandbox/tokens", _handles_errors(tokens), methods=["POST"]),
        Route("/_sandbox/tokens/inspect", _handles_errors(token_detail), methods=["POST"]),
        Route("/_sandbox/revoke", _handles_errors(revoke), methods=["POST"]),
        Route("/_sandbox/faults", _handles_errors(faults), methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/latency", _handles_errors(latency), methods=["POST", "DELETE"]),
        Route("/_sandbox/clock", _handles_errors(clock), methods=["POST"]),
        Route("/_sandbox/dialog", _handles_errors(dialog), methods=["POST"]),
        Route("/_sandbox/config", _handles_errors(config), methods=["POST"]),
        Route("/_sandbox/webhooks/send", _handles_errors(webhooks_send), methods=["POST"]),
        Route("/_sandbox/webhooks", _handles_errors(webhooks_log), methods=["GET"]),
        Route("/_sandbox/media", _handles_errors(media), methods=["POST"]),
        Route("/_sandbox/people", _handles_errors(people), methods=["POST"]),
        Route("/_sandbox/people/{igsid}", _handles_errors(person_detail), methods=["GET"]),
        Route("/_sandbox/people/{igsid}/picture.png", person_picture, methods=["GET"]),
        Route("/_sandbox/messages", _handles_errors(messages), methods=["GET"]),
    ]
