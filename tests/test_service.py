"""InstagramService and the app over the in-memory database port: the unhappy branches that are hard to
reach over the real Postgres (the real-database tests are in tests/api/). Meta is the sandbox app,
in-process through ``httpx.ASGITransport``: no server, no network."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from api.app import create_app
from instagram_dm import errors, logs
from instagram_dm.db.memory import InMemoryDatabase
from instagram_dm.graph import GraphClient, RetryPolicy
from instagram_dm.service import REQUIRED_SCOPES, InstagramService, hash_state
from instagram_dm.settings import Settings
from sandbox import fixtures as fb
from sandbox.app import create_app as create_sandbox
from sandbox.oauth import grant_code
from sandbox.state import SandboxConfig
from tests.fixtures.api import INIT, REDIRECT_URI, RETURN_URL, TOKEN_KEY, settings_env, user_token
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO

SANDBOX_URL = "http://sandbox.test"
UNUSED_DATABASE_URL = "postgresql://nobody:never-used@127.0.0.1:1/none"


@dataclass
class World:
    service: InstagramService
    db: InMemoryDatabase
    sandbox: Starlette
    settings: Settings

    def code(self, fb_user: str = fb.ALICE) -> str:
        """A code as Meta's dialog would hand it back, for `fb_user` with every scope we ask for."""
        return str(grant_code(self.sandbox.state.sandbox, fb_user, REDIRECT_URI, REQUIRED_SCOPES))

    def meta_calls(self) -> int:
        return int(self.sandbox.state.sandbox.total_calls)


def sandbox_app() -> Starlette:
    return create_sandbox(SandboxConfig(app_id="sandbox-app-id", app_secret="sandbox-app-secret"))


@pytest.fixture
def unit_settings() -> Settings:
    return Settings.from_environ(settings_env(SANDBOX_URL, UNUSED_DATABASE_URL), env_file=None)


@pytest.fixture
async def world(unit_settings: Settings) -> AsyncIterator[World]:
    logs.install_redaction()  # as every entry point does (libraries log URLs with tokens in them)
    sandbox = sandbox_app()
    db = InMemoryDatabase()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox)) as http:
        graph = GraphClient.from_settings(unit_settings, http, retry=RetryPolicy.disabled())
        yield World(InstagramService(db=db, graph=graph, settings=unit_settings), db, sandbox, unit_settings)


async def started(world: World) -> tuple[str, str | None]:
    """Start a connect as the demo admin; return the state nonce and the browser-binding cookie value."""
    start = await world.service.start_connection(user_id=DEMO_ADMIN, imo_id=DEMO_IMO)
    nonce = parse_qs(urlsplit(start.url).query)["state"][0]
    return nonce, None if start.binding_cookie is None else start.binding_cookie[1]


async def callback(world: World, nonce: str, binding: str | None) -> Any:
    from instagram_dm.service import binding_cookie_name

    cookies = {} if binding is None else {binding_cookie_name(nonce): binding}
    return await world.service.complete_connection({"state": nonce, "code": world.code()}, cookies)


# ---- the store step ------------------------------------------------------------------------------


async def test_connect_happy_path_over_the_fake(world: World) -> None:
    """With the fake answering the store, a connect ends ok and the store got typed accounts."""
    world.db.on(
        "instagram_store_integrations",
        lambda call: [
            {
                "id": "i-1",
                "instagram_business_account_id": a["ig_account_id"],
                "facebook_page_id": a["page_id"],
                "webhook_subscribed": a["webhook_subscribed"],
            }
            for a in call.args["p_accounts"]
        ],
    )
    result = await callback(world, *await started(world))
    assert result.ok and result.integration_ids == ("i-1",)
    [store] = world.db.calls_to("instagram_store_integrations")
    assert store.args["p_imo_id"] == DEMO_IMO and store.args["p_user_id"] == DEMO_ADMIN
    assert set(store.args["p_accounts"][0]) >= {
        "page_id",
        "page_token",
        "ig_account_id",
        "webhook_subscribed",
    }


async def test_store_forbidden_is_not_allowed(world: World) -> None:
    """The admin lost the role or the plan between init and storage: reason not_allowed, nothing stored."""
    world.db.on("instagram_store_integrations", raises=errors.ForbiddenError("Gone.", code="not_imo_admin"))
    result = await callback(world, *await started(world))
    assert (result.ok, result.reason) == (False, "not_allowed")
    assert "instagram=error&reason=not_allowed" in (result.redirect_url() or "")


@pytest.mark.parametrize(
    "error",
    [
        errors.DatabaseError(),
        errors.DatabaseUnavailableError(),
        errors.EncryptionKeyMismatchError(),
        errors.BadRequestError("Argument p_accounts cannot be sent as JSON.", code="bad_request"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_store_other_error_is_internal_error_and_leaks_nothing(
    world: World, error: errors.InstagramDMError, caplog: pytest.LogCaptureFixture
) -> None:
    """Any other store failure is reason internal_error; neither the redirect nor the logs carry the
    error's text or a token (the Graph tokens the sandbox issued)."""
    world.db.on("instagram_store_integrations", raises=error)
    with caplog.at_level(logging.DEBUG):
        result = await callback(world, *await started(world))
    assert (result.ok, result.reason) == (False, "internal_error")
    url = result.redirect_url() or ""
    assert parse_qs(urlsplit(url).query) == {"instagram": ["error"], "reason": ["internal_error"]}
    [store] = world.db.calls_to("instagram_store_integrations")
    secrets = [
        store.args["p_user_token"],
        store.args["p_key"],
        *(a["page_token"] for a in store.args["p_accounts"]),
    ]
    logged = " ".join(f"{r.getMessage()} {json.dumps(r.__dict__, default=str)}" for r in caplog.records)
    assert "oauth.store_failed" in logged
    for secret in secrets:
        assert secret not in logged and secret not in url and secret not in repr(result)
    assert error.message not in url


# ---- the state step ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("used", "invalid_state"),
        ("expired", "invalid_state"),
        ("unknown", "invalid_state"),
        ("foreign_browser", "session_mismatch"),
        ("not_allowed", "not_allowed"),
        ("key_mismatch", "invalid_state"),
    ],
)
async def test_refused_states_never_reach_meta(world: World, status: str, reason: str) -> None:
    """Each refusal of the consume RPC is its own reason, back to the state's return URL, before any Meta call."""
    world.db.on("instagram_oauth_state_consume", returns={"status": status, "return_to": RETURN_URL})
    nonce = "n" * 43
    result = await world.service.complete_connection({"state": nonce, "code": "AQxyz"})
    assert (result.ok, result.reason, result.return_to) == (False, reason, RETURN_URL)
    assert world.meta_calls() == 0
    assert world.db.calls_to("instagram_store_integrations") == []
    [consume] = world.db.calls_to("instagram_oauth_state_consume")
    assert consume.args == {
        "p_state_hash": hash_state(nonce),
        "p_browser_binding_hash": None,
        "p_key": TOKEN_KEY,
        "p_previous_key": None,
    }


async def test_fake_state_lifecycle(world: World) -> None:
    """Over the fake's own state table: a second callback is used, another browser's is foreign_browser."""
    world.db.on("instagram_store_integrations", returns=[])
    nonce, binding = await started(world)
    assert binding is not None
    first = await callback(world, nonce, binding)
    assert first.reason != "invalid_state"
    again = await callback(world, nonce, binding)
    assert again.reason == "invalid_state"
    other_nonce, _ = await started(world)
    stolen = await callback(world, other_nonce, "not-the-browser-that-started-it")
    assert stolen.reason == "session_mismatch"


async def test_malformed_state_skips_the_database(world: World) -> None:
    """A state that cannot be one of ours is invalid_state without a database call."""
    result = await world.service.complete_connection({"state": "short", "code": "x"})
    assert (result.ok, result.reason, result.return_to) == (False, "invalid_state", None)
    assert world.db.calls == []


# ---- the app over the fake: create_app(database=, http_transport=) ----------------------------------


@pytest.fixture
def unit_app(unit_settings: Settings) -> Iterator[tuple[TestClient, InMemoryDatabase]]:
    db = InMemoryDatabase()
    app = create_app(unit_settings, database=db, http_transport=httpx.ASGITransport(app=sandbox_app()))
    with TestClient(app, base_url="http://testserver") as client:
        yield client, db
    assert not db.closed  # the app does not close a database it was given


def test_init_with_database_down_is_503(unit_app: tuple[TestClient, InMemoryDatabase]) -> None:
    """The database is unavailable during init: 503 database_unavailable, no stack trace, no token."""
    client, db = unit_app
    db.unavailable = True
    token = user_token()
    response = client.post(INIT, json={"imo_id": DEMO_IMO}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert token not in response.text and "Traceback" not in response.text
    # The API's start-up publish of the media URL settings (docs/media.md) comes before the request.
    assert [c.name for c in db.calls if c.name != "instagram_media_settings_apply_v1"] == [
        "instagram_oauth_state_create"
    ]


def test_readyz_with_database_down_is_503(unit_app: tuple[TestClient, InMemoryDatabase]) -> None:
    """/readyz reads the injected database: healthy first, then 503 once it is down."""
    client, db = unit_app
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok", "pg_cron": True}
    db.unavailable = True
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()["database"]) == (503, "database_unavailable")


def test_injected_transport_carries_the_graph_calls(unit_settings: Settings) -> None:
    """The whole connect flow runs with the injected transport (the in-process sandbox) for Meta."""
    sandbox = sandbox_app()
    db = InMemoryDatabase()
    db.on(
        "instagram_store_integrations",
        returns=[
            {
                "id": "i-1",
                "instagram_business_account_id": "1",
                "facebook_page_id": "2",
                "webhook_subscribed": True,
            }
        ],
    )
    app = create_app(unit_settings, database=db, http_transport=httpx.ASGITransport(app=sandbox))
    with TestClient(app, base_url="http://testserver") as client:
        init = client.post(
            INIT, json={"imo_id": DEMO_IMO}, headers={"Authorization": f"Bearer {user_token()}"}
        )
        nonce = parse_qs(urlsplit(init.json()["url"]).query)["state"][0]
        code = grant_code(sandbox.state.sandbox, fb.ALICE, REDIRECT_URI, REQUIRED_SCOPES)
        done = client.get(
            f"/functions/v1/instagram-oauth-callback?state={nonce}&code={code}", follow_redirects=False
        )
    assert done.status_code == 302 and "instagram=connected" in done.headers["location"]
    assert sandbox.state.sandbox.total_calls >= 5


def test_injected_transport_carries_the_jwks_fetch(unit_settings: Settings) -> None:
    """With SUPABASE_JWKS_URL set, the verifier fetches the keys through the injected transport."""
    from dataclasses import replace

    seen: list[str] = []

    def jwks(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"keys": []})

    settings = replace(unit_settings, supabase_jwks_url="http://auth.test/auth/v1/.well-known/jwks.json")
    app = create_app(settings, database=InMemoryDatabase(), http_transport=httpx.MockTransport(jwks))
    # An ES256-labelled token with a kid we do not hold: the verifier must fetch the JWKS to look it up.
    segments = [{"alg": "ES256", "kid": "made-up", "typ": "JWT"}, {"sub": DEMO_ADMIN, "aud": "authenticated"}]
    encoded = [jwt.utils.base64url_encode(json.dumps(part).encode()).decode() for part in segments]
    forged = ".".join([*encoded, "c2lnbmF0dXJl"])
    with TestClient(app, base_url="http://testserver") as client:
        response = client.post(INIT, json={"imo_id": DEMO_IMO}, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert seen == ["http://auth.test/auth/v1/.well-known/jwks.json"]


# ---- status and disconnect call the app-facing RPCs as the user --------------------------------------


async def test_status_and_disconnect_go_as_the_user(world: World) -> None:
    """status/disconnect call the app-facing RPCs through rpc_as_user with the caller, never a p_user_id."""
    from tests.fixtures.api import acting_user

    user = acting_user(DEMO_ADMIN)
    world.db.on("instagram_integration_status", returns=[])
    world.db.on(
        "instagram_disconnect",
        returns={
            "id": "00000000-0000-4000-8000-00000000c001",
            "status": "disconnected",
            "unsubscribe_queued": False,
        },
    )
    assert await world.service.status(user=user, imo_id=DEMO_IMO) == ()
    gone = await world.service.disconnect(user=user, integration_id="00000000-0000-4000-8000-00000000c001")
    assert gone.status == "disconnected"
    assert [(c.name, c.args, c.user) for c in world.db.calls] == [
        ("instagram_integration_status", {"p_imo_id": DEMO_IMO}, user),
        ("instagram_disconnect", {"p_integration_id": "00000000-0000-4000-8000-00000000c001"}, user),
    ]
    with pytest.raises(errors.BadRequestError):
        await world.service.status(user=user, imo_id="not-a-uuid")
