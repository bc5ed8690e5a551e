"""instagram_ops_snapshot_v1: what /metrics and `instagram-dm status` read, counted from the queue tables."""

from __future__ import annotations

import asyncpg

from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from tests.db.factories import integration


async def seed_queues(pg: asyncpg.Connection) -> str:
    """Refresh jobs in every interesting state, two webhook deliveries (one waiting a minute, one failed)."""
    iid = await integration(pg, status="connected")
    await pg.execute(
        "update public.instagram_integrations set token_expires_at = now() + interval '2 days',"
        " last_error_code = 'token_not_extended', last_error_message = 'Meta kept the expiry.',"
        " last_error_at = now() - interval '1 minute' where id = $1",
        iid,
    )
    await pg.execute(
        """insert into public.instagram_refresh_jobs (integration_id, imo_id, state, run_at, finalized_at,
                                                   last_error_code, last_error_message)
           select id, imo_id, s.state, now() + s.run_in, s.finalized, s.code, s.message
           from public.instagram_integrations,
                (values ('available', interval '-90 seconds', null::timestamptz, null, null),
                        ('discarded', interval '0', now() - interval '1 hour', 'meta_190', 'The token is invalid.'),
                        ('discarded', interval '0', now() - interval '3 days', 'meta_190', 'Long ago.'))
                  as s(state, run_in, finalized, code, message)
           where id = $1""",
        iid,
    )
    await pg.execute(
        """insert into public.instagram_webhook_events (body, body_sha256, received_at, state, finalized_at,
                                                     last_error_code)
           values ('a', sha256('a'), now() - interval '2 minutes', 'available', null, null),
                  ('b', sha256('b'), now() - interval '5 minutes', 'failed', now(), 'invalid_json')"""
    )
    return iid


async def test_snapshot_counts_queues_integrations_and_errors(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Due jobs and their lateness, burials of the last 24 h only, kept failed deliveries, the webhook lag,
    integrations by status, the token expiring within 7 days and the newest errors first."""
    iid = await seed_queues(pg)
    snap = await rpc.ops_snapshot(db)
    queues = {q.kind: q for q in snap.queues}
    assert set(queues) == {
        "refresh",
        "unsubscribe",
        "webhooks",
        "profiles",
        "send",
        "media",
        "media_purge",
        "scheduled",
    }
    refresh = queues["refresh"]
    assert (refresh.available, refresh.due, refresh.discarded_24h) == (1, 1, 1)
    assert 85 <= refresh.oldest_due_seconds <= 150
    hooks = queues["webhooks"]
    assert (hooks.available, hooks.failed, hooks.unroutable) == (1, 1, 0)
    assert 115 <= snap.webhook_lag_seconds <= 200
    assert snap.integrations == {"connected": 1}
    assert snap.tokens_expiring_7d == 1
    assert [(e.source, e.code) for e in snap.last_errors] == [
        ("webhooks", "invalid_json"),
        ("integration", "token_not_extended"),
        ("refresh", "meta_190"),
    ]
    assert snap.last_errors[1].id == iid


async def test_snapshot_of_an_empty_database_is_all_zero(db: AsyncpgDatabase) -> None:
    """With only the seed, every queue is empty, nothing lags and there is no error."""
    snap = await rpc.ops_snapshot(db)
    assert all(q.available + q.running + q.retryable + q.due + q.discarded_24h == 0 for q in snap.queues)
    assert (snap.webhook_lag_seconds, snap.tokens_expiring_7d, snap.last_errors) == (0.0, 0, ())
