"""The send kind end to end: the worker sends through the sandbox's Send API over real HTTP, the sandbox
echoes every accepted send to the API's webhook route, the webhook kind stores the echo. Copies are
counted at the sandbox (`GET /_sandbox/messages`): exactly once, whatever Meta answered."""

from __future__ import annotations

import asyncio
import collections
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient, RetryPolicy
from instagram_dm.settings import Settings
from instagram_dm.usage import CallMeter
from tests.db.factories import DEMO_IMO, DEMO_MEMBER
from tests.fixtures.api import FAST_RETRY, acting_user, settings_env
from tests.fixtures.servers import serve_in_thread
from tests.worker.conftest import FAST_BACKOFF, KEY, create_integrations, make_worker, run_until
from worker.kinds.send import SendKind
from worker.kinds.webhooks import WebhookKind
from worker.queue import JobKind
from worker.usage_report import flush_calls

MEMBER = acting_user(DEMO_MEMBER)


@pytest.fixture
def webhook_api(sandbox: Any, database_url: str, pg: Any) -> Iterator[str]:
    """The API on a real port; the sandbox delivers its echoes to its webhook route."""
    env = settings_env(sandbox.url, database_url, INSTAGRAM_TOKEN_ENCRYPTION_KEY=KEY)
    app = create_app(Settings.from_environ(env, env_file=None), graph_retry=FAST_RETRY)
    with serve_in_thread(app, lifespan="on") as url:
        sandbox.configure(webhook_url=f"{url}/functions/v1/instagram-webhook", echo_delay_ms=50)
        yield url


@pytest.fixture
async def send_graph(sandbox: Any) -> AsyncIterator[GraphClient]:
    """A Graph client with a short read timeout, so a hang after delivery is a timeout here."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(1.5, connect=1.0)) as http:
        yield GraphClient(
            http,
            app_id=sandbox.app_id,
            app_secret=sandbox.app_secret,
            version=sandbox.version,
            graph_base_url=sandbox.url,
            dialog_base_url=sandbox.url,
            retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002),
        )


async def conversations(
    pg: asyncpg.Connection, sandbox: Any, accounts: int = 1, people: int = 1
) -> list[str]:
    """`accounts` connected integrations with `people` contacts each who wrote just now (here and at the sandbox)."""
    out: list[str] = []
    for connected in await create_integrations(pg, sandbox, accounts):
        account = await pg.fetchval(
            "select instagram_business_account_id from public.instagram_integrations where id = $1",
            connected.id,
        )
        for n in range(people):
            igsid = f"77{len(out):013d}{n}"
            sandbox.control(
                "POST", "people", {"igsid": igsid, "last_message_at": "now", "account_id": account}
            )
            out.append(
                str(
                    await pg.fetchval(
                        """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid,
                             last_inbound_at) values ($1, $2, $3, now()) returning id::text""",
                        connected.id,
                        DEMO_IMO,
                        igsid,
                    )
                )
            )
    return out


def kinds(db: AsyncpgDatabase, graph: GraphClient) -> list[JobKind[Any]]:
    return [SendKind(db, graph, key=KEY, backoff=FAST_BACKOFF), WebhookKind(backoff=FAST_BACKOFF)]


def settled(pg: asyncpg.Connection, sandbox: Any) -> Any:
    """No send left to do, every echo the sandbox made delivered and processed."""

    async def check() -> bool:
        busy = await pg.fetchval(
            """select (select count(*) from public.instagram_send_jobs
                       where state in ('available', 'running', 'retryable'))
                + (select count(*) from public.instagram_webhook_events where state in ('available', 'running'))"""
        )
        pending_echoes = sum(1 for m in sandbox_messages(sandbox) if m["echo"] == "pending")
        return busy == 0 and pending_echoes == 0

    return check


def sandbox_messages(sandbox: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sandbox.control("GET", "messages")["messages"]
    return messages


async def outbound(pg: asyncpg.Connection) -> list[asyncpg.Record]:
    return await pg.fetch(
        "select status::text as status, meta_message_id, error_code, text from public.instagram_messages "
        "where direction = 'outbound' order by created_at"
    )


async def send_all(db: AsyncpgDatabase, conversation_ids: list[str], per: int = 1) -> None:
    for n in range(per):
        for conv in conversation_ids:
            await rpc.send_message(db, MEMBER, conversation_id=conv, text=f"Hello {n}")


async def run(db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, sandbox: Any, *, workers: int = 1,
              timeout: float = 20.0) -> None:  # fmt: skip
    await run_until([make_worker(db, graph, kinds=kinds(db, graph)) for _ in range(workers)], settled(pg, sandbox),
                    timeout=timeout)  # fmt: skip


async def sigkill_workers(database_url: str, sandbox: Any, *, rounds: int, each: int) -> None:
    """`rounds` times: a worker process starts, and is SIGKILLed once `each` more copies reached the sandbox."""
    from tests.worker.test_subprocess import start_worker

    env = {"INSTAGRAM_SEND_ECHO_WAIT_SECONDS": "1"}
    for _ in range(rounds):
        before = len(sandbox_messages(sandbox))
        proc = start_worker(database_url, sandbox, "--concurrency", "10", "--lease-seconds", "2",
                            "--poll-interval", "0.1", env_extra=env)  # fmt: skip
        try:
            for _ in range(500):
                if len(sandbox_messages(sandbox)) >= before + each:
                    break
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


@pytest.fixture(autouse=True)
async def quick_echo_wait(db: AsyncpgDatabase) -> None:
    await db.rpc("instagram_settings_apply_v1", {"p_settings": {"echo_wait_seconds": 1}})


async def test_a_reply_is_sent_once_and_its_echo_is_the_same_message(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """One reply: sent with Meta's mid, one copy at the sandbox, and its echo adds no second row."""
    [conv] = await conversations(pg, sandbox)
    await send_all(db, [conv])
    await run(db, send_graph, pg, sandbox)
    [copy] = sandbox_messages(sandbox)
    assert copy["echo"] == "delivered"
    [row] = await outbound(pg)
    assert (row["status"], row["meta_message_id"]) == ("sent", copy["mid"])


async def test_a_human_reply_three_days_later_goes_out_tagged_human_agent(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """HUMAN_AGENT on, the contact wrote 3 days ago: the sandbox (Meta's rules) accepts it tagged, once."""
    await db.rpc("instagram_settings_apply_v1", {"p_settings": {"human_agent_enabled": True}})
    [conv] = await conversations(pg, sandbox)
    igsid = await pg.fetchval(
        "select participant_igsid from public.instagram_conversations where id = $1", conv
    )
    three_days_ago = await pg.fetchval("select extract(epoch from now() - interval '3 days')::bigint")
    account = await pg.fetchval("select instagram_business_account_id from public.instagram_integrations")
    sandbox.control(
        "POST", "people", {"igsid": igsid, "last_message_at": three_days_ago, "account_id": account}
    )
    await pg.execute("update public.instagram_conversations set last_inbound_at = now() - interval '3 days'")
    await send_all(db, [conv])
    await run(db, send_graph, pg, sandbox)
    [copy] = sandbox_messages(sandbox)
    assert (copy["messaging_type"], copy["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
    assert [r["status"] for r in await outbound(pg)] == ["sent"]


async def test_two_5xx_answers_then_sent_once(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """Two 500s before the send: each waits for an echo that never comes, then one copy goes out."""
    [conv] = await conversations(pg, sandbox)
    sandbox.control("POST", "faults", {"path": "/messages$", "http_status": 500, "code": 2, "is_transient": True,
                                       "count": 2})  # fmt: skip
    await send_all(db, [conv])
    await run(db, send_graph, pg, sandbox)
    assert len(sandbox_messages(sandbox)) == 1
    assert [r["status"] for r in await outbound(pg)] == ["sent"]


@pytest.mark.parametrize(
    "fault",
    [
        {"timeout_seconds": 5},
        {"code": 1, "subcode": 1357046},
        {"http_status": 502, "body": "<html>Bad Gateway</html>"},
    ],
    ids=["timeout", "1_1357046", "502"],
)
async def test_an_answer_lost_after_delivery_leaves_exactly_one_copy(  # noqa: PLR0917 - fixtures
    webhook_api: str,
    sandbox: Any,
    db: AsyncpgDatabase,
    send_graph: GraphClient,
    pg: asyncpg.Connection,
    fault: dict[str, Any],
) -> None:
    """Meta delivered but the answer was lost: the echo confirms the message; it is never sent twice."""
    sandbox.configure(echo_delay_ms=300)  # later than a blind retry would be, well inside the echo wait
    [conv] = await conversations(pg, sandbox)
    sandbox.control("POST", "faults", {"path": "/messages$", "after_delivery": True, "count": -1, **fault})
    await send_all(db, [conv])
    await run(db, send_graph, pg, sandbox)
    [copy] = sandbox_messages(sandbox)
    assert copy["answer_lost"] is True
    [row] = await outbound(pg)
    assert (row["status"], row["meta_message_id"]) == ("sent", copy["mid"])


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"code": 10, "subcode": 2534022}, "outside_messaging_window"),
        ({"code": 100, "subcode": 2534014}, "recipient_not_found"),
        ({"code": 200, "subcode": 2534041}, "recipient_not_accepting"),
        ({"code": 551}, "recipient_not_accepting"),
        ({"code": 10, "subcode": 1893063}, "account_restricted"),
        ({"code": 190}, "reauth_required"),
    ],
)
async def test_meta_refusals_fail_the_message_with_a_reason(  # noqa: PLR0917 - fixtures
    webhook_api: str,
    sandbox: Any,
    db: AsyncpgDatabase,
    send_graph: GraphClient,
    pg: asyncpg.Connection,
    fault: dict[str, Any],
    code: str,
) -> None:
    """Each refusal by code and subcode fails the message with its own reason; nothing reached the person."""
    [conv] = await conversations(pg, sandbox)
    sandbox.control("POST", "faults", {"path": "/messages$", "count": -1, **fault})
    await send_all(db, [conv])
    await run(db, send_graph, pg, sandbox)
    [row] = await outbound(pg)
    assert (row["status"], row["error_code"]) == ("failed", code)
    assert sandbox_messages(sandbox) == []
    status = await pg.fetchval("select status::text from public.instagram_integrations")
    assert status == ("reauth_required" if code == "reauth_required" else "connected")


async def test_throttling_backs_off_the_account_then_sends(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """613/2534040 once: the message goes back to queued, the account pauses, then it is sent once."""
    [conv] = await conversations(pg, sandbox)
    sandbox.control("POST", "faults", {"path": "/messages$", "code": 613, "subcode": 2534040, "count": 1,
                                       "headers": {"Retry-After": "1"}})  # fmt: skip
    await send_all(db, [conv])
    await run(db, send_graph, pg, sandbox)
    assert len(sandbox_messages(sandbox)) == 1
    assert [r["status"] for r in await outbound(pg)] == ["sent"]


async def test_two_workers_send_500_messages_each_once(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """Two workers, 500 queued messages over 5 accounts: 500 copies at the sandbox, one per message."""
    await db.rpc("instagram_settings_apply_v1", {"p_settings": {"send_rate_per_second": 500}})
    sandbox.configure(send_rate_per_second=1000)
    convs = await conversations(pg, sandbox, accounts=5, people=10)
    await send_all(db, convs, per=10)
    await run(db, send_graph, pg, sandbox, workers=2, timeout=40)
    copies = sandbox_messages(sandbox)
    assert len(copies) == 500 and len({m["mid"] for m in copies}) == 500
    rows = await outbound(pg)
    assert len(rows) == 500 and {r["status"] for r in rows} == {"sent"}


async def test_three_workers_never_pass_the_rate_limit_of_an_account(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """At 50 sends/s, 3 workers with 250 messages to one account: never more than 50 in one sandbox second."""
    await db.rpc("instagram_settings_apply_v1", {"p_settings": {"send_rate_per_second": 50}})
    # The sandbox refuses only above 60/s: a breach shows as a count over 50 below, not as a 60 s pause.
    sandbox.configure(send_rate_per_second=60)
    convs = await conversations(pg, sandbox, accounts=1, people=10)
    await send_all(db, convs, per=25)
    await run(db, send_graph, pg, sandbox, workers=3, timeout=40)
    copies = sandbox_messages(sandbox)
    assert len(copies) == 250
    per_second = collections.Counter(int(m["at"]) for m in copies)
    assert max(per_second.values()) <= 50
    assert {r["status"] for r in await outbound(pg)} == {"sent"}  # no 613 made any of them wait or fail


async def test_usage_counts_sends_and_the_meta_calls_of_the_imo(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, pg: asyncpg.Connection
) -> None:
    """After 3 sends the IMO's month shows 3 sent, 0 pending, and the 3 Send API calls its jobs made."""
    convs = await conversations(pg, sandbox, people=3)
    await send_all(db, convs)
    meter = CallMeter()
    async with httpx.AsyncClient(timeout=5) as http:
        graph = GraphClient(http, app_id=sandbox.app_id, app_secret=sandbox.app_secret, version=sandbox.version,
                            graph_base_url=sandbox.url, dialog_base_url=sandbox.url, meter=meter)  # fmt: skip
        await run(db, graph, pg, sandbox)
    await flush_calls(db, meter)
    summary = await rpc.usage_summary(db, MEMBER, imo_id=DEMO_IMO)
    assert (summary["messages_sent"], summary["sends_pending"], summary["api_calls"]) == (3, 0, 3)


@pytest.mark.slow
async def test_workers_killed_mid_send_five_times_never_send_twice(  # noqa: PLR0917 - fixtures
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection,
    database_url: str,
) -> None:  # fmt: skip
    """Five worker processes SIGKILLed while sending 100 messages: at the sandbox no message twice; in the
    end each is sent once (the echo confirmed what the dead workers had sent)."""
    sandbox.control("POST", "latency", {"path": "/messages$", "ms": 100})
    convs = await conversations(pg, sandbox, accounts=2, people=5)
    for i in range(100):
        await rpc.send_message(db, MEMBER, conversation_id=convs[i % len(convs)], text=f"message {i}")
    await sigkill_workers(database_url, sandbox, rounds=5, each=5)
    await run(db, send_graph, pg, sandbox, timeout=60)
    texts = collections.Counter(m["text"] for m in sandbox_messages(sandbox))
    assert max(texts.values()) == 1 and len(texts) == 100
    rows = await outbound(pg)
    assert len(rows) == 100 and {r["status"] for r in rows} == {"sent"}
