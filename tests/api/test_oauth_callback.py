"""GET /functions/v1/instagram-oauth-callback: the whole connect flow against the sandbox and the real database."""

from __future__ import annotations

import asyncio
import string
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient, RetryPolicy
from instagram_dm.service import ConnectResult, InstagramService
from instagram_dm.settings import Settings
from sandbox import fixtures as fb
from tests.fixtures.api import CALLBACK, INIT, RETURN_URL, TOKEN_KEY, Browser, user_token
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO

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


NONCE_ALPHABET = string.ascii_letters + string.digits + "-_"
OTHER_PARAMS = st.lists(
    st.tuples(
        st.sampled_from(
            ["code", "code", "code", "error", "error_reason", "error_description", "x", "hub.mode"]
        ),
        st.text(max_size=80),
    ),
    max_size=6,
)


def denial_reason(params: list[tuple[str, str]]) -> str | None:
    """The reason Meta's denial parameters give (the first of each name counts), None without them."""
    first: dict[str, str] = {}
    for name, value in params:
        first.setdefault(name, value)
    if not (first.get("error") or first.get("error_reason")):
        return None
    denied = first.get("error") == "access_denied" or first.get("error_reason") == "user_denied"
    return "user_denied" if denied else "meta_error"


def expected_reason(params: list[tuple[str, str]]) -> str:
    """What a stored, fresh state must come back with, given the other parameters."""
    denial = denial_reason(params)
    if denial is not None:
        return denial
    if not dict(reversed(params)).get("code"):
        return "missing_code"
    return "oauth_failed"  # the sandbox knows no such code


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["stored", "stored", "tampered", "pattern", "text"]),
    position=st.integers(0, 42),
    replacement=st.sampled_from(NONCE_ALPHABET),
    pattern=st.text(alphabet=NONCE_ALPHABET, min_size=43, max_size=43),
    text=st.text(max_size=80),
    params=OTHER_PARAMS,
)
def test_arbitrary_callbacks_are_answered_by_what_the_database_knows(
    browser: Browser,
    *,
    kind: str,
    position: int,
    replacement: str,
    pattern: str,
    text: str,
    params: list[tuple[str, str]],
) -> None:
    """A stored state redirects once (reason from the other parameters), then is spent; an unknown one
    is a 400 page, unless Meta's denial parameters came along (then the default return URL)."""
    state = {"pattern": pattern, "text": text}.get(kind, "")
    if kind in {"stored", "tampered"}:
        state = parse_qs(urlsplit(browser.init().json()["url"]).query)["state"][0]
    if kind == "tampered":
        alternative = NONCE_ALPHABET[(NONCE_ALPHABET.index(replacement) + 1) % len(NONCE_ALPHABET)]
        swap = replacement if replacement != state[position] else alternative
        state = state[:position] + swap + state[position + 1 :]
    response = browser.client.get(CALLBACK, params=[("state", state), *params], follow_redirects=False)
    event(f"{kind}: {response.status_code}")
    if kind != "stored" and denial_reason(params) is None:
        assert response.status_code == 400  # unknown to the database: no safe return URL
        return
    assert response.status_code == 302
    assert response.headers["location"].startswith(RETURN_URL + "?")
    query = parse_qs(urlsplit(response.headers["location"]).query)
    want = expected_reason(params) if kind == "stored" else denial_reason(params)
    assert query["instagram"] == ["error"] and query["reason"] == [want]
    if kind == "stored":  # the state is spent, whatever the first callback carried
        replay = browser.client.get(CALLBACK, params={"state": state, "code": "x"}, follow_redirects=False)
        assert parse_qs(urlsplit(replay.headers["location"]).query)["reason"] == ["invalid_state"]


async def test_logs_never_contain_tokens_codes_or_state(
    browser: Browser, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A full connect flow, failures included, logs no token, code, state nonce, PKCE verifier, key or
    app secret."""
    caplog.set_level("DEBUG")
    init = browser.init()
    callback_url = browser.dialog(init.json()["url"], fb_user=fb.BOB)
    browser.sandbox.fault(r"/subscribed_apps$", code=200, http_status=403, count=1)
    assert browser.callback(callback_url).query["instagram"] == ["connected"]
    assert browser.callback(callback_url).query["reason"] == ["invalid_state"]  # replay, logged too
    query = parse_qs(urlsplit(callback_url).query)
    verifier = await pg.fetchval(
        "select extensions.pgp_sym_decrypt(code_verifier_encrypted, $1) from public.instagram_oauth_states",
        TOKEN_KEY,
    )
    assert verifier
    secrets_seen = [t["token"] for t in browser.sandbox.state(tokens=True)["tokens"]]
    secrets_seen += [query["code"][0], query["state"][0], verifier, "sandbox-app-secret", TOKEN_KEY]
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


# ---- the round-trip shape, against a scripted Meta (httpx.MockTransport) --------------------------------

LINKED_FIELDS = "id,name,access_token,instagram_business_account{id,username,profile_picture_url}"
ALL_SCOPES = ["instagram_basic", "instagram_manage_messages", "pages_manage_metadata", "pages_show_list"]


def linked_page(n: int) -> dict[str, Any]:
    return {
        "id": f"9000{n}",
        "name": f"Page {n}",
        "access_token": f"EAASfakepage{n}",
        "instagram_business_account": {
            "id": f"17849000{n}",
            "username": f"ig.{n}",
            "profile_picture_url": None,
        },
    }


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]
    started: float
    ended: float = 0.0


@dataclass
class FakeMeta:
    """A scripted Meta behind httpx.MockTransport that records every request with its start and end."""

    base: str
    listing: list[list[dict[str, Any]]] = field(default_factory=lambda: [[linked_page(1)]])
    scopes: list[str] = field(default_factory=lambda: list(ALL_SCOPES))
    valid: bool = True
    accounts_error: int | None = None  # Meta's error code for /me/accounts
    delay: float = 0.01
    delays: dict[str, float] = field(default_factory=dict)  # per path suffix
    calls: list[Call] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        params = {k: v[0] for k, v in parse_qs(request.url.query.decode(), keep_blank_values=True).items()}
        if request.method == "POST":
            params |= {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        call = Call(request.method, request.url.path, params, loop.time())
        self.calls.append(call)
        suffix = request.url.path.rsplit("/", 1)[-1]
        await asyncio.sleep(self.delays.get(suffix, self.delay))
        call.ended = loop.time()
        return self.answer(call)

    def answer(self, call: Call) -> httpx.Response:
        now = int(time.time())
        if call.path == "/v25.0/oauth/access_token":
            token = "EAASfakeshort" if "code" in call.params else "EAASfakelong"
            return httpx.Response(
                200, json={"access_token": token, "token_type": "bearer", "expires_in": 3600}
            )
        if call.path == "/v25.0/debug_token":
            data = {"is_valid": self.valid, "type": "USER", "user_id": "1", "scopes": self.scopes}
            data |= {"expires_at": now + 86400 * 60, "data_access_expires_at": now + 86400 * 90}
            return httpx.Response(200, json={"data": data})
        if call.path == "/v25.0/me/accounts":
            if self.accounts_error is not None:
                error = {"message": "refused", "type": "OAuthException", "code": self.accounts_error}
                return httpx.Response(400 if self.accounts_error == 190 else 403, json={"error": error})
            index = int(call.params.get("after", "0"))
            body: dict[str, Any] = {"data": self.listing[index]}
            if index + 1 < len(self.listing):
                next_query = urlencode({"fields": call.params["fields"], "limit": "100", "after": index + 1})
                body["paging"] = {"next": f"{self.base}/v25.0/me/accounts?{next_query}"}
            return httpx.Response(200, json=body)
        if call.method == "POST" and call.path.endswith("/subscribed_apps"):
            return httpx.Response(200, json={"success": True})
        error = {"message": "(#100) not scripted", "type": "OAuthException", "code": 100}
        return httpx.Response(400, json={"error": error})

    def paths(self) -> list[str]:
        return [f"{c.method} {c.path}" for c in self.calls]

    def depth(self) -> int:
        """Round trips on the critical path: the longest chain of calls each started after the last ended."""
        depths: list[int] = []
        for index, call in enumerate(self.calls):
            before = [depths[i] for i, c in enumerate(self.calls[:index]) if c.ended <= call.started]
            depths.append(1 + max(before, default=0))
        return max(depths, default=0)


@pytest.fixture
async def fake_meta(
    api_settings: Settings, database_url: str
) -> AsyncIterator[tuple[FakeMeta, InstagramService]]:
    """A FakeMeta and an InstagramService whose Graph client reaches it through MockTransport."""
    meta = FakeMeta(base=api_settings.graph_base_url.rstrip("/"))
    db = await AsyncpgDatabase.connect(database_url, max_size=3)
    async with httpx.AsyncClient(transport=httpx.MockTransport(meta)) as http:
        graph = GraphClient.from_settings(api_settings, http, retry=RetryPolicy.disabled())
        yield meta, InstagramService(db=db, graph=graph, settings=api_settings)
    await db.close()


async def connect_with(service: InstagramService) -> ConnectResult:
    start = await service.start_connection(user_id=DEMO_ADMIN, imo_id=DEMO_IMO)
    nonce = parse_qs(urlsplit(start.url).query)["state"][0]
    cookies = dict([start.binding_cookie]) if start.binding_cookie else {}
    return await service.complete_connection({"code": "AQfakecode", "state": nonce}, cookies)


async def test_pages_and_accounts_come_from_one_expanded_listing(
    fake_meta: tuple[FakeMeta, InstagramService], pg: asyncpg.Connection
) -> None:
    """/me/accounts is asked for the nested IG account and followed to the end; no per-Page lookup follows."""
    meta, service = fake_meta
    bare = {"id": "90002", "name": "Bare", "access_token": "EAASfakepage2"}
    tokenless = {"id": "90003", "name": "No token", "instagram_business_account": {"id": "178490003"}}
    meta.listing = [[linked_page(1), bare], [tokenless, linked_page(4)]]
    result = await connect_with(service)
    assert result.ok and len(result.integration_ids) == 2
    listings = [c for c in meta.calls if c.path == "/v25.0/me/accounts"]
    assert [c.params["fields"] for c in listings] == [LINKED_FIELDS, LINKED_FIELDS]
    assert [c.params.get("after") for c in listings] == [None, "1"]
    assert all(c.params["access_token"] == "EAASfakelong" for c in listings)
    assert sorted(p for p in meta.paths() if p.startswith("POST")) == [
        "POST /v25.0/90001/subscribed_apps",
        "POST /v25.0/90004/subscribed_apps",
    ]
    assert not [p for p in meta.paths() if p.startswith("GET /v25.0/9")]  # no Page lookups
    stored = await pg.fetch("select facebook_page_id from public.instagram_integrations order by 1")
    assert [r["facebook_page_id"] for r in stored] == ["90001", "90004"]


async def test_connect_is_four_round_trips_deep(fake_meta: tuple[FakeMeta, InstagramService]) -> None:
    """code, long-lived, debug_token alongside /me/accounts, then every subscribed_apps at once: depth 4."""
    meta, service = fake_meta
    meta.listing = [[linked_page(1), linked_page(2), linked_page(3)]]
    meta.delay = 0.03
    assert (await connect_with(service)).ok
    assert len(meta.calls) == 7
    assert meta.depth() == 4
    debug = next(c for c in meta.calls if c.path == "/v25.0/debug_token")
    listing = next(c for c in meta.calls if c.path == "/v25.0/me/accounts")
    assert debug.started < listing.ended and listing.started < debug.ended  # in flight together
    subscribes = [c for c in meta.calls if c.method == "POST"]
    assert max(c.started for c in subscribes) < min(c.ended for c in subscribes)


@pytest.mark.parametrize("slower", ["debug_token", "accounts"])
async def test_missing_scopes_outrank_a_refused_listing(
    fake_meta: tuple[FakeMeta, InstagramService], pg: asyncpg.Connection, slower: str
) -> None:
    """With scopes missing, a concurrent /me/accounts permission error still ends in missing_permissions."""
    meta, service = fake_meta
    meta.scopes = ["instagram_basic", "pages_manage_metadata", "pages_show_list"]
    meta.accounts_error = 200
    meta.delays = {slower: 0.1}
    result = await connect_with(service)
    assert (result.reason, result.missing_scopes) == ("missing_permissions", ("instagram_manage_messages",))
    assert await pg.fetchval(INTEGRATIONS) == 0


async def test_an_invalid_token_outranks_the_listings_error(
    fake_meta: tuple[FakeMeta, InstagramService],
) -> None:
    """debug_token saying is_valid false ends in oauth_failed even when /me/accounts is refused (200) first."""
    meta, service = fake_meta
    meta.valid, meta.accounts_error = False, 200
    meta.delays = {"debug_token": 0.1}
    assert (await connect_with(service)).reason == "oauth_failed"


async def test_a_refused_token_abandons_the_listing(fake_meta: tuple[FakeMeta, InstagramService]) -> None:
    """When debug_token shows missing scopes, the connect answers without waiting for a slow listing."""
    meta, service = fake_meta
    meta.scopes = ["pages_show_list"]
    meta.delays = {"accounts": 5.0}
    started = time.monotonic()
    assert (await connect_with(service)).reason == "missing_permissions"
    assert time.monotonic() - started < 2.0


async def test_callback_over_http_takes_four_round_trips_not_more(
    browser: Browser, pg: asyncpg.Connection
) -> None:
    """With the sandbox at 200 ms per Graph call, connecting two Pages takes 4 round trips (< 5 x 200 ms)."""
    init = browser.init()
    url = browser.dialog(init.json()["url"], fb_user=fb.BOB)
    browser.sandbox.latency(r"^/v25\.0/(?!dialog)", 200)
    started = time.perf_counter()
    result = browser.callback(url)
    elapsed = time.perf_counter() - started
    assert result.query["instagram"] == ["connected"] and len(result.query["integration_id"]) == 2
    assert 0.8 <= elapsed < 1.0, f"{elapsed * 1000:.0f} ms"
    calls = browser.sandbox.state()["calls"]
    assert "GET /{id}" not in calls and calls["GET /me/accounts"] == 1
    assert calls["POST /{id}/subscribed_apps"] == 2


@pytest.mark.parametrize("mode", ["approve", "deny"])
async def test_a_database_that_is_away_lands_the_browser_on_the_app_not_json(
    api_settings: Settings, sandbox: Any, pg: asyncpg.Connection, database_url: str, mode: str
) -> None:
    """The callback while the state table cannot be reached (locked past the lock timeout): the person lands
    on the app with reason=temporarily_unavailable — also after declining at Meta — never on raw JSON."""
    from api.app import create_app
    from tests.fixtures.api import FAST_RETRY

    await pg.execute("alter role postgres set lock_timeout = '300ms'")  # the app's new sessions give up soon
    try:
        with TestClient(
            create_app(api_settings, graph_retry=FAST_RETRY), base_url="http://testserver"
        ) as client:
            browser = Browser(client, sandbox)
            init = browser.init()
            assert init.status_code == 200, init.text
            callback = browser.dialog(init.json()["url"], fb_user=fb.ALICE, mode=mode)
            blocker = await asyncpg.connect(database_url)
            try:
                async with blocker.transaction():
                    await blocker.execute("lock table public.instagram_oauth_states in access exclusive mode")
                    result = await asyncio.to_thread(browser.callback, callback)
            finally:
                await blocker.close()
                browser.http.close()
    finally:
        await pg.execute("alter role postgres reset lock_timeout")
    assert result.response.status_code == 302
    assert result.location.startswith(RETURN_URL + "?")
    assert result.query["instagram"] == ["error"] and result.query["reason"] == ["temporarily_unavailable"]
