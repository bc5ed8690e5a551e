"""Both job kinds in one worker, against the real database and the Meta sandbox: poison rows, the
unsubscribe kind's wake-up, retries and shutdown, fair shares, and a key rotation under load."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.db.port import ActingUser
from instagram_dm.graph import GraphClient
from tests.fixtures.database import DEMO_ADMIN, claims_for
from tests.worker.conftest import (
    KEY,
    all_finished,
    create_integrations,
    disconnect,
    enqueue,
    job_states,
    make_worker,
    run_until,
)

OLD = "the-previous-key-0123456789-abcdefghijklmn"
FOREIGN = "a-key-left-from-a-restore-0123456789-abcd"


async def unsubscription_states(pg: asyncpg.Connection) -> dict[str, int]:
    rows = await pg.fetch(
        "select state, count(*) as n from public.instagram_page_unsubscriptions group by state"
    )
    return {r["state"]: r["n"] for r in rows}


def unsubscriptions_finished(pg: asyncpg.Connection, n: int) -> Any:
    async def check() -> bool:
        states = await unsubscription_states(pg)
        return states.get("completed", 0) + states.get("discarded", 0) >= n

    return check


async def test_foreign_key_and_corrupt_rows_fail_alone_and_the_worker_goes_on(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """Of 100 due jobs, two rows under another key and one damaged row fail on their own (the integration
    keeps its status with the reason as last error, one notification each); the other 97 are refreshed by a
    worker that keeps running (exit 0)."""
    conns = await create_integrations(pg, sandbox, 97)
    foreign = await create_integrations(pg, sandbox, 2, key=FOREIGN)
    [corrupt] = await create_integrations(pg, sandbox, 1)
    await pg.execute(
        "update public.instagram_integrations set user_access_token_encrypted = '\\x0badc0de'::bytea where id = $1",
        corrupt.id,
    )
    assert await enqueue(db) == 100
    worker = make_worker(db, graph, concurrency=20)
    assert await run_until([worker], all_finished(pg, 100), timeout=30) == [0]
    assert await job_states(pg) == {"completed": 97, "discarded": 3}
    assert set(sandbox.state()["exchanges"]) == {c.user_id for c in conns}
    bad = await pg.fetch(
        "select id::text, status::text, last_error_code from public.instagram_integrations"
        " where last_error_code is not null"
    )
    assert {(r["id"], r["status"], r["last_error_code"]) for r in bad} == {
        *((c.id, "connected", "encryption_key_mismatch") for c in foreign),
        (corrupt.id, "connected", "token_corrupt"),
    }
    notified = await pg.fetch("select data ->> 'integration_id' as id, kind from public.notifications")
    assert sorted(r["id"] for r in notified) == sorted([*(c.id for c in foreign), corrupt.id])
    assert {r["kind"] for r in notified} == {"instagram_token_unreadable"}
    assert await enqueue(db) == 3  # tomorrow's sweep takes them again: the key may be fixed by then


async def test_unsubscribe_is_woken_by_notify_long_before_the_poll(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """With a 60 s poll, the NOTIFY of a disconnect gets the Page unsubscribed within seconds."""
    [conn] = await create_integrations(pg, sandbox, 1, webhook_subscribed=True)
    await graph.subscribe_page(conn.page_id, conn.page_token)
    worker = make_worker(db, graph, poll_interval=60.0)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)  # the first (empty) claims are behind us; only a NOTIFY can wake it now
    await disconnect(pg, conn.id)
    done = unsubscriptions_finished(pg, 1)
    for _ in range(250):
        if await done():
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    assert await task == 0
    assert await unsubscription_states(pg) == {"completed": 1}
    assert conn.page_id not in sandbox.state()["subscriptions"]


async def test_unsubscribe_outage_retries_then_succeeds(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """Meta failing the unsubscribe with 5xx (beyond the in-call retries) leaves it retryable; it completes later."""
    [conn] = await create_integrations(pg, sandbox, 1, webhook_subscribed=True)
    await graph.subscribe_page(conn.page_id, conn.page_token)
    sandbox.fault("subscribed_apps", method="DELETE", http_status=503, code=2, count=4, is_transient=True)
    await disconnect(pg, conn.id)
    await run_until([make_worker(db, graph)], unsubscriptions_finished(pg, 1))
    row = await pg.fetchrow(
        "select state, attempt, page_access_token_encrypted from public.instagram_page_unsubscriptions"
    )
    assert (row["state"], row["attempt"] >= 2, row["page_access_token_encrypted"]) == (
        "completed",
        True,
        None,
    )
    assert conn.page_id not in sandbox.state()["subscriptions"]


async def test_unsubscribe_under_another_key_retries_and_never_calls_meta(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """A queued Page token under a key the worker does not hold is retried (a rolling key change may be
    under way) until its attempts run out, then discarded; Meta is never called with it."""
    [conn] = await create_integrations(pg, sandbox, 1, key=FOREIGN, webhook_subscribed=True)
    await disconnect(pg, conn.id)
    await pg.execute("update public.instagram_page_unsubscriptions set max_attempts = 3")
    before = sandbox.state()["calls"].get("DELETE /{id}/subscribed_apps", 0)
    await run_until([make_worker(db, graph)], unsubscriptions_finished(pg, 1))
    row = await pg.fetchrow(
        "select state, attempt, last_error_code from public.instagram_page_unsubscriptions"
    )
    assert (row["state"], row["attempt"], row["last_error_code"]) == (
        "discarded",
        3,
        "encryption_key_mismatch",
    )
    assert sandbox.state()["calls"].get("DELETE /{id}/subscribed_apps", 0) == before


async def test_unsubscribe_of_a_damaged_token_is_discarded_at_once(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """Damaged ciphertext under our key is discarded on its first attempt, without a Meta call."""
    [conn] = await create_integrations(pg, sandbox, 1, webhook_subscribed=True)
    await disconnect(pg, conn.id)
    await pg.execute(
        "update public.instagram_page_unsubscriptions set page_access_token_encrypted = '\\x0bad'::bytea"
    )
    await run_until([make_worker(db, graph)], unsubscriptions_finished(pg, 1))
    row = await pg.fetchrow(
        "select state, attempt, last_error_code from public.instagram_page_unsubscriptions"
    )
    assert (row["state"], row["attempt"], row["last_error_code"]) == ("discarded", 1, "token_corrupt")


async def test_a_page_still_in_use_is_skipped(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """When another connected integration still uses the Page, the unsubscription completes as skipped."""
    [conn, other] = await create_integrations(pg, sandbox, 2, webhook_subscribed=True)
    await graph.subscribe_page(conn.page_id, conn.page_token)
    await pg.execute(  # another integration (another Instagram account) uses the same Page
        "update public.instagram_integrations set facebook_page_id = $1 where id = $2", conn.page_id, other.id
    )
    await disconnect(pg, conn.id)
    await run_until([make_worker(db, graph)], unsubscriptions_finished(pg, 1))
    row = await pg.fetchrow("select state, last_error_code from public.instagram_page_unsubscriptions")
    assert (row["state"], row["last_error_code"]) == ("completed", "page_in_use")
    assert conn.page_id in sandbox.state()["subscriptions"]


async def test_shutdown_hands_unsubscriptions_back_too(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """An unsubscribe still running when the grace period ends is released (available, attempt 0), not lost."""
    [conn] = await create_integrations(pg, sandbox, 1, webhook_subscribed=True)
    await graph.subscribe_page(conn.page_id, conn.page_token)
    sandbox.latency("subscribed_apps", 2000)
    await disconnect(pg, conn.id)
    worker = make_worker(db, graph, grace_period=0.1)
    task = asyncio.create_task(worker.run())
    for _ in range(500):
        if await pg.fetchval("select state from public.instagram_page_unsubscriptions") == "running":
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    worker.request_stop()
    assert await task == 0
    row = await pg.fetchrow("select state, attempt, lease_owner from public.instagram_page_unsubscriptions")
    assert (row["state"], row["attempt"], row["lease_owner"]) == ("available", 0, None)
    assert worker.stats["released"] == 1


async def test_unsubscribe_gets_a_slot_while_refresh_keeps_every_other_one_busy(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """With 40 slow refreshes queued for 4 slots, a disconnect's unsubscribe still finishes long before them."""
    await create_integrations(pg, sandbox, 40)
    [conn] = await create_integrations(pg, sandbox, 1, webhook_subscribed=True, expires_in=60 * 86_400)
    await graph.subscribe_page(conn.page_id, conn.page_token)
    sandbox.latency("/oauth/access_token", 300)
    await enqueue(db)
    await disconnect(pg, conn.id)
    worker = make_worker(db, graph, concurrency=4)
    task = asyncio.create_task(worker.run())
    done = unsubscriptions_finished(pg, 1)
    for _ in range(300):
        if await done():
            break
        await asyncio.sleep(0.02)
    refreshed = (await job_states(pg)).get("completed", 0)
    worker.request_stop()
    await task
    assert await unsubscription_states(pg) == {"completed": 1}
    assert refreshed <= 12  # the unsubscribe took one of the first freed slots, not the last


async def test_rotate_key_under_a_running_worker_and_api_fails_no_job(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any
) -> None:
    """Rotating 60 integrations in small batches while a worker (new key, previous key for reading)
    refreshes them and the admin disconnects 5 through the app-facing RPC: every refresh and every
    Page unsubscribe completes, none fails, and every stored token ends under the new key."""
    conns = await create_integrations(pg, sandbox, 60, key=OLD, webhook_subscribed=True)
    leaving = conns[:5]
    for conn in leaving:
        await graph.subscribe_page(conn.page_id, conn.page_token)
    sandbox.latency("/oauth/access_token", 20, jitter_ms=20)
    await enqueue(db)
    worker = make_worker(db, graph, key=KEY, previous_key=OLD, concurrency=8)
    task = asyncio.create_task(worker.run())
    admin = ActingUser(token="", claims=claims_for(DEMO_ADMIN))
    remaining, batches = 60, 0
    while remaining:
        result = await db.rpc(
            "instagram_rotate_key_batch", {"p_old_key": OLD, "p_new_key": KEY, "p_batch": 5}
        )
        remaining, batches = result["remaining"], batches + 1
        if batches <= len(leaving):  # the API's disconnect path, as the signed-in admin, mid-rotation
            await rpc.disconnect(db, admin, integration_id=leaving[batches - 1].id)
        await asyncio.sleep(0.01)
    refreshed, unsubscribed = all_finished(pg, 60), unsubscriptions_finished(pg, len(leaving))
    for _ in range(500):
        if await refreshed() and await unsubscribed():
            break
        await asyncio.sleep(0.02)
    worker.request_stop()
    assert await task == 0
    assert worker.stats["failed"] == 0
    states = await job_states(pg)
    assert states.get("discarded", 0) == 0 and states["completed"] == 60
    assert await unsubscription_states(pg) == {"completed": len(leaving)}
    assert not {c.page_id for c in leaving} & set(sandbox.state()["subscriptions"])
    fingerprints = await pg.fetch(
        "select distinct token_key_fingerprint = instagram_private.key_fingerprint($1) as current"
        " from public.instagram_integrations where token_key_fingerprint is not null",
        KEY,
    )
    assert [r["current"] for r in fingerprints] == [True]
