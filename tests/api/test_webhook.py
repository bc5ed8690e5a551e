"""The webhook receiver: Meta's handshake, the signature over the exact bytes, the size cap, durable
and deduplicated storage (processing is the worker's, tested in tests/worker/test_webhooks.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from instagram_dm import errors
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.settings import Settings
from instagram_dm.webhooks import DeliveryStore, signature_valid
from tests.fixtures.api import FAST_RETRY
from tests.webhook_payloads import APP_SECRET, WEBHOOK, delivery, encode, headers, message, sign

pytestmark = pytest.mark.usefixtures("pg")

HANDSHAKE = {"hub.mode": "subscribe", "hub.verify_token": "verify-me-please", "hub.challenge": "1158201444"}


async def stored(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("select count(*) from public.instagram_webhook_events"))


def test_handshake_echoes_the_challenge_as_text(api_client: TestClient) -> None:
    """hub.mode=subscribe with our verify token answers 200 with the challenge as text/plain."""
    response = api_client.get(WEBHOOK, params=HANDSHAKE)
    assert response.status_code == 200
    assert response.text == "1158201444"
    assert response.headers["content-type"].startswith("text/plain")


def test_handshake_with_a_wrong_token_is_refused(api_client: TestClient) -> None:
    """A verify token that is not ours is 403 and no challenge in the body."""
    response = api_client.get(WEBHOOK, params={**HANDSHAKE, "hub.verify_token": "verify-me-pleasE"})
    assert response.status_code == 403
    assert "1158201444" not in response.text
    assert response.json()["error"]["code"] == "verification_failed"


def test_handshake_without_mode_is_refused(api_client: TestClient) -> None:
    """No hub.mode (or another mode) is 403 even with the right token."""
    params = {k: v for k, v in HANDSHAKE.items() if k != "hub.mode"}
    assert api_client.get(WEBHOOK, params=params).status_code == 403
    assert api_client.get(WEBHOOK, params={**HANDSHAKE, "hub.mode": "unsubscribe"}).status_code == 403


def test_handshake_is_refused_when_no_verify_token_is_configured(
    sandbox: Any, database_url: str, api_settings: Settings
) -> None:
    """Without INSTAGRAM_WEBHOOK_VERIFY_TOKEN every handshake is 403 (an empty token never matches)."""
    from tests.fixtures.api import settings_env

    settings = Settings.from_environ(
        settings_env(sandbox.url, database_url, INSTAGRAM_WEBHOOK_VERIFY_TOKEN=""), env_file=None
    )
    with TestClient(create_app(settings, graph_retry=FAST_RETRY)) as client:
        response = client.get(WEBHOOK, params={**HANDSHAKE, "hub.verify_token": ""})
    assert response.status_code == 403


async def test_signed_delivery_is_stored_exactly_as_received(
    api_client: TestClient, pg: asyncpg.Connection
) -> None:
    """A correctly signed delivery is 200 and its exact bytes (escaped unicode and slashes) are in the table."""
    body = encode(delivery(message("m-1", "Grüße / 你好 😀")))
    assert b"\\u00fc" in body and b"\\/" in body
    response = api_client.post(WEBHOOK, content=body, headers=headers(body))
    assert response.status_code == 200
    row = await pg.fetchrow("select body, body_sha256, state from public.instagram_webhook_events")
    assert bytes(row["body"]) == body
    assert bytes(row["body_sha256"]) == hashlib.sha256(body).digest()
    assert row["state"] == "available"


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda body: {}, id="unsigned"),
        pytest.param(lambda body: {"x-hub-signature-256": sign(body, "another-secret")}, id="wrong-secret"),
        pytest.param(
            lambda body: {"x-hub-signature-256": sign(body + b" ")}, id="body-changed-after-signing"
        ),
        pytest.param(
            lambda body: {
                "x-hub-signature": "sha1=" + hmac.new(APP_SECRET.encode(), body, "sha1").hexdigest()
            },
            id="legacy-sha1-only",
        ),
        pytest.param(lambda body: {"x-hub-signature-256": sign(body)[7:]}, id="no-sha256-prefix"),
        pytest.param(lambda body: {"x-hub-signature-256": "sha256=" + "zz" * 32}, id="not-hex"),
        pytest.param(lambda body: {"x-hub-signature-256": sign(body)[:-2]}, id="truncated"),
    ],
)
async def test_unverified_delivery_is_refused_and_not_stored(
    api_client: TestClient, pg: asyncpg.Connection, make_headers: Any
) -> None:
    """A delivery without a valid X-Hub-Signature-256 over its bytes is 401 and stores nothing."""
    body = encode(delivery(message("m-bad")))
    response = api_client.post(WEBHOOK, content=body, headers=make_headers(body))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert await stored(pg) == 0


async def test_oversized_delivery_is_refused_without_storing(
    api_client: TestClient, pg: asyncpg.Connection
) -> None:
    """Over 1 MiB is 413 (declared length or streamed body) and nothing is stored."""
    body = b'{"object":"instagram","entry":[],"pad":"' + b"x" * (1 << 20) + b'"}'
    response = api_client.post(WEBHOOK, content=body, headers=headers(body))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap is enforced while streaming
        for _ in range(20):
            yield b"y" * 65536

    streamed = api_client.post(WEBHOOK, content=chunks(), headers={"x-hub-signature-256": sign(b"")})
    assert streamed.status_code == 413
    assert await stored(pg) == 0


async def test_a_delivery_of_exactly_one_mebibyte_is_accepted(
    api_client: TestClient, pg: asyncpg.Connection
) -> None:
    """The cap is inclusive: 1,048,576 signed bytes are stored."""
    head = b'{"object":"instagram","entry":[],"pad":"'
    body = head + b"x" * ((1 << 20) - len(head) - 2) + b'"}'
    assert len(body) == 1 << 20
    assert api_client.post(WEBHOOK, content=body, headers=headers(body)).status_code == 200
    assert await stored(pg) == 1


async def test_signed_body_that_is_not_json_is_stored(api_client: TestClient, pg: asyncpg.Connection) -> None:
    """A signed body that is not JSON is still 200 and stored (processing marks it failed), never a 5xx."""
    body = b"\xff\xfe not json at all"
    assert api_client.post(WEBHOOK, content=body, headers=headers(body)).status_code == 200
    assert await stored(pg) == 1


async def test_same_delivery_ten_times_concurrently_is_stored_once(
    async_client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    """Meta's retries of one delivery, ten at once: all acknowledged, one row."""
    body = encode(delivery(message("m-dup")))
    responses = await asyncio.gather(
        *(async_client.post(WEBHOOK, content=body, headers=headers(body)) for _ in range(10))
    )
    assert [r.status_code for r in responses] == [200] * 10
    assert await stored(pg) == 1


async def test_concurrent_deliveries_share_inserts_and_are_all_stored(
    async_client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    """200 different deliveries at once are all acknowledged and all stored (group commit loses none)."""
    bodies = [encode(delivery(message(f"m-{i}"))) for i in range(200)]
    responses = await asyncio.gather(
        *(async_client.post(WEBHOOK, content=b, headers=headers(b)) for b in bodies)
    )
    assert {r.status_code for r in responses} == {200}
    assert await stored(pg) == 200


async def test_delivery_store_gives_up_in_time_when_the_table_is_locked(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A database that does not answer in time is DatabaseUnavailableError (the receiver's 503), not a hang;
    the delivery lands once the lock goes (Meta's retry would then be a duplicate)."""
    store = DeliveryStore(db, timeout=0.3)
    async with pg.transaction():
        await pg.execute("lock table public.instagram_webhook_events in access exclusive mode")
        with pytest.raises(errors.DatabaseUnavailableError):
            await store.store(encode(delivery(message("m-locked"))))
    await store.close()
    assert await stored(pg) == 1


def test_signature_check_is_over_exact_bytes() -> None:
    """Re-encoding the same JSON differently (unescaped unicode) breaks the signature."""
    payload = delivery(message("m-2", "ä"))
    body = encode(payload)
    assert signature_valid(body, sign(body), APP_SECRET)
    reencoded = body.replace(b"\\u00e4", "ä".encode())
    assert not signature_valid(reencoded, sign(body), APP_SECRET)
    assert not signature_valid(body, sign(body), "")


def test_receiver_refuses_to_start_without_the_app_secret(sandbox: Any, database_url: str, pg: Any) -> None:
    """No INSTAGRAM_APP_SECRET: building the app fails with one line naming it (nothing could be verified)."""
    from tests.fixtures.api import settings_env

    settings = Settings.from_environ(
        settings_env(sandbox.url, database_url, INSTAGRAM_APP_SECRET=""), env_file=None
    )
    with pytest.raises(errors.ConfigError, match="INSTAGRAM_APP_SECRET"):
        create_app(settings)
