"""The sandbox's state holder and the plumbing every Graph route shares.

:class:`Sandbox` holds the in-memory :class:`~sandbox.state.State` and the checks handlers share
(token, ``appsecret_proof``, scopes, visibility). :func:`graph_route` wraps a handler with Meta's
envelope: version check, merged query and body parameters (form or JSON), error JSON, usage headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from sandbox.state import GraphFailure, PageRec, SandboxConfig, State, TokenRec, trace_id

__all__ = [
    "SENT_SCOPE_KEY",
    "VERSION_RE",
    "Answer",
    "Handler",
    "Params",
    "Sandbox",
    "endpoint_key",
    "graph_route",
    "json_response",
]

VERSION_RE = re.compile(r"^v\d+\.\d+$")
_LITERAL_SEGMENTS = frozenset(
    {
        "dialog",
        "oauth",
        "access_token",
        "debug_token",
        "me",
        "accounts",
        "subscribed_apps",
        "confirm",
        "messages",
        "authorize",
        "refresh_access_token",
    }
)
# Where the Send API leaves the record of an accepted send for the fault middleware (after_delivery).
SENT_SCOPE_KEY = "sandbox.sent"


@dataclass
class Answer:
    """A handler's success body with extra response headers (the Send API's usage headers)."""

    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


Params = dict[str, str]
Handler = Callable[["Sandbox", Request, Params], Awaitable[dict[str, Any] | Answer]]


def json_response(
    body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Compact JSON with Meta's content type."""
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json; charset=UTF-8",
    )


_IG_HOSTS = {"/instagram/www": "ig-www", "/instagram/api": "ig-api", "/instagram/graph": "ig-graph"}


def endpoint_key(method: str, path: str) -> str:
    """``GET /me/accounts``, ``GET /{id}``, ``POST /{id}/subscribed_apps``: call-count keys; the Instagram
    Login hosts' calls carry their host (``GET ig-graph /refresh_access_token``)."""
    for prefix, host in _IG_HOSTS.items():
        if path.startswith(prefix + "/"):
            return f"{method} {host} " + endpoint_key("", path[len(prefix) :]).lstrip()
    parts = [p for p in path.split("/") if p]
    if parts and VERSION_RE.match(parts[0]):
        parts = parts[1:]
    return f"{method} /" + "/".join(p if p in _LITERAL_SEGMENTS else "{id}" for p in parts)


class Sandbox:
    """The app's state holder; handlers receive it explicitly."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.state = State(config)
        self.total_calls = 0

    def token(self, request: Request, params: Params) -> TokenRec:
        """The caller's user or Page token (query, body or ``Authorization``), checked and proven."""
        value = params.get("access_token")
        if value is None:
            auth = request.headers.get("authorization", "")
            scheme, _, credential = auth.partition(" ")
            if scheme.lower() in {"bearer", "oauth"}:
                value = credential.strip()
        if value == self.config.app_token:
            raise GraphFailure("(#100) This call requires a user or Page access token", code=100)
        rec = self.state.check(value)
        if rec.ig_account_id is not None:  # an Instagram Login token means nothing to graph.facebook.com
            raise GraphFailure("Invalid OAuth access token - Cannot parse access token", code=190)
        self.proof(rec.value, params)
        return rec

    def proof(self, token: str, params: Params) -> None:
        """Check ``appsecret_proof`` when the sandbox requires it."""
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
        """#200 unless the token carries `scope`."""
        if scope not in rec.scopes:
            raise GraphFailure(f"(#200) This endpoint requires the '{scope}' permission.", code=200)

    def unsupported(self, node_id: str, method: str = "get") -> GraphFailure:
        """Meta's 100/33 for an object the caller may not see (or that does not exist)."""
        return GraphFailure(
            f"Unsupported {method} request. Object with ID '{node_id}' does not exist, cannot be loaded "
            "due to missing permissions, or does not support this operation. Please read the Graph API "
            "documentation at https://developers.facebook.com/docs/graph-api",
            code=100,
            subcode=33,
            type="GraphMethodException",
        )

    def can_see_page(self, rec: TokenRec, page: PageRec) -> bool:
        """A Page token sees its own Page; a user token the Pages the user manages."""
        if rec.kind == "page":
            return rec.page_id == page.id
        user = self.state.users.get(rec.user_id)
        return user is not None and page.id in user.page_ids


async def _body_params(request: Request) -> Params:
    """Form fields, or a JSON object's keys (objects and arrays kept as JSON text, as a form would
    carry them: ``message={"text":"hi"}``)."""
    body = await request.body()
    if not body:
        return {}
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
    try:
        parsed = json.loads(body)
    except ValueError:
        raise GraphFailure("(#100) The request body is not valid JSON", code=100) from None
    if not isinstance(parsed, dict):
        raise GraphFailure("(#100) The request body must be a JSON object", code=100)
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for k, v in parsed.items()
    }


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
            return json_response(failure.envelope(), failure.status, headers)
        params: Params = dict(request.query_params)
        try:
            if request.method in {"POST", "DELETE"}:
                params.update(await _body_params(request))
            result = await handler(sandbox, request, params)
        except GraphFailure as failure:
            if failure.code == 190:
                headers["www-authenticate"] = f'OAuth "Facebook Platform" "invalid_token" "{failure.message}"'
            return json_response(failure.envelope(), failure.status, {**headers, **failure.headers})
        if isinstance(result, Answer):
            return json_response(result.body, 200, {**headers, **result.headers})
        return json_response(result, 200, headers)

    return endpoint
