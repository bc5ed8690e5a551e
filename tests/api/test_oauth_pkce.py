"""PKCE on the connect flow: the S256 challenge on the dialog, the state's verifier on the code exchange,
the code injection it stops (over real HTTP through the sandbox), the setting, older states, key changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from instagram_dm import pkce
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient, RetryPolicy
from instagram_dm.service import ConnectResult, InstagramService, hash_state
from instagram_dm.settings import Secret, Settings
from sandbox import fixtures as fb
from tests.api.test_oauth_callback import FakeMeta
from tests.fixtures.api import CALLBACK, FAST_RETRY, RETURN_URL, TOKEN_KEY, Browser
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO, STARTER_ADMIN, STARTER_IMO
from tests.fixtures.sandbox import SandboxControl

OTHER_KEY = "another-token-encryption-key-0123456789abcdef"


async def stored_verifier(pg: asyncpg.Connection, nonce: str, key: str = TOKEN_KEY) -> str | None:
    """The verifier the database keeps for the state `nonce` (decrypted here, as only the server can)."""
    value: str | None = await pg.fetchval(
        "select extensions.pgp_sym_decrypt(code_verifier_encrypted, $2)"
        " from public.instagram_oauth_states where state_hash = $1",
        hash_state(nonce),
        key,
    )
    return value


def dialog_query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# ---- init: the challenge on the dialog URL ------------------------------------------------------------


async def test_dialog_carries_the_s256_challenge_of_the_stored_verifier(
    browser: Browser, pg: asyncpg.Connection
) -> None:
    """init's dialog URL has code_challenge = S256 of the verifier stored with the state, method S256."""
    query = dialog_query(browser.init().json()["url"])
    verifier = await stored_verifier(pg, query["state"])
    assert verifier is not None and pkce.VERIFIER_RE.match(verifier)
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == pkce.challenge(verifier)


async def test_the_verifier_never_reaches_the_browser(browser: Browser, pg: asyncpg.Connection) -> None:
    """Neither init's answer (body, headers, cookie) nor the callback's redirect carries the verifier."""
    init = browser.init()
    query = dialog_query(init.json()["url"])
    verifier = await stored_verifier(pg, query["state"])
    assert verifier is not None
    callback = browser.callback(browser.dialog(init.json()["url"], fb_user=fb.ALICE))
    assert callback.query["instagram"] == ["connected"]
    for response in (init, callback.response):
        assert verifier not in response.text and verifier not in str(response.headers)


# ---- the code exchange, against a scripted Meta (httpx.MockTransport) --------------------------------


@pytest.fixture
async def meta_service(
    api_settings: Settings, database_url: str
) -> AsyncIterator[tuple[FakeMeta, AsyncpgDatabase, httpx.AsyncClient]]:
    meta = FakeMeta(base=api_settings.graph_base_url.rstrip("/"))
    db = await AsyncpgDatabase.connect(database_url, max_size=3)
    async with httpx.AsyncClient(transport=httpx.MockTransport(meta)) as http:
        yield meta, db, http
    await db.close()


def service_for(
    parts: tuple[FakeMeta, AsyncpgDatabase, httpx.AsyncClient], settings: Settings
) -> InstagramService:
    _, db, http = parts
    graph = GraphClient.from_settings(settings, http, retry=RetryPolicy.disabled())
    return InstagramService(db=db, graph=graph, settings=settings)


async def start(service: InstagramService) -> tuple[str, dict[str, str], dict[str, str]]:
    """Start a connect; return the state nonce, the dialog URL's query and the browser's cookies."""
    begun = await service.start_connection(user_id=DEMO_ADMIN, imo_id=DEMO_IMO)
    query = dialog_query(begun.url)
    return query["state"], query, dict([begun.binding_cookie]) if begun.binding_cookie else {}


async def finish(service: InstagramService, nonce: str, cookies: dict[str, str]) -> ConnectResult:
    return await service.complete_connection({"code": "AQfakecode", "state": nonce}, cookies)


def code_exchange(meta: FakeMeta) -> dict[str, str]:
    [call] = [c for c in meta.calls if c.path.endswith("/oauth/access_token") and "code" in c.params]
    return call.params


async def test_the_exchange_sends_the_states_verifier(
    meta_service: tuple[FakeMeta, AsyncpgDatabase, httpx.AsyncClient],
    api_settings: Settings,
    pg: asyncpg.Connection,
) -> None:
    """The code exchange carries code_verifier: the state's stored verifier, whose S256 the dialog got."""
    service = service_for(meta_service, api_settings)
    nonce, query, cookies = await start(service)
    assert (await finish(service, nonce, cookies)).ok
    sent = code_exchange(meta_service[0])
    assert sent["code_verifier"] == await stored_verifier(pg, nonce)
    assert pkce.challenge(sent["code_verifier"]) == query["code_challenge"]
    assert set(sent) == {"client_id", "redirect_uri", "client_secret", "code", "code_verifier"}


async def test_setting_off_sends_neither_challenge_nor_verifier(
    meta_service: tuple[FakeMeta, AsyncpgDatabase, httpx.AsyncClient],
    api_settings: Settings,
    pg: asyncpg.Connection,
) -> None:
    """With INSTAGRAM_OAUTH_PKCE=false the dialog URL has no challenge, no verifier is stored or sent."""
    service = service_for(meta_service, replace(api_settings, oauth_pkce=False))
    nonce, query, cookies = await start(service)
    assert "code_challenge" not in query and "code_challenge_method" not in query
    assert await pg.fetchval(
        "select code_verifier_encrypted is null from public.instagram_oauth_states where state_hash = $1",
        hash_state(nonce),
    )
    assert (await finish(service, nonce, cookies)).ok
    assert "code_verifier" not in code_exchange(meta_service[0])


async def test_a_state_from_before_pkce_exchanges_without_a_verifier(
    meta_service: tuple[FakeMeta, AsyncpgDatabase, httpx.AsyncClient],
    api_settings: Settings,
    pg: asyncpg.Connection,
) -> None:
    """A pending state stored without a verifier (made before the change) still connects, sending none."""
    service = service_for(meta_service, api_settings)
    nonce, _, cookies = await start(service)
    await pg.execute(
        "update public.instagram_oauth_states set code_verifier_encrypted = null,"
        " code_verifier_key_fingerprint = null where state_hash = $1",
        hash_state(nonce),
    )
    assert (await finish(service, nonce, cookies)).ok
    assert "code_verifier" not in code_exchange(meta_service[0])


async def test_a_connect_started_before_a_key_change_needs_the_previous_key(
    meta_service: tuple[FakeMeta, AsyncpgDatabase, httpx.AsyncClient], api_settings: Settings
) -> None:
    """Started under the old key, a connect completes after the switch while the API has the old key as
    INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS; without it the state is invalid_state before any Meta call."""
    rotated = replace(
        api_settings,
        token_encryption_key=Secret(OTHER_KEY),
        token_encryption_key_previous=Secret(TOKEN_KEY),
    )
    old = service_for(meta_service, api_settings)
    nonce, _, cookies = await start(old)
    assert (await finish(service_for(meta_service, rotated), nonce, cookies)).ok
    meta_service[0].calls.clear()
    nonce, _, cookies = await start(old)
    dropped = replace(rotated, token_encryption_key_previous=Secret(""))
    result = await finish(service_for(meta_service, dropped), nonce, cookies)
    assert (result.ok, result.reason, result.return_to) == (False, "invalid_state", RETURN_URL)
    assert meta_service[0].calls == []


# ---- the attack, over real HTTP through the sandbox ---------------------------------------------


async def upgrade(pg: asyncpg.Connection, imo_id: str) -> None:
    """Move the IMO to the Team plan (so the Starter IMO's admin may connect: the attacker)."""
    await pg.execute(
        "update public.imo_subscriptions set plan_id = (select id from public.subscription_plans"
        " where name = 'Team') where imo_id = $1",
        imo_id,
    )


def injected_callback(settings: Settings, sandbox: SandboxControl) -> httpx.Response:
    """The victim (Demo Agency's admin, Alice at Facebook) starts a connect and consents; before their
    browser reaches the callback, the attacker (Starter Agency's admin) takes the code and pastes it into a
    callback with the attacker's own state and binding cookie. Returns the attacker's callback response."""
    with TestClient(create_app(settings, graph_retry=FAST_RETRY), base_url="http://testserver") as victim:
        victim_browser = Browser(victim, sandbox)
        victim_url = victim_browser.dialog(victim_browser.init().json()["url"], fb_user=fb.ALICE)
        victim_browser.http.close()
    stolen_code = parse_qs(urlsplit(victim_url).query)["code"][0]
    with TestClient(create_app(settings, graph_retry=FAST_RETRY), base_url="http://testserver") as attacker:
        attacker_browser = Browser(attacker, sandbox)
        init = attacker_browser.init(user_id=STARTER_ADMIN, imo_id=STARTER_IMO)
        attacker_browser.http.close()
        assert init.status_code == 200, init.text
        own_state = dialog_query(init.json()["url"])["state"]
        return attacker.get(
            CALLBACK, params={"code": stolen_code, "state": own_state}, follow_redirects=False
        )


async def test_a_victims_code_in_the_attackers_callback_is_refused(
    api_settings: Settings, sandbox: SandboxControl, pg: asyncpg.Connection
) -> None:
    """The issue's injection: Meta (the sandbox) refuses the exchange because the attacker's state has
    another verifier; the attacker lands on the app with instagram=error and nothing is connected."""
    await upgrade(pg, STARTER_IMO)
    response = injected_callback(api_settings, sandbox)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(RETURN_URL + "?")
    assert parse_qs(urlsplit(location).query) == {"instagram": ["error"], "reason": ["oauth_failed"]}
    assert await pg.fetchval("select count(*) from public.instagram_integrations") == 0
    assert sandbox.state()["code_exchanges"] == {}  # Meta issued no token for the stolen code


async def test_without_pkce_the_same_injection_connects_the_victims_account(
    api_settings: Settings, sandbox: SandboxControl, pg: asyncpg.Connection
) -> None:
    """With INSTAGRAM_OAUTH_PKCE=false the same injection succeeds (the hole the issue reports): Alice's
    Instagram account ends up in the attacker's IMO. State and binding cookie alone do not stop it."""
    await upgrade(pg, STARTER_IMO)
    response = injected_callback(replace(api_settings, oauth_pkce=False), sandbox)
    assert "instagram=connected" in response.headers["location"]
    rows = await pg.fetch("select imo_id::text, instagram_username from public.instagram_integrations")
    assert [(r["imo_id"], r["instagram_username"]) for r in rows] == [(STARTER_IMO, "alice.recruits")]


# ---- the sandbox requiring PKCE --------------------------------------------------------------------------


async def test_a_sandbox_that_requires_pkce_connects_the_default_flow(
    browser: Browser, sandbox: SandboxControl, pg: asyncpg.Connection
) -> None:
    """With require_pkce on at the sandbox, the default connect (PKCE on) goes through."""
    sandbox.configure(require_pkce=True)
    assert browser.connect(fb.ALICE).query["instagram"] == ["connected"]
    assert await pg.fetchval("select count(*) from public.instagram_integrations") == 1


async def test_a_sandbox_that_requires_pkce_refuses_a_flow_without_it(
    api_settings: Settings, sandbox: SandboxControl
) -> None:
    """With require_pkce on and INSTAGRAM_OAUTH_PKCE=false, Meta's dialog refuses the request (HTML 400)."""
    sandbox.configure(require_pkce=True)
    with TestClient(
        create_app(replace(api_settings, oauth_pkce=False)), base_url="http://testserver"
    ) as client:
        browser = Browser(client, sandbox)
        sandbox.dialog("approve", fb.ALICE)
        dialog = browser.http.get(browser.init().json()["url"], follow_redirects=False)
        browser.http.close()
    assert dialog.status_code == 400 and "requires PKCE" in dialog.text
