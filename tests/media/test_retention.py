"""What happens to stored media later: the retention prune, and a copy that finishes after its conversation
was deleted."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from tests.fixtures.api import acting_user
from tests.fixtures.database import DEMO_MEMBER
from tests.media.helpers import Env, attachment, cdn_file, message_media, receive
from tests.worker.test_webhooks import integration

pytest_plugins = ["tests.fixtures.sandbox"]


@pytest.fixture
async def m(
    db: AsyncpgDatabase, graph_client: GraphClient, pg: asyncpg.Connection, sandbox: Any, tmp_path: Path
) -> Env:
    await integration(pg)
    return Env(db, pg, sandbox, tmp_path, graph_client)


async def test_media_is_kept_unless_a_retention_is_set(m: Env) -> None:
    """Without instagram_dm.media_retention_days the prune deletes nothing, however old the copy."""
    await receive(m.db, attachment("m-keep", "image", cdn_file(m.sandbox)))
    await m.settle()
    await m.pg.execute("update public.instagram_media set created_at = now() - interval '5 years'")
    assert (await rpc.media_prune(m.db))["media_deleted"] == 0
    assert await m.pg.fetchval("select count(*) from public.instagram_media_objects") == 1


async def test_the_retention_deletes_old_copies_and_their_bytes(m: Env) -> None:
    """Copies older than the retention go with their bytes; the message says expired, the RPC unavailable."""
    await receive(
        m.db,
        attachment("m-old", "image", cdn_file(m.sandbox, body=b"\x89PNG\r\n\x1a\nold")),
        attachment("m-new", "image", cdn_file(m.sandbox, body=b"\x89PNG\r\n\x1a\nnew"), at=1),
    )
    await m.settle()
    await m.pg.execute(
        """update public.instagram_media m set created_at = now() - interval '40 days'
           from public.instagram_messages msg
           where msg.id = m.message_id and msg.meta_message_id = 'm-old'"""
    )
    assert (await rpc.media_prune(m.db, keep_days=30))["media_deleted"] == 1
    await m.settle()
    assert len([p for p in m.folder.rglob("*") if p.is_file()]) == 1
    assert await message_media(m.pg, "m-old") == {"status": "expired"}
    old_id = await m.pg.fetchval(
        "select id::text from public.instagram_messages where meta_message_id = 'm-old'"
    )
    with pytest.raises(errors.BadRequestError) as caught:
        await rpc.media_url(m.db, acting_user(DEMO_MEMBER), message_id=old_id)
    assert caught.value.code == "media_unavailable"


async def test_a_copy_finishing_after_its_conversation_was_deleted_leaves_no_bytes(
    db: AsyncpgDatabase, pg: asyncpg.Connection, sandbox: Any
) -> None:
    """The complete of a copy whose row is gone queues the key it uploaded for deletion (nothing is left over)."""
    await integration(pg)
    await receive(db, attachment("m-race", "image", cdn_file(sandbox)))
    await pg.execute(
        """update public.instagram_webhook_events set state = 'running', lease_owner = 'w',
             lease_expires_at = now() + interval '1 minute'"""
    )
    await pg.execute(
        "select instagram_private.webhook_process('w', array(select id from public.instagram_webhook_events))"
    )
    [job] = await db.rpc("instagram_media_claim_v1", {"p_worker": "w", "p_limit": 1, "p_lease_seconds": 60})
    await pg.execute("delete from public.instagram_conversations")
    key = f"{job['imo_id']}/{'ab' * 32}-0123456789abcdef"
    result = await db.rpc(
        "instagram_media_complete_v1",
        {
            "p_worker": "w",
            "p_results": [
                {
                    "job_id": job["id"],
                    "outcome": "stored",
                    "sha256": "ab" * 32,
                    "size": 3,
                    "content_type": "image/png",
                    "storage_key": key,
                }
            ],
        },
    )
    assert result == {"completed": 0, "stale": 1}
    assert await pg.fetchval("select storage_key from public.instagram_media_deletions") == key


async def test_a_copy_reusing_bytes_deleted_meanwhile_copies_again(m: Env) -> None:
    """A copy that matched stored bytes whose last attachment was deleted before it completed is retried,
    never pointed at bytes the purge will remove."""
    png = b"\x89PNG\r\n\x1a\nshared"
    await receive(m.db, attachment("m-first", "image", cdn_file(m.sandbox, body=png)))
    await m.settle()
    key = await m.pg.fetchval("select storage_key from public.instagram_media_objects")
    await m.pg.execute("delete from public.instagram_conversations")
    await m.pg.execute("delete from public.instagram_media_deletions")  # as if not purged yet: queue it again
    await m.pg.execute(
        "insert into public.instagram_media_deletions (imo_id, storage_key) values (split_part($1, '/', 1)::uuid, $1)",
        key,
    )
    await receive(m.db, attachment("m-second", "image", cdn_file(m.sandbox, body=png), at=5))
    await m.pg.execute(
        """update public.instagram_webhook_events set state = 'running', lease_owner = 'w',
             lease_expires_at = now() + interval '1 minute' where state = 'available'"""
    )
    await m.pg.execute(
        "select instagram_private.webhook_process('w', array(select id from public.instagram_webhook_events"
        " where lease_owner = 'w'))"
    )
    [job] = await m.db.rpc("instagram_media_claim_v1", {"p_worker": "w", "p_limit": 1, "p_lease_seconds": 60})
    result = await m.db.rpc(
        "instagram_media_complete_v1",
        {
            "p_worker": "w",
            "p_results": [
                {
                    "job_id": job["id"],
                    "outcome": "stored",
                    "sha256": hashlib.sha256(png).hexdigest(),
                    "size": len(png),
                    "content_type": "image/png",
                    "storage_key": key,
                }
            ],
        },
    )
    assert result == {"completed": 0, "stale": 1}
    row = await m.pg.fetchrow("select state, last_error_code, object_id from public.instagram_media")
    assert tuple(row) == ("retryable", "object_deleted_meanwhile", None)
    await m.settle()
    assert await m.pg.fetchval("select state from public.instagram_media") == "completed"
    assert len([p for p in m.folder.rglob("*") if p.is_file()]) == 1
