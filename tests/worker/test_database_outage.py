"""The worker under a database outage: claims and flushes give up within the timeout (a locked table
never hangs the loop), and after its connections are killed it reconnects and finishes every job."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from tests.webhook_payloads import delivery, message
from tests.worker.conftest import make_worker
from tests.worker.test_webhooks import events, ingest, integration, no_work_left, webhook_kinds

pytest_plugins = ["tests.fixtures.sandbox"]

KILL_WORKER_BACKENDS = """select count(pg_terminate_backend(pid)) from pg_stat_activity
  where application_name = 'instagram-dm' and pid <> pg_backend_pid()"""


async def test_worker_gives_up_on_a_locked_queue_in_time_and_recovers_after_its_backends_are_killed(
    pg: asyncpg.Connection,
    db: AsyncpgDatabase,
    graph: GraphClient,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the deliveries table locked, each claim fails within the 0.5 s timeout (worker.claim_failed,
    database_unavailable) instead of hanging; once the lock goes and every worker backend is terminated,
    the worker reconnects by itself and every delivery, old and new, ends completed."""
    await integration(pg)
    await ingest(db, *[delivery(message(f"m-before-{i}", at=i)) for i in range(5)])
    worker_db = await AsyncpgDatabase.connect(database_url, max_size=5, timeout=0.5)
    worker = make_worker(worker_db, graph, kinds=webhook_kinds())
    caplog.set_level(logging.WARNING, logger="worker.runner")
    try:
        async with pg.transaction():
            await pg.execute("lock table public.instagram_webhook_events in access exclusive mode")
            task = asyncio.create_task(worker.run())
            await asyncio.sleep(2.0)
            claim_failures = [r for r in caplog.records if r.getMessage() == "worker.claim_failed"]
            assert claim_failures, [r.getMessage() for r in caplog.records]
            assert {getattr(r, "error_code", None) for r in claim_failures} == {"database_unavailable"}
        assert await pg.fetchval(KILL_WORKER_BACKENDS) >= 1
        fresh = await AsyncpgDatabase.connect(database_url, max_size=1, timeout=2)
        try:
            await ingest(fresh, *[delivery(message(f"m-after-{i}", at=10 + i)) for i in range(5)])
        finally:
            await fresh.close()
        done = no_work_left(pg)
        for _ in range(400):  # the same worker, still running, finishes what is left
            if await done():
                break
            await asyncio.sleep(0.05)
        worker.request_stop()
        assert await asyncio.wait_for(task, timeout=10) == 0
    finally:
        await worker_db.close()
    states = [e["state"] for e in await events(pg)]
    assert states == ["completed"] * 10, states
