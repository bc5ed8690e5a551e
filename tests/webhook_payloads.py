"""Meta-shaped webhook deliveries for the tests: small builders with readable mids, encoded and signed as
Meta does by the sandbox's own encoder (escaped unicode, ``\\/``) — see reference §5."""

from __future__ import annotations

from typing import Any

from sandbox import webhooks as sandbox_webhooks
from sandbox.webhooks import encode  # noqa: F401 - re-exported for the tests

APP_SECRET = "sandbox-app-secret"
ACCOUNT = "17841400000000001"
WEBHOOK = "/functions/v1/instagram-webhook"
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z in Meta's milliseconds


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return sandbox_webhooks.sign(body, secret)


def headers(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"x-hub-signature-256": sign(body, secret), "content-type": "application/json"}


def delivery(*items: dict[str, Any], account: str = ACCOUNT, **entry: Any) -> dict[str, Any]:
    return {"object": "instagram", "entry": [{"id": account, "time": T0, "messaging": list(items), **entry}]}


def message(
    mid: str,
    text: str | None = "hi",
    *,
    sender: str = "900",
    at: int = 0,
    account: str = ACCOUNT,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"mid": mid, **fields}
    if text is not None:
        body["text"] = text
    return {"sender": {"id": sender}, "recipient": {"id": account}, "timestamp": T0 + at, "message": body}


def echo(mid: str, text: str, *, to: str = "900", at: int = 0, account: str = ACCOUNT) -> dict[str, Any]:
    return {
        "sender": {"id": account},
        "recipient": {"id": to},
        "timestamp": T0 + at,
        "message": {"mid": mid, "text": text, "is_echo": True},
    }


def action(
    key: str, value: dict[str, Any], *, sender: str = "900", at: int = 0, account: str = ACCOUNT
) -> dict[str, Any]:
    return {"sender": {"id": sender}, "recipient": {"id": account}, "timestamp": T0 + at, key: value}
