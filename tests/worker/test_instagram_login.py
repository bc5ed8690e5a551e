"""The Instagram Login provider after the connect: the worker refreshes, receives and sends for an
integration connected through it (against the sandbox's Instagram hosts over real HTTP), choosing by the
integration's provider; deliveries signed by the other app do not reach it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from api.app import create_app
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient, InstagramLoginClient
from instagram_dm.settings import Settings
from sandbox import fixtures as fb
from tests.db.factories import DEMO_IMO, DEMO_MEMBER
from tests.fixtures.api import FAST_RETRY, acting_user, settings_env, user_token
from tests.fixtures.instagram_login import instagram_login_env
from tests.fixtures.servers import serve_in_thread
from tests.worker.conftest import FAST_BACKOFF, KEY, all_finished, make_worker, run_until
from worker.kinds.refresh import FacebookLoginRefresher, RefreshKind, refresh_rules
from worker.kinds.send import SendKind
from worker.kinds.webhooks import WebhookKind

ALICE_IG = fb.ig_id(1, 1)
REFRESH_CALL = "GET ig-graph /refresh_access_token"


@dataclass(frozen=True)
class Api:
    url: str
    settings: Settings


@pytest.fixture
def ig_api(sandbox: Any, database_url: str, pg: Any) -> Iterator[Api]:
    """The API offering both providers on a real port; the sandbox delivers its webhooks (and echoes) to it."""
    env = settings_env(
        sandbox.url, database_url, INSTAGRAM_TOKEN_ENCRYPTION_KEY=KEY, **instagram_login_env(sandbox.url)
    )
    settings = Settings.from_environ(env, env_file=None)
    with serve_in_thread(create_app(settings, graph_retry=FAST_RETRY), lifespan="on") as url:
        sandbox.configure(webhook_url=f"{url}/functions/v1/instagram-webhook", echo_delay_ms=50)
        yield Api(url, settings)


def connect_through_instagram(api: Api, sandbox: Any) -> str:
    """Init with provider instagram_login, Instagram's dialog (scripted: Alice), the callback, as a browser
    (the binding cookie kept between init and callback)."""
    with httpx.Client(base_url=api.url, timeout=10.0) as browser:
        init = browser.post(
            "/functions/v1/instagram-oauth-init",
            json={"imo_id": DEMO_IMO, "provider": "instagram_login"},
            headers={"Authorization": f"Bearer {user_token()}"},
        )
        assert init.status_code == 200, init.text
        sandbox.dialog("approve", user_id=fb.ALICE)
        dialog = httpx.get(init.json()["url"], follow_redirects=False, timeout=10.0)
        target = urlsplit(dialog.headers["location"])
        done = browser.get(f"/functions/v1/instagram-oauth-callback?{target.query}", follow_redirects=False)
    query = parse_qs(urlsplit(done.headers["location"]).query)
    assert query["instagram"] == ["connected"], done.headers["location"]
    return query["integration_id"][0]


@pytest.fixture
def connected(ig_api: Api, sandbox: Any) -> str:
    """Alice's Instagram account connected to the demo IMO through Instagram Login; its integration id."""
    return connect_through_instagram(ig_api, sandbox)


@pytest.fixture
async def ig(sandbox: Any, ig_api: Api) -> AsyncIterator[InstagramLoginClient]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        client = InstagramLoginClient.from_settings(ig_api.settings, http, retry=FAST_RETRY)
        assert client is not None
        yield client


def refresh_kind(db: AsyncpgDatabase, graph: GraphClient, ig: InstagramLoginClient) -> RefreshKind:
    refresher = FacebookLoginRefresher(db, graph, key=KEY, instagram_login=ig)
    return RefreshKind(refresher, key=KEY, rules=replace(refresh_rules(FAST_BACKOFF), margin=0.0))


async def refresh_once(db: AsyncpgDatabase, graph: GraphClient, ig: InstagramLoginClient, pg: asyncpg.Connection,
                       integration_id: str) -> None:  # fmt: skip
    await rpc.refresh_enqueue_one(db, integration_id=integration_id)
    await run_until([make_worker(db, graph, kinds=[refresh_kind(db, graph, ig)])], all_finished(pg, 1))


async def integration(pg: asyncpg.Connection, integration_id: str) -> asyncpg.Record:
    row = await pg.fetchrow("select * from public.instagram_integrations where id = $1", integration_id)
    assert row is not None
    return row


# ---- refresh --------------------------------------------------------------------------------------


async def test_a_token_under_a_day_old_is_not_refreshed_and_meta_is_not_called(  # noqa: PLR0917 - fixtures
    connected: str, sandbox: Any, db: AsyncpgDatabase, graph: GraphClient, ig: InstagramLoginClient,
    pg: asyncpg.Connection,
) -> None:  # fmt: skip
    """Just connected (token issued now): the refresh job completes without a call to Meta, token unchanged."""
    before = await integration(pg, connected)
    await refresh_once(db, graph, ig, pg, connected)
    after = await integration(pg, connected)
    assert REFRESH_CALL not in sandbox.state()["calls"]
    assert after["user_access_token_encrypted"] == before["user_access_token_encrypted"]
    assert (after["status"], after["token_expires_at"]) == ("connected", before["token_expires_at"])
    assert await pg.fetchval("select state from public.instagram_refresh_jobs") == "completed"


async def test_a_token_over_a_day_old_is_refreshed_with_ig_refresh_token(  # noqa: PLR0917 - fixtures
    connected: str, sandbox: Any, db: AsyncpgDatabase, graph: GraphClient, ig: InstagramLoginClient,
    pg: asyncpg.Connection,
) -> None:  # fmt: skip
    """Two days after the connect: ig_refresh_token once, a new token stored as both user and messaging
    token, the expiry pushed two days later."""
    sandbox.advance_clock(2 * 86_400)
    await pg.execute(
        "update public.instagram_integrations set last_refreshed_at = now() - interval '2 days', "
        "token_expires_at = token_expires_at - interval '2 days' where id = $1",
        connected,
    )
    before = await integration(pg, connected)
    await refresh_once(db, graph, ig, pg, connected)
    after = await integration(pg, connected)
    assert sandbox.state()["calls"][REFRESH_CALL] == 1
    assert sandbox.state()["ig_refreshes"] == {ALICE_IG: 1}
    assert after["user_access_token_encrypted"] != before["user_access_token_encrypted"]
    assert after["token_expires_at"] > before["token_expires_at"]
    tokens = await rpc.integration_tokens(db, integration_id=connected, key=KEY)
    assert tokens.user_token == tokens.page_token and tokens.user_token is not None
    assert tokens.user_token.startswith("IGAA") and tokens.provider == "instagram_login"


async def test_an_expired_token_asks_for_reauth_without_calling_meta(  # noqa: PLR0917 - fixtures
    connected: str, sandbox: Any, db: AsyncpgDatabase, graph: GraphClient, ig: InstagramLoginClient,
    pg: asyncpg.Connection,
) -> None:  # fmt: skip
    """Expired before it was refreshed: reauth_required (with a notification), the job discarded, no call."""
    await pg.execute(
        "update public.instagram_integrations set token_expires_at = now() - interval '1 hour', "
        "last_refreshed_at = now() - interval '61 days' where id = $1",
        connected,
    )
    await refresh_once(db, graph, ig, pg, connected)
    row = await integration(pg, connected)
    assert row["status"] == "reauth_required"
    assert REFRESH_CALL not in sandbox.state()["calls"]
    assert await pg.fetchval("select state from public.instagram_refresh_jobs") == "discarded"
    assert (
        await pg.fetchval(
            "select count(*) from public.notifications where data ->> 'integration_id' = $1", connected
        )
        == 1
    )


# ---- receive --------------------------------------------------------------------------------------


async def process_webhooks(db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection) -> None:
    async def idle() -> bool:
        return not await pg.fetchval(
            "select count(*) from public.instagram_webhook_events where state in ('available', 'running', 'retryable')"
        )

    await run_until([make_worker(db, graph, kinds=[WebhookKind(backoff=FAST_BACKOFF)])], idle)


async def test_a_dm_signed_by_the_instagram_app_reaches_the_instagram_login_integration(
    connected: str, sandbox: Any, db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """The sandbox signs a DM with the Instagram app's secret: stored as instagram_login, processed into a
    conversation and a message of the Instagram Login integration."""
    sent = sandbox.control(
        "POST", "webhooks/send", {"account_id": ALICE_IG, "kind": "message", "text": "hi!"}
    )
    assert sent["statuses"] == [200] or sent.get("delivered", 1) >= 1, sent
    await process_webhooks(db, graph, pg)
    event = await pg.fetchrow("select provider::text, state from public.instagram_webhook_events")
    assert (event["provider"], event["state"]) == ("instagram_login", "completed")
    conversation = await pg.fetchrow(
        "select integration_id, last_message_preview from public.instagram_conversations"
    )
    assert str(conversation["integration_id"]) == connected
    assert (
        await pg.fetchval("select text from public.instagram_messages where direction = 'inbound'") == "hi!"
    )


async def test_a_dm_signed_by_the_meta_app_does_not_reach_an_instagram_login_integration(
    connected: str, sandbox: Any, db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """The same account's delivery signed by the Meta app (Facebook Login's) is stored but unroutable: no
    Facebook Login integration has the account, and the Instagram Login one is not its app's."""
    sandbox.control(
        "POST",
        "webhooks/send",
        {"account_id": ALICE_IG, "kind": "message", "text": "hi", "app": "facebook_login"},
    )
    await process_webhooks(db, graph, pg)
    event = await pg.fetchrow("select provider::text, state from public.instagram_webhook_events")
    assert (event["provider"], event["state"]) == ("facebook_login", "unroutable")
    assert await pg.fetchval("select count(*) from public.instagram_conversations") == 0


# ---- send -----------------------------------------------------------------------------------------


async def test_a_reply_goes_out_on_graph_instagram_com_once(  # noqa: PLR0917 - fixtures
    connected: str, sandbox: Any, db: AsyncpgDatabase, graph: GraphClient, ig: InstagramLoginClient,
    pg: asyncpg.Connection,
) -> None:  # fmt: skip
    """A member's reply from an Instagram Login integration: sent once through graph.instagram.com (Bearer),
    Meta's mid stored, and its echo (signed by the Instagram app) adds no second row."""
    igsid = "7700000000000421"
    sandbox.control("POST", "people", {"igsid": igsid, "last_message_at": "now", "account_id": ALICE_IG})
    conversation = await pg.fetchval(
        """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid, last_inbound_at)
           values ($1, $2, $3, now()) returning id::text""",
        connected,
        DEMO_IMO,
        igsid,
    )
    await db.rpc("instagram_settings_apply_v1", {"p_settings": {"echo_wait_seconds": 1}})
    await rpc.send_message(
        db, acting_user(DEMO_MEMBER), conversation_id=conversation, text="Hello from IG Login"
    )

    async def settled() -> bool:
        busy = await pg.fetchval(
            """select (select count(*) from public.instagram_send_jobs
                       where state in ('available', 'running', 'retryable'))
                    + (select count(*) from public.instagram_webhook_events where state in ('available', 'running'))"""
        )
        messages = sandbox.control("GET", "messages")["messages"]
        return busy == 0 and bool(messages) and all(m["echo"] != "pending" for m in messages)

    kinds = [
        SendKind(db, graph, key=KEY, backoff=FAST_BACKOFF, instagram_login=ig),
        WebhookKind(backoff=FAST_BACKOFF),
    ]
    await run_until([make_worker(db, graph, kinds=kinds)], settled, timeout=20)
    [copy] = sandbox.control("GET", "messages")["messages"]
    assert (copy["provider"], copy["account_id"], copy["echo"]) == ("instagram_login", ALICE_IG, "delivered")
    assert sandbox.state()["calls"]["POST ig-graph /{id}/messages"] == 1
    rows = await pg.fetch("select status::text as status, meta_message_id from public.instagram_messages "
                          "where direction = 'outbound'")  # fmt: skip
    assert [(r["status"], r["meta_message_id"]) for r in rows] == [("sent", copy["mid"])]
