"""A seeded, bounded fuzz of every route the API serves (the webhook has its own, test_webhook_fuzz.py):
20,000 requests of hostile headers, bodies, queries, paths and methods, and not one answer of 500 or more,
not one traceback, not one token echoed."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.fixtures.api import user_token

pytestmark = pytest.mark.slow

SEED = 20261202
REQUESTS = 20_000
AT_ONCE = 50
INIT = "/functions/v1/instagram-oauth-init"
CALLBACK = "/functions/v1/instagram-oauth-callback"
WEBHOOK = "/functions/v1/instagram-webhook"

_STRINGS = [
    "",
    "null",
    "0",
    "-1",
    "é",
    "\u202e",
    "%00",
    "../..",
    "a" * 3000,
    "[" * 50,
    "http://[::1/",
    "http://app.test:abc/",
    "http://app.test:99999/",
    "http://app.test\uff0f@evil.test/",
    "//evil.test",
    "javascript:alert(1)",
    "00000000-0000-4000-8000-0000000000a1",
    '{"x":1}',
    "\ud7ff",
    "%ff%fe",
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _junk(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 4 else 5)
    if pick == 0:
        return rng.choice(_STRINGS)
    if pick == 1:
        return rng.choice([0, -1, 2**63, 1.5e308, True, None])
    if pick == 2:
        return "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(20)))
    if pick in (3, 4):
        return rng.choice(["imo_id", "return_to", "alg", "kid"])
    if pick in (5, 6):
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(_junk(rng, depth + 1))[:20]: _junk(rng, depth + 1) for _ in range(rng.randrange(4))}


def _authorization(rng: random.Random) -> str | None:
    pick = rng.randrange(8)
    if pick == 0:
        return None
    if pick == 1:
        return f"Bearer {user_token()}"
    if pick == 2:  # a token whose header is junk of every JSON type
        header = {"alg": _junk(rng), "kid": _junk(rng), "typ": "JWT"}
        return f"Bearer {_b64(json.dumps(header).encode())}.{_b64(json.dumps(_junk(rng)).encode())}.{_b64(b'sig')}"
    if pick == 3:
        return rng.choice(["Bearer", "Basic abc", "Bearer a.b", "Bearer " + "x" * 10_000, "bearer  ."])
    return f"Bearer {_b64(rng.randbytes(rng.randrange(64)))}"


def _body(rng: random.Random) -> bytes:
    pick = rng.randrange(7)
    if pick == 0:
        return rng.randbytes(rng.randrange(200))
    if pick == 1:
        return b"[" * rng.choice([10, 1000, 20_000])
    if pick == 2:
        return b'{"imo_id": "' + b"a" * rng.choice([10, 20_000]) + b'"}'
    if pick == 3:
        return json.dumps({"imo_id": _junk(rng), "return_to": _junk(rng)}, ensure_ascii=False).encode(
            "utf-8", "replace"
        )
    return json.dumps(_junk(rng), ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def _query(rng: random.Random, names: list[str]) -> str:
    parts = []
    for _ in range(rng.randrange(5)):
        name = rng.choice([*names, "x", "", "%zz", "a[]"])
        parts.append(f"{name}={rng.choice(_STRINGS)[:200]}")
    return "&".join(parts)


def _request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    route = rng.randrange(10)
    headers: dict[str, str] = {}
    if route < 4:
        auth = _authorization(rng)
        if auth is not None:
            headers["authorization"] = auth
        headers["content-type"] = rng.choice(["application/json", "text/plain", "multipart/form-data", ""])
        return rng.choice(["POST", "POST", "POST", "GET", "PUT", "OPTIONS"]), INIT, headers, _body(rng)
    if route < 7:
        if rng.random() < 0.3:
            headers["cookie"] = f"ig_oauth_{rng.choice(_STRINGS)[:30]}={rng.choice(_STRINGS)[:30]}"
        names = ["state", "code", "error", "error_reason", "error_description", "error_code"]
        return "GET", f"{CALLBACK}?{_query(rng, names)}", headers, b""
    if route == 7:
        return (
            "GET",
            f"{WEBHOOK}?{_query(rng, ['hub.mode', 'hub.verify_token', 'hub.challenge'])}",
            headers,
            b"",
        )
    if route == 8:
        return (
            rng.choice(["GET", "HEAD", "POST", "DELETE"]),
            rng.choice(["/healthz", "/readyz", "/"]),
            headers,
            b"",
        )
    path = "/" + "/".join(
        rng.choice(["functions", "v1", "dev", "..", "%2e%2e", "x" * 300, "\u00e9"]) for _ in range(3)
    )
    return rng.choice(["GET", "POST", "PATCH", "TRACE"]), path, headers, _body(rng)


async def test_twenty_thousand_hostile_requests_get_no_5xx(async_client: httpx.AsyncClient) -> None:
    """Every route under 20,000 seeded hostile requests: no status of 500 or more, every error in the JSON
    shape (or the readable callback page / a redirect), no traceback, no token echoed."""
    rng = random.Random(SEED)
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    token = user_token()

    async def one(method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        raw = {name: value.encode("utf-8", "surrogatepass") for name, value in headers.items()}  # any bytes
        response = await async_client.request(method, path, headers=raw, content=body or None)
        statuses[response.status_code] += 1
        text = response.text
        if response.status_code >= 500 and response.status_code != 503:
            problems.append(f"{method} {path[:80]} -> {response.status_code} {text[:120]}")
        if "Traceback" in text or token in text:
            problems.append(f"{method} {path[:80]} leaked a traceback or a token")
        json_error = response.headers.get("content-type", "").startswith("application/json")
        if response.status_code >= 400 and json_error and method != "HEAD":  # HEAD answers have no body
            error = response.json().get("error") if isinstance(response.json(), dict) else None
            if not (isinstance(error, dict) and isinstance(error.get("code"), str)):
                problems.append(f"{method} {path[:80]} -> {response.status_code} without the error shape")

    requests = [_request(rng) for _ in range(REQUESTS)]
    for start in range(0, REQUESTS, AT_ONCE):
        await asyncio.gather(*(one(*r) for r in requests[start : start + AT_ONCE]))
    assert problems == [], problems[:10]
    assert sum(statuses.values()) == REQUESTS
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses[200] > 0 and statuses[401] > 0 and statuses[400] > 0  # the fuzz reached past the gates
