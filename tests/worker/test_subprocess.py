"""`instagram-dm worker` as a real process: SIGKILL loses nothing, SIGTERM exits 0 after handing back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from tests.db import factories
from tests.fixtures.servers import SilenceableProxy
from tests.worker.conftest import KEY, all_finished, create_integrations, job_states, make_worker, run_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def start_worker(
    database_url: str, sandbox: Any, *flags: str, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": database_url,
        "INSTAGRAM_APP_ID": sandbox.app_id,
        "INSTAGRAM_APP_SECRET": sandbox.app_secret,
        "INSTAGRAM_TOKEN_ENCRYPTION_KEY": KEY,
        "META_GRAPH_BASE_URL": sandbox.url,
        "META_OAUTH_DIALOG_BASE_URL": sandbox.url,
        "INSTAGRAM_DM_ENV": "development",
        "LOG_LEVEL": "WARNING",
        **(env_extra or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--env-file", "/nonexistent", "worker", *flags],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_for_state(pg: asyncpg.Connection, state: str, at_least: int, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if (await job_states(pg)).get(state, 0) >= at_least:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never {at_least} jobs {state}: {await job_states(pg)}")


async def test_sigkill_mid_batch_loses_nothing(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any, database_url: str
) -> None:
    """A worker killed with SIGKILL mid-batch leaves leased jobs; once the leases expire a second worker
    finishes all of them, and every stored token still works."""
    conns = await create_integrations(pg, sandbox, 20)
    sandbox.latency("/oauth/access_token", 150)
    await db.rpc("instagram_refresh_enqueue_v1", {})
    proc = start_worker(
        database_url, sandbox, "--concurrency", "5", "--lease-seconds", "1", "--poll-interval", "0.1"
    )
    try:
        await wait_for_state(pg, "completed", 3)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    states = await job_states(pg)
    assert states.get("running", 0) > 0, states  # leases left behind by the dead worker
    await run_until([make_worker(db, graph)], all_finished(pg, 20), timeout=20)
    assert await job_states(pg) == {"completed": 20}
    for conn in conns:
        stored = await db.rpc("instagram_integration_tokens", {"p_integration_id": conn.id, "p_key": KEY})
        assert (await graph.debug_token(stored["user_token"])).is_valid


async def test_sigterm_exits_0_after_handing_jobs_back(
    pg: asyncpg.Connection, db: AsyncpgDatabase, sandbox: Any, database_url: str
) -> None:
    """SIGTERM mid-batch with a short grace period: exit status 0, no job left running, no attempt charged."""
    await create_integrations(pg, sandbox, 6)
    sandbox.latency("/oauth/access_token", 3000)
    await db.rpc("instagram_refresh_enqueue_v1", {})
    proc = start_worker(
        database_url, sandbox, "--concurrency", "3", "--grace-period", "0.2", "--poll-interval", "0.1"
    )
    try:
        await wait_for_state(pg, "running", 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    rows = await pg.fetch("select state, attempt from public.instagram_refresh_jobs")
    assert {(r["state"], r["attempt"]) for r in rows} == {("available", 0)}


async def test_a_worker_whose_keys_open_no_stored_row_exits_1_with_one_line(
    pg: asyncpg.Connection, db: AsyncpgDatabase, sandbox: Any, database_url: str
) -> None:
    """Started with the wrong key for every stored row, the worker claims nothing and says why in one line."""
    await create_integrations(pg, sandbox, 2, key="the-key-the-tokens-were-stored-with-0123456")
    await db.rpc("instagram_refresh_enqueue_v1", {})
    proc = start_worker(database_url, sandbox, "--poll-interval", "0.1")
    try:
        assert proc.wait(timeout=20) == 1
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("instagram-dm worker: None of the 2 stored token rows")
    assert KEY not in stderr
    assert await job_states(pg) == {"available": 2}


async def test_worker_killed_inside_a_webhook_batch_loses_nothing_and_stores_nothing_twice(
    pg: asyncpg.Connection, db: AsyncpgDatabase, graph: GraphClient, sandbox: Any, database_url: str
) -> None:
    """A worker (and its database session) killed while its batch is being processed: the batch rolls back
    whole; after the lease, another worker stores each message exactly once and counts it once."""
    from tests.webhook_payloads import delivery, message
    from tests.worker.test_webhooks import counts, ingest, integration, no_work_left, webhook_kinds

    await integration(pg)
    await pg.execute(
        "insert into public.instagram_usage (imo_id, month) values ($1, '2025-12-01')", factories.DEMO_IMO
    )
    await ingest(db, *(delivery(message(f"m-{i}", sender=f"5{i % 4}", at=i)) for i in range(50)))
    blocker = await asyncpg.connect(database_url)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute(
        "select * from public.instagram_usage where imo_id = $1 for update", factories.DEMO_IMO
    )
    proc = start_worker(database_url, sandbox, "--lease-seconds", "2", "--poll-interval", "0.1")
    try:
        backend = None
        for _ in range(500):  # the batch is inside its transaction, waiting for the usage row
            backend = await pg.fetchval(
                """select pid from pg_stat_activity where wait_event_type = 'Lock'
                   and query like '%instagram_webhook_complete_v1%'"""
            )
            if backend is not None:
                break
            await asyncio.sleep(0.02)
        assert backend is not None, "the worker never reached the processing"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        await pg.execute("select pg_terminate_backend($1)", backend)  # the machine is gone with it
    finally:
        await lock.rollback()
        await blocker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert (await counts(pg))["messages"] == 0  # rolled back whole
    await asyncio.sleep(2.1)  # the dead worker's leases expire
    await run_until([make_worker(db, graph, kinds=webhook_kinds())], no_work_left(pg), timeout=20)
    assert (await counts(pg))["messages"] == 50
    assert (await counts(pg))["received"] == 50


class StderrLines:
    """Collects a process's stderr lines in a thread, so the test's loop keeps running meanwhile."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        stream = proc.stderr
        self._thread = threading.Thread(
            target=lambda: self.lines.extend(line.decode() for line in iter(stream.readline, b"")),
            daemon=True,
        )
        self._thread.start()
        self._stream = stream

    def close(self) -> None:
        """After the process ended: the last lines read, the pipe closed."""
        self._thread.join(timeout=5)
        self._stream.close()

    async def wait_for(self, text: str, timeout: float = 15.0) -> str:
        for _ in range(int(timeout / 0.05)):
            for line in list(self.lines):
                if text in line:
                    return line
            await asyncio.sleep(0.05)
        raise AssertionError(f"never logged {text!r}: {self.lines}")


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    for _ in range(int(timeout / 0.05)):
        if proc.poll() is not None:
            return proc.returncode
        await asyncio.sleep(0.05)
    return None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_worker_started_while_the_database_is_down_waits_and_sigterm_exits_0(
    pg: asyncpg.Connection, sandbox: Any, database_url: str
) -> None:
    """DATABASE_URL on a closed port: the worker keeps running, logs worker.database_unavailable with the
    error code (no traceback), and SIGTERM while it waits exits 0."""
    port = urlsplit(database_url).port
    proc = start_worker(database_url.replace(f":{port}/", f":{closed_port()}/"), sandbox)
    stderr = StderrLines(proc)
    try:
        line = json.loads(await stderr.wait_for("worker.database_unavailable"))
        assert line["error_code"] == "database_unavailable"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) == 0, stderr.lines
        assert not any("Traceback" in entry for entry in stderr.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()


async def test_a_worker_started_while_the_database_is_down_starts_once_it_is_back(
    pg: asyncpg.Connection, sandbox: Any, database_url: str
) -> None:
    """Once the database is reachable on its port, the waiting worker connects, checks its keys, runs
    (here until idle) and exits 0."""
    real_port = urlsplit(database_url).port
    assert real_port is not None
    port = closed_port()
    proc = start_worker(database_url.replace(f":{real_port}/", f":{port}/"), sandbox, "--exit-when-idle")
    stderr = StderrLines(proc)
    try:
        await stderr.wait_for("worker.database_unavailable")
        async with SilenceableProxy(real_port, port=port):
            assert await wait_exit(proc, timeout=30) == 0, stderr.lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_port_serves_the_worker_metrics(
    pg: asyncpg.Connection, sandbox: Any, database_url: str
) -> None:
    """`instagram-dm worker --metrics-port N` answers GET /metrics on 127.0.0.1:N (the database's state read),
    and still stops with 0 on SIGTERM."""
    import httpx

    port = free_port()
    proc = start_worker(database_url, sandbox, "--metrics-port", str(port), "--poll-interval", "0.2")
    try:
        text = ""
        for _ in range(250):
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
            except httpx.TransportError:
                await asyncio.sleep(0.04)
                continue
            text = response.text
            break
        assert "instagram_dm_snapshot_up 1.0" in text
        assert 'instagram_dm_queue_jobs{kind="refresh",state="due"}' in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
