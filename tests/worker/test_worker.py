"""The worker against the real database and the Meta sandbox over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.db.port import ActingUser
from instagram_dm.graph import GraphClient
from tests.fixtures.database import DEMO_ADMIN, claims_for
from tests.worker.conftest import (
    KEY,
    all_finished,
    create_integrations,
    enqueue,
    job_states,
    make_worker,
    run_until,
)
from worker.runner import WorkerOptions


async def tokens(db: AsyncpgDatabase, integration_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await db.rpc(
        "instagram_integration_tokens", {"p_integration_id": integration_id, "p_key": KEY}
    )
    return result


async def test_happy_refresh_stores_a_new_token_with_a_later_expiry(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """One due integration: the token string changes, the expiry moves ~60 days out, the job completes."""
    [conn] = await create_integrations(pg, sandbox, 1)
    before = await pg.fetchval("select token_expires_at from public.instagram_integrations")
    assert await enqueue(db) == 1
    worker = make_worker(db, graph)
    assert await run_until([worker], all_finished(pg, 1)) == [0]
    after = await tokens(db, conn.id)
    assert after["user_token"] != conn.user_token
    assert after["page_token"] == conn.page_token  # still valid: kept
    row = await pg.fetchrow("select * from public.instagram_integrations")
    assert row["token_expires_at"] > before + __import__("datetime").timedelta(days=50)
    assert row["last_refreshed_at"] is not None
    assert row["status"] == "connected"
    assert await job_states(pg) == {"completed": 1}
    assert sandbox.state()["exchanges"] == {conn.user_id: 1}


async def test_refresh_renews_a_page_token_that_stopped_working(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """A revoked Page token is replaced by a fresh one fetched through the new user token."""
    [conn] = await create_integrations(pg, sandbox, 1)
    sandbox.revoke(conn.page_token)
    await enqueue(db)
    await run_until([make_worker(db, graph)], all_finished(pg, 1))
    after = await tokens(db, conn.id)
    assert after["page_token"] not in {None, conn.page_token}
    assert (await graph.debug_token(after["page_token"])).is_valid


async def test_expiry_that_did_not_move_warns_days_ahead(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """When Meta keeps the old expiry, the integration stays connected with token_not_extended and one notification."""
    sandbox.configure(long_lived_reexchange="keep_expiry")
    await create_integrations(pg, sandbox, 1)
    await enqueue(db)
    await run_until([make_worker(db, graph)], all_finished(pg, 1))
    row = await pg.fetchrow("select status::text, last_error_code from public.instagram_integrations")
    assert (row["status"], row["last_error_code"]) == ("connected", "token_not_extended")
    kinds = [r["kind"] for r in await pg.fetch("select kind from public.notifications")]
    assert kinds == ["instagram_reconnect_soon"]


async def test_token_invalid_ends_in_reauth_on_the_first_attempt(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """A revoked user token (190) discards the job after one attempt, sets reauth_required and notifies."""
    [conn] = await create_integrations(pg, sandbox, 1)
    sandbox.revoke(conn.user_token, subcode=460)
    await enqueue(db)
    await run_until([make_worker(db, graph)], all_finished(pg, 1))
    job = await pg.fetchrow("select state, attempt, last_error_code from public.instagram_refresh_jobs")
    assert (job["state"], job["attempt"], job["last_error_code"]) == ("discarded", 1, "meta_190_460")
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "reauth_required"
    assert [r["kind"] for r in await pg.fetch("select kind from public.notifications")] == [
        "instagram_reauth_required"
    ]
    after = await tokens(db, conn.id)
    assert after["user_token"] == conn.user_token  # nothing overwritten


async def test_permission_revoked_ends_in_reauth(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """A permission error (200) from the exchange is a reauth too."""
    await create_integrations(pg, sandbox, 1)
    sandbox.fault("/oauth/access_token", code=200, http_status=403, count=1)
    await enqueue(db)
    await run_until([make_worker(db, graph)], all_finished(pg, 1))
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "reauth_required"


async def test_rate_limit_retries_no_sooner_than_the_regain_time(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """A 613 with estimated_time_to_regain_access = 30 min leaves the job retryable 30 minutes out."""
    await create_integrations(pg, sandbox, 1)
    sandbox.fault("/oauth/access_token", code=613, http_status=400, count=1, regain_minutes=30)
    await enqueue(db)

    async def retryable() -> bool:
        return (await job_states(pg)).get("retryable", 0) == 1

    await run_until([make_worker(db, graph)], retryable)
    wait = await pg.fetchval("select extract(epoch from run_at - now()) from public.instagram_refresh_jobs")
    assert 29 * 60 < wait <= 30 * 60
    row = await pg.fetchrow("select status::text, last_error_code from public.instagram_integrations")
    assert (row["status"], row["last_error_code"]) == ("connected", "meta_613")


async def test_a_ten_call_5xx_storm_ends_in_success(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """Ten 503s in a row on the exchange: in-call retries plus job retries get through, and the job completes."""
    [conn] = await create_integrations(pg, sandbox, 1)
    sandbox.fault("/oauth/access_token", http_status=503, body="<html>Service Unavailable</html>", count=10)
    await enqueue(db)
    await run_until([make_worker(db, graph)], all_finished(pg, 1))
    job = await pg.fetchrow("select state, attempt from public.instagram_refresh_jobs")
    assert job["state"] == "completed"
    assert job["attempt"] == 4  # 3 calls per attempt: 9 failures, then call 10 fails and 11 succeeds
    assert (await tokens(db, conn.id))["user_token"] != conn.user_token
    row = await pg.fetchrow("select status::text, failure_count from public.instagram_integrations")
    assert (row["status"], row["failure_count"]) == ("connected", 0)


async def test_an_outage_outlasting_every_attempt_never_asks_for_reauth(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """Meta down for every attempt: the job is discarded, the integration stays connected, no notification."""
    await create_integrations(pg, sandbox, 1)
    sandbox.fault("/oauth/access_token", http_status=500, code=2, count=-1)
    await enqueue(db)
    await pg.execute("update public.instagram_refresh_jobs set max_attempts = 3")
    await run_until([make_worker(db, graph)], all_finished(pg, 1))
    job = await pg.fetchrow("select state, attempt from public.instagram_refresh_jobs")
    assert (job["state"], job["attempt"]) == ("discarded", 3)
    row = await pg.fetchrow("select status::text, failure_count from public.instagram_integrations")
    assert (row["status"], row["failure_count"]) == ("connected", 3)
    assert await pg.fetchval("select count(*) from public.notifications") == 0


async def test_unknown_errors_retry_then_mark_the_integration_error(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """A 368 on every attempt retries, then discards with the integration in error and a notification."""
    await create_integrations(pg, sandbox, 1)
    sandbox.fault("/oauth/access_token", code=368, count=-1)
    await enqueue(db)
    await pg.execute("update public.instagram_refresh_jobs set max_attempts = 2")
    await run_until([make_worker(db, graph)], all_finished(pg, 1))
    assert (await pg.fetchrow("select state, attempt from public.instagram_refresh_jobs"))["attempt"] == 2
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "error"
    assert [r["kind"] for r in await pg.fetch("select kind from public.notifications")] == [
        "instagram_refresh_failed"
    ]


async def test_two_workers_on_200_due_jobs_refresh_each_integration_exactly_once(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """Two workers draining 200 jobs: 200 completed, and the sandbox saw exactly one exchange per user."""
    conns = await create_integrations(pg, sandbox, 200)
    assert await enqueue(db) == 200
    workers = [make_worker(db, graph, concurrency=20), make_worker(db, graph, concurrency=20)]
    assert await run_until(workers, all_finished(pg, 200), timeout=30) == [0, 0]
    assert await job_states(pg) == {"completed": 200}
    exchanges = sandbox.state()["exchanges"]
    assert exchanges == {c.user_id: 1 for c in conns}
    assert all(w.stats["completed"] > 0 for w in workers)


async def test_graceful_shutdown_lets_in_flight_jobs_finish(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """Stopped mid-batch with a generous grace period, the in-flight jobs complete and nothing new is claimed."""
    await create_integrations(pg, sandbox, 10)
    sandbox.latency("/oauth/access_token", 300)
    await enqueue(db)
    worker = make_worker(db, graph, concurrency=4, grace_period=5.0)
    task = asyncio.create_task(worker.run())
    while worker.in_flight < 4:
        await asyncio.sleep(0.01)
    worker.request_stop()
    assert await task == 0
    assert await job_states(pg) == {"completed": 4, "available": 6}


async def test_shutdown_after_the_grace_period_hands_jobs_back_without_charging_an_attempt(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """Jobs still running when the grace period ends are released: available, attempt 0, token untouched;
    a second worker then finishes them all."""
    conns = await create_integrations(pg, sandbox, 6)
    sandbox.latency("/oauth/access_token", 2000)
    await enqueue(db)
    worker = make_worker(db, graph, concurrency=3, grace_period=0.1)
    task = asyncio.create_task(worker.run())
    while worker.in_flight < 3:
        await asyncio.sleep(0.01)
    worker.request_stop()
    assert await task == 0
    rows = await pg.fetch("select state, attempt from public.instagram_refresh_jobs")
    assert {(r["state"], r["attempt"]) for r in rows} == {("available", 0)}
    assert worker.stats["released"] == 3
    assert [(await tokens(db, c.id))["user_token"] for c in conns] == [c.user_token for c in conns]
    sandbox.control("DELETE", "latency")
    await run_until([make_worker(db, graph)], all_finished(pg, 6))
    assert await job_states(pg) == {"completed": 6}


async def test_notify_wakes_a_worker_long_before_its_poll(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """With a 60 s poll interval, an enqueue's NOTIFY gets the job done within seconds."""
    await create_integrations(pg, sandbox, 1)
    worker = make_worker(db, graph, poll_interval=60.0)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)  # the first (empty) claim is behind us; now only NOTIFY can wake it
    await enqueue(db)
    for _ in range(200):
        if (await job_states(pg)).get("completed") == 1:
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    await task
    assert await job_states(pg) == {"completed": 1}


async def test_poll_only_mode_finds_jobs_without_listen(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """With LISTEN off (the supabase-py transport's mode) polling picks the job up."""
    await create_integrations(pg, sandbox, 3)
    worker = make_worker(db, graph, listen=False, poll_interval=0.2)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)  # its first claim found nothing; no NOTIFY reaches it, only the poll
    await enqueue(db)
    finished = all_finished(pg, 3)
    for _ in range(100):
        if await finished():
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    assert await task == 0
    assert await job_states(pg) == {"completed": 3}


async def test_queued_page_unsubscription_is_processed(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """A disconnect's queued unsubscription makes the worker remove the Page's webhook subscription."""
    [conn] = await create_integrations(pg, sandbox, 1, webhook_subscribed=True)
    await graph.subscribe_page(conn.page_id, conn.page_token)
    assert conn.page_id in sandbox.state()["subscriptions"]
    await db.rpc_as_user(
        ActingUser(token="", claims=claims_for(DEMO_ADMIN)),
        "instagram_disconnect",
        {"p_integration_id": conn.id},
    )

    async def done() -> bool:
        return await pg.fetchval("select state from public.instagram_page_unsubscriptions") == "completed"

    await run_until([make_worker(db, graph)], done)
    assert conn.page_id not in sandbox.state()["subscriptions"]


async def test_exit_when_idle_drains_and_stops(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """With exit_when_idle the worker completes the due jobs and returns 0 on its own."""
    await create_integrations(pg, sandbox, 5)
    await enqueue(db)
    worker = make_worker(db, graph, exit_when_idle=True)
    assert await asyncio.wait_for(worker.run(), 10) == 0
    assert await job_states(pg) == {"completed": 5}


def test_options_refuse_a_zero_concurrency() -> None:
    """Concurrency 0 is a configuration error."""
    import pytest

    from instagram_dm import errors

    with pytest.raises(errors.ConfigError):
        WorkerOptions(concurrency=0)
