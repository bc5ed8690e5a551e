"""The Instagram Login provider through the API: init with ``{"provider": "instagram_login"}``, the sandbox's
Instagram dialog, the callback's four round trips, storage without a Page; the state, the browser binding
and the one-provider-per-account rule; and webhook deliveries signed by either app's secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import asyncpg
from starlette.testclient import TestClient

from instagram_dm.settings import Settings
from sandbox import fixtures as fb
from tests.fixtures.api import Browser, user_token
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO
from tests.fixtures.instagram_login import IG_APP_SECRET

IG = {"provider": "instagram_login"}
ALICE_IG = fb.ig_id(1, 1)
WEBHOOK = "/functions/v1/instagram-webhook"


async def rows(pg: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(
        await pg.fetch(
            "select *, provider::text as provider_name from public.instagram_integrations "
            "order by instagram_business_account_id"
        )
    )


def ig_calls(browser: Browser) -> dict[str, int]:
    return {k: v for k, v in browser.sandbox.state()["calls"].items() if " ig-" in k}


async def test_instagram_login_connects_an_account_without_a_page(
    ig_browser: Browser, pg: asyncpg.Connection
) -> None:
    """Instagram Login end to end: Instagram's dialog, then one connected integration with no Page, its
    Instagram User token stored, its webhooks subscribed on the account, the provider recorded."""
    init = ig_browser.init(**IG)
    assert init.status_code == 200, init.text
    url = urlsplit(init.json()["url"])
    assert url.path == "/instagram/www/oauth/authorize" and init.json()["provider"] == "instagram_login"
    query = parse_qs(url.query)
    assert query["scope"] == ["instagram_business_basic,instagram_business_manage_messages"]
    assert "code_challenge" not in query  # no PKCE on the Instagram dialog (see the README)
    result = ig_browser.callback(ig_browser.dialog(init.json()["url"], fb_user=fb.ALICE))
    assert result.query["instagram"] == ["connected"], result.location
    [row] = await rows(pg)
    assert (row["provider_name"], row["facebook_page_id"], row["instagram_business_account_id"]) == (
        "instagram_login",
        None,
        ALICE_IG,
    )
    assert (row["status"], row["instagram_username"], row["webhook_subscribed"]) == (
        "connected",
        "alice.recruits",
        True,
    )
    assert set(row["granted_scopes"]) == {"instagram_business_basic", "instagram_business_manage_messages"}
    state = ig_browser.sandbox.state()
    assert state["calls"]["POST ig-api /oauth/access_token"] == 1
    assert state["calls"]["GET ig-graph /access_token"] == 1
    assert state["tokens_issued"] == {"ig_short": 1, "ig_long": 1}
    status = ig_browser.client.get("/dev/status")  # not mounted in production: status via the RPC below
    assert status.status_code == 404
    provider = await pg.fetchval(
        "select instagram_private.integration_status_json($1::uuid) -> 0 ->> 'provider'", DEMO_IMO
    )
    assert provider == "instagram_login"


async def test_the_older_flat_token_answer_connects_too(ig_browser: Browser, pg: asyncpg.Connection) -> None:
    """api.instagram.com's flat answer ({access_token, user_id, permissions[]}) is read like the data one."""
    ig_browser.sandbox.configure(ig_token_shape="flat")
    result = ig_browser.connect(fb.ALICE, **IG)
    assert result.query["instagram"] == ["connected"], result.location
    assert [r["provider_name"] for r in await rows(pg)] == ["instagram_login"]


async def test_facebook_login_stays_the_default_beside_instagram_login(
    ig_browser: Browser, pg: asyncpg.Connection
) -> None:
    """Both providers in one IMO: Bob's two accounts through Facebook Login (no provider given) and Alice's
    through Instagram Login live side by side, each row with its own provider."""
    assert ig_browser.connect(fb.BOB).query["instagram"] == ["connected"]
    assert ig_browser.connect(fb.ALICE, **IG).query["instagram"] == ["connected"]
    found = {
        (r["instagram_username"], r["provider_name"], r["facebook_page_id"] is None) for r in await rows(pg)
    }
    assert found == {
        ("alice.recruits", "instagram_login", True),
        ("bob.life", "facebook_login", False),
        ("bob.health", "facebook_login", False),
    }


async def test_one_account_through_both_providers_in_one_imo_is_refused(
    ig_browser: Browser, pg: asyncpg.Connection
) -> None:
    """Alice's account connected through Facebook Login, then again through Instagram Login: refused with
    connected_through_other_provider, the Facebook Login row untouched; disconnected, it may switch."""
    assert ig_browser.connect(fb.ALICE).query["instagram"] == ["connected"]
    [before] = await rows(pg)
    refused = ig_browser.connect(fb.ALICE, **IG)
    assert refused.query == {"instagram": ["error"], "reason": ["connected_through_other_provider"]}
    [after] = await rows(pg)
    assert (after["provider_name"], after["facebook_page_id"]) == (
        "facebook_login",
        before["facebook_page_id"],
    )
    assert after["user_access_token_encrypted"] == before["user_access_token_encrypted"]
    await pg.execute("update public.instagram_integrations set status = 'disconnected'")
    assert ig_browser.connect(fb.ALICE, **IG).query["instagram"] == ["connected"]
    [switched] = await rows(pg)
    assert (switched["id"], switched["provider_name"], switched["facebook_page_id"]) == (
        before["id"],
        "instagram_login",
        None,
    )


async def test_init_for_instagram_login_without_its_settings_is_400(browser: Browser) -> None:
    """Without INSTAGRAM_LOGIN_APP_ID / _SECRET the provider is not offered: 400 provider_not_configured."""
    response = browser.init(**IG)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "provider_not_configured"
    assert "access_token" not in response.text


def test_init_with_an_unknown_provider_is_400(ig_browser: Browser) -> None:
    """A provider that is neither facebook_login nor instagram_login is 400 invalid_provider."""
    for bad in ("twitter_login", 7, ["instagram_login"]):
        response = ig_browser.init(provider=bad)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_provider"


async def test_instagram_login_state_is_single_use(ig_browser: Browser, pg: asyncpg.Connection) -> None:
    """The Instagram callback replayed: invalid_state, and the code is not exchanged a second time."""
    init = ig_browser.init(**IG)
    callback = ig_browser.dialog(init.json()["url"], fb_user=fb.ALICE)
    assert ig_browser.callback(callback).query["instagram"] == ["connected"]
    assert ig_browser.callback(callback).query["reason"] == ["invalid_state"]
    assert ig_calls(ig_browser)["POST ig-api /oauth/access_token"] == 1
    assert len(await rows(pg)) == 1


async def test_instagram_login_callback_from_another_browser_is_refused(
    ig_browser: Browser, pg: asyncpg.Connection
) -> None:
    """The browser binding applies to Instagram Login: another browser gets session_mismatch, before any
    call to api.instagram.com."""
    init = ig_browser.init(**IG)
    callback = ig_browser.dialog(init.json()["url"], fb_user=fb.ALICE)
    with TestClient(ig_browser.client.app, base_url="http://testserver") as other:
        answer = other.get(callback, follow_redirects=False)
    assert parse_qs(urlsplit(answer.headers["location"]).query)["reason"] == ["session_mismatch"]
    assert "POST ig-api /oauth/access_token" not in ig_calls(ig_browser)
    assert await rows(pg) == []


async def test_a_tampered_instagram_state_is_refused(ig_browser: Browser, pg: asyncpg.Connection) -> None:
    """A state changed by one character: the 400 page, nothing exchanged or stored."""
    init = ig_browser.init(**IG)
    callback = ig_browser.dialog(init.json()["url"], fb_user=fb.ALICE)
    query = parse_qs(urlsplit(callback).query)
    state = query["state"][0]
    tampered = callback.replace(state, ("A" if state[0] != "A" else "B") + state[1:])
    assert ig_browser.client.get(tampered, follow_redirects=False).status_code == 400
    assert "POST ig-api /oauth/access_token" not in ig_calls(ig_browser)
    assert await rows(pg) == []


async def test_instagram_login_denial_and_missing_permission(
    ig_browser: Browser, pg: asyncpg.Connection
) -> None:
    """Declined at Instagram: user_denied; a declined messaging permission: missing_permissions; no rows."""
    assert ig_browser.connect(fb.ALICE, mode="deny", **IG).query["reason"] == ["user_denied"]
    frank = ig_browser.connect(fb.FRANK, **IG)  # Frank declines instagram_manage_messages; Instagram's twin:
    assert frank.query["instagram"] == ["connected"]  # not declined at Instagram (another app)
    await pg.execute("delete from public.instagram_integrations")
    init = ig_browser.init(**IG)
    ig_browser.sandbox.dialog(
        "approve", user_id=fb.ALICE, declined_scopes=["instagram_business_manage_messages"]
    )
    response = ig_browser.http.get(init.json()["url"], follow_redirects=False)
    target = urlsplit(response.headers["location"])
    result = ig_browser.callback(f"{target.path}?{target.query}")
    assert result.query["reason"] == ["missing_permissions"]
    assert result.query["missing"] == ["instagram_business_manage_messages"]
    assert await rows(pg) == []


async def test_instagram_code_refused_by_meta_is_oauth_failed(
    ig_browser: Browser, pg: asyncpg.Connection
) -> None:
    """api.instagram.com's flat error (error_type, error_message) for a bad code: oauth_failed, nothing stored."""
    init = ig_browser.init(**IG)
    callback = ig_browser.dialog(init.json()["url"], fb_user=fb.ALICE)
    query = parse_qs(urlsplit(callback).query)
    forged = f"{urlsplit(callback).path}?code=AQforged&state={query['state'][0]}"
    assert ig_browser.callback(forged).query["reason"] == ["oauth_failed"]
    assert await rows(pg) == []


# ---- webhook deliveries signed by either app ------------------------------------------------------


def _signed(body: bytes, secret: str) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


async def test_webhook_accepts_either_apps_signature_and_records_which(
    ig_browser: Browser, pg: asyncpg.Connection
) -> None:
    """A delivery signed by the Instagram app is stored as instagram_login, one by the Meta app as
    facebook_login; a third secret is 401 and nothing is stored."""
    body_ig = json.dumps({"object": "instagram", "entry": [], "n": 1}).encode()
    body_fb = json.dumps({"object": "instagram", "entry": [], "n": 2}).encode()
    client = ig_browser.client
    assert client.post(WEBHOOK, content=body_ig, headers=_signed(body_ig, IG_APP_SECRET)).status_code == 200
    assert (
        client.post(WEBHOOK, content=body_fb, headers=_signed(body_fb, "sandbox-app-secret")).status_code
        == 200
    )
    wrong = client.post(WEBHOOK, content=b'{"n":3}', headers=_signed(b'{"n":3}', "someone-elses-secret"))
    assert wrong.status_code == 401
    stored = await pg.fetch(
        "select convert_from(body, 'UTF8')::jsonb ->> 'n' as n, provider::text from public.instagram_webhook_events "
        "order by id"
    )
    assert [(r["n"], r["provider"]) for r in stored] == [("1", "instagram_login"), ("2", "facebook_login")]


async def test_webhook_without_instagram_login_refuses_its_signature(
    browser: Browser, pg: asyncpg.Connection
) -> None:
    """Instagram Login not configured: a delivery signed with the Instagram app's secret is 401."""
    body = b'{"object":"instagram","entry":[]}'
    response = browser.client.post(WEBHOOK, content=body, headers=_signed(body, IG_APP_SECRET))
    assert response.status_code == 401
    assert await pg.fetchval("select count(*) from public.instagram_webhook_events") == 0


def test_init_still_needs_an_admin(ig_browser: Browser) -> None:
    """Choosing Instagram Login changes nothing about who may connect: a member gets 403."""
    response = ig_browser.client.post(
        "/functions/v1/instagram-oauth-init",
        json={"imo_id": DEMO_IMO, **IG},
        headers={"Authorization": f"Bearer {user_token('00000000-0000-4000-8000-0000000000b2')}"},
    )
    assert response.status_code == 403
    assert uuid.UUID(DEMO_ADMIN)  # the admin fixture user is the one the other tests connect as


def test_the_dev_page_offers_instagram_login_only_when_configured(
    ig_settings: Settings, api_settings: Settings
) -> None:
    """The Messages page's data offers Instagram Login (its second Connect button) when INSTAGRAM_LOGIN_* is
    set, and only then."""
    from dataclasses import replace

    from api.app import create_app

    for settings, offered in ((ig_settings, True), (api_settings, False)):
        with TestClient(create_app(replace(settings, environment="development")), base_url="http://t") as dev:
            assert dev.post("/dev/session", json={"user": "admin"}).status_code == 200
            providers = dev.get("/dev/api/inbox").json()["providers"]
        assert "facebook_login" in providers
        assert ("instagram_login" in providers) is offered
