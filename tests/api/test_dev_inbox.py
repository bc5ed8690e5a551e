"""The development Messages page's routes over real HTTP, as `make run` wires them: a demo sign-in cookie,
the JSON the page polls and its actions (all app-facing RPCs as the signed-in user), and the sandbox panel
(the sandbox signs and POSTs webhooks to the API; the worker processes them)."""

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


def signed_in(url: str, user: str = "admin") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=10, cookies={"ig_dev_user": user})


async def test_receive_a_dm_shows_up_in_the_inbox_data(
    dev_api: str, sandbox: Any, pg: asyncpg.Connection, db: AsyncpgDatabase, graph_client: GraphClient
) -> None:
    """The panel's DM makes the sandbox deliver a signed webhook; after processing the inbox lists it with a lead."""
    await create_integrations(pg, sandbox, 1)
    async with signed_in(dev_api) as http:
        sent = await http.post("/dev/sandbox/dm", json={"text": "Grüße aus dem Sandbox 😀"})
        assert sent.status_code == 200, sent.text
        assert sent.json()["statuses"] == [200]
        await run_until(
            [make_worker(db, graph_client, kinds=all_kinds(db, graph_client))], leads_settled(pg), timeout=20
        )
        [conversation] = (await http.get("/dev/api/inbox")).json()["conversations"]
        data = (await http.get(f"/dev/api/inbox?conversation_id={conversation['id']}")).json()
    assert conversation["last_message_preview"] == "Grüße aus dem Sandbox 😀"
    assert conversation["recruiting_lead_id"] is not None and conversation["unread_count"] == 1
    assert [m["text"] for m in data["messages"]] == ["Grüße aus dem Sandbox 😀"]
    assert data["access"]["is_admin"] is True


async def test_an_image_dm_carries_a_picture_the_sandbox_serves(
    dev_api: str, sandbox: Any, pg: asyncpg.Connection, db: AsyncpgDatabase, graph_client: GraphClient
) -> None:
    """An image DM's attachment URL is on the sandbox's CDN, which answers a PNG while it lasts."""
    await create_integrations(pg, sandbox, 1)
    async with signed_in(dev_api) as http:
        assert (await http.post("/dev/sandbox/dm", json={"kind": "image"})).status_code == 200
        await run_until(
            [make_worker(db, graph_client, kinds=all_kinds(db, graph_client))], leads_settled(pg), timeout=20
        )
        [conversation] = (await http.get("/dev/api/inbox")).json()["conversations"]
        [message] = (await http.get(f"/dev/api/inbox?conversation_id={conversation['id']}")).json()[
            "messages"
        ]
        [attachment] = message["attachments"]
        picture = await http.get(attachment["payload"]["url"])
    assert attachment["type"] == "image"
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")


async def test_without_a_connected_account_the_dm_button_says_so(dev_api: str) -> None:
    """With nothing connected the panel's DM is a readable 400, not a sandbox error."""
    async with signed_in(dev_api) as http:
        response = await http.post("/dev/sandbox/dm", json={})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_connected"


async def test_root_points_to_the_dev_page_in_development(dev_api: str) -> None:
    """In development / redirects to /dev, where a newcomer starts."""
    async with httpx.AsyncClient(base_url=dev_api, timeout=10) as http:
        response = await http.get("/", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "/dev"


async def test_reply_goes_queued_sent_read(
    dev_api: str, sandbox: Any, pg: asyncpg.Connection, db: AsyncpgDatabase, graph_client: GraphClient
) -> None:
    """A reply goes through the send RPC and the worker (one copy at the sandbox); "prospect reads" makes it read."""
    await create_integrations(pg, sandbox, 1)
    kinds = [*all_kinds(db, graph_client), SendKind(db, graph_client, key=KEY, backoff=FAST_BACKOFF)]

    def is_(wanted: str) -> Any:
        async def check() -> bool:
            status = await pg.fetchval(
                "select status::text from public.instagram_messages where direction = 'outbound'"
            )
            return bool(status == wanted)

        return check

    async with signed_in(dev_api) as http:
        assert (await http.post("/dev/sandbox/dm", json={"text": "Hi"})).status_code == 200
        await run_until([make_worker(db, graph_client, kinds=kinds)], leads_settled(pg), timeout=20)
        [conversation] = (await http.get("/dev/api/inbox")).json()["conversations"]
        queued = await http.post(
            "/dev/api/send", json={"conversation_id": conversation["id"], "text": "Thanks! Yes, 3 pm works."}
        )
        assert queued.status_code == 200 and queued.json()["status"] == "queued"
        await run_until([make_worker(db, graph_client, kinds=kinds)], is_("sent"), timeout=20)
        read = await http.post("/dev/sandbox/read", json={"conversation_id": conversation["id"]})
        assert read.status_code == 200, read.text
        await run_until([make_worker(db, graph_client, kinds=kinds)], is_("read"), timeout=20)
        data = (await http.get(f"/dev/api/inbox?conversation_id={conversation['id']}")).json()
    assert [(m["direction"], m["status"]) for m in data["messages"]] == [
        ("outbound", "read"),
        ("inbound", "sent"),
    ]
    assert sandbox.control("GET", "messages")["count"] == 1


async def test_retry_of_a_bad_id_is_a_readable_400(dev_api: str) -> None:
    """Retry with something that is not a message id answers 400 invalid_message_id."""
    async with signed_in(dev_api) as http:
        response = await http.post("/dev/api/retry", json={"message_id": "nope"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_message_id"


@pytest.mark.parametrize("cookie", [None, "root", "service_role"])
async def test_without_a_demo_user_nothing_is_answered(dev_api: str, cookie: str | None) -> None:
    """No cookie, or one naming no demo user, is 401 not_signed_in on the data routes; /dev/session lists who
    may sign in."""
    cookies = {"ig_dev_user": cookie} if cookie else {}
    async with httpx.AsyncClient(base_url=dev_api, timeout=10, cookies=cookies) as http:
        inbox = await http.get("/dev/api/inbox")
        session = await http.get("/dev/session")
    assert inbox.status_code == 401 and inbox.json()["error"]["code"] == "not_signed_in"
    assert session.status_code == 200 and session.json()["user"] is None
    assert [u["key"] for u in session.json()["users"]] == ["admin", "member", "starter"]


async def test_signing_in_sets_the_cookie_and_refuses_unknown_users(dev_api: str) -> None:
    """POST /dev/session names a demo user in an HttpOnly cookie; an unknown name is a 400."""
    async with httpx.AsyncClient(base_url=dev_api, timeout=10) as http:
        refused = await http.post("/dev/session", json={"user": "mallory"})
        accepted = await http.post("/dev/session", json={"user": "member"})
        me = (await http.get("/dev/session")).json()["user"]
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_demo_user"
    assert "httponly" in accepted.headers["set-cookie"].lower()
    assert me["key"] == "member"


async def test_a_members_disconnect_is_refused_by_the_rpc(
    dev_api: str, sandbox: Any, pg: asyncpg.Connection
) -> None:
    """The member's disconnect runs as the member, so instagram_disconnect refuses it and the account stays."""
    await create_integrations(pg, sandbox, 1)
    async with signed_in(dev_api, "member") as http:
        [account] = (await http.get("/dev/api/inbox")).json()["accounts"]
        response = await http.post("/dev/api/disconnect", json={"integration_id": account["id"]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "integration_not_found"
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "connected"


async def test_the_starter_admin_gets_no_inbox(dev_api: str) -> None:
    """On the Starter plan the page's data says no instagram_messaging and lists nothing."""
    async with signed_in(dev_api, "starter") as http:
        data = (await http.get("/dev/api/inbox")).json()
    assert data["access"] == {
        "imo_id": "00000000-0000-4000-8000-0000000000a2",
        "imo_name": "Starter Agency",
        "role": "admin",
        "is_admin": True,
        "plan": "Starter",
        "instagram_messaging": False,
    }
    assert data["conversations"] == [] and data["accounts"] == []


async def test_meta_outage_switches_the_sandbox_fault_on_and_off(dev_api: str, sandbox: Any) -> None:
    """ "Meta outage" makes every Graph call a 500 until it is switched off again."""
    async with signed_in(dev_api) as http:
        assert (await http.post("/dev/sandbox/outage", json={"on": True})).json() == {"outage": True}
        assert (await http.get("/dev/sandbox/outage")).json() == {"outage": True}
        down = httpx.get(f"{sandbox.url}/v25.0/me", params={"access_token": "x"})
        assert (await http.post("/dev/sandbox/outage", json={"on": False})).json() == {"outage": False}
        assert (await http.get("/dev/sandbox/outage")).json() == {"outage": False}
    assert down.status_code == 500 and down.json()["error"]["code"] == 2


@pytest.mark.parametrize("name", ["messages.html", "..%2Fsession.py", "nope.js"])
async def test_only_the_page_files_are_served(dev_api: str, name: str) -> None:
    """/dev/static/ serves the page's script and stylesheet and nothing else (404)."""
    async with httpx.AsyncClient(base_url=dev_api, timeout=10) as http:
        assert (await http.get("/dev/static/messages.js")).status_code == 200
        response = await http.get(f"/dev/static/{name}")
    assert response.status_code == 404
