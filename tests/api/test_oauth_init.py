"""POST /functions/v1/instagram-oauth-init: authentication, authorisation, body validation, the dialog URL."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qs, urlsplit

import asyncpg
import jwt
import pytest
from starlette.testclient import TestClient

from tests.fixtures.api import INIT, REDIRECT_URI, RETURN_URL, Browser, user_token
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO, DEMO_MEMBER, STARTER_ADMIN, STARTER_IMO


def post(client: TestClient, body: object, token: str | None = None) -> tuple[int, dict[str, object]]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = client.post(INIT, json=body, headers=headers)
    return response.status_code, response.json()


async def test_returns_meta_dialog_url_with_scopes_and_state(
    api_client: TestClient, pg: asyncpg.Connection
) -> None:
    """The URL is Meta's dialog with our app id, redirect URI, the four scopes and a fresh state."""
    status, body = post(api_client, {"imo_id": DEMO_IMO}, user_token())
    assert status == 200
    url = urlsplit(str(body["url"]))
    query = parse_qs(url.query)
    assert url.path == "/v25.0/dialog/oauth"
    assert query["client_id"] == ["sandbox-app-id"]
    assert query["redirect_uri"] == [REDIRECT_URI]
    assert query["response_type"] == ["code"]
    assert set(query["scope"][0].split(",")) == {
        "instagram_basic",
        "instagram_manage_messages",
        "pages_manage_metadata",
        "pages_show_list",
    }
    assert len(query["state"][0]) >= 43


async def test_state_is_stored_hashed_with_its_context(
    api_client: TestClient, pg: asyncpg.Connection
) -> None:
    """The database keeps the SHA-256 of the state (never the nonce), the user, the IMO and a 10-minute expiry."""
    _, body = post(api_client, {"imo_id": DEMO_IMO, "return_to": "/messages?tab=ig"}, user_token())
    nonce = parse_qs(urlsplit(str(body["url"])).query)["state"][0]
    row = await pg.fetchrow(
        "select state_hash, user_id::text, imo_id::text, return_to, extract(epoch from expires_at - created_at) ttl"
        " from public.instagram_oauth_states"
    )
    assert row["state_hash"] == hashlib.sha256(nonce.encode()).hexdigest()
    assert nonce not in str(dict(row))
    assert (row["user_id"], row["imo_id"]) == (DEMO_ADMIN, DEMO_IMO)
    assert row["return_to"] == "http://app.test/messages?tab=ig"
    assert row["ttl"] == 600


async def test_each_init_gets_a_different_state(api_client: TestClient, pg: asyncpg.Connection) -> None:
    """Two inits produce two different states."""
    urls = {post(api_client, {"imo_id": DEMO_IMO}, user_token())[1]["url"] for _ in range(2)}
    assert len(urls) == 2


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic abc"}, "missing_token"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
    ],
)
async def test_missing_or_malformed_token_is_401(
    api_client: TestClient, pg: asyncpg.Connection, headers: dict[str, str], code: str
) -> None:
    """Without a well-formed bearer token the answer is 401 with a specific code."""
    response = api_client.post(INIT, json={"imo_id": DEMO_IMO}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (user_token(exp=int(time.time()) - 3600), "token_expired"),
        (user_token(aud="anon"), "invalid_audience"),
        (user_token(secret="another-secret-that-is-also-32-chars-long!"), "invalid_token"),
    ],
    ids=["expired", "wrong-audience", "wrong-key"],
)
async def test_bad_tokens_are_401(
    api_client: TestClient, pg: asyncpg.Connection, token: str, code: str
) -> None:
    """Expired, wrong-audience and wrongly signed tokens are refused with 401."""
    status, body = post(api_client, {"imo_id": DEMO_IMO}, token)
    assert status == 401
    assert body["error"]["code"] == code  # type: ignore[index]


async def test_service_role_key_is_not_a_user(api_client: TestClient, pg: asyncpg.Connection) -> None:
    """A service-role style token (no aud, no sub) cannot start a connection."""
    token = jwt.encode(
        {"role": "service_role", "iss": "supabase-demo", "exp": int(time.time()) + 60},
        "test-jwt-secret-with-at-least-32-characters!!",
        algorithm="HS256",
    )
    status, _ = post(api_client, {"imo_id": DEMO_IMO}, token)
    assert status == 401


@pytest.mark.parametrize(
    ("user", "imo", "code"),
    [
        (DEMO_MEMBER, DEMO_IMO, "not_imo_admin"),
        (STARTER_ADMIN, STARTER_IMO, "feature_not_in_plan"),
        (STARTER_ADMIN, DEMO_IMO, "not_imo_admin"),
        (DEMO_ADMIN, "00000000-0000-4000-8000-00000000dead", "not_imo_admin"),
    ],
    ids=["member-not-admin", "starter-plan", "admin-of-other-imo", "unknown-imo"],
)
async def test_forbidden_callers_get_403(
    api_client: TestClient, pg: asyncpg.Connection, user: str, imo: str, code: str
) -> None:
    """Non-admins, other IMOs' admins and IMOs without the Team feature get 403 and no state is stored."""
    status, body = post(api_client, {"imo_id": imo}, user_token(user))
    assert status == 403
    assert body["error"]["code"] == code  # type: ignore[index]
    assert await pg.fetchval("select count(*) from public.instagram_oauth_states") == 0


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.test/messages",
        "//evil.test/messages",
        "http://app.test.evil.test/",
        "https://app.test/messages",  # other scheme, other origin
        "http://user@app.test/messages",
        "javascript:alert(1)",
        "http://app.test:8080/messages",
        "/\\evil.test",
        42,
        "http://app.test:abc/",  # these four used to raise from urlsplit / .port: a 500
        "http://app.test:99999/",
        "http://[::1/",
        "http://app.test\uff0f@evil.test/",  # fullwidth solidus
    ],
)
async def test_foreign_return_to_is_400(
    api_client: TestClient, pg: asyncpg.Connection, return_to: object
) -> None:
    """A return_to off the app's origin is refused (no open redirect) and no state is stored."""
    status, body = post(api_client, {"imo_id": DEMO_IMO, "return_to": return_to}, user_token())
    assert status == 400
    assert body["error"]["code"] == "invalid_return_to"  # type: ignore[index]
    assert await pg.fetchval("select count(*) from public.instagram_oauth_states") == 0


async def test_return_to_lands_after_connect(browser: Browser, pg: asyncpg.Connection) -> None:
    """A same-origin return_to is where the browser lands after connecting, its query kept."""
    from sandbox import fixtures as fb

    result = browser.connect(fb.ALICE, return_to="http://app.test/messages/ig?tab=inbox")
    assert result.location.startswith("http://app.test/messages/ig?tab=inbox&instagram=connected")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"[" * 15_000, "invalid_json"),  # deeper than the parser recurses: used to be a RecursionError 500
        (b"\xff\xfe{}", "invalid_json"),
        (b"{}", "invalid_imo_id"),
        (b'{"imo_id": "not-a-uuid"}', "invalid_imo_id"),
        (b'{"imo_id": 7}', "invalid_imo_id"),
    ],
)
async def test_bad_bodies_are_400(
    api_client: TestClient, pg: asyncpg.Connection, raw: bytes, code: str
) -> None:
    """Malformed bodies get 400 with a code naming the problem."""
    response = api_client.post(
        INIT,
        content=raw,
        headers={"Authorization": f"Bearer {user_token()}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


async def test_errors_never_echo_the_token(api_client: TestClient, pg: asyncpg.Connection) -> None:
    """An error response contains neither the bearer token nor a stack trace."""
    token = user_token(DEMO_MEMBER)
    response = api_client.post(INIT, json={"imo_id": DEMO_IMO}, headers={"Authorization": f"Bearer {token}"})
    assert token not in response.text and "Traceback" not in response.text
    assert set(response.json()["error"]) == {"code", "message"}


async def test_cors_preflight_allows_the_app_origin_only(
    api_client: TestClient, pg: asyncpg.Connection
) -> None:
    """The browser app's origin may call init cross-origin; another origin may not."""
    ok = api_client.options(
        INIT,
        headers={
            "Origin": "http://app.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    bad = api_client.options(
        INIT, headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"}
    )
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://app.test"
    assert "access-control-allow-origin" not in bad.headers
    assert RETURN_URL.startswith("http://app.test")
