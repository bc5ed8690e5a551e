"""The refresh job table and its RPCs, against the real database (no Meta involved)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.db.port import ActingUser
from tests.db import factories
from tests.fixtures.database import (
    DEMO_ADMIN,
    DEMO_IMO,
    DEMO_MEMBER,
    STARTER_ADMIN,
    STARTER_IMO,
    acting_as,
    claims_for,
)
from tests.worker.conftest import KEY, enqueue

WEEK = 7 * 86_400


async def integration(
    pg: asyncpg.Connection,
    *,
    expires_in: float = 3 * 86_400,
    status: str = "connected",
    imo_id: str = DEMO_IMO,
    key: str = KEY,
) -> str:
    """One integration with tokens ('user-old', 'page-old') encrypted with `key`, expiring `expires_in` s from now."""
    return await factories.integration(pg, imo_id, status=status, key=key, expires_in=expires_in)


async def claim(
    db: AsyncpgDatabase, worker: str = "w1", limit: int = 10, lease: int = 60
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await db.rpc(
        "instagram_refresh_claim_v1", {"p_worker": worker, "p_limit": limit, "p_lease_seconds": lease}
    )
    return rows


async def test_enqueue_takes_a_token_expiring_just_inside_the_window(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A connected integration expiring 7 days minus a minute from now gets a job."""
    await integration(pg, expires_in=WEEK - 60)
    assert await enqueue(db) == 1


async def test_enqueue_skips_a_token_expiring_just_outside_the_window(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A connected integration expiring 7 days plus a minute from now gets no job."""
    await integration(pg, expires_in=WEEK + 60)
    assert await enqueue(db) == 0


async def test_enqueue_window_is_a_parameter(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """With a 10-day window the integration expiring in 8 days is taken."""
    await integration(pg, expires_in=8 * 86_400)
    assert await enqueue(db, window=10 * 86_400) == 1


async def test_enqueue_twice_creates_one_job(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """Enqueueing twice leaves exactly one live job per integration; the second call counts zero."""
    await integration(pg)
    await integration(pg)
    assert await enqueue(db) == 2
    assert await enqueue(db) == 0
    assert await pg.fetchval("select count(*) from public.instagram_refresh_jobs") == 2


async def test_enqueue_skips_integrations_that_are_not_connected(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """reauth_required and error integrations are not refreshed."""
    await integration(pg, status="reauth_required")
    await integration(pg, status="error")
    assert await enqueue(db) == 0


async def test_second_live_job_for_one_integration_is_impossible(pg: asyncpg.Connection) -> None:
    """The partial unique index refuses a second available/running/retryable job for an integration."""
    iid = await integration(pg)
    await pg.execute(
        "insert into public.instagram_refresh_jobs (integration_id, imo_id) values ($1, $2)", iid, DEMO_IMO
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await pg.execute(
            "insert into public.instagram_refresh_jobs (integration_id, imo_id, state) values ($1, $2, 'retryable')",
            iid,
            DEMO_IMO,
        )


async def test_enqueue_after_completion_creates_a_new_job(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A finished job does not block the next day's job for the same integration."""
    await integration(pg)
    await enqueue(db)
    await pg.execute("update public.instagram_refresh_jobs set state = 'completed', finalized_at = now()")
    assert await enqueue(db) == 1


async def test_enqueue_sends_one_notify_per_call(
    pg: asyncpg.Connection, db: AsyncpgDatabase, database_url: str
) -> None:
    """Three jobs enqueued by one call produce a single NOTIFY carrying the count."""
    for _ in range(3):
        await integration(pg)
    got: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener("instagram_refresh_jobs", lambda *a: got.append(a[3]))
    try:
        assert await enqueue(db) == 3
        await asyncio.sleep(0.2)
    finally:
        await listener.close()
    assert got == ["3"]


async def test_cron_job_is_scheduled_daily_and_its_command_enqueues(pg: asyncpg.Connection) -> None:
    """pg_cron holds one daily enqueue job by name, and running its command enqueues due integrations."""
    rows = await pg.fetch(
        "select schedule, command, username from cron.job where jobname = 'instagram-refresh-enqueue'"
    )
    assert len(rows) == 1
    assert rows[0]["schedule"] == "15 3 * * *"
    assert rows[0]["username"] == "postgres"
    await integration(pg)
    await pg.execute(rows[0]["command"])
    assert (
        await pg.fetchval("select count(*) from public.instagram_refresh_jobs where state = 'available'") == 1
    )


async def test_rescheduling_by_name_does_not_duplicate(pg: asyncpg.Connection) -> None:
    """Re-running the migration's cron.schedule call updates the job instead of adding one."""
    await pg.execute(
        "select cron.schedule('instagram-refresh-enqueue', '15 3 * * *', "
        "$$select public.instagram_refresh_enqueue_v1()$$)"
    )
    names = await pg.fetch("select jobname, schedule from cron.job where jobname like 'instagram-refresh-%'")
    assert sorted((r["jobname"], r["schedule"]) for r in names) == [
        ("instagram-refresh-enqueue", "15 3 * * *"),
        ("instagram-refresh-prune", "45 3 * * *"),
    ]


async def test_claim_takes_at_most_the_limit_and_sets_a_lease(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Claim returns `limit` jobs, each running, attempt 1, leased to the caller."""
    for _ in range(5):
        await integration(pg)
    await enqueue(db)
    jobs = await claim(db, limit=3, lease=60)
    assert len(jobs) == 3
    assert {j["attempt"] for j in jobs} == {1}
    rows = await pg.fetch(
        "select lease_owner, lease_expires_at - now() as lease"
        " from public.instagram_refresh_jobs where state = 'running'"
    )
    assert len(rows) == 3
    assert {r["lease_owner"] for r in rows} == {"w1"}
    assert all(timedelta(seconds=55) < r["lease"] <= timedelta(seconds=60) for r in rows)
    assert len(await claim(db, worker="w2", limit=10)) == 2


async def test_claim_leaves_jobs_that_are_not_due(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A retryable job whose run_at is in the future is not claimed."""
    await integration(pg)
    await enqueue(db)
    await pg.execute(
        "update public.instagram_refresh_jobs set state = 'retryable', run_at = now() + interval '1 hour'"
    )
    assert await claim(db) == []


async def test_claim_refuses_a_bad_limit(db: AsyncpgDatabase) -> None:
    """A limit of zero is a bad request, not an empty claim."""
    with pytest.raises(errors.BadRequestError):
        await claim(db, limit=0)


async def test_expired_lease_is_claimable_again(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """After a simulated crash (lease expired while running), another worker claims the job on the same attempt."""
    await integration(pg)
    await enqueue(db)
    [job] = await claim(db, worker="crashed", lease=60)
    assert await claim(db, worker="rescuer") == []
    await pg.execute(
        "update public.instagram_refresh_jobs set lease_expires_at = now() - interval '1 second'"
    )
    [again] = await claim(db, worker="rescuer")
    assert again["id"] == job["id"]
    assert again["attempt"] == 1
    assert await pg.fetchval("select lease_owner from public.instagram_refresh_jobs") == "rescuer"


async def test_concurrent_claims_never_share_a_job(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """Ten concurrent claimers of 5 jobs each over 40 jobs get 40 distinct jobs between them."""
    for _ in range(40):
        await integration(pg)
    await enqueue(db)
    batches = await asyncio.gather(*(claim(db, worker=f"w{i}", limit=5) for i in range(10)))
    ids = [j["id"] for batch in batches for j in batch]
    assert len(ids) == len(set(ids)) == 40


async def complete(db: AsyncpgDatabase, worker: str, results: list[dict[str, Any]], key: str = KEY) -> Any:
    return await db.rpc(
        "instagram_refresh_complete_v2", {"p_worker": worker, "p_key": key, "p_results": results}
    )


async def test_complete_stores_new_tokens_and_finishes_the_job(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Complete writes the encrypted tokens, expiries and last_refreshed_at, resets failures, completes the job."""
    iid = await integration(pg)
    await pg.execute(
        "update public.instagram_integrations set failure_count = 3, last_error_code = 'x' where id = $1", iid
    )
    await enqueue(db)
    [job] = await claim(db)
    result = await complete(
        db,
        "w1",
        [
            {
                "job_id": job["id"],
                "user_token": "user-new",
                "page_token": "page-new",
                "token_expires_at": "2027-01-25T00:00:00+00:00",
                "data_access_expires_at": "2027-02-20T00:00:00+00:00",
            }
        ],
    )
    assert result == {"completed": 1, "stale": 0}
    tokens = await db.rpc("instagram_integration_tokens", {"p_integration_id": iid, "p_key": KEY})
    assert (tokens["user_token"], tokens["page_token"]) == ("user-new", "page-new")
    row = await pg.fetchrow("select * from public.instagram_integrations where id = $1", iid)
    assert row["token_expires_at"].isoformat() == "2027-01-25T00:00:00+00:00"
    assert row["failure_count"] == 0
    assert row["last_error_code"] is None
    assert row["last_refreshed_at"] is not None
    job_row = await pg.fetchrow("select state, finalized_at, lease_owner from public.instagram_refresh_jobs")
    assert job_row["state"] == "completed"
    assert job_row["finalized_at"] is not None
    assert job_row["lease_owner"] is None


async def test_complete_without_a_page_token_keeps_the_stored_one(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A null page_token in the result leaves the Page token as it was."""
    iid = await integration(pg)
    await enqueue(db)
    [job] = await claim(db)
    await complete(
        db,
        "w1",
        [{"job_id": job["id"], "user_token": "user-new", "token_expires_at": "2027-01-25T00:00:00Z"}],
    )
    tokens = await db.rpc("instagram_integration_tokens", {"p_integration_id": iid, "p_key": KEY})
    assert (tokens["user_token"], tokens["page_token"]) == ("user-new", "page-old")


async def test_complete_with_the_wrong_key_fails_and_keeps_the_tokens(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A worker holding another key gets encryption_key_mismatch; tokens and job stay as they were."""
    iid = await integration(pg)
    await enqueue(db)
    [job] = await claim(db)
    with pytest.raises(errors.EncryptionKeyMismatchError):
        await complete(
            db,
            "w1",
            [{"job_id": job["id"], "user_token": "evil", "token_expires_at": "2027-01-25T00:00:00Z"}],
            key="another-key-that-is-long-enough-0123456789",
        )
    tokens = await db.rpc("instagram_integration_tokens", {"p_integration_id": iid, "p_key": KEY})
    assert tokens["user_token"] == "user-old"
    assert await pg.fetchval("select state from public.instagram_refresh_jobs") == "running"


async def test_complete_by_a_worker_that_lost_the_lease_is_stale(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Only the lease holder completes: the old holder's late result is ignored and stores nothing."""
    iid = await integration(pg)
    await enqueue(db)
    await claim(db, worker="old", lease=60)
    await pg.execute(
        "update public.instagram_refresh_jobs set lease_expires_at = now() - interval '1 second'"
    )
    [job] = await claim(db, worker="new")
    result = await complete(
        db, "old", [{"job_id": job["id"], "user_token": "late", "token_expires_at": "2027-01-01Z"}]
    )
    assert result == {"completed": 0, "stale": 1}
    tokens = await db.rpc("instagram_integration_tokens", {"p_integration_id": iid, "p_key": KEY})
    assert tokens["user_token"] == "user-old"


async def test_complete_does_not_resurrect_a_disconnected_integration(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """If the integration was disconnected mid-refresh, the job completes and no token is written back."""
    iid = await integration(pg)
    await enqueue(db)
    [job] = await claim(db)
    await db.rpc_as_user(
        ActingUser(token="", claims=claims_for(DEMO_ADMIN)), "instagram_disconnect", {"p_integration_id": iid}
    )
    await complete(db, "w1", [{"job_id": job["id"], "user_token": "new", "token_expires_at": "2027-01-01Z"}])
    row = await pg.fetchrow("select status, user_access_token_encrypted from public.instagram_integrations")
    assert row["status"] == "disconnected"
    assert row["user_access_token_encrypted"] is None


async def test_complete_warning_notifies_once(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A warning is stored on the integration and notifies the IMO once, not on every refresh."""
    iid = await integration(pg)
    for _ in range(2):
        await enqueue(db)
        [job] = await claim(db)
        await complete(
            db,
            "w1",
            [
                {
                    "job_id": job["id"],
                    "user_token": "u",
                    "token_expires_at": "2026-12-01T00:00:00Z",
                    "warning_code": "token_not_extended",
                    "warning_message": "Meta did not extend it.",
                }
            ],
        )
    row = await pg.fetchrow(
        "select status, last_error_code from public.instagram_integrations where id = $1", iid
    )
    assert (row["status"], row["last_error_code"]) == ("connected", "token_not_extended")
    notes = await pg.fetch("select imo_id, user_id, kind, data from public.notifications")
    assert len(notes) == 1
    assert notes[0]["kind"] == "instagram_reconnect_soon"
    assert notes[0]["user_id"] is None
    assert json.loads(notes[0]["data"])["integration_id"] == iid


async def fail(db: AsyncpgDatabase, job_id: int, action: str, run_at: Any = None, worker: str = "w1") -> Any:
    return await db.rpc(
        "instagram_refresh_fail_v1",
        {
            "p_job_id": job_id,
            "p_worker": worker,
            "p_action": action,
            "p_run_at": run_at,
            "p_error_code": "meta_2",
            "p_error_message": "temporary",
        },
    )


async def test_fail_retry_records_the_error_on_job_and_integration(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A retry makes the job retryable at the given time and counts a failure on the integration."""
    iid = await integration(pg)
    await enqueue(db)
    [job] = await claim(db)
    run_at = await pg.fetchval("select now() + interval '1 hour'")
    assert (await fail(db, job["id"], "retry", run_at))["state"] == "retryable"
    row = await pg.fetchrow("select state, run_at, last_error_code from public.instagram_refresh_jobs")
    assert (row["state"], row["run_at"], row["last_error_code"]) == ("retryable", run_at, "meta_2")
    integ = await pg.fetchrow(
        "select status, failure_count, last_error_code from public.instagram_integrations where id = $1", iid
    )
    assert (integ["status"], integ["failure_count"], integ["last_error_code"]) == ("connected", 1, "meta_2")


async def test_fail_retry_after_the_last_attempt_discards(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A retry asked for on the last allowed attempt discards the job instead."""
    await integration(pg)
    await enqueue(db)
    await pg.execute("update public.instagram_refresh_jobs set max_attempts = 1")
    [job] = await claim(db)
    result = await fail(db, job["id"], "retry", await pg.fetchval("select now()"))
    assert result["state"] == "discarded"


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("reauth", "reauth_required", "instagram_reauth_required"),
        ("error", "error", "instagram_refresh_failed"),
    ],
)
async def test_fail_reauth_or_error_marks_the_integration_and_notifies(
    pg: asyncpg.Connection, db: AsyncpgDatabase, action: str, status: str, kind: str
) -> None:
    """reauth / error discard the job, set the integration's status and leave one IMO-wide notification."""
    iid = await integration(pg)
    await enqueue(db)
    [job] = await claim(db)
    await fail(db, job["id"], action)
    assert await pg.fetchval("select state from public.instagram_refresh_jobs") == "discarded"
    assert (
        await pg.fetchval("select status::text from public.instagram_integrations where id = $1", iid)
        == status
    )
    notes = await pg.fetch("select kind, user_id, imo_id from public.notifications")
    assert [(n["kind"], n["user_id"], str(n["imo_id"])) for n in notes] == [(kind, None, DEMO_IMO)]


async def test_fail_by_another_worker_is_stale(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A worker that does not hold the lease cannot fail the job."""
    await integration(pg)
    await enqueue(db)
    [job] = await claim(db, worker="w1")
    assert (await fail(db, job["id"], "reauth", worker="w2"))["stale"] is True
    assert await pg.fetchval("select state from public.instagram_refresh_jobs") == "running"


async def test_release_hands_jobs_back_without_charging_an_attempt(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Released jobs are available again with the attempt they had before the claim."""
    await integration(pg)
    await enqueue(db)
    [job] = await claim(db)
    assert await db.rpc("instagram_refresh_release_v1", {"p_worker": "w1", "p_job_ids": [job["id"]]}) == 1
    row = await pg.fetchrow("select state, attempt, lease_owner from public.instagram_refresh_jobs")
    assert (row["state"], row["attempt"], row["lease_owner"]) == ("available", 0, None)


async def test_prune_deletes_completed_jobs_after_7_days(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """Completed jobs finalized 8 days ago are deleted, those finalized 6 days ago are kept."""
    for age in (8, 6):
        iid = await integration(pg)
        await pg.execute(
            """insert into public.instagram_refresh_jobs (integration_id, imo_id, state, finalized_at)
               values ($1, $2, 'completed', now() - make_interval(days => $3))""",
            iid,
            DEMO_IMO,
            age,
        )
    assert (await db.rpc("instagram_refresh_prune_v1"))["deleted"] == 1
    assert await pg.fetchval("select count(*) from public.instagram_refresh_jobs") == 1
    assert await pg.fetchval("select count(*) from cron.job where jobname = 'instagram-refresh-prune'") == 1


async def test_member_sees_the_jobs_of_their_imo_only(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """RLS: a member reads their IMO's jobs and not another IMO's; anon reads nothing."""
    await integration(pg)
    await integration(pg, imo_id=STARTER_IMO)
    assert await enqueue(db) == 2
    async with acting_as(pg, DEMO_MEMBER) as conn:
        assert await conn.fetchval("select count(*) from public.instagram_refresh_jobs") == 1
    async with acting_as(pg, STARTER_ADMIN) as conn:
        imos = await conn.fetch("select imo_id from public.instagram_refresh_jobs")
        assert [str(r["imo_id"]) for r in imos] == [STARTER_IMO]
    async with acting_as(pg, None, role="anon") as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("select * from public.instagram_refresh_jobs")


async def test_claim_plan_does_not_depend_on_statistics(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """Right after a bulk insert of 20,000 jobs into a table analysed while empty, the claim still reads the
    due index in order (no sort) and takes milliseconds."""
    await pg.execute("analyze public.instagram_refresh_jobs")  # statistics of an empty table
    await pg.execute(
        """with i as (
             insert into public.instagram_integrations (imo_id, facebook_page_id, instagram_business_account_id,
               status, token_expires_at)
             select $1, (9 * 10^12 + g)::bigint::text, (8 * 10^12 + g)::bigint::text, 'pending', now()
             from generate_series(1, 20000) g returning id, imo_id)
           insert into public.instagram_refresh_jobs (integration_id, imo_id, run_at)
           select id, imo_id, now() - interval '1 minute' from i""",
        DEMO_IMO,
    )
    config = await pg.fetchval(
        "select proconfig from pg_proc"
        " where oid = 'public.instagram_refresh_claim_v1(text, integer, integer)'::regprocedure"
    )
    assert {"enable_sort=off", "enable_seqscan=off", "jit=off"} <= set(config)
    async with pg.transaction():
        await pg.execute("set local enable_sort = off; set local enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await pg.fetch(
                """explain select j.id from public.instagram_refresh_jobs j
                   where j.state in ('available', 'retryable') and j.run_at <= now()
                   order by j.run_at, j.id limit 10 for update skip locked"""
            )
        )
    assert "instagram_refresh_jobs_due_idx" in plan and "Sort" not in plan, plan
    started = time.perf_counter()
    for i in range(20):
        assert len(await claim(db, worker=f"w{i}", limit=10)) == 10
    assert (time.perf_counter() - started) / 20 < 0.05


async def test_complete_keeps_tokens_a_reconnect_stored_meanwhile(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A refresh that started from tokens replaced by a reconnect finishes its job but stores nothing."""
    integration_id = await integration(pg)
    await enqueue(db)
    (job,) = await claim(db)
    before = await db.rpc("instagram_integration_tokens", {"p_integration_id": integration_id, "p_key": KEY})
    await pg.execute(  # an admin reconnects while the worker talks to Meta
        "update public.instagram_integrations set user_access_token_encrypted ="
        " instagram_private.encrypt_token('user-reconnected', $2) where id = $1",
        integration_id,
        KEY,
    )
    result = {
        "job_id": job["id"],
        "user_token": "user-refreshed-from-old",
        "token_expires_at": "2030-01-01T00:00:00+00:00",
        "token_version": before["token_version"],
        "token_digest": before["token_digest"],
    }
    done = await db.rpc(
        "instagram_refresh_complete_v2", {"p_worker": "w1", "p_key": KEY, "p_results": [result]}
    )
    assert done == {"completed": 1, "stale": 0}
    after = await db.rpc("instagram_integration_tokens", {"p_integration_id": integration_id, "p_key": KEY})
    assert after["user_token"] == "user-reconnected"
    assert (
        await pg.fetchval("select state from public.instagram_refresh_jobs where id = $1", job["id"])
        == "completed"
    )


async def _a_dead_job(pg: asyncpg.Connection, db: AsyncpgDatabase) -> tuple[str, int]:
    """An integration whose job lost its lease for the last time it may (the worker died every time)."""
    iid = await integration(pg)
    assert await enqueue(db) == 1
    job_id = await pg.fetchval(
        """update public.instagram_refresh_jobs set state = 'running', attempt = 1, lease_owner = 'gone',
             lease_expiries = max_lease_expiries - 1, lease_expires_at = now() - interval '1 minute'
           returning id"""
    )
    return iid, int(job_id)


async def test_a_dead_job_does_not_block_the_next_enqueue(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A job that lost its last lease is buried by the daily sweep, which enqueues a new job for its integration."""
    _, dead = await _a_dead_job(pg, db)
    assert await enqueue(db) == 1
    rows = await pg.fetch("select id, state, last_error_code from public.instagram_refresh_jobs order by id")
    assert [(r["id"] == dead, r["state"], r["last_error_code"]) for r in rows] == [
        (True, "discarded", "lease_expired"),
        (False, "available", None),
    ]


async def test_enqueue_one_buries_a_dead_job_and_enqueues(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """`refresh-now --integration` behind a dead job: enqueued true with a new job, not 'enqueued: false'."""
    iid, dead = await _a_dead_job(pg, db)
    result = await db.rpc("instagram_refresh_enqueue_one_v1", {"p_integration_id": iid})
    assert result["enqueued"] is True and result["job_id"] != dead


async def test_a_buried_job_leaves_its_reason_on_the_integration_and_tells_the_imo(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Giving up on a dead job records lease_expired on the integration (status kept) and one notification."""
    iid, _ = await _a_dead_job(pg, db)
    await db.rpc("instagram_refresh_prune_v1", {"p_keep_days": 7})
    row = await pg.fetchrow(
        "select status, last_error_code from public.instagram_integrations where id = $1", iid
    )
    assert (row["status"], row["last_error_code"]) == ("connected", "lease_expired")
    notes = await pg.fetch("select kind, data from public.notifications where imo_id = $1", DEMO_IMO)
    assert [(n["kind"], json.loads(n["data"])["code"]) for n in notes] == [
        ("instagram_refresh_failed", "lease_expired")
    ]
