"""Injected faults and latency: a pure ASGI middleware in front of every Graph and dialog route.

It counts each call (per endpoint key), sleeps by the first matching latency rule, then answers with
the first matching fault (Meta's error envelope, a raw body, or a hang then 504) instead of the
route. A fault with ``after_delivery`` lets the route run first and replaces only a 2xx answer (the
send was accepted, recorded and echoed; the client gets the error, the 5xx or the hang instead).
``/_sandbox/`` itself is never counted, delayed or faulted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.core import SENT_SCOPE_KEY, Sandbox, endpoint_key, json_response
from sandbox.state import Fault, SentMessage, State, trace_id

__all__ = ["DEFAULT_MESSAGES", "SUBCODE_MESSAGES", "FaultsAndLatency", "fault_response", "message_for"]

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
    551: "(#551) This person isn't available right now.",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    80006: "(#80006) There have been too many messenger api calls to this Page account. "
    "Wait a while and try again.",
}
# Messaging subcodes (reference §8), preferred over the code's message when a fault names one.
SUBCODE_MESSAGES = {
    1357046: "An unknown error occurred",
    1893063: "(#10) This account is temporarily restricted from sending messages.",
    2534014: "(#100) No matching user found",
    2534022: "(#10) This message is sent outside of allowed window.",
    2534029: "(#100) This account is blocked from using the API.",
    2534040: "(#613) Calls to this api have exceeded the rate limit.",
    2534041: "(#200) The owner of this account has turned off access to messages.",
}


def message_for(code: int | None, subcode: int | None) -> str:
    """Meta's text for a code (and subcode), as the sandbox answers it."""
    if subcode is not None and subcode in SUBCODE_MESSAGES:
        return SUBCODE_MESSAGES[subcode]
    return DEFAULT_MESSAGES.get(code or 0, "An unknown error has occurred.")


def fault_response(fault: Fault) -> Response:
    headers = dict(fault.headers)
    if fault.body is not None:
        media = (
            "text/html; charset=utf-8" if fault.body.lstrip().startswith("<") else "text/plain; charset=utf-8"
        )
        return Response(fault.body, status_code=fault.http_status, headers=headers, media_type=media)
    error: dict[str, Any] = {
        "message": fault.message or message_for(fault.code, fault.subcode),
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
        query: str = scope["query_string"].decode("latin-1")
        self.sandbox.total_calls += 1
        state.calls[endpoint_key(method, path)] += 1
        for rule in state.latency:
            if rule.pattern.search(path):
                await asyncio.sleep(rule.delay())
                break
        fault = _take(state, method, path, query, after_delivery=False)
        if fault is not None:
            await self._answer(fault, scope, receive, send)
            return
        if not any(_matches(f, method, path, query, after_delivery=True) for f in state.faults):
            await self.app(scope, receive, send)
            return
        # An after-delivery rule may apply: hold the route's answer until it is known to be a 2xx.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        status = next((int(m["status"]) for m in held if m["type"] == "http.response.start"), 0)
        fault = _take(state, method, path, query, after_delivery=True) if 200 <= status < 300 else None
        if fault is None:
            for message in held:
                await send(message)
            return
        sent = scope.get(SENT_SCOPE_KEY)
        if isinstance(sent, SentMessage):
            sent.answer_lost = True
            sent.answer_http_status = fault.http_status
        await self._answer(fault, scope, receive, send)

    async def _answer(self, fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
        if fault.timeout:
            hang = fault.hang_seconds
            await asyncio.sleep(self.sandbox.config.timeout_seconds if hang is None else hang)
            timeout = Fault(**{**fault.__dict__, "body": "<html><body>Gateway Timeout</body></html>"})
            await fault_response(timeout)(scope, receive, send)
            return
        await fault_response(fault)(scope, receive, send)


def _matches(fault: Fault, method: str, path: str, query: str, *, after_delivery: bool) -> bool:
    return (
        fault.after_delivery is after_delivery
        and fault.remaining != 0
        and fault.method in {None, method}
        and fault.pattern.search(path) is not None
        and (fault.query is None or fault.query.search(query) is not None)
    )


def _take(state: State, method: str, path: str, query: str, *, after_delivery: bool) -> Fault | None:
    """The first matching rule of that kind, counted as used."""
    for fault in state.faults:
        if _matches(fault, method, path, query, after_delivery=after_delivery):
            if fault.remaining > 0:
                fault.remaining -= 1
            fault.hits += 1
            return fault
    return None
