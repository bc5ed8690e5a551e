"""Status, disconnect, token storage and key rotation — through the service, the RPCs and the CLI."""

from __future__ import annotations

import json

import asyncpg
import pytest
from starlette.testclient import TestClient

from cli.keys import rotate
from instagram_dm import errors
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.service import InstagramService
from instagram_dm.settings import Settings
from sandbox import fixtures as fb
from tests.fixtures.api import TOKEN_KEY, Browser, acting_user
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO, DEMO_MEMBER, STARTER_ADMIN, acting_as

OTHER_KEY = "another-token-encryption-key-fedcba9876543210"
TOKEN_FIELDS = {"user_access_token_encrypted", "page_access_token_encrypted", "user_token", "page_token"}


def connected_id(browser: Browser, fb_user: str = fb.ALICE) -> str:
    result = browser.connect(fb_user)
    assert result.query["instagram"] == ["connected"], result.location
    return result.query["integration_id"][0]


async def test_status_rpc_shows_safe_fields_to_members(browser: Browser, pg: asyncpg.Connection) -> None:
    """instagram_integration_status, called as a member, lists the IMO's integration without token fields."""
    integration_id = connected_id(browser)
    async with acting_as(pg, DEMO_MEMBER) as conn:
        rows = json.loads(
            await conn.fetchval("select public.instagram_integration_status($1)::text", DEMO_IMO)
        )
    assert [r["id"] for r in rows] == [integration_id]
    assert rows[0]["status"] == "connected" and rows[0]["instagram_username"] == "alice.recruits"
    assert not TOKEN_FIELDS & set(rows[0])
    assert "fingerprint" not in json.dumps(rows)


async def test_status_rpc_returns_nothing_to_another_imo(browser: Browser, pg: asyncpg.Connection) -> None:
    """Another IMO's admin asking for Demo Agency's status gets an empty list."""
    connected_id(browser)
    async with acting_as(pg, STARTER_ADMIN) as conn:
        rows = json.loads(
            await conn.fetchval("select public.instagram_integration_status($1)::text", DEMO_IMO)
        )
    assert rows == []


async def test_service_status_is_membership_checked(browser: Browser, service: InstagramService) -> None:
    """The service reads status as the caller: a member sees the integration, a non-member nothing."""
    integration_id = connected_id(browser)
    rows = await service.status(user=acting_user(DEMO_MEMBER), imo_id=DEMO_IMO)
    assert [r.id for r in rows] == [integration_id]
    assert rows[0].status == "connected" and rows[0].instagram_username == "alice.recruits"
    assert await service.status(user=acting_user(STARTER_ADMIN), imo_id=DEMO_IMO) == ()


async def test_service_twins_are_gone(pg: asyncpg.Connection) -> None:
    """The service-only twins are dropped; the app-facing status and disconnect keep their signatures."""
    found = await pg.fetch(
        "select p.proname, pg_get_function_identity_arguments(p.oid) args from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public'"
        " and p.proname like any (array['instagram_integration_status%', 'instagram_disconnect%'])"
    )
    assert {(r["proname"], r["args"]) for r in found} == {
        ("instagram_integration_status", "p_imo_id uuid"),
        ("instagram_disconnect", "p_integration_id uuid"),
    }


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        ("instagram_integration_tokens", "(gen_random_uuid(), 'x')"),
        ("instagram_oauth_state_consume", "('x')"),
        ("instagram_rotate_key_batch", "('a', 'b', 1)"),
        ("instagram_health", "()"),
    ],
)
@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_api_roles_cannot_call_service_functions(
    pg: asyncpg.Connection, fn: str, args: str, role: str
) -> None:
    """anon and authenticated get permission denied on service-only RPCs."""
    async with acting_as(pg, DEMO_ADMIN if role == "authenticated" else None, role=role) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval(f"select public.{fn}{args}")


async def test_tokens_decrypt_with_the_key_and_fail_with_another(
    browser: Browser, db: AsyncpgDatabase
) -> None:
    """Stored tokens decrypt to the sandbox's tokens with our key; another key fails with a clear error."""
    integration_id = connected_id(browser)
    tokens = await db.rpc(
        "instagram_integration_tokens", {"p_integration_id": integration_id, "p_key": TOKEN_KEY}
    )
    issued = {t["token"] for t in browser.sandbox.state(tokens=True)["tokens"]}
    assert tokens["user_token"] in issued and tokens["page_token"] in issued
    with pytest.raises(errors.EncryptionKeyMismatchError) as caught:
        await db.rpc("instagram_integration_tokens", {"p_integration_id": integration_id, "p_key": OTHER_KEY})
    assert "different INSTAGRAM_TOKEN_ENCRYPTION_KEY" in caught.value.message
    assert OTHER_KEY not in caught.value.message and TOKEN_KEY not in caught.value.message


async def test_short_key_is_refused_by_the_database(db: AsyncpgDatabase) -> None:
    """The store RPC itself refuses a key shorter than 32 characters."""
    with pytest.raises(errors.BadRequestError) as caught:
        await db.rpc(
            "instagram_rotate_key_batch", {"p_old_key": "short", "p_new_key": OTHER_KEY, "p_batch": 1}
        )
    assert caught.value.code == "invalid_encryption_key"


async def test_rotate_key_round_trip_is_resumable(
    browser: Browser, db: AsyncpgDatabase, api_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """rotate-key re-encrypts every row in batches; stopping half-way and rerunning finishes the job."""
    ids = [*browser.connect(fb.BOB).query["integration_id"], connected_id(browser, fb.ALICE)]
    before = {
        i: await db.rpc("instagram_integration_tokens", {"p_integration_id": i, "p_key": TOKEN_KEY})
        for i in ids
    }
    partial = await db.rpc(
        "instagram_rotate_key_batch", {"p_old_key": TOKEN_KEY, "p_new_key": OTHER_KEY, "p_batch": 1}
    )
    assert partial["rotated"] == 1 and partial["remaining"] == 2

    new_settings = Settings.from_environ(
        {"DATABASE_URL": api_settings.database_url.reveal(), "INSTAGRAM_TOKEN_ENCRYPTION_KEY": OTHER_KEY},
        env_file=None,
    )
    assert await rotate(new_settings, TOKEN_KEY, batch_size=1) == 0
    assert "remaining 0" in capsys.readouterr().out
    for integration_id in ids:
        after = await db.rpc(
            "instagram_integration_tokens", {"p_integration_id": integration_id, "p_key": OTHER_KEY}
        )
        assert (after["user_token"], after["page_token"]) == (
            before[integration_id]["user_token"],
            before[integration_id]["page_token"],
        )
        with pytest.raises(errors.EncryptionKeyMismatchError):
            await db.rpc(
                "instagram_integration_tokens", {"p_integration_id": integration_id, "p_key": TOKEN_KEY}
            )


async def test_admin_disconnect_wipes_tokens_and_queues_unsubscribe(
    browser: Browser, service: InstagramService, pg: asyncpg.Connection
) -> None:
    """Disconnect marks the integration disconnected, wipes both tokens and leaves a Page-unsubscribe row."""
    integration_id = connected_id(browser)
    result = await service.disconnect(user=acting_user(DEMO_ADMIN), integration_id=integration_id)
    assert (result.id, result.status, result.unsubscribe_queued) == (integration_id, "disconnected", True)
    row = await pg.fetchrow(
        "select status, user_access_token_encrypted, page_access_token_encrypted, token_key_fingerprint,"
        " webhook_subscribed from public.instagram_integrations"
    )
    assert dict(row) == {
        "status": "disconnected",
        "user_access_token_encrypted": None,
        "page_access_token_encrypted": None,
        "token_key_fingerprint": None,
        "webhook_subscribed": False,
    }
    queued = await pg.fetchrow(
        "select facebook_page_id, state, page_access_token_encrypted from public.instagram_page_unsubscriptions"
    )
    assert queued["state"] == "available" and queued["page_access_token_encrypted"] is not None


async def test_member_cannot_disconnect(
    browser: Browser, service: InstagramService, pg: asyncpg.Connection
) -> None:
    """A plain member's disconnect is refused as not found and the integration stays connected;
    so is another IMO's admin's."""
    integration_id = connected_id(browser)
    for user_id in (DEMO_MEMBER, STARTER_ADMIN):
        with pytest.raises(errors.NotFoundError):
            await service.disconnect(user=acting_user(user_id), integration_id=integration_id)
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "connected"


async def test_app_facing_disconnect_uses_the_callers_identity(
    browser: Browser, pg: asyncpg.Connection
) -> None:
    """instagram_disconnect called with an admin's JWT claims disconnects; with another IMO's admin it fails."""
    integration_id = connected_id(browser)
    async with acting_as(pg, STARTER_ADMIN) as conn:
        with pytest.raises(asyncpg.exceptions.NoDataFoundError):
            await conn.fetchval("select public.instagram_disconnect($1)", integration_id)
    async with acting_as(pg, DEMO_ADMIN) as conn:
        result = json.loads(
            await conn.fetchval("select public.instagram_disconnect($1)::text", integration_id)
        )
        assert result["status"] == "disconnected"


async def test_health_endpoints(api_client: TestClient) -> None:
    """/healthz is alive; /readyz reports the database and pg_cron ready."""
    assert api_client.get("/healthz").json() == {"status": "ok"}
    ready = api_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


async def test_development_pages_connect_show_status_and_disconnect(
    browser: Browser, api_settings: Settings, pg: asyncpg.Connection
) -> None:
    """In development mode the Messages page, /dev/status and the page's disconnect work end to end as the
    signed-in demo admin (a real JWT through the verifier, the app-facing RPCs as that user); in production
    they are absent."""
    from dataclasses import replace

    from api.app import create_app
    from tests.fixtures.api import FAST_RETRY

    integration_id = connected_id(browser)
    assert browser.client.get("/dev").status_code == 404  # production: not mounted
    dev_settings = replace(api_settings, environment="development")
    with TestClient(create_app(dev_settings, graph_retry=FAST_RETRY), base_url="http://testserver") as dev:
        page = dev.get("/dev")
        assert page.status_code == 200 and "/dev/static/messages.js" in page.text
        assert dev.get("/dev/status", follow_redirects=False).status_code == 302  # nobody signed in yet
        assert dev.post("/dev/session", json={"user": "admin"}).status_code == 200
        status = dev.get("/dev/status")
        assert "alice.recruits" in status.text and "connected" in status.text
        gone = dev.post("/dev/api/disconnect", json={"integration_id": integration_id})
        assert gone.status_code == 200 and gone.json()["status"] == "disconnected"
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "disconnected"


def test_unknown_path_is_404_in_the_error_shape(api_client: TestClient) -> None:
    """A path nothing answers is 404 {"error": {"code": "not_found", ...}}, not Starlette's plain text."""
    response = api_client.get("/no/such/path")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_wrong_method_is_405_in_the_error_shape_with_allow(api_client: TestClient) -> None:
    """GET on the POST-only init route is 405 in the error shape, and says which methods it takes."""
    response = api_client.get("/functions/v1/instagram-oauth-init")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]


def test_root_is_not_found_in_production(api_client: TestClient) -> None:
    """In production / is a 404 (the development pages are not mounted)."""
    assert api_client.get("/", follow_redirects=False).status_code == 404


def test_an_unhandled_exception_is_the_json_500_and_one_log_line(
    api_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a handler answers the JSON 500 and logs one api.unhandled line; nothing is re-raised to the
    server (whose traceback would land outside the JSON log and drop the connection)."""
    from starlette.routing import Route

    from api.app import create_app

    async def boom(request: object) -> None:
        raise RuntimeError("a bug with a secret-looking detail: EAAB-not-a-token")

    app = create_app(api_settings)
    app.router.routes.append(Route("/boom", boom))
    with TestClient(app, raise_server_exceptions=True) as client:  # a re-raise would fail the test here
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "EAAB" not in response.text
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == ["api.unhandled"]
