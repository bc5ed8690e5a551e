"""The development inbox over real HTTP, as `make run` wires it: "receive a DM" has the sandbox sign and
POST a webhook to the API; the worker processes it; the inbox page's data shows the new conversation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from instagram_dm.settings import Settings
from tests.fixtures.api import FAST_RETRY, settings_env
from tests.fixtures.servers import serve_in_thread
from tests.worker.conftest import FAST_BACKOFF, KEY, create_integrations, make_worker, run_until
from tests.worker.test_webhooks import all_kinds, leads_settled
from worker.kinds.send import SendKind


@pytest.fixture
def dev_api(sandbox: Any, database_url: str, pg: Any) -> Iterator[str]:
    """The API in development mode on a real port; the sandbox sends its webhooks there."""
    env = settings_env(
        sandbox.url, database_url, INSTAGRAM_DM_ENV="development", INSTAGRAM_TOKEN_ENCRYPTION_KEY=KEY
    )
    app = create_app(Settings.from_environ(env, env_file=None), graph_retry=FAST_RETRY)
    with serve_in_thread(app, lifespan="on") as url:
        sandbox.configure(webhook_url=f"{url}/functions/v1/instagram-webhook")
        yield url


async def test_receive_a_dm_shows_up_in_the_dev_inbox(
    dev_api: str, sandbox: Any, pg: asyncpg.Connection, db: AsyncpgDatabase, graph_client: GraphClient
) -> None:
    """The button's call makes the sandbox deliver a signed DM; after processing the inbox lists it with a lead."""
    await create_integrations(pg, sandbox, 1)
    async with httpx.AsyncClient(base_url=dev_api, timeout=10) as http:
        page = await http.get("/dev/inbox")
        assert page.status_code == 200 and "Receive a DM" in page.text
        sent = await http.post("/dev/receive", json={"text": "Grüße aus dem Sandbox 😀"})
        assert sent.status_code == 200, sent.text
        assert sent.json()["statuses"] == [200]
        await run_until(
            [make_worker(db, graph_client, kinds=all_kinds(db, graph_client))], leads_settled(pg), timeout=20
        )
        data = (await http.get("/dev/inbox/data")).json()
    [conversation] = data["conversations"]
    assert conversation["last_message_preview"] == "Grüße aus dem Sandbox 😀"
    assert conversation["recruiting_lead_id"] is not None
    assert [m["text"] for m in data["messages"]] == ["Grüße aus dem Sandbox 😀"]


async def test_receive_a_dm_without_a_connected_account_says_so(dev_api: str) -> None:
    """With nothing connected the button's call is a readable 400, not a sandbox error."""
    async with httpx.AsyncClient(base_url=dev_api, timeout=10) as http:
        response = await http.post("/dev/receive", json={})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_connected"


async def test_root_points_to_the_dev_page_in_development(dev_api: str) -> None:
    """In development / redirects to /dev, where a newcomer starts."""
    async with httpx.AsyncClient(base_url=dev_api, timeout=10) as http:
        response = await http.get("/", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "/dev"


async def test_reply_goes_queued_sent_read_on_the_dev_inbox(
    dev_api: str, sandbox: Any, pg: asyncpg.Connection, db: AsyncpgDatabase, graph_client: GraphClient
) -> None:
    """Reply sends through the send RPC and the worker (one copy at the sandbox); "prospect reads" makes it read."""
    await create_integrations(pg, sandbox, 1)
    kinds = [*all_kinds(db, graph_client), SendKind(db, graph_client, key=KEY, backoff=FAST_BACKOFF)]

    async def status() -> str | None:
        return await pg.fetchval(
            "select status::text from public.instagram_messages where direction = 'outbound'"
        )

    async def is_(wanted: str) -> Any:
        async def check() -> bool:
            return await status() == wanted

        return check

    async with httpx.AsyncClient(base_url=dev_api, timeout=10) as http:
        assert (await http.post("/dev/receive", json={"text": "Hi"})).status_code == 200
        await run_until([make_worker(db, graph_client, kinds=kinds)], leads_settled(pg), timeout=20)
        queued = await http.post("/dev/reply", json={"text": "Thanks! Yes, 3 pm works."})
        assert queued.status_code == 200 and queued.json()["status"] == "queued"
        await run_until([make_worker(db, graph_client, kinds=kinds)], await is_("sent"), timeout=20)
        assert (await http.post("/dev/read", json={})).status_code == 200
        await run_until([make_worker(db, graph_client, kinds=kinds)], await is_("read"), timeout=20)
        data = (await http.get("/dev/inbox/data")).json()
    assert [(m["direction"], m["status"]) for m in data["messages"]] == [
        ("outbound", "read"),
        ("inbound", "sent"),
    ]
    assert sandbox.control("GET", "messages")["count"] == 1


async def test_dev_retry_of_a_bad_id_is_a_readable_400(dev_api: str) -> None:
    """Retry with something that is not a message id answers 400 invalid_message_id."""
    async with httpx.AsyncClient(base_url=dev_api, timeout=10) as http:
        response = await http.post("/dev/retry", json={"message_id": "nope"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_message_id"
