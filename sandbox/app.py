"""The Meta sandbox: Facebook's OAuth dialog and the Graph API at one origin, plus `/_sandbox/` control.

``create_app(config)`` returns a Starlette app. Graph routes answer with Meta's JSON shapes, error
envelope and usage headers; the state lives in memory (one uvicorn worker). See docs/sandbox.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.control import control_routes
from sandbox.state import (
    PAGE_WEBHOOK_FIELDS,
    CodeRec,
    Fault,
    GraphFailure,
    PageRec,
    SandboxConfig,
    State,
    TokenRec,
    decode_cursor,
    encode_cursor,
    new_token,
    trace_id,
)

__all__ = ["Sandbox", "SandboxConfig", "create_app"]

VERSION_RE = re.compile(r"^v\d+\.\d+$")
_LITERAL_SEGMENTS = frozenset(
    {"dialog", "oauth", "access_token", "debug_token", "me", "accounts", "subscribed_apps", "confirm"}
)
_CONSENT = Template((Path(__file__).parent / "consent.html").read_text(encoding="utf-8"))
_FIELDS_BY_NODE = {
    "Page": frozenset(
        {"id", "name", "category", "category_list", "tasks", "access_token", "instagram_business_account"}
    ),
    "IGUser": frozenset({"id", "username", "name", "profile_picture_url", "followers_count", "media_count"}),
    "IGSID": frozenset(
        {
            "id",
            "username",
            "name",
            "profile_pic",
            "follower_count",
            "is_verified_user",
            "is_user_follow_business",
            "is_business_follow_user",
        }
    ),
    "User": frozenset({"id", "name"}),
}
_DEFAULT_MESSAGES = {
    1: "An unknown error occurred",
    2: "An unexpected error has occurred. Please retry your request later.",
    4: "(#4) Application request limit reached",
    10: "(#10) Application does not have permission for this action",
    17: "(#17) User request limit reached",
    32: "(#32) Page request limit reached",
    100: "(#100) Invalid parameter",
    190: "Error validating access token: The session is invalid.",
    200: "(#200) Permissions error",
    341: "(#341) Application limit reached",
    368: "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    80006: "(#80006) There have been too many messenger api calls to this Page account. "
    "Wait a while and try again.",
}

Params = dict[str, str]
Handler = Callable[["Sandbox", Request, Params], Awaitable[dict[str, Any]]]


def _json(body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json; charset=UTF-8",
    )


def endpoint_key(method: str, path: str) -> str:
    """``GET /me/accounts``, ``GET /{id}``, ``POST /{id}/subscribed_apps``: call-count keys."""
    parts = [p for p in path.split("/") if p]
    if parts and VERSION_RE.match(parts[0]):
        parts = parts[1:]
    return f"{method} /" + "/".join(p if p in _LITERAL_SEGMENTS else "{id}" for p in parts)


def parse_fields(raw: str) -> dict[str, dict[str, Any] | None]:
    """``a,b{c,d{e}}`` -> ``{"a": None, "b": {"c": None, "d": {"e": None}}}``."""

    def parse(pos: int) -> tuple[dict[str, dict[str, Any] | None], int]:
        out: dict[str, dict[str, Any] | None] = {}
        name = ""
        while pos < len(raw):
            char = raw[pos]
            if char == "{":
                sub, pos = parse(pos + 1)
                out[name.strip()] = sub
                name = ""
            elif char == "}":
                if name.strip():
                    out[name.strip()] = None
                return out, pos + 1
            elif char == ",":
                if name.strip():
                    out[name.strip()] = None
                name = ""
                pos += 1
            else:
                name += char
                pos += 1
        if name.strip():
            out[name.strip()] = None
        return out, pos

    return parse(0)[0]


def _with_query(url: str, params: Mapping[str, str], fragment: str = "") -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, fragment))


class Sandbox:
    """The app's state holder; handlers receive it explicitly."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.state = State(config)
        self.total_calls = 0

    # ---- shared checks -----------------------------------------------------------------------------

    def token(self, request: Request, params: Params) -> TokenRec:
        value = params.get("access_token")
        if value is None:
            auth = request.headers.get("authorization", "")
            scheme, _, credential = auth.partition(" ")
            if scheme.lower() in {"bearer", "oauth"}:
                value = credential.strip()
        if value == self.config.app_token:
            raise GraphFailure("(#100) This call requires a user or Page access token", code=100)
        rec = self.state.check(value)
        self.proof(rec.value, params)
        return rec

    def proof(self, token: str, params: Params) -> None:
        if not self.state.require_appsecret_proof:
            return
        given = params.get("appsecret_proof")
        if not given:
            raise GraphFailure(
                "API calls from the server require an appsecret_proof argument",
                code=100,
                type="GraphMethodException",
            )
        expected = hmac.new(self.config.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given, expected):
            raise GraphFailure(
                "Invalid appsecret_proof provided in the API argument", code=100, type="GraphMethodException"
            )

    @staticmethod
    def need_scope(rec: TokenRec, scope: str) -> None:
        if scope not in rec.scopes:
            raise GraphFailure(f"(#200) This endpoint requires the '{scope}' permission.", code=200)

    def unsupported(self, node_id: str, method: str = "get") -> GraphFailure:
        return GraphFailure(
            f"Unsupported {method} request. Object with ID '{node_id}' does not exist, cannot be loaded "
            "due to missing permissions, or does not support this operation. Please read the Graph API "
            "documentation at https://developers.facebook.com/docs/graph-api",
            code=100,
            subcode=33,
            type="GraphMethodException",
        )

    def can_see_page(self, rec: TokenRec, page: PageRec) -> bool:
        if rec.kind == "page":
            return rec.page_id == page.id
        user = self.state.users.get(rec.user_id)
        return user is not None and page.id in user.page_ids

    # ---- OAuth -------------------------------------------------------------------------------------

    def check_client(self, params: Params, *, secret: bool) -> None:
        client_id = params.get("client_id")
        if not client_id:
            raise GraphFailure("Missing client_id parameter.", code=101)
        if client_id != self.config.app_id:
            raise GraphFailure("Error validating application. Invalid application ID.", code=101)
        if secret and not hmac.compare_digest(params.get("client_secret", ""), self.config.app_secret):
            raise GraphFailure("Error validating client secret.", code=1)

    def exchange(self, params: Params) -> dict[str, Any]:
        self.check_client(params, secret=True)
        state, config = self.state, self.config
        now = state.now()
        if params.get("grant_type") == "fb_exchange_token":
            source = state.check(params.get("fb_exchange_token"))
            if source.kind == "page":
                raise GraphFailure("(#100) fb_exchange_token must be a user access token", code=100)
            keep = source.kind == "user_long" and state.long_lived_reexchange == "keep_expiry"
            expires_at = source.expires_at if keep and source.expires_at else now + state.long_lived_ttl
            rec = state.issue(source.user_id, "user_long", source.scopes, expires_at=expires_at)
            state.exchanges[source.user_id] += 1
        else:
            code = params.get("code")
            if not code:
                raise GraphFailure("Missing authorization code", code=100)
            code_rec = state.codes.get(code)
            if code_rec is None:
                raise GraphFailure("Invalid verification code format.", code=100)
            if params.get("redirect_uri") != code_rec.redirect_uri:
                raise GraphFailure(
                    "Error validating verification code. Please make sure your redirect_uri is identical to "
                    "the one you used in the OAuth dialog request",
                    code=100,
                    subcode=36008,
                )
            if code_rec.used:
                raise GraphFailure("This authorization code has been used.", code=100, subcode=36009)
            if now >= code_rec.issued_at + config.code_ttl:
                raise GraphFailure("This authorization code has expired.", code=100, subcode=36007)
            code_rec.used = True
            rec = state.issue(
                code_rec.user_id, "user_short", code_rec.scopes, expires_at=now + config.short_lived_ttl
            )
            state.code_exchanges[code_rec.user_id] += 1
        assert rec.expires_at is not None  # noqa: S101  # user tokens always expire
        return {"access_token": rec.value, "token_type": "bearer", "expires_in": rec.expires_at - now}

    def grant_code(self, user_id: str, redirect_uri: str, scopes: tuple[str, ...]) -> str:
        value = "AQ" + new_token()[4:]
        self.state.codes[value] = CodeRec(value, user_id, redirect_uri, scopes, self.state.now())
        return value


# ---- Graph handlers ---------------------------------------------------------------------------------


async def oauth_access_token(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    return sandbox.exchange(params)


async def debug_token(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    config, state = sandbox.config, sandbox.state
    access = params.get("access_token")
    if access != config.app_token:
        if access and "|" in access:
            raise GraphFailure("Invalid OAuth access token signature.", code=190)
        raise GraphFailure(
            "(#100) You must provide an app access token, or a user access token that is an owner or "
            "developer of the app",
            code=100,
        )
    value = params.get("input_token")
    if not value:
        raise GraphFailure("(#100) The parameter input_token is required", code=100)
    rec = state.tokens.get(value)
    if rec is None:
        return {
            "data": {
                "error": {"code": 190, "message": "Invalid OAuth access token."},
                "is_valid": False,
                "scopes": [],
            }
        }
    user = state.users.get(rec.user_id)
    data: dict[str, Any] = {
        "app_id": config.app_id,
        "type": rec.meta_type,
        "application": config.app_name,
        "data_access_expires_at": user.data_access_expires_at if user else 0,
        "expires_at": rec.expires_at or 0,
        "is_valid": True,
        "issued_at": rec.issued_at,
    }
    if rec.page_id is not None:
        data["profile_id"] = rec.page_id
    reason = state.invalid_reason(rec)
    if reason is not None:
        data["error"] = {"code": 190, "message": reason[1], "subcode": reason[0]}
        data["is_valid"] = False
    data["scopes"] = list(rec.scopes)
    data["granular_scopes"] = [{"scope": s} for s in rec.scopes]
    data["user_id"] = rec.user_id
    return {"data": data}


def page_node(sandbox: Sandbox, rec: TokenRec, page: PageRec, fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sub in fields.items():
        if name == "access_token":
            out["access_token"] = sandbox.state.page_token_for(rec, page).value
        elif name == "name":
            out["name"] = page.name
        elif name == "category":
            out["category"] = page.category
        elif name == "category_list":
            out["category_list"] = [{"id": "2234", "name": page.category}]
        elif name == "tasks":
            out["tasks"] = list(page.tasks)
        elif name == "instagram_business_account":
            sandbox.need_scope(rec, "pages_show_list")
            if page.ig_account_id is not None:
                wanted = sub or {"id": None}
                if set(wanted) - {"id"}:
                    sandbox.need_scope(rec, "instagram_basic")
                out["instagram_business_account"] = ig_node(sandbox, page.ig_account_id, wanted)
    out["id"] = page.id
    return out


def ig_node(sandbox: Sandbox, ig_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    account = sandbox.state.ig_accounts[ig_id]
    check_fields(fields, "IGUser")
    values = {
        "username": account.username,
        "name": account.name,
        "profile_picture_url": account.profile_picture_url,
        "followers_count": 1200,
        "media_count": 42,
    }
    out: dict[str, Any] = {k: values[k] for k in fields if k != "id"}
    out["id"] = account.id
    return out


def check_fields(fields: Mapping[str, Any], node_type: str) -> None:
    allowed = _FIELDS_BY_NODE[node_type]
    for name in fields:
        if name not in allowed:
            raise GraphFailure(
                f"(#100) Tried accessing nonexisting field ({name}) on node type ({node_type})", code=100
            )


async def me_accounts(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    state = sandbox.state
    rec = sandbox.token(request, params)
    if rec.kind == "page":
        raise GraphFailure(
            "(#100) Tried accessing nonexisting field (accounts) on node type (Page)", code=100
        )
    sandbox.need_scope(rec, "pages_show_list")
    user = state.users[rec.user_id]
    try:
        limit = min(max(int(params.get("limit", state.page_size)), 1), state.page_size)
    except ValueError:
        raise GraphFailure("(#100) Param limit must be a number", code=100) from None
    offset = 0
    if params.get("after"):
        decoded = decode_cursor(params["after"])
        if decoded is None:
            raise GraphFailure("(#100) The after cursor is invalid", code=100)
        offset = decoded + 1
    fields = parse_fields(params["fields"]) if params.get("fields") else None
    if fields is not None:
        check_fields(fields, "Page")
    window = user.page_ids[offset : offset + limit]
    data = []
    for pid in window:
        page = state.pages[pid]
        if page.hidden:
            continue
        if fields is None:
            data.append(
                {
                    "access_token": state.page_token_for(rec, page).value,
                    "category": page.category,
                    "category_list": [{"id": "2234", "name": page.category}],
                    "name": page.name,
                    "id": page.id,
                    "tasks": list(page.tasks),
                }
            )
        else:
            data.append(page_node(sandbox, rec, page, fields))
    body: dict[str, Any] = {"data": data}
    paging: dict[str, Any] = {}
    if data:
        paging["cursors"] = {
            "before": encode_cursor(offset),
            "after": encode_cursor(offset + len(window) - 1),
        }
    if offset + limit < len(user.page_ids):
        next_params = {k: v for k, v in params.items() if k not in {"after", "before"}}
        next_params["limit"] = str(limit)
        next_params["after"] = encode_cursor(offset + len(window) - 1)
        base = str(request.base_url).rstrip("/")
        paging["next"] = f"{base}{request.url.path}?{urlencode(next_params)}"
    if paging or offset:
        body["paging"] = paging
    return body


async def me(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    rec = sandbox.token(request, params)
    if rec.kind == "page" and rec.page_id is not None:
        page = sandbox.state.pages[rec.page_id]
        return {"name": page.name, "id": page.id}
    user = sandbox.state.users[rec.user_id]
    return {"name": user.name, "id": user.id}


async def node(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    state = sandbox.state
    node_id = request.path_params["node_id"]
    rec = sandbox.token(request, params)
    fields = parse_fields(params.get("fields", "")) if params.get("fields") else None
    page = state.pages.get(node_id)
    if page is not None:
        if not sandbox.can_see_page(rec, page):
            raise sandbox.unsupported(node_id)
        wanted = fields or {"name": None, "id": None}
        check_fields(wanted, "Page")
        return page_node(sandbox, rec, page, wanted)
    account = state.ig_accounts.get(node_id)
    if account is not None:
        if not sandbox.can_see_page(rec, state.pages[account.page_id]):
            raise sandbox.unsupported(node_id)
        sandbox.need_scope(rec, "instagram_basic")
        return ig_node(sandbox, node_id, fields or {"id": None})
    igsid = state.ig_users.get(node_id)
    if igsid is not None:
        if rec.kind != "page":
            raise GraphFailure("(#210) A page access token is required to request this resource.", code=210)
        sandbox.need_scope(rec, "instagram_manage_messages")
        wanted = fields or {"name": None, "profile_pic": None, "id": None}
        check_fields(wanted, "IGSID")
        values: dict[str, Any] = {
            "username": igsid.username,
            "name": igsid.name,
            "profile_pic": igsid.profile_pic,
            "follower_count": 87,
            "is_verified_user": False,
            "is_user_follow_business": True,
            "is_business_follow_user": False,
        }
        out = {k: values[k] for k in wanted if k != "id"}
        out["id"] = igsid.id
        return out
    user = state.users.get(node_id)
    if user is not None and rec.kind != "page" and rec.user_id == user.id:
        wanted = fields or {"name": None, "id": None}
        check_fields(wanted, "User")
        return {"name": user.name, "id": user.id} if "name" in wanted else {"id": user.id}
    raise sandbox.unsupported(node_id)


async def subscribed_apps(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    state, config = sandbox.state, sandbox.config
    page_id = request.path_params["node_id"]
    rec = sandbox.token(request, params)
    page = state.pages.get(page_id)
    if page is None:
        raise sandbox.unsupported(page_id, request.method.lower())
    if rec.kind != "page":
        raise GraphFailure("(#210) A page access token is required to request this resource.", code=210)
    if rec.page_id != page_id:
        raise sandbox.unsupported(page_id, request.method.lower())
    sandbox.need_scope(rec, "pages_manage_metadata")
    if request.method == "GET":
        fields = state.subscriptions.get(page_id)
        if fields is None:
            return {"data": []}
        return {
            "data": [
                {
                    "link": "https://sandbox.invalid/app",
                    "name": config.app_name,
                    "id": config.app_id,
                    "subscribed_fields": list(fields),
                }
            ]
        }
    if request.method == "DELETE":
        state.subscriptions.pop(page_id, None)
        return {"success": True}
    raw = params.get("subscribed_fields", "")
    wanted = [f.strip() for f in raw.split(",") if f.strip()]
    if not wanted:
        raise GraphFailure("(#100) The parameter subscribed_fields is required", code=100)
    for index, name in enumerate(wanted):
        if name not in PAGE_WEBHOOK_FIELDS:
            allowed = ", ".join(sorted(PAGE_WEBHOOK_FIELDS))
            raise GraphFailure(
                f'(#100) Param subscribed_fields[{index}] must be one of {{{allowed}}} - got "{name}"',
                code=100,
            )
    state.subscriptions[page_id] = list(dict.fromkeys(wanted))
    return {"success": True}


# ---- the dialog -------------------------------------------------------------------------------------


def _dialog_error(message: str) -> HTMLResponse:
    body = (
        "<!doctype html><title>Error</title><h1>Sorry, something went wrong.</h1>"
        f"<p>{html.escape(message)}</p>"
    )
    return HTMLResponse(body, status_code=400)


def _check_dialog(sandbox: Sandbox, params: Params) -> HTMLResponse | None:
    if params.get("client_id") != sandbox.config.app_id:
        return _dialog_error("Invalid App ID: The provided app ID does not look like a valid app ID.")
    redirect_uri = params.get("redirect_uri", "")
    if urlsplit(redirect_uri).scheme not in {"http", "https"} or not urlsplit(redirect_uri).netloc:
        return _dialog_error("URL Blocked: redirect_uri is missing or not an absolute http(s) URL.")
    allowed = sandbox.config.allowed_redirect_uris
    if allowed and redirect_uri not in allowed:
        return _dialog_error("URL Blocked: This redirect failed because the redirect URI is not whitelisted.")
    if params.get("response_type", "code") != "code":
        return _dialog_error("The sandbox supports response_type=code only.")
    return None


def _requested_scopes(params: Params) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for s in re.split(r"[,\s]+", params.get("scope", "")) if s))


def _finish_dialog(
    sandbox: Sandbox, params: Params, *, approve: bool, user_id: str | None, declined: frozenset[str]
) -> Response:
    redirect_uri = params["redirect_uri"]
    state_param = {"state": params["state"]} if "state" in params else {}
    if not approve:
        query = {
            "error": "access_denied",
            "error_code": "200",
            "error_description": "Permissions error",
            "error_reason": "user_denied",
            **state_param,
        }
        return RedirectResponse(_with_query(redirect_uri, query, "_=_"), status_code=302)
    users = sandbox.state.users
    user = users.get(user_id or "") or next(iter(users.values()), None)
    if user is None:
        return _dialog_error("The sandbox has no users; create one with POST /_sandbox/users.")
    requested = _requested_scopes(params)
    scopes = tuple(s for s in sandbox.state.granted_scopes(user, requested) if s not in declined)
    code = sandbox.grant_code(user.id, redirect_uri, scopes)
    return RedirectResponse(_with_query(redirect_uri, {"code": code, **state_param}, "_=_"), status_code=302)


async def dialog(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    params = dict(request.query_params)
    problem = _check_dialog(sandbox, params)
    if problem is not None:
        return problem
    script = sandbox.state.dialog
    if script.mode != "interactive":
        return _finish_dialog(
            sandbox,
            params,
            approve=script.mode == "approve",
            user_id=script.user_id,
            declined=script.declined_scopes,
        )
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
        if k in {"client_id", "redirect_uri", "state", "scope", "response_type"}
    )
    options = "".join(
        f'<option value="{html.escape(u.id)}">{html.escape(u.name)} ({len(u.page_ids)} Pages)</option>'
        for u in list(sandbox.state.users.values())[:200]
    )
    scopes = "".join(
        f'<label><input type="checkbox" name="granted" value="{html.escape(s)}" checked> '
        f"{html.escape(s)}</label>"
        for s in _requested_scopes(params)
    )
    page = _CONSENT.substitute(
        app_name=html.escape(sandbox.config.app_name),
        action=html.escape(f"{request.url.path}/confirm"),
        hidden=hidden,
        options=options,
        scopes=scopes,
        redirect=html.escape(urlsplit(params["redirect_uri"]).netloc),
    )
    return HTMLResponse(page)


async def dialog_confirm(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
    params = {k: v for k, v in pairs if k != "granted"}
    problem = _check_dialog(sandbox, params)
    if problem is not None:
        return problem
    granted = {v for k, v in pairs if k == "granted"}
    declined = frozenset(s for s in _requested_scopes(params) if s not in granted)
    return _finish_dialog(
        sandbox,
        params,
        approve=params.get("action") == "approve",
        user_id=params.get("user_id"),
        declined=declined,
    )


# ---- plumbing ---------------------------------------------------------------------------------------


def graph_route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a Graph handler: version check, merged query+body params, envelope, usage headers."""

    async def endpoint(request: Request) -> Response:
        sandbox: Sandbox = request.app.state.sandbox
        headers = {
            "x-fb-trace-id": trace_id(),
            "facebook-api-version": request.path_params.get("version", ""),
            "x-app-usage": json.dumps(
                {"call_count": min(100, sandbox.total_calls // 1000), "total_cputime": 0, "total_time": 0}
            ),
        }
        if not VERSION_RE.match(request.path_params.get("version", "")):
            failure = GraphFailure("Unknown path components: " + request.url.path, code=2500, status=400)
            return _json(failure.envelope(), failure.status, headers)
        params: Params = dict(request.query_params)
        if request.method in {"POST", "DELETE"}:
            body = await request.body()
            if body:
                params.update(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        try:
            result = await handler(sandbox, request, params)
        except GraphFailure as failure:
            if failure.code == 190:
                headers["www-authenticate"] = f'OAuth "Facebook Platform" "invalid_token" "{failure.message}"'
            return _json(failure.envelope(), failure.status, headers)
        return _json(result, 200, headers)

    return endpoint


def fault_response(fault: Fault) -> Response:
    headers = dict(fault.headers)
    if fault.body is not None:
        media = (
            "text/html; charset=utf-8" if fault.body.lstrip().startswith("<") else "text/plain; charset=utf-8"
        )
        return Response(fault.body, status_code=fault.http_status, headers=headers, media_type=media)
    error: dict[str, Any] = {
        "message": fault.message or _DEFAULT_MESSAGES.get(fault.code or 0, "An unknown error has occurred."),
        "type": fault.type,
        "code": fault.code if fault.code is not None else 1,
    }
    if fault.subcode is not None:
        error["error_subcode"] = fault.subcode
    if fault.is_transient is not None:
        error["is_transient"] = fault.is_transient
    error["fbtrace_id"] = trace_id()
    return _json({"error": error}, fault.http_status, headers)


class FaultsAndLatency:
    """Pure ASGI middleware: counts Graph/dialog calls, applies latency rules and injected faults.
    `/_sandbox/` is never delayed or faulted."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        state = self.sandbox.state
        path: str = scope["path"]
        method: str = scope["method"]
        self.sandbox.total_calls += 1
        state.calls[endpoint_key(method, path)] += 1
        for rule in state.latency:
            if rule.pattern.search(path):
                await asyncio.sleep(rule.delay())
                break
        for fault in state.faults:
            if (
                fault.remaining != 0
                and fault.method in {None, method}
                and fault.pattern.search(path)
                and (fault.query is None or fault.query.search(scope["query_string"].decode("latin-1")))
            ):
                if fault.remaining > 0:
                    fault.remaining -= 1
                fault.hits += 1
                if fault.timeout:
                    hang = fault.hang_seconds
                    await asyncio.sleep(self.sandbox.config.timeout_seconds if hang is None else hang)
                    timeout = Fault(**{**fault.__dict__, "body": "<html><body>Gateway Timeout</body></html>"})
                    await fault_response(timeout)(scope, receive, send)
                    return
                await fault_response(fault)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """The sandbox as a Starlette app; state is per app instance."""
    sandbox = Sandbox(config or SandboxConfig())
    routes = [
        *control_routes(),
        Route("/{version}/dialog/oauth", dialog, methods=["GET"]),
        Route("/{version}/dialog/oauth/confirm", dialog_confirm, methods=["POST"]),
        Route("/{version}/oauth/access_token", graph_route(oauth_access_token), methods=["GET", "POST"]),
        Route("/{version}/debug_token", graph_route(debug_token), methods=["GET"]),
        Route("/{version}/me/accounts", graph_route(me_accounts), methods=["GET"]),
        Route("/{version}/me", graph_route(me), methods=["GET"]),
        Route(
            "/{version}/{node_id}/subscribed_apps",
            graph_route(subscribed_apps),
            methods=["GET", "POST", "DELETE"],
        ),
        Route("/{version}/{node_id}", graph_route(node), methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    app.add_middleware(FaultsAndLatency, sandbox=sandbox)
    return app
