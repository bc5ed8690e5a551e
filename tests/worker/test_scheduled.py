"""Scheduled messages end to end: the worker's dispatch timer hands due rows to the send kind, which sends
through the sandbox's Send API over real HTTP. Copies are counted at the sandbox: each row goes out once,
whatever workers race or die."""

from __future__ import annotations

import asyncio
import collections
import time
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from tests.db.factories import DEMO_MEMBER
from tests.fixtures.api import acting_user
from tests.worker.conftest import make_worker, run_until
from tests.worker.test_send import (  # the send kind's fixtures and helpers
    conversations,
    kinds,
    quick_echo_wait,
    sandbox_messages,
    send_graph,
    settled,
    sigkill_workers,
    webhook_api,
)
from worker.kinds.scheduled import ScheduledDispatch
from worker.runner import Worker

__all__ = ["quick_echo_wait", "send_graph", "webhook_api"]  # fixtures, used by name

MEMBER = acting_user(DEMO_MEMBER)


def workers(db: AsyncpgDatabase, graph: GraphClient, n: int = 1, **options: Any) -> list[Worker]:
    def one() -> Worker:
        return make_worker(
            db, graph, kinds=kinds(db, graph), timers=[ScheduledDispatch(db, batch=50)], **options
        )

    return [one() for _ in range(n)]


async def schedule(db: AsyncpgDatabase, conv: str, text: str, seconds: float = 60) -> str:
    at = datetime.now().astimezone() + timedelta(seconds=seconds)
    scheduled = await rpc.schedule_message(db, MEMBER, conversation_id=conv, send_at=at, text=text)
    return str(scheduled["id"])


async def make_due(pg: asyncpg.Connection) -> None:
    await pg.execute(
        "update public.instagram_scheduled_messages set scheduled_for = now() where status = 'scheduled'"
    )


def all_finished(pg: asyncpg.Connection, sandbox: Any) -> Any:
    """No scheduled message waiting or going out, and the send path settled."""
    sends_settled = settled(pg, sandbox)

    async def check() -> bool:
        open_rows = await pg.fetchval(
            "select count(*) from public.instagram_scheduled_messages where status in ('scheduled', 'sending')"
        )
        return open_rows == 0 and await sends_settled()

    return check


async def statuses(pg: asyncpg.Connection) -> collections.Counter[str]:
    rows = await pg.fetch("select status::text from public.instagram_scheduled_messages")
    return collections.Counter(r["status"] for r in rows)


async def test_a_scheduled_message_goes_out_within_two_seconds_of_its_time(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """Scheduled 6 s ahead through the RPC with a worker already running: it reaches the sandbox no earlier
    than its time and at most 2 s after it, once, and the row ends sent."""
    [conv] = await conversations(pg, sandbox)
    team = workers(db, send_graph, poll_interval=30)  # only the due time and NOTIFYs wake it
    tasks = [asyncio.create_task(w.run()) for w in team]
    try:
        await asyncio.sleep(0.3)  # the worker is idle, waiting on its poll interval
        scheduled_id = await schedule(db, conv, "on time", seconds=6)
        due = await pg.fetchval(
            "select extract(epoch from scheduled_for) from public.instagram_scheduled_messages where id = $1",
            scheduled_id,
        )
        arrived = None
        deadline = time.time() + 15
        while arrived is None and time.time() < deadline:
            if sandbox_messages(sandbox):
                arrived = time.time()
            await asyncio.sleep(0.02)
    finally:
        for w in team:
            w.request_stop()
        await asyncio.gather(*tasks)
    assert arrived is not None, "never sent"
    assert 0 <= arrived - float(due) <= 2.0, arrived - float(due)
    await run_until(workers(db, send_graph), all_finished(pg, sandbox))
    assert [m["text"] for m in sandbox_messages(sandbox)] == ["on time"]
    assert await statuses(pg) == {"sent": 1}


async def test_a_message_cancelled_before_its_time_is_never_sent(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """Of two messages due together, the one cancelled beforehand never reaches the sandbox."""
    [conv] = await conversations(pg, sandbox)
    await schedule(db, conv, "kept")
    dropped = await schedule(db, conv, "dropped")
    await rpc.cancel_scheduled_message(db, MEMBER, id=dropped)
    await make_due(pg)
    await run_until(workers(db, send_graph), all_finished(pg, sandbox))
    assert [m["text"] for m in sandbox_messages(sandbox)] == ["kept"]
    assert await statuses(pg) == {"sent": 1, "cancelled": 1}


async def test_due_while_the_window_is_closed_fails_with_nothing_at_the_sandbox(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """The contact's last message 25 h old when the time comes: failed outside_messaging_window, 0 sends."""
    [conv] = await conversations(pg, sandbox)
    scheduled_id = await schedule(db, conv, "too late")
    await pg.execute(
        "update public.instagram_conversations set last_inbound_at = now() - interval '25 hours'"
    )
    await make_due(pg)
    await run_until(workers(db, send_graph), all_finished(pg, sandbox))
    code = await pg.fetchval(
        "select last_error_code from public.instagram_scheduled_messages where id = $1", scheduled_id
    )
    assert code == "outside_messaging_window"
    assert sandbox_messages(sandbox) == []


async def test_two_workers_on_200_due_send_each_once(
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """200 messages due at once with two workers: 200 copies at the sandbox, one per text, all rows sent."""
    convs = await conversations(pg, sandbox, accounts=2, people=5)
    for i in range(200):
        await schedule(db, convs[i % len(convs)], f"due {i}")
    await make_due(pg)
    await run_until(workers(db, send_graph, n=2), all_finished(pg, sandbox), timeout=30)
    texts = collections.Counter(m["text"] for m in sandbox_messages(sandbox))
    assert len(texts) == 200 and max(texts.values()) == 1
    assert await statuses(pg) == {"sent": 200}


async def test_workers_killed_mid_batch_send_each_once(  # noqa: PLR0917 - fixtures
    webhook_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection,
    database_url: str,
) -> None:  # fmt: skip
    """Worker processes SIGKILLed three times while 200 due messages go out: no text twice at the sandbox,
    and in the end all 200 are sent."""
    sandbox.control("POST", "latency", {"path": "/messages$", "ms": 50})
    convs = await conversations(pg, sandbox, accounts=2, people=5)
    for i in range(200):
        await schedule(db, convs[i % len(convs)], f"batch {i}")
    await make_due(pg)
    await sigkill_workers(database_url, sandbox, rounds=3, each=10)
    await run_until(workers(db, send_graph), all_finished(pg, sandbox), timeout=60)
    texts = collections.Counter(m["text"] for m in sandbox_messages(sandbox))
    assert len(texts) == 200 and max(texts.values()) == 1
    assert await statuses(pg) == {"sent": 200}
