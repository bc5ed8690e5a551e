"""Injected faults and latency: a pure ASGI middleware in front of every Graph and dialog route.

It counts each call (per endpoint key), sleeps by the first matching latency rule, then answers with
the first matching fault (Meta's error envelope, a raw body, or a hang then 504) instead of the
route. ``/_sandbox/`` itself is never counted, delayed or faulted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.core import Sandbox, endpoint_key, json_response
from sandbox.state import Fault, trace_id

__all__ = ["DEFAULT_MESSAGES", "FaultsAndLatency", "fault_response"]

DEFAULT_MESSAGES = {
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


def fault_response(fault: Fault) -> Response:
    headers = dict(fault.headers)
    if fault.body is not None:
        media = (
            "text/html; charset=utf-8" if fault.body.lstrip().startswith("<") else "text/plain; charset=utf-8"
        )
        return Response(fault.body, status_code=fault.http_status, headers=headers, media_type=media)
    error: dict[str, Any] = {
        "message": fault.message or DEFAULT_MESSAGES.get(fault.code or 0, "An unknown error has occurred."),
        "type": fault.type,
        "code": fault.code if fault.code is not None else 1,
    }
    if fault.subcode is not None:
        error["error_subcode"] = fault.subcode
    if fault.is_transient is not None:
        error["is_transient"] = fault.is_transient
    error["fbtrace_id"] = trace_id()
    return json_response({"error": error}, fault.http_status, headers)


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
