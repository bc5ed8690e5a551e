"""A lease that expires is not a handler failure: every queue counts the two apart, with caps of their own."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from tests.db import factories
from tests.fixtures.database import DEMO_IMO
from tests.worker.conftest import KEY, enqueue
from tests.worker.test_kinds_sql import queue_unsubscription


async def _refresh_job(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    await factories.integration(pg, DEMO_IMO, status="connected", key=KEY)
    assert await enqueue(db) == 1


async def _unsubscription(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    await queue_unsubscription(pg)


async def _delivery(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    body = b'{"object":"instagram","entry":[]}'
    await pg.execute(
        "insert into public.instagram_webhook_events (body, body_sha256) values ($1, $2)",
        body,
        hashlib.sha256(body).digest(),
    )


async def _profile_fetch(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    integration_id = await factories.integration(pg, DEMO_IMO, status="connected", key=KEY)
    await pg.execute(
        """with c as (
             insert into public.instagram_conversations (integration_id, imo_id, participant_igsid)
             values ($1, $2, $3) returning id, imo_id, integration_id, participant_igsid)
           insert into public.instagram_profile_fetches (conversation_id, imo_id, integration_id, igsid)
           select * from c""",
        integration_id,
        DEMO_IMO,
        str(uuid.uuid4().int % 10**15),
    )


@dataclass(frozen=True)
class Queue:
    table: str
    claim: str
    fail: str
    make_job: Callable[[asyncpg.Connection, AsyncpgDatabase], Awaitable[None]]


QUEUES = [
    Queue("instagram_refresh_jobs", "instagram_refresh_claim_v1", "instagram_refresh_fail_v1", _refresh_job),
    Queue(
        "instagram_page_unsubscriptions",
        "instagram_unsubscribe_claim_v1",
        "instagram_unsubscribe_fail_v1",
        _unsubscription,
    ),
    Queue("instagram_webhook_events", "instagram_webhook_claim_v1", "instagram_webhook_fail_v1", _delivery),
    Queue(
        "instagram_profile_fetches", "instagram_profile_claim_v1", "instagram_profile_fail_v1", _profile_fetch
    ),
]


async def claim(db: AsyncpgDatabase, queue: Queue, worker: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await db.rpc(
        queue.claim, {"p_worker": worker, "p_limit": 10, "p_lease_seconds": 60}
    )
    return rows


async def crash(pg: asyncpg.Connection, queue: Queue) -> None:
    """The holder of the lease dies: the lease runs out."""
    await pg.execute(f"update public.{queue.table} set lease_expires_at = now() - interval '1 second'")  # noqa: S608


async def job_row(pg: asyncpg.Connection, queue: Queue) -> asyncpg.Record:
    row = await pg.fetchrow(
        f"select state, attempt, lease_expiries, max_lease_expiries, last_error_code from public.{queue.table}"  # noqa: S608
    )
    assert row is not None
    return row


@pytest.fixture(params=QUEUES, ids=[q.table for q in QUEUES])
def queue(request: pytest.FixtureRequest) -> Queue:
    q: Queue = request.param
    return q


async def test_a_crash_loop_spends_no_attempt(
    queue: Queue, pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A job whose worker dies after each claim keeps attempt 1 and counts one lease expiry per crash."""
    await queue.make_job(pg, db)
    [first] = await claim(db, queue, "w0")
    assert first["attempt"] == 1
    await crash(pg, queue)
    [again] = await claim(db, queue, "w1")
    assert again["attempt"] == 1
    row = await job_row(pg, queue)
    assert (row["state"], row["attempt"], row["lease_expiries"]) == ("running", 1, 1)


async def test_too_many_lease_expiries_bury_the_job_with_the_reason(
    queue: Queue, pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """After max_lease_expiries crashes the next claim buries the job (discarded, lease_expired) and takes nothing."""
    await queue.make_job(pg, db)
    cap = (await job_row(pg, queue))["max_lease_expiries"]
    for n in range(cap):
        assert len(await claim(db, queue, f"w{n}")) == 1
        await crash(pg, queue)
    assert await claim(db, queue, "last") == []
    row = await job_row(pg, queue)
    assert (row["state"], row["attempt"], row["lease_expiries"], row["last_error_code"]) == (
        "discarded",
        1,
        cap,
        "lease_expired",
    )


async def test_crashes_do_not_shorten_the_handler_attempts(
    queue: Queue, pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A job that crashed once still gets max_attempts handler failures before it is discarded."""
    await queue.make_job(pg, db)
    await claim(db, queue, "dead")
    await crash(pg, queue)
    max_attempts = (await claim(db, queue, "w"))[0]["max_attempts"]
    for n in range(max_attempts):
        if n:
            await pg.execute(f"update public.{queue.table} set run_at = now()")  # noqa: S608
            [job] = await claim(db, queue, "w")
            assert job["attempt"] == n + 1
        [job_id] = await pg.fetch(f"select id from public.{queue.table}")  # noqa: S608
        await db.rpc(
            queue.fail,
            {
                "p_job_id": job_id["id"],
                "p_worker": "w",
                "p_action": "retry",
                "p_run_at": datetime(2000, 1, 1, tzinfo=UTC),
                "p_error_code": "boom",
                "p_error_message": "handler failed",
            },
        )
    row = await job_row(pg, queue)
    assert (row["state"], row["attempt"], row["last_error_code"]) == ("discarded", max_attempts, "boom")


async def test_a_replayed_buried_delivery_starts_with_fresh_counts(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """`webhooks replay --failed` takes a buried delivery again with attempt and lease expiries back at zero."""
    [deliveries] = [q for q in QUEUES if q.table == "instagram_webhook_events"]
    await _delivery(pg, db)
    await pg.execute("update public.instagram_webhook_events set max_lease_expiries = 1")
    await claim(db, deliveries, "dead")
    await crash(pg, deliveries)
    assert await claim(db, deliveries, "w") == []
    assert await db.rpc("instagram_webhook_replay_v1", {"p_failed_only": True}) == {"queued": 1}
    row = await job_row(pg, deliveries)
    assert (row["state"], row["attempt"], row["lease_expiries"]) == ("available", 0, 0)
