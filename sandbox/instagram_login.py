"""Instagram API with Instagram Login: its three Meta hosts, each at its own path-prefixed origin of the
sandbox (so the API can be pointed at them with INSTAGRAM_LOGIN_*_BASE_URL):

    /instagram/www    www.instagram.com    ``GET /oauth/authorize`` (scripted or the consent page) and
                                           ``POST /oauth/authorize/confirm``
    /instagram/api    api.instagram.com    ``POST /oauth/access_token`` (form, ``authorization_code``): a
                                           short-lived Instagram User token as ``{"data": [...]}`` or, with
                                           ``POST /_sandbox/config {"ig_token_shape": "flat"}``, the older flat
                                           shape; errors ``{"error_type", "code", "error_message"}``
    /instagram/graph  graph.instagram.com  ``/access_token`` (``ig_exchange_token``), ``/refresh_access_token``
                                           (``ig_refresh_token``: the token must be ≥ 24 h old and unexpired),
                                           ``/{v}/me``, ``/{v}/{ig-user-id}/subscribed_apps``,
                                           ``/{v}/{ig-user-id}/messages`` and ``/{v}/{igsid}``, with Meta's
                                           error envelope

The person signs in as an Instagram professional account: the dialog's user (scripted ``user_id``, or the
consent page's pick) is an Instagram account id, or a Facebook user whose first linked account is taken.
Instagram tokens (``IGAA…``) work only here, Facebook tokens only on the Facebook Graph routes. The app is
the Instagram app (``ig_app_id`` / ``ig_app_secret``), whose secret signs its deliveries and echoes.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.consent import consent_page, dialog_error
from sandbox.core import SENT_SCOPE_KEY, Answer, Params, Sandbox, graph_route, json_response
from sandbox.faults import SUBCODE_MESSAGES
from sandbox.oauth import _requested_scopes, _with_query
from sandbox.people import _raise_failure, looks_like_igsid, person
from sandbox.send import _call_count, _over_rate, _schedule_echo, parse_outgoing, usage_header, window_failure
from sandbox.state import DAY, CodeRec, GraphFailure, InstagramAccountRec, SentMessage, State, TokenRec
from sandbox.webhooks import mid

__all__ = ["IG_API", "IG_GRAPH", "IG_SCOPES", "IG_WEBHOOK_FIELDS", "IG_WWW", "instagram_login_routes"]

IG_WWW = "/instagram/www"
IG_API = "/instagram/api"
IG_GRAPH = "/instagram/graph"
IG_SCOPES: tuple[str, ...] = (
    "instagram_business_basic",
    "instagram_business_manage_messages",
    "instagram_business_manage_comments",
    "instagram_business_content_publish",
)
IG_WEBHOOK_FIELDS = frozenset(
    {
        "messages",
        "messaging_postbacks",
        "messaging_seen",
        "message_reactions",
        "messaging_referral",
        "message_edit",
        "messaging_optins",
        "messaging_handover",
        "comments",
    }
)


# ---- tokens -------------------------------------------------------------------------------------


def issue_ig(state: State, account_id: str, kind: str, scopes: tuple[str, ...], expires_at: int) -> TokenRec:
    """An Instagram User token (``ig_short`` 1 h, ``ig_long`` 60 d) of one professional account."""
    value = "IGAA" + secrets.token_urlsafe(48).replace("-", "x").replace("_", "y")
    rec = TokenRec(value, kind, account_id, scopes, state.now(), expires_at)  # type: ignore[arg-type]
    rec.ig_account_id = account_id
    state.tokens[value] = rec
    state.tokens_by_user.setdefault(account_id, []).append(value)
    state.issued[kind] += 1
    return rec


def ig_token(sandbox: Sandbox, request: Request, params: Params) -> TokenRec:
    """The caller's Instagram User token (``Authorization: Bearer`` or ``access_token``), live and of this
    flavour (a Facebook token cannot be parsed here, as at Meta)."""
    value = params.get("access_token")
    if value is None:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() in {"bearer", "oauth"}:
            value = credential.strip()
    rec = sandbox.state.check(value)
    if rec.ig_account_id is None:
        raise GraphFailure("Invalid OAuth access token - Cannot parse access token", code=190)
    return rec


def _account(sandbox: Sandbox, rec: TokenRec, node_id: str, method: str = "get") -> InstagramAccountRec:
    """The account the path names, which must be the token's own."""
    if node_id not in {"me", rec.ig_account_id}:
        raise sandbox.unsupported(node_id, method)
    assert rec.ig_account_id is not None  # noqa: S101  # ig_token() checked it
    return sandbox.state.ig_accounts[rec.ig_account_id]


# ---- www.instagram.com: the dialog ----------------------------------------------------------------


def _flat(message: str, *, status: int = 400, error_type: str = "OAuthException") -> Response:
    """api.instagram.com's flat error shape."""
    return json_response({"error_type": error_type, "code": status, "error_message": message}, status)


def _check_dialog(sandbox: Sandbox, params: Params) -> HTMLResponse | None:
    if params.get("client_id") != sandbox.config.ig_app_id:
        return dialog_error("Invalid platform app: the client_id is not an Instagram app id.")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri.startswith(("http://", "https://")):
        return dialog_error("Invalid redirect_uri: it must be an absolute http(s) URL.")
    if params.get("response_type", "code") != "code":
        return dialog_error("The sandbox supports response_type=code only.")
    unknown = [s for s in _requested_scopes(params) if s not in IG_SCOPES]
    if unknown:
        return dialog_error(f"Invalid scope: {', '.join(unknown)}")
    return None


def _signed_in_account(state: State, who: str | None) -> InstagramAccountRec | None:
    """An Instagram account id, or a Facebook user's first linked account; the first account by default."""
    if who and who in state.ig_accounts:
        return state.ig_accounts[who]
    user = state.users.get(who or "")
    page_ids = user.page_ids if user is not None else list(state.pages)
    for page_id in page_ids:
        page = state.pages.get(page_id)
        if page is not None and page.ig_account_id is not None:
            return state.ig_accounts[page.ig_account_id]
    return None


def _finish_redirect(params: Params, code: str | None) -> Response:
    """Back to the app: ``?code=…&state=…#_`` (Instagram appends ``#_``), or the denial."""
    state_param = {"state": params["state"]} if "state" in params else {}
    if code is None:
        query = {
            "error": "access_denied",
            "error_reason": "user_denied",
            "error_description": "The user denied your request.",
            **state_param,
        }
    else:
        query = {"code": code, **state_param}
    return RedirectResponse(_with_query(params["redirect_uri"], query, "_"), status_code=302)


def _finish(
    sandbox: Sandbox, params: Params, *, approve: bool, who: str | None, declined: frozenset[str]
) -> Response:
    state = sandbox.state
    if not approve:
        return _finish_redirect(params, None)
    account = _signed_in_account(state, who)
    if account is None:
        return dialog_error("This person has no Instagram professional account.")
    user = state.users.get(who or "")
    declined = declined | (user.declined_scopes if user is not None else frozenset())
    scopes = tuple(s for s in _requested_scopes(params) if s not in declined)
    code = "AQ" + secrets.token_urlsafe(48)
    state.ig_codes[code] = CodeRec(code, account.id, params["redirect_uri"], scopes, state.now())
    return _finish_redirect(params, code)


async def authorize(request: Request) -> Response:
    """``GET /instagram/www/oauth/authorize``."""
    sandbox: Sandbox = request.app.state.sandbox
    params = dict(request.query_params)
    problem = _check_dialog(sandbox, params)
    if problem is not None:
        return problem
    script = sandbox.state.dialog
    if script.mode != "interactive":
        return _finish(
            sandbox,
            params,
            approve=script.mode == "approve",
            who=script.user_id,
            declined=script.declined_scopes,
        )
    return consent_page(
        app_name=f"{sandbox.config.app_name} (Instagram)",
        action=f"{request.url.path}/confirm",
        params=params,
        users=[u for u in sandbox.state.users.values() if _signed_in_account(sandbox.state, u.id)],
        scopes=_requested_scopes(params),
    )


async def authorize_confirm(request: Request) -> Response:
    """``POST /instagram/www/oauth/authorize/confirm``: the consent form's answer."""
    sandbox: Sandbox = request.app.state.sandbox
    pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
    params = {k: v for k, v in pairs if k != "granted"}
    problem = _check_dialog(sandbox, params)
    if problem is not None:
        return problem
    granted = {v for k, v in pairs if k == "granted"}
    declined = frozenset(s for s in _requested_scopes(params) if s not in granted)
    return _finish(
        sandbox,
        params,
        approve=params.get("action") == "approve",
        who=params.get("user_id"),
        declined=declined,
    )


# ---- api.instagram.com: the code exchange ----------------------------------------------------------


async def access_token(request: Request) -> Response:
    """``POST /instagram/api/oauth/access_token``: code -> short-lived token, flat errors."""
    sandbox: Sandbox = request.app.state.sandbox
    state, config = sandbox.state, sandbox.config
    params = dict(parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True))
    if params.get("client_id") != config.ig_app_id:
        return _flat("Invalid platform app")
    if not hmac.compare_digest(params.get("client_secret", ""), config.ig_app_secret):
        return _flat("Error validating client secret.")
    if params.get("grant_type") != "authorization_code":
        return _flat("Invalid grant_type: must be authorization_code")
    code = params.get("code", "").removesuffix("#_")
    rec = state.ig_codes.get(code)
    if rec is None:
        return _flat("Invalid authorization code")
    if params.get("redirect_uri") != rec.redirect_uri:
        return _flat("Error validating verification code. Please make sure your redirect_uri is identical")
    if rec.used:
        return _flat("This authorization code has been used")
    if state.now() >= rec.issued_at + config.code_ttl:
        return _flat("This authorization code has expired")
    rec.used = True
    token = issue_ig(state, rec.user_id, "ig_short", rec.scopes, state.now() + config.short_lived_ttl)
    state.code_exchanges[rec.user_id] += 1
    if state.ig_token_shape == "flat":
        body: dict[str, Any] = {"access_token": token.value, "user_id": int(rec.user_id),
                                "permissions": list(rec.scopes)}  # fmt: skip
    else:
        body = {
            "data": [
                {"access_token": token.value, "user_id": rec.user_id, "permissions": ",".join(rec.scopes)}
            ]
        }
    return json_response(body)


# ---- graph.instagram.com -------------------------------------------------------------------------


async def exchange(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    """``GET /instagram/graph/access_token?grant_type=ig_exchange_token``: short-lived -> 60 days."""
    if params.get("grant_type") != "ig_exchange_token":
        raise GraphFailure("Unsupported grant_type: expected ig_exchange_token", code=100)
    if not hmac.compare_digest(params.get("client_secret", ""), sandbox.config.ig_app_secret):
        raise GraphFailure("Error validating client secret.", code=101)
    source = ig_token(sandbox, request, params)
    if source.kind != "ig_short":
        raise GraphFailure("(#100) access_token must be a short-lived Instagram User token", code=100)
    state = sandbox.state
    rec = issue_ig(state, source.user_id, "ig_long", source.scopes, state.now() + state.long_lived_ttl)
    state.exchanges[source.user_id] += 1
    return {"access_token": rec.value, "token_type": "bearer", "expires_in": state.long_lived_ttl}


async def refresh(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    """``GET /instagram/graph/refresh_access_token?grant_type=ig_refresh_token``: ≥ 24 h old, unexpired."""
    if params.get("grant_type") != "ig_refresh_token":
        raise GraphFailure("Unsupported grant_type: expected ig_refresh_token", code=100)
    source = ig_token(sandbox, request, params)  # an expired one: 190/463
    state = sandbox.state
    if source.kind != "ig_long":
        raise GraphFailure("(#100) Only a long-lived Instagram User token can be refreshed", code=100)
    if state.now() - source.issued_at < DAY:
        raise GraphFailure("(#100) The access token is too new to be refreshed (24 hours at least)", code=100)
    rec = issue_ig(state, source.user_id, "ig_long", source.scopes, state.now() + state.long_lived_ttl)
    state.refreshes[source.user_id] += 1
    return {"access_token": rec.value, "token_type": "bearer", "expires_in": state.long_lived_ttl}


def _need(rec: TokenRec, scope: str) -> None:
    if scope not in rec.scopes:
        raise GraphFailure(f"(#10) Application does not have permission for this action ({scope})", code=10)


async def me(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    """``GET /instagram/graph/{v}/me``: the token's professional account."""
    rec = ig_token(sandbox, request, params)
    _need(rec, "instagram_business_basic")
    account = _account(sandbox, rec, "me")
    values = {
        "user_id": account.id,
        "username": account.username,
        "name": account.name,
        "profile_picture_url": account.profile_picture_url,
        "account_type": "BUSINESS",
    }
    wanted = [f.strip() for f in params.get("fields", "id,username").split(",") if f.strip()]
    out = {k: values[k] for k in wanted if k in values}
    out["id"] = "9" + account.id[1:]  # the app-scoped id differs from the account id webhooks carry
    return out


async def subscribed_apps(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    """``/instagram/graph/{v}/{ig-user-id}/subscribed_apps``: GET, POST ``subscribed_fields``, DELETE."""
    rec = ig_token(sandbox, request, params)
    account = _account(sandbox, rec, request.path_params["node_id"], request.method.lower())
    _need(rec, "instagram_business_manage_messages")
    subs = sandbox.state.ig_subscriptions
    if request.method == "GET":
        fields = subs.get(account.id)
        app = {"id": sandbox.config.ig_app_id, "name": sandbox.config.app_name, "subscribed_fields": fields}
        return {"data": [] if fields is None else [app]}
    if request.method == "DELETE":
        subs.pop(account.id, None)
        return {"success": True}
    wanted = [f.strip() for f in params.get("subscribed_fields", "").split(",") if f.strip()]
    if not wanted:
        raise GraphFailure("(#100) The parameter subscribed_fields is required", code=100)
    for index, name in enumerate(wanted):
        if name not in IG_WEBHOOK_FIELDS:
            raise GraphFailure(
                f'(#100) Param subscribed_fields[{index}] must be one of {{...}} - got "{name}"', code=100
            )
    subs[account.id] = list(dict.fromkeys(wanted))
    return {"success": True}


async def send_message(sandbox: Sandbox, request: Request, params: Params) -> Answer:
    """``POST /instagram/graph/{v}/{ig-user-id}/messages`` (Bearer): the Send API's rules, the echo signed
    with the Instagram app's secret."""
    state = sandbox.state
    rec = ig_token(sandbox, request, params)
    account = _account(sandbox, rec, request.path_params["node_id"], "post")
    _need(rec, "instagram_business_manage_messages")
    if _over_rate(state, account.id):
        raise GraphFailure(
            SUBCODE_MESSAGES[2534040],
            code=613,
            subcode=2534040,
            headers={"x-business-use-case-usage": usage_header(account.id, 100, state.send_usage)},
        )
    out = parse_outgoing(params)
    last = state.last_message_at.get(out.recipient, {}).get(account.id)
    if last is None:
        raise GraphFailure(SUBCODE_MESSAGES[2534014], code=100, subcode=2534014)
    failure = window_failure(last, state.now(), tag=out.tag, human_agent_approved=state.human_agent_approved)
    if failure is not None:
        raise failure
    state.sent_counters[account.id] += 1
    sent = SentMessage(
        seq=len(state.sent) + 1,
        mid=mid(f"send:{account.id}", state.sent_counters[account.id]),
        page_id="",
        account_id=account.id,
        recipient_id=out.recipient,
        text=out.text,
        attachments=out.attachments,
        messaging_type=out.messaging_type,
        tag=out.tag,
        at=state.now(),
        at_ms=state.now_ms(),
        provider="instagram_login",
    )
    state.sent.append(sent)
    state.sent_by_mid[sent.mid] = sent
    request.scope[SENT_SCOPE_KEY] = sent
    _schedule_echo(sandbox, sent, secret=sandbox.config.ig_app_secret)
    headers = {
        "x-business-use-case-usage": usage_header(
            account.id, _call_count(state, account.id), state.send_usage
        )
    }
    return Answer({"recipient_id": out.recipient, "message_id": sent.mid}, headers)


async def node(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    """``GET /instagram/graph/{v}/{id}``: the token's own account, or a person (IGSID) who wrote to it."""
    rec = ig_token(sandbox, request, params)
    node_id = request.path_params["node_id"]
    if node_id == rec.ig_account_id:
        return await me(sandbox, request, params)
    if not looks_like_igsid(node_id):
        raise sandbox.unsupported(node_id)
    _need(rec, "instagram_business_manage_messages")
    who = sandbox.state.ig_users.get(node_id) or person(sandbox.state, node_id, str(request.base_url))
    _raise_failure(who)
    values = {"name": who.name, "username": who.username, "profile_pic": who.profile_pic}
    wanted = [f.strip() for f in params.get("fields", "name,profile_pic").split(",") if f.strip()]
    out = {k: values[k] for k in wanted if k in values}
    out["id"] = who.id
    return out


def _unversioned(handler: Any) -> Any:
    """graph_route wants a version: the token endpoints of graph.instagram.com have none."""
    wrapped = graph_route(handler)

    async def endpoint(request: Request) -> Response:
        request.scope.setdefault("path_params", {})["version"] = "v25.0"
        return await wrapped(request)

    return endpoint


def instagram_login_routes() -> list[Route]:
    """The three hosts' routes, under their prefixes (before the Facebook Graph's catch-all)."""
    return [
        Route(f"{IG_WWW}/oauth/authorize", authorize, methods=["GET"]),
        Route(f"{IG_WWW}/oauth/authorize/confirm", authorize_confirm, methods=["POST"]),
        Route(f"{IG_API}/oauth/access_token", access_token, methods=["POST"]),
        Route(f"{IG_GRAPH}/access_token", _unversioned(exchange), methods=["GET"]),
        Route(f"{IG_GRAPH}/refresh_access_token", _unversioned(refresh), methods=["GET"]),
        Route(f"{IG_GRAPH}/{{version}}/me", graph_route(me), methods=["GET"]),
        Route(
            f"{IG_GRAPH}/{{version}}/{{node_id}}/subscribed_apps",
            graph_route(subscribed_apps),
            methods=["GET", "POST", "DELETE"],
        ),
        Route(f"{IG_GRAPH}/{{version}}/{{node_id}}/messages", graph_route(send_message), methods=["POST"]),
        Route(f"{IG_GRAPH}/{{version}}/{{node_id}}", graph_route(node), methods=["GET"]),
    ]
