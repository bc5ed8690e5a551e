"""The job-kind SQL of the reshape, against the real database: reading tokens with the current or the
previous key, the start-up key check, and the unsubscribe queue in the common state vocabulary."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from tests.fixtures.database import DEMO_ADMIN
from tests.worker.conftest import KEY
from tests.worker.test_queue_sql import claim, complete, enqueue, integration
from worker.keys import check_keys

OLD = "the-previous-key-0123456789-abcdefghijklmn"
THIRD = "a-third-key-nobody-holds-0123456789-abcdef"


async def read_tokens(db: AsyncpgDatabase, iid: str, previous: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = await db.rpc(
        "instagram_integration_tokens", {"p_integration_id": iid, "p_key": KEY, "p_previous_key": previous}
    )
    return result


async def test_tokens_under_the_previous_key_read_with_it(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A row not yet rotated (previous key's fingerprint) decrypts when the previous key is given."""
    iid = await integration(pg, key=OLD)
    assert (await read_tokens(db, iid, previous=OLD))["user_token"] == "user-old"


async def test_tokens_under_a_key_we_do_not_hold_are_a_mismatch(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Neither the current nor the previous key: encryption_key_mismatch, nothing decrypted."""
    iid = await integration(pg, key=THIRD)
    with pytest.raises(errors.EncryptionKeyMismatchError):
        await read_tokens(db, iid, previous=OLD)


async def test_damaged_ciphertext_under_our_fingerprint_is_token_corrupt(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """pgcrypto's "wrong key or corrupt data" under the right fingerprint is token_corrupt, not a key mismatch."""
    iid = await integration(pg)
    await pg.execute(
        "update public.instagram_integrations set user_access_token_encrypted = '\\x00112233'::bytea where id = $1",
        iid,
    )
    with pytest.raises(errors.TokenCorruptError):
        await read_tokens(db, iid)


def refreshed(job: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """The worker's result for `job`: a new user token, from the tokens read in `before`."""
    return {
        "job_id": job["id"],
        "user_token": "user-new",
        "token_expires_at": "2030-01-01T00:00:00+00:00",
        "token_version": before["token_version"],
        "token_digest": before["token_digest"],
    }


async def test_complete_re_encrypts_a_not_yet_rotated_row_with_the_current_key(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A refresh of a row under the previous key stores both tokens under the current key (kept Page token too)."""
    iid = await integration(pg, key=OLD)
    await enqueue(db)
    [job] = await claim(db)
    before = await read_tokens(db, iid, previous=OLD)
    result = refreshed(job, before)
    done = await db.rpc(
        "instagram_refresh_complete_v2",
        {"p_worker": "w1", "p_results": [result], "p_key": KEY, "p_previous_key": OLD},
    )
    assert done == {"completed": 1, "stale": 0}
    after = await read_tokens(db, iid)  # the current key alone opens it now
    assert (after["user_token"], after["page_token"]) == ("user-new", "page-old")


async def test_a_rotation_between_read_and_complete_is_not_taken_for_a_reconnect(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """rotate-key re-encrypting the row mid-refresh changes the ciphertext, not the token: the refresh is stored."""
    iid = await integration(pg, key=OLD)
    await enqueue(db)
    [job] = await claim(db)
    before = await read_tokens(db, iid, previous=OLD)
    rotated = await db.rpc("instagram_rotate_key_batch", {"p_old_key": OLD, "p_new_key": KEY, "p_batch": 10})
    assert rotated["rotated"] == 1
    result = refreshed(job, before)
    await complete(db, "w1", [result])
    assert (await read_tokens(db, iid))["user_token"] == "user-new"


async def test_key_check_counts_rows_per_key(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """The key check counts rows under the current, the previous and any other key."""
    for key in (KEY, KEY, OLD, THIRD):
        await integration(pg, key=key)
    counts = await check_keys(db, key=KEY, previous_key=OLD)
    assert (counts.current, counts.previous, counts.foreign) == (2, 1, 1)


async def test_key_check_refuses_keys_that_open_no_stored_row(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A worker whose keys open none of the stored rows is told so before it claims anything."""
    await integration(pg, key=THIRD)
    with pytest.raises(errors.EncryptionKeyMismatchError, match="None of the 1 stored token rows"):
        await check_keys(db, key=KEY, previous_key=None)


async def test_key_check_passes_on_an_empty_database(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """No stored tokens at all is a fresh install, not a wrong key."""
    counts = await check_keys(db, key=KEY, previous_key=None)
    assert (counts.current, counts.previous, counts.foreign) == (0, 0, 0)


# ---- the unsubscribe queue --------------------------------------------------------------------------


async def queue_unsubscription(pg: asyncpg.Connection, key: str = KEY) -> str:
    iid = await integration(pg, key=key)
    await pg.execute("update public.instagram_integrations set webhook_subscribed = true where id = $1", iid)
    await pg.execute("select instagram_private.disconnect_integration($1, $2)", iid, DEMO_ADMIN)
    return str(
        await pg.fetchval(
            "select id from public.instagram_page_unsubscriptions where integration_id = $1", iid
        )
    )


async def claim_unsubscriptions(
    db: AsyncpgDatabase, worker: str = "w1", limit: int = 10
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await db.rpc(
        "instagram_unsubscribe_claim_v1", {"p_worker": worker, "p_limit": limit, "p_lease_seconds": 60}
    )
    return rows


async def test_disconnect_queues_an_available_unsubscription_and_notifies(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """The queued row starts available (the common vocabulary) and a NOTIFY goes out on its channel."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await db.listen(["instagram_page_unsubscriptions"])

    async def collect() -> None:
        async for notification in listener:
            await heard.put(notification.channel)

    task = asyncio.create_task(collect())
    try:
        await queue_unsubscription(pg)
        assert await asyncio.wait_for(heard.get(), 5) == "instagram_page_unsubscriptions"
    finally:
        await listener.close()
        await task
    assert await pg.fetchval("select state from public.instagram_page_unsubscriptions") == "available"


async def test_claim_leases_and_carries_no_token(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A claimed unsubscription is running under the worker's lease; the token comes only from its own call."""
    uid = await queue_unsubscription(pg)
    [job] = await claim_unsubscriptions(db)
    assert job["id"] == uid and job["attempt"] == 1 and "page_token" not in job
    row = await pg.fetchrow("select state, lease_owner from public.instagram_page_unsubscriptions")
    assert (row["state"], row["lease_owner"]) == ("running", "w1")
    token = await db.rpc(
        "instagram_unsubscribe_token_v1",
        {"p_job_id": uid, "p_worker": "w1", "p_key": KEY, "p_previous_key": None},
    )
    assert token == {"still_in_use": False, "page_token": "page-old"}
    with pytest.raises(errors.NotFoundError):
        await db.rpc("instagram_unsubscribe_token_v1", {"p_job_id": uid, "p_worker": "w2", "p_key": KEY})


async def test_complete_wipes_the_token_and_ignores_a_stale_worker(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Completing finishes the row and wipes its Page token; a worker without the lease changes nothing."""
    uid = await queue_unsubscription(pg)
    await claim_unsubscriptions(db)
    stale = await db.rpc(
        "instagram_unsubscribe_complete_v1",
        {"p_worker": "w2", "p_results": [{"job_id": uid, "outcome": "done"}]},
    )
    assert stale == {"completed": 0, "stale": 1}
    done = await db.rpc(
        "instagram_unsubscribe_complete_v1",
        {"p_worker": "w1", "p_results": [{"job_id": uid, "outcome": "done"}]},
    )
    assert done == {"completed": 1, "stale": 0}
    row = await pg.fetchrow("select * from public.instagram_page_unsubscriptions")
    assert (row["state"], row["page_access_token_encrypted"], row["finalized_at"] is not None) == (
        "completed",
        None,
        True,
    )


async def test_fail_retries_until_the_last_attempt_then_discards_and_wipes(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A retry keeps the token for the next attempt; a retry asked on the last attempt becomes a discard."""
    uid = await queue_unsubscription(pg)
    await pg.execute("update public.instagram_page_unsubscriptions set max_attempts = 2")
    args = {"p_job_id": uid, "p_worker": "w1", "p_action": "retry", "p_error_code": "meta_2"}
    await claim_unsubscriptions(db)
    assert (await db.rpc("instagram_unsubscribe_fail_v1", {**args, "p_run_at": "2000-01-01T00:00:00+00:00"}))[
        "state"
    ] == "retryable"
    assert await pg.fetchval(
        "select page_access_token_encrypted is not null from public.instagram_page_unsubscriptions"
    )
    await claim_unsubscriptions(db)
    assert (await db.rpc("instagram_unsubscribe_fail_v1", {**args, "p_run_at": "2000-01-01T00:00:00+00:00"}))[
        "state"
    ] == "discarded"
    row = await pg.fetchrow("select * from public.instagram_page_unsubscriptions")
    assert (row["state"], row["attempt"], row["page_access_token_encrypted"]) == ("discarded", 2, None)


async def test_release_hands_back_without_charging_an_attempt(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Released on shutdown, the unsubscription is available again with its attempt given back."""
    uid = await queue_unsubscription(pg)
    await claim_unsubscriptions(db)
    assert await db.rpc("instagram_unsubscribe_release_v1", {"p_worker": "w1", "p_job_ids": [uid]}) == 1
    row = await pg.fetchrow("select state, attempt, lease_owner from public.instagram_page_unsubscriptions")
    assert (row["state"], row["attempt"], row["lease_owner"]) == ("available", 0, None)


async def test_an_expired_lease_is_claimed_again(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A worker that died mid-unsubscribe leaves a running row whose expired lease another worker takes."""
    await queue_unsubscription(pg)
    await claim_unsubscriptions(db, worker="dead")
    await pg.execute(
        "update public.instagram_page_unsubscriptions set lease_expires_at = now() - interval '1 s'"
    )
    [job] = await claim_unsubscriptions(db, worker="alive")
    assert job["attempt"] == 1
    assert await pg.fetchval("select lease_owner from public.instagram_page_unsubscriptions") == "alive"


# ---- every kind's queue functions have the common shapes ---------------------------------------------


def _kinds() -> list[Any]:
    from worker.kinds.profiles import ProfileKind
    from worker.kinds.refresh import RefreshKind
    from worker.kinds.send import SendKind
    from worker.kinds.unsubscribe import UnsubscribeKind
    from worker.kinds.webhooks import WebhookKind

    async def never(job: Any) -> Any:
        raise AssertionError

    return [
        RefreshKind(never, key=KEY),
        UnsubscribeKind(None, None, key=KEY),  # type: ignore[arg-type]
        WebhookKind(),
        ProfileKind(None, None, key=KEY),  # type: ignore[arg-type]
        SendKind(None, None, key=KEY),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize("kind", _kinds(), ids=lambda k: k.name)
async def test_each_kind_names_queue_functions_of_the_common_shape(kind: Any, pg: asyncpg.Connection) -> None:
    """A kind's claim / complete / fail / release exist once, take the arguments the runner sends, and are
    service-only."""
    expected = {
        kind.rpcs.claim: {"p_worker", "p_limit", "p_lease_seconds"},
        kind.rpcs.complete: {"p_worker", "p_results", *kind.complete_args()},
        kind.rpcs.fail: {"p_job_id", "p_worker", "p_action", "p_run_at", "p_error_code", "p_error_message"},
        kind.rpcs.release: {"p_worker", "p_job_ids"},
    }
    for name, arguments in expected.items():
        rows = await pg.fetch(
            """select p.proargnames as names, has_function_privilege('authenticated', p.oid, 'execute') as app,
                      has_function_privilege('service_role', p.oid, 'execute') as service
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'public' and p.proname = $1""",
            name,
        )
        assert len(rows) == 1, name
        assert set(rows[0]["names"]) == arguments, name
        assert (rows[0]["app"], rows[0]["service"]) == (False, True), name


async def test_token_call_says_still_in_use_when_the_page_was_reconnected_since_the_claim(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A Page connected again between claim and Meta call is reported in use, and no token is handed out."""
    uid = await queue_unsubscription(pg)
    await claim_unsubscriptions(db)
    page = await pg.fetchval("select facebook_page_id from public.instagram_page_unsubscriptions")
    other = await integration(pg)
    await pg.execute(
        "update public.instagram_integrations set facebook_page_id = $1 where id = $2", page, other
    )
    token = await db.rpc("instagram_unsubscribe_token_v1", {"p_job_id": uid, "p_worker": "w1", "p_key": KEY})
    assert token == {"still_in_use": True, "page_token": None}


async def test_refresh_poison_keeps_the_status_and_notifies_once_per_reason(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """poison discards the job, leaves the integration connected with the reason, and tells the IMO once
    however often the sweep meets the same unreadable row."""
    iid = await integration(pg)
    for _ in range(2):
        await enqueue(db)
        [job] = await claim(db)
        result = await db.rpc(
            "instagram_refresh_fail_v1",
            {"p_job_id": job["id"], "p_worker": "w1", "p_action": "poison", "p_error_code": "token_corrupt"},
        )
        assert result["state"] == "discarded"
    row = await pg.fetchrow(
        "select status::text, last_error_code from public.instagram_integrations where id = $1", iid
    )
    assert (row["status"], row["last_error_code"]) == ("connected", "token_corrupt")
    kinds = [r["kind"] for r in await pg.fetch("select kind from public.notifications")]
    assert kinds == ["instagram_token_unreadable"]
