"""GET /functions/v1/instagram-oauth-callback: the whole connect flow against the sandbox and the real database."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from instagram_dm.service import InstagramService
from instagram_dm.settings import Settings
from sandbox import fixtures as fb
from tests.fixtures.api import CALLBACK, INIT, RETURN_URL, TOKEN_KEY, Browser, user_token
from tests.fixtures.database import DEMO_IMO

INTEGRATIONS = "select count(*) from public.instagram_integrations"


async def integration_rows(pg: asyncpg.Connection) -> list[asyncpg.Record]:
    return await pg.fetch(
        "select * from public.instagram_integrations order by instagram_business_account_id"
    )


async def test_one_linked_account_connects(browser: Browser, pg: asyncpg.Connection) -> None:
    """A user with one Page and its Instagram account ends connected, webhook subscribed, tokens encrypted."""
    result = browser.connect(fb.ALICE)
    assert result.response.status_code == 302
    assert result.location.startswith(RETURN_URL + "?")
    assert result.query["instagram"] == ["connected"]
    rows = await integration_rows(pg)
    assert [r["id"] for r in rows] == [uuid.UUID(result.query["integration_id"][0])]
    row = rows[0]
    assert row["status"] == "connected"
    assert row["imo_id"] == uuid.UUID(DEMO_IMO)
    assert row["instagram_username"] == "alice.recruits"
    assert row["webhook_subscribed"] is True
    assert row["token_expires_at"] is not None and row["data_access_expires_at"] is not None
    assert set(row["granted_scopes"]) >= {
        "instagram_basic",
        "instagram_manage_messages",
        "pages_manage_metadata",
    }
    assert browser.sandbox.state()["subscriptions"][row["facebook_page_id"]]


async def test_two_linked_accounts_become_two_integrations(browser: Browser, pg: asyncpg.Connection) -> None:
    """A user with two Pages, each linked to an Instagram account, gets two integrations in one redirect."""
    result = browser.connect(fb.BOB)
    assert result.query["instagram"] == ["connected"]
    assert len(result.query["integration_id"]) == 2
    rows = await integration_rows(pg)
    assert sorted(str(r["id"]) for r in rows) == sorted(result.query["integration_id"])
    assert {r["instagram_username"] for r in rows} == {"bob.life", "bob.health"}
    assert all(r["webhook_subscribed"] for r in rows)


async def test_paged_accounts_are_all_found(browser: Browser, pg: asyncpg.Connection) -> None:
    """Pages spread over several /me/accounts pages (one of them empty) are all connected."""
    result = browser.connect(fb.GRACE)
    assert result.query["instagram"] == ["connected"]
    assert await pg.fetchval(INTEGRATIONS) == 35  # 60 Pages, 25 of them hidden from the user


async def test_denial_redirects_with_user_denied(browser: Browser, pg: asyncpg.Connection) -> None:
    """When the user presses Deny, the browser returns with reason=user_denied and nothing is stored."""
    result = browser.connect(fb.ALICE, mode="deny")
    assert result.response.status_code == 302
    assert result.query["instagram"] == ["error"] and result.query["reason"] == ["user_denied"]
    assert await pg.fetchval(INTEGRATIONS) == 0


async def test_missing_permission_is_named(browser: Browser, pg: asyncpg.Connection) -> None:
    """A user who declined instagram_manage_messages is sent back with missing_permissions naming it."""
    result = browser.connect(fb.FRANK)
    assert result.query["reason"] == ["missing_permissions"]
    assert result.query["missing"] == ["instagram_manage_messages"]
    assert await pg.fetchval(INTEGRATIONS) == 0


@pytest.mark.parametrize("fb_user", [fb.CAROL, fb.DAVE])
async def test_no_instagram_account(browser: Browser, pg: asyncpg.Connection, fb_user: str) -> None:
    """A Page without a linked Instagram account, or no Page at all, ends in no_instagram_account."""
    result = browser.connect(fb_user)
    assert result.query["reason"] == ["no_instagram_account"]
    assert await pg.fetchval(INTEGRATIONS) == 0


def _callback_url(browser: Browser) -> str:
    init = browser.init()
    return browser.dialog(init.json()["url"], fb_user=fb.ALICE)


def _with_state(path_and_query: str, state: str) -> str:
    parts = urlsplit(path_and_query)
    query = parse_qs(parts.query)
    return f"{parts.path}?code={query['code'][0]}&state={state}"


async def test_tampered_state_shows_400_page(browser: Browser, pg: asyncpg.Connection) -> None:
    """A state altered by one character is unknown: 400 page, no redirect, nothing stored."""
    url = _callback_url(browser)
    state = parse_qs(urlsplit(url).query)["state"][0]
    tampered = state[:-1] + ("A" if state[-1] != "A" else "B")
    response = browser.client.get(_with_state(url, tampered), follow_redirects=False)
    assert response.status_code == 400
    assert "no longer valid" in response.text and "location" not in response.headers
    assert await pg.fetchval(INTEGRATIONS) == 0


@pytest.mark.parametrize("query", ["", "?code=abc", "?code=abc&state=", "?state=not-a-nonce&code=x"])
async def test_missing_or_malformed_state_shows_400_page(browser: Browser, query: str) -> None:
    """Without a well-formed known state the callback answers 400 and redirects nowhere."""
    response = browser.client.get(CALLBACK + query, follow_redirects=False)
    assert response.status_code == 400


async def test_expired_state_redirects_with_invalid_state(browser: Browser, pg: asyncpg.Connection) -> None:
    """A state older than its 10 minutes is refused with reason=invalid_state (its return URL is known)."""
    url = _callback_url(browser)
    await pg.execute(
        "update public.instagram_oauth_states set created_at = now() - interval '11 minutes',"
        " expires_at = now() - interval '1 minute'"
    )
    result = browser.callback(url)
    assert result.query["reason"] == ["invalid_state"]
    assert await pg.fetchval(INTEGRATIONS) == 0


async def test_replayed_callback_is_refused(browser: Browser, pg: asyncpg.Connection) -> None:
    """The same callback URL a second time is refused with invalid_state and changes nothing."""
    url = _callback_url(browser)
    first = browser.callback(url)
    assert first.query["instagram"] == ["connected"]
    before = await pg.fetchrow(
        "select updated_at, page_access_token_encrypted from public.instagram_integrations"
    )
    second = browser.callback(url)
    assert second.query["reason"] == ["invalid_state"]
    after = await pg.fetchrow(
        "select updated_at, page_access_token_encrypted from public.instagram_integrations"
    )
    assert before == after


async def test_two_concurrent_callbacks_exactly_one_wins(
    browser: Browser, service: InstagramService, pg: asyncpg.Connection
) -> None:
    """Two callbacks racing with one state: exactly one connects, the other gets invalid_state."""
    url = _callback_url(browser)
    params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    cookies = dict(browser.client.cookies)
    results = await asyncio.gather(
        service.complete_connection(params, cookies), service.complete_connection(params, cookies)
    )
    assert sorted(r.ok for r in results) == [False, True]
    assert [r.reason for r in results if not r.ok] == ["invalid_state"]
    assert await pg.fetchval(INTEGRATIONS) == 1


async def test_reconnect_updates_in_place(browser: Browser, pg: asyncpg.Connection) -> None:
    """Connecting the same account again updates its integration (new tokens), never adds a second row."""
    first = browser.connect(fb.ALICE)
    before = await pg.fetchrow("select id, user_access_token_encrypted from public.instagram_integrations")
    await pg.execute("update public.instagram_integrations set status = 'reauth_required', failure_count = 3")
    second = browser.connect(fb.ALICE)
    after = await pg.fetch(
        "select id, status, failure_count, user_access_token_encrypted from public.instagram_integrations"
    )
    assert first.query["integration_id"] == second.query["integration_id"]
    assert len(after) == 1 and after[0]["id"] == before["id"]
    assert after[0]["status"] == "connected" and after[0]["failure_count"] == 0
    assert after[0]["user_access_token_encrypted"] != before["user_access_token_encrypted"]


async def test_ciphertext_never_contains_token_bytes(browser: Browser, pg: asyncpg.Connection) -> None:
    """No token the sandbox issued appears, in any encoding, in the stored rows."""
    browser.connect(fb.BOB)
    tokens = [t["token"] for t in browser.sandbox.state(tokens=True)["tokens"]]
    assert tokens
    dump = await pg.fetchval("select string_agg(t::text, '|') from public.instagram_integrations t")
    blobs = await pg.fetch(
        "select user_access_token_encrypted u, page_access_token_encrypted p from public.instagram_integrations"
    )
    for token in tokens:
        assert token not in dump
        assert token.encode().hex() not in dump
        for blob in blobs:
            assert token.encode() not in blob["u"] and token.encode() not in blob["p"]


async def test_webhook_subscription_refusal_is_recorded(browser: Browser, pg: asyncpg.Connection) -> None:
    """When Meta refuses subscribed_apps (permission), the account connects but the failure is visible."""
    browser.sandbox.fault(
        r"/subscribed_apps$", code=200, http_status=403, count=5, message="Permissions error"
    )
    result = browser.connect(fb.ALICE)
    assert result.query["instagram"] == ["connected"] and result.query["webhooks"] == ["failed"]
    row = await pg.fetchrow(
        "select webhook_subscribed, last_error_code, last_error_message from public.instagram_integrations"
    )
    assert row["webhook_subscribed"] is False
    assert row["last_error_code"] == "meta_permission"
    assert "Webhook subscription failed" in row["last_error_message"]


STEPS = {
    "code exchange": {"path": r"/oauth/access_token$", "query": "code="},
    "long-lived exchange": {"path": r"/oauth/access_token$", "query": "fb_exchange_token="},
    "debug_token": {"path": r"/debug_token$"},
    "me/accounts": {"path": r"/me/accounts$"},
    "subscribed_apps": {"path": r"/subscribed_apps$"},
}


@pytest.mark.parametrize("step", sorted(STEPS))
async def test_meta_5xx_at_each_step_writes_nothing(
    browser: Browser, pg: asyncpg.Connection, step: str
) -> None:
    """A Meta 5xx outage at any step ends in meta_unavailable with no integration row written."""
    browser.sandbox.fault(
        **STEPS[step], http_status=500, code=2, count=50, message="Service temporarily unavailable"
    )
    result = browser.connect(fb.BOB)
    assert result.query["reason"] == ["meta_unavailable"], result.location
    assert await pg.fetchval(INTEGRATIONS) == 0


async def test_meta_5xx_on_a_later_accounts_page_writes_nothing(
    browser: Browser, pg: asyncpg.Connection
) -> None:
    """An outage on the second /me/accounts page ends in meta_unavailable with nothing written."""
    browser.sandbox.fault(r"/me/accounts$", query="after=", http_status=500, code=2, count=50)
    result = browser.connect(fb.GRACE)
    assert result.query["reason"] == ["meta_unavailable"], result.location
    assert await pg.fetchval(INTEGRATIONS) == 0


@pytest.mark.parametrize("step", ["code exchange", "me/accounts", "subscribed_apps"])
async def test_meta_timeout_at_a_step_writes_nothing(
    browser: Browser, pg: asyncpg.Connection, step: str
) -> None:
    """A Meta call that hangs past the client timeout ends in meta_unavailable with nothing written."""
    browser.sandbox.fault(**STEPS[step], timeout=True, count=50)
    result = browser.connect(fb.ALICE)
    assert result.query["reason"] == ["meta_unavailable"]
    assert await pg.fetchval(INTEGRATIONS) == 0


async def test_one_transient_blip_is_retried_and_connects(browser: Browser, pg: asyncpg.Connection) -> None:
    """A single 503 from Meta is retried by the Graph client and the connect still succeeds."""
    browser.sandbox.fault(r"/me/accounts$", http_status=503, code=1, count=1)
    result = browser.connect(fb.ALICE)
    assert result.query["instagram"] == ["connected"]
    assert await pg.fetchval(INTEGRATIONS) == 1


async def test_user_demoted_before_callback_is_not_connected(
    browser: Browser, pg: asyncpg.Connection
) -> None:
    """If the user stops being an admin between init and callback, nothing is stored (not_allowed)."""
    init = browser.init()
    url = browser.dialog(init.json()["url"], fb_user=fb.ALICE)
    await pg.execute(
        "update public.imo_members set role = 'member' where user_id = '00000000-0000-4000-8000-0000000000b1'"
    )
    result = browser.callback(url)
    assert result.query["reason"] == ["not_allowed"]
    assert await pg.fetchval(INTEGRATIONS) == 0
    state = browser.sandbox.state()
    assert state["code_exchanges"] == {} and state["subscriptions"] == {}  # refused before any Meta call


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["state", "code", "error", "error_reason", "error_description", "x", "hub.mode"]),
            st.text(max_size=80),
        ),
        max_size=6,
    )
)
def test_arbitrary_query_strings_never_5xx(browser: Browser, params: list[tuple[str, str]]) -> None:
    """Whatever query string arrives at the callback, the answer is a 302 or a 400, never a 5xx."""
    response = browser.client.get(CALLBACK, params=params, follow_redirects=False)
    assert response.status_code in {302, 400}


async def test_logs_never_contain_tokens_codes_or_state(
    browser: Browser, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A full connect flow, failures included, logs no token, code, state nonce, key or app secret."""
    caplog.set_level("DEBUG")
    init = browser.init()
    callback_url = browser.dialog(init.json()["url"], fb_user=fb.BOB)
    browser.sandbox.fault(r"/subscribed_apps$", code=200, http_status=403, count=1)
    assert browser.callback(callback_url).query["instagram"] == ["connected"]
    assert browser.callback(callback_url).query["reason"] == ["invalid_state"]  # replay, logged too
    query = parse_qs(urlsplit(callback_url).query)
    secrets_seen = [t["token"] for t in browser.sandbox.state(tokens=True)["tokens"]]
    secrets_seen += [query["code"][0], query["state"][0], "sandbox-app-secret", TOKEN_KEY]
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert caplog.records, "expected the flow to log"
    for secret in secrets_seen:
        assert secret not in logged


async def test_callback_from_another_browser_is_refused(browser: Browser, pg: asyncpg.Connection) -> None:
    """A consent link forwarded to someone else's browser is refused (session_mismatch) and spends the state."""
    url = _callback_url(browser)
    with TestClient(browser.client.app, base_url="http://testserver") as other_browser:
        other = other_browser.get(url, follow_redirects=False)
    assert parse_qs(urlsplit(other.headers["location"]).query)["reason"] == ["session_mismatch"]
    assert browser.callback(url).query["reason"] == ["invalid_state"]  # the starter cannot use it afterwards
    assert await pg.fetchval(INTEGRATIONS) == 0
    assert browser.sandbox.state()["code_exchanges"] == {}


async def test_binding_cookie_is_httponly_and_scoped_to_the_callback(browser: Browser) -> None:
    """init sets an HttpOnly, SameSite=Lax cookie on the callback path that expires with the state."""
    response = browser.init()
    header = response.headers["set-cookie"]
    assert header.startswith("ig_oauth_") and "HttpOnly" in header and "SameSite=lax" in header
    assert "Path=/functions/v1/instagram-oauth-callback" in header and "Max-Age=600" in header
    state = parse_qs(urlsplit(response.json()["url"]).query)["state"][0]
    assert state not in header


async def test_binding_can_be_switched_off(
    api_settings: Settings, browser: Browser, pg: asyncpg.Connection
) -> None:
    """With INSTAGRAM_OAUTH_BIND_BROWSER=false no cookie is set and any browser may finish the connect."""
    from dataclasses import replace

    from api.app import create_app

    unbound = replace(api_settings, oauth_bind_browser=False)
    with TestClient(create_app(unbound), base_url="http://testserver") as starter:
        init = starter.post(
            INIT, json={"imo_id": DEMO_IMO}, headers={"Authorization": f"Bearer {user_token()}"}
        )
        assert "set-cookie" not in init.headers
        url = browser.dialog(init.json()["url"], fb_user=fb.ALICE)
    with TestClient(create_app(unbound), base_url="http://testserver") as other_browser:
        done = other_browser.get(url, follow_redirects=False)
    assert "instagram=connected" in done.headers["location"]
    assert await pg.fetchval(INTEGRATIONS) == 1


async def test_an_unreadable_page_does_not_sink_the_others(browser: Browser, pg: asyncpg.Connection) -> None:
    """When Meta refuses the expanded listing and then one Page's lookup, the user's other Page connects."""
    browser.sandbox.fault(r"/me/accounts$", query="instagram_business_account", code=10, http_status=403)
    browser.sandbox.fault(
        r"/v25\.0/101000000000201$", code=10, http_status=403, count=5, message="Permission denied"
    )
    result = browser.connect(fb.BOB)
    assert result.query["instagram"] == ["connected"] and len(result.query["integration_id"]) == 1
    assert await pg.fetchval("select instagram_username from public.instagram_integrations") == "bob.health"
