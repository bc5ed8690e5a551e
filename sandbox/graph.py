"""Graph nodes and edges: ``/debug_token``, ``/me``, ``/me/accounts``, ``/{id}`` (Page, Instagram
account, IGSID, user) and ``/{page-id}/subscribed_apps``, with Meta's permission checks; the Send API's
``/{page-id}/messages`` is in sandbox/send.py and routed here. An all-digit id
that is none of the others is an IGSID when asked with a Page token (a person made on first use,
sandbox/people.py).

A Page's ``instagram_business_account`` is absent when no Instagram account is linked to it, and can
be expanded in place (``instagram_business_account{id,username,profile_picture_url}``), on
``/{page-id}`` as on every item of ``/me/accounts``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.routing import Route

from sandbox.core import Params, Sandbox, graph_route
from sandbox.fields import check_fields, parse_fields
from sandbox.people import looks_like_igsid, person, person_node
from sandbox.send import send_routes
from sandbox.state import (
    PAGE_WEBHOOK_FIELDS,
    GraphFailure,
    PageRec,
    TokenRec,
    decode_cursor,
    encode_cursor,
)

__all__ = ["graph_routes", "ig_node", "page_node"]


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
    known = state.ig_users.get(node_id)
    if known is not None:
        return person_node(sandbox, rec, known, fields)
    user = state.users.get(node_id)
    if user is not None and rec.kind != "page" and rec.user_id == user.id:
        wanted = fields or {"name": None, "id": None}
        check_fields(wanted, "User")
        return {"name": user.name, "id": user.id} if "name" in wanted else {"id": user.id}
    if user is None and rec.kind == "page" and looks_like_igsid(node_id):
        # Any other numeric id seen with a Page token is a person who wrote to the account.
        return person_node(sandbox, rec, person(state, node_id, str(request.base_url)), fields)
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


def graph_routes() -> list[Route]:
    """The Graph nodes and edges; ``/{node_id}`` last, as it matches any id."""
    return [
        Route("/{version}/debug_token", graph_route(debug_token), methods=["GET"]),
        Route("/{version}/me/accounts", graph_route(me_accounts), methods=["GET"]),
        Route("/{version}/me", graph_route(me), methods=["GET"]),
        Route(
            "/{version}/{node_id}/subscribed_apps",
            graph_route(subscribed_apps),
            methods=["GET", "POST", "DELETE"],
        ),
        *send_routes(),
        Route("/{version}/{node_id}", graph_route(node), methods=["GET"]),
    ]
