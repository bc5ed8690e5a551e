"""Fixtures for the worker tests: connected integrations backed by sandbox users, a Graph client on
the sandbox, and a helper that runs a worker until a condition holds.

Needs the sandbox fixtures (`-p tests.fixtures.sandbox`, or `tests.fixtures.sandbox` in pytest_plugins).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from instagram_dm.backoff import Backoff
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient, RetryPolicy
from tests.db import factories
from worker.kinds.refresh import FacebookLoginRefresher, RefreshKind, refresh_rules
from worker.kinds.unsubscribe import UnsubscribeKind
from worker.queue import JobKind
from worker.runner import Worker, WorkerOptions
from worker.timers import Timer

KEY = "worker-test-key-0123456789-abcdefghijklmnop"
DAY = 86_400
WEEK = 7 * DAY


@dataclass(frozen=True)
class Connected:
    """One connected integration and the sandbox user behind it."""

    id: str
    user_id: str
    page_id: str
    user_token: str
    page_token: str


async def create_integrations(
    pg: asyncpg.Connection,
    sandbox: Any,
    n: int,
    *,
    expires_in: int = 3 * DAY,
    key: str = KEY,
    webhook_subscribed: bool = False,
) -> list[Connected]:
    """`n` sandbox users with one Page each, their long-lived and Page tokens, stored as connected
    integrations of the demo IMO (one bulk insert; tokens encrypted by the migration's helpers)."""
    users = sandbox.create_users([{"page_count": 1} for _ in range(n)])
    longs = sandbox.control(
        "POST", "tokens", [{"user_id": u["id"], "kind": "long", "expires_in": expires_in} for u in users]
    )["tokens"]
    pages = sandbox.control(
        "POST",
        "tokens",
        [{"user_id": u["id"], "kind": "page", "page_id": u["pages"][0]["id"]} for u in users],
    )["tokens"]
    ids = await factories.integrations(
        pg,
        [
            factories.IntegrationRow(u["pages"][0]["id"], u["pages"][0]["instagram_id"], lt[0], pt[0])
            for u, lt, pt in zip(users, longs, pages, strict=True)
        ],
        key=key,
        expires_in=expires_in,
        webhook_subscribed=webhook_subscribed,
    )
    return [
        Connected(iid, u["id"], u["pages"][0]["id"], lt[0], pt[0])
        for iid, u, lt, pt in zip(ids, users, longs, pages, strict=True)
    ]


@pytest.fixture
async def graph(sandbox: Any) -> AsyncIterator[GraphClient]:
    """A GraphClient on the sandbox with quick in-call retries (3 tries, milliseconds apart)."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield GraphClient(
            http,
            app_id=sandbox.app_id,
            app_secret=sandbox.app_secret,
            version=sandbox.version,
            graph_base_url=sandbox.url,
            dialog_base_url=sandbox.url,
            retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002),
        )


FAST = WorkerOptions(concurrency=10, poll_interval=0.05, lease_seconds=30, grace_period=2.0)
FAST_BACKOFF = Backoff(base=0.01, cap=0.05)


def make_kinds(
    db: AsyncpgDatabase, graph: GraphClient, *, key: str = KEY, previous_key: str | None = None
) -> list[JobKind[Any]]:
    """The worker's two kinds, retrying at test speed."""
    refresher = FacebookLoginRefresher(db, graph, key=key, previous_key=previous_key)
    rules = replace(refresh_rules(FAST_BACKOFF), margin=0.0)
    return [
        RefreshKind(refresher, key=key, previous_key=previous_key, rules=rules),
        UnsubscribeKind(db, graph, key=key, previous_key=previous_key, backoff=FAST_BACKOFF),
    ]


def make_worker(
    db: AsyncpgDatabase,
    graph: GraphClient,
    *,
    key: str = KEY,
    previous_key: str | None = None,
    kinds: list[JobKind[Any]] | None = None,
    timers: Sequence[Timer] = (),
    **options: Any,
) -> Worker:
    """A worker running both kinds with test-speed options (`options` override FAST's fields)."""
    opts = WorkerOptions(**{**FAST.__dict__, "worker_id": f"test-{time.monotonic_ns()}", **options})
    kinds = kinds or make_kinds(db, graph, key=key, previous_key=previous_key)
    return Worker(db, kinds, timers=timers, options=opts)


async def run_until(
    workers: list[Worker], done: Callable[[], Awaitable[bool]], *, timeout: float = 15.0
) -> list[int]:
    """Run `workers` until `done()` holds, then stop them; return their exit codes."""
    assert workers, "run_until needs at least one worker"
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        deadline = time.monotonic() + timeout
        while not await done():
            if time.monotonic() > deadline:
                raise AssertionError("the condition did not hold in time")
            if all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.02)
    finally:
        for w in workers:
            w.request_stop()
    return list(await asyncio.gather(*tasks))


async def job_states(pg: asyncpg.Connection) -> dict[str, int]:
    rows = await pg.fetch("select state, count(*) as n from public.instagram_refresh_jobs group by state")
    return {r["state"]: r["n"] for r in rows}


def all_finished(pg: asyncpg.Connection, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        states = await job_states(pg)
        return states.get("completed", 0) + states.get("discarded", 0) >= n

    return check


def days(n: float) -> timedelta:
    return timedelta(days=n)


async def enqueue(db: AsyncpgDatabase, window: int = WEEK) -> int:
    """What the daily cron job does: a refresh job per integration expiring within `window` seconds."""
    return int(await db.rpc("instagram_refresh_enqueue_v1", {"p_window_seconds": window}))


async def disconnect(pg: asyncpg.Connection, integration_id: str) -> None:
    """What instagram_disconnect does for the demo admin (queues the Page unsubscribe)."""
    await pg.execute(
        "select instagram_private.disconnect_integration($1, $2)", integration_id, factories.DEMO_ADMIN
    )
