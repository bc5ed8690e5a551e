"""Fault harness: the worker, the API and the database under the faults production meets, one row each.

    kill9        N due refreshes; the worker is killed with SIGKILL every 0.5-2 s and started again at once
    crash-loop   the worker is killed shortly after every claim (the exchange call is slow, so the kill lands
                 mid-job), more times than a job has attempts; then one worker is left running
    pg-restart   signed deliveries POSTed to the API at a steady rate while Postgres is stopped and started
                 (`scripts/db.sh stop` / `start`); the API and the worker are never restarted
    black-hole   the same load, the API and worker reaching Postgres through a TCP proxy that drops every
                 packet for ~10 s (bench/_proxy.py), then carries them again
    meta-storm   N due refreshes while Meta answers 500s, 502/503 pages, 4/17/613 throttles, 429s and hangs on
                 the exchange and debug_token calls for ~10 s
    poison       good deliveries with poison ones among them (signed but not JSON, a \\u0000, a lone surrogate,
                 `entry` not an array, another `object`)
    rotation     `instagram-dm rotate-key` killed with SIGKILL halfway through N integrations, run again, then
                 a worker holding only the new key refreshes them all

Columns (a "-" where a column means nothing for the row):

    tried         refreshes (integrations), or deliveries POSTed
    failed        refreshes given up (their job discarded, the reason recorded); requests answered neither 2xx
                  nor 503 within INSTAGRAM_DB_TIMEOUT_SECONDS + 1.5 s (a 500, no answer, a hang); poison rows
                  ended failed with a reason (there, failed = the poison rows is the goal)
    5xx           answers >= 500 the API gave (503 while the database is away is the contract); for the Meta
                  storm, the 5xx and hangs Meta gave
    lost          work that vanished: an acknowledged (2xx) delivery whose message is not stored exactly once, an
                  integration with no refresh done, none pending and no reason recorded, a stored token that no
                  longer opens or that Meta no longer knows
    stuck         jobs or deliveries still running or pending when the row ends (given time to finish)
    wrong-reauth  integrations moved out of `connected` (a fault of ours or Meta's outage is never a reason
                  to ask an admin to reconnect)
    recovered-in  seconds from the fault's end (last kill, database up, proxy open, storm over, rotation
                  killed) to the work being done again: the last refresh completed, the first delivery sent
                  after it stored and processed, the rotation finished

Goal for every row: 0 lost, 0 stuck, 0 wrong-reauth, recovered within 10 s; each row also checks its own
(every integration refreshed exactly once, poison rows failed with a reason...). The harness's knobs,
chosen so a row measures this code and not a wait someone asked for: leases of 2-3 s (a crash is noticed
quickly; the default is 300 s), --retry-base-seconds 0.5-1 (default 30), throttles carrying
`Retry-After: 1` (without a hint the worker waits 15 minutes by design) and hangs of 3 s (default 30).

Runs on a cluster of its own: `make faults` (port 54398, `.local/faults`). pg-restart restarts that
cluster through scripts/db.sh, so it needs INSTAGRAM_DM_DB_DIR and INSTAGRAM_DM_DB_PORT set and DATABASE_URL
on that port. Usage: python bench/faults.py [scenario ...] [--quick] [--rounds N] [--seed S]. The default run
takes about two minutes on 2 cores (longer when a row waits for work that never finishes); --quick has fewer
rows and 6 s faults. The processes' logs stay in the folder printed under the table.

Exit status: 0 when every row ran and met its goals; 2 when every row ran and some goal was missed (the
table says which); 1 when a scenario could not run or finish its work (that row prints why, no figure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._proxy import BlackHoleProxy
from bench._servers import CLI, DATABASE_URL, ROOT, servers
from sandbox import webhooks as meta

log = logging.getLogger("faults")

CORES = os.cpu_count() or 1
KEY = "bench-token-encryption-key-0123456789abcdef"  # bench_env's INSTAGRAM_TOKEN_ENCRYPTION_KEY
NEW_KEY = "faults-rotated-token-key-0123456789abcdefghij"
SECRET = "sandbox-app-secret"  # bench_env's INSTAGRAM_APP_SECRET: the webhook's signing secret
IMO = "00000000-0000-4000-8000-00000000fa17"
WEBHOOK = "/functions/v1/instagram-webhook"
GRAPH = r"^/v[0-9.]+/"
REFRESH_CALLS = GRAPH + r"(oauth/access_token|debug_token)$"
DB_TIMEOUT = float(os.environ.get("INSTAGRAM_DB_TIMEOUT_SECONDS", "5"))
HANG_AFTER = DB_TIMEOUT + 1.5  # an answer later than this is a hang, whatever it says
RECOVERY_GOAL = 10.0
LIVE = ("available", "retryable", "running")


class Incomplete(Exception):
    """The scenario could not run or finish its work, so its figures would mean nothing."""


@dataclass
class Row:
    """One scenario's figures (None: the column means nothing for it)."""

    scenario: str
    tried: int
    failed: int
    server_errors: int | None
    lost: int
    stuck: int
    wrong_reauth: int | None
    recovered_in: float | None
    notes: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)  # the scenario's own goals it missed
    error: str | None = None  # could not run

    def goal_misses(self) -> list[str]:
        if self.error is not None:
            return [f"could not run: {self.error}"]
        out = []
        if self.lost:
            out.append(f"{self.lost} lost")
        if self.stuck:
            out.append(f"{self.stuck} stuck")
        if self.wrong_reauth:
            out.append(f"{self.wrong_reauth} wrongly reauthorised")
        if self.recovered_in is None:
            out.append("never recovered")
        elif self.recovered_in > RECOVERY_GOAL:
            out.append(f"recovered in {self.recovered_in:.1f} s (goal <= {RECOVERY_GOAL:.0f})")
        return out + self.misses


@dataclass
class Context:
    quick: bool
    rng: random.Random
    logs: Path
    pg: Pg
    sent: set[bytes] = field(default_factory=set)  # every delivery body POSTed (deleted after the scenario)

    def log_file(self, name: str) -> Path:
        """A new file in the logs folder (a later round's gets a suffix)."""
        path, again = self.logs / f"{name}.log", 1
        while path.exists():
            again += 1
            path = self.logs / f"{name}.{again}.log"
        path.touch()
        return path


# ---- the harness's own database connection --------------------------------------------------------


class Pg:
    """The harness's connection (the cluster's superuser, straight to Postgres, never through the proxy),
    opened again when a restart broke it."""

    _BROKEN = (
        asyncpg.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.OperatorInterventionError,
        OSError,
    )

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=10)
        return self._conn

    async def _retry(self, call: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        for attempt in range(2):
            conn = await self._connection()
            try:
                return await call(conn)
            except self._BROKEN:
                self._conn = None
                with contextlib.suppress(Exception):
                    conn.terminate()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._retry(lambda c: c.fetch(sql, *args, timeout=60))
        return rows

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._retry(lambda c: c.fetchval(sql, *args, timeout=60))

    async def execute(self, sql: str, *args: Any) -> None:
        await self._retry(lambda c: c.execute(sql, *args, timeout=60))

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()


# ---- processes ------------------------------------------------------------------------------------


class Processes:
    """Every process a scenario starts; the ones still alive are killed when the block ends, whatever
    happened. Output goes to one log file per process."""

    def __init__(self, ctx: Context, name: str) -> None:
        self._ctx = ctx
        self._name = name
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}

    def start(self, env: dict[str, str], *args: str, label: str = "worker") -> subprocess.Popen[bytes]:
        path = self._ctx.log_file(f"{self._name}-{label}-{len(self._procs) + 1}")
        with path.open("wb") as out:
            proc = subprocess.Popen(
                [*CLI, "--env-file", "/dev/null", *args], env=env, cwd=ROOT, stdout=out, stderr=out
            )
        self._procs.append(proc)
        self._logs[proc.pid] = path
        return proc

    def last_line(self, proc: subprocess.Popen[bytes]) -> str:
        """The last line the process wrote (for a process that died: usually why)."""
        lines = self._logs[proc.pid].read_text(errors="replace").strip().splitlines()
        return lines[-1][:200] if lines else "(no output)"

    def worker(self, env: dict[str, str], *flags: str) -> subprocess.Popen[bytes]:
        return self.start(env, "worker", *flags)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    @staticmethod
    async def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL after `timeout`. Returns the exit status (None: it had to be killed)."""
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            Processes.kill(proc)
            return None
        return proc.returncode

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                self.kill(proc)


def worker_flags(**options: float) -> tuple[str, ...]:
    """``instagram-dm worker`` flags: worker_flags(lease_seconds=2) -> ("--lease-seconds", "2")."""
    return tuple(x for name, value in options.items() for x in (f"--{name.replace('_', '-')}", f"{value:g}"))


async def held_by(pg: Pg, proc: subprocess.Popen[bytes]) -> int:
    """Refresh jobs the worker process holds (its worker id is host:pid:random)."""
    return int(
        await pg.fetchval(
            """select count(*) from public.instagram_refresh_jobs
               where imo_id = $1 and state = 'running' and lease_owner like $2""",
            IMO,
            f"%:{proc.pid}:%",
        )
    )


async def db_sh(command: str) -> None:
    """scripts/db.sh start|stop on the harness's cluster (INSTAGRAM_DM_DB_DIR / _PORT of this process)."""
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "db.sh"),
        command,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise Incomplete(f"scripts/db.sh {command} failed: {err.decode().strip()[-200:]}")


def embedded_cluster() -> str | None:
    """Why the database cannot be restarted by this harness, or None when it can."""
    port, folder = os.environ.get("INSTAGRAM_DM_DB_PORT"), os.environ.get("INSTAGRAM_DM_DB_DIR")
    if not port or not folder:
        return "INSTAGRAM_DM_DB_PORT and INSTAGRAM_DM_DB_DIR must name the harness's own cluster"
    if str(urlsplit(DATABASE_URL).port) != port:
        return f"DATABASE_URL is not the cluster on INSTAGRAM_DM_DB_PORT {port}"
    return None


# ---- waiting --------------------------------------------------------------------------------------


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


# ---- rows: integrations and refresh jobs ----------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    id: str
    user_id: str
    account_id: str
    user_token: str
    page_token: str


async def reset_imo(pg: Pg) -> None:
    await pg.execute("delete from public.imos where id = $1", IMO)
    await pg.execute("insert into public.imos (id, name) values ($1, 'Faults IMO')", IMO)


async def drop_imo(pg: Pg) -> None:
    with contextlib.suppress(Exception):
        await pg.execute("delete from public.imos where id = $1", IMO)


async def forget_deliveries(ctx: Context) -> None:
    """Delete the deliveries the scenario POSTed (their messages went with the IMO)."""
    digests = [hashlib.sha256(body).digest() for body in ctx.sent]
    with contextlib.suppress(Exception):
        await ctx.pg.execute(
            "delete from public.instagram_webhook_events where body_sha256 = any($1::bytea[])", digests
        )
        ctx.sent.clear()


async def seed_connected(pg: Pg, control: httpx.AsyncClient, n: int, *, key: str = KEY) -> list[Seeded]:
    """`n` sandbox users with one Page and Instagram account each, their long-lived (expiring in 3 days, so
    due for refresh) and Page tokens stored encrypted as connected integrations of the harness's IMO: the
    same sandbox calls and insert as bench/refresh.py's P1."""
    users = (await control.post("/_sandbox/users", json=[{"page_count": 1} for _ in range(n)])).json()[
        "users"
    ]
    longs = (
        await control.post(
            "/_sandbox/tokens",
            json=[{"user_id": u["id"], "kind": "long", "expires_in": 3 * 86400} for u in users],
        )
    ).json()["tokens"]
    pages = (
        await control.post(
            "/_sandbox/tokens",
            json=[{"user_id": u["id"], "kind": "page", "page_id": u["pages"][0]["id"]} for u in users],
        )
    ).json()["tokens"]
    rows = await pg.fetch(
        """insert into public.instagram_integrations (imo_id, facebook_page_id, instagram_business_account_id,
             instagram_username, user_access_token_encrypted, page_access_token_encrypted, token_key_fingerprint,
             token_expires_at, data_access_expires_at, status)
           select $1, t.p, t.ig, 'faults.' || t.p, instagram_private.encrypt_token(t.u, $2),
                  instagram_private.encrypt_token(t.pt, $2), instagram_private.key_fingerprint($2),
                  now() + interval '3 days', now() + interval '80 days', 'connected'
           from unnest($3::text[], $4::text[], $5::text[], $6::text[]) with ordinality t(p, ig, u, pt, ord)
           order by t.ord
           returning id::text, instagram_business_account_id""",
        IMO,
        key,
        [u["pages"][0]["id"] for u in users],
        [u["pages"][0]["instagram_id"] for u in users],
        [t[0] for t in longs],
        [t[0] for t in pages],
    )
    by_account = {r["instagram_business_account_id"]: r["id"] for r in rows}
    return [
        Seeded(
            by_account[u["pages"][0]["instagram_id"]], u["id"], u["pages"][0]["instagram_id"], lt[0], pt[0]
        )
        for u, lt, pt in zip(users, longs, pages, strict=True)
    ]


async def live_jobs(pg: Pg) -> int:
    return int(
        await pg.fetchval(
            "select count(*) from public.instagram_refresh_jobs where imo_id = $1 and state = any($2::text[])",
            IMO,
            list(LIVE),
        )
    )


async def job_states(pg: Pg) -> dict[str, int]:
    """Refresh jobs of the IMO by state (and, for the finished-badly ones, their reason)."""
    rows = await pg.fetch(
        """select state || case when state in ('discarded', 'retryable') and last_error_code is not null
                                then '/' || last_error_code else '' end as k, count(*) as n
           from public.instagram_refresh_jobs where imo_id = $1 group by 1 order by 1""",
        IMO,
    )
    return {r["k"]: int(r["n"]) for r in rows}


def states_note(states: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in states.items()) or "none"


@dataclass
class RefreshOutcome:
    """Where the integrations stand after a refresh scenario."""

    refreshed: int  # exactly one completed job
    twice: int  # more than one completed job
    given_up: int  # no completed job, a discarded one, the reason on the integration
    lost: int  # no completed job, nothing pending, no reason (or a stored token that no longer works)
    stuck: int  # jobs still running or pending
    not_connected: int
    last_done: float | None  # epoch of the last completion
    bad_tokens: int
    notes: list[str]


async def refresh_outcome(
    pg: Pg, control: httpx.AsyncClient, seeded: Sequence[Seeded], key: str
) -> RefreshOutcome:
    rows = await pg.fetch(
        """select i.id::text, i.status::text, i.last_error_code,
                  count(j.id) filter (where j.state = 'completed') as completed,
                  count(j.id) filter (where j.state = 'discarded') as discarded,
                  count(j.id) filter (where j.state = any($2::text[])) as live,
                  extract(epoch from max(j.finalized_at) filter (where j.state = 'completed'))::float8 as done
           from public.instagram_integrations i
           left join public.instagram_refresh_jobs j on j.integration_id = i.id
           where i.imo_id = $1 group by i.id""",
        IMO,
        list(LIVE),
    )
    tokens = {
        t["token"]: t
        for t in (await control.get("/_sandbox/state", params={"tokens": "1"})).json().get("tokens", [])
    }
    sandbox_now = (await control.get("/_sandbox/state")).json()["now"]
    users = {s.id: s.user_id for s in seeded}
    bad_tokens = 0
    for s in seeded:  # every stored user token opens with the key and is a live long-lived token of its user
        try:
            stored = json.loads(
                await pg.fetchval(
                    "select public.instagram_integration_tokens($1::uuid, $2, null)::text", s.id, key
                )
            )
        except asyncpg.PostgresError:
            bad_tokens += 1
            continue
        rec = tokens.get(stored.get("user_token") or "")
        if (
            rec is None
            or rec["kind"] != "user_long"
            or rec["user_id"] != users[s.id]
            or rec["revoked_subcode"] is not None
            or bool(rec["expires_at"] and rec["expires_at"] <= sandbox_now)
        ):
            bad_tokens += 1
    refreshed = sum(1 for r in rows if r["completed"] == 1)
    twice = sum(1 for r in rows if r["completed"] > 1)
    given_up = sum(
        1 for r in rows if not r["completed"] and r["discarded"] and r["last_error_code"] and not r["live"]
    )
    silent = sum(
        1
        for r in rows
        if not r["completed"] and not r["live"] and not (r["discarded"] and r["last_error_code"])
    )
    stuck = sum(int(r["live"]) for r in rows)
    done = [r["done"] for r in rows if r["done"] is not None]
    notes = []
    if bad_tokens:
        notes.append(f"{bad_tokens} stored tokens no longer work")
    return RefreshOutcome(
        refreshed=refreshed,
        twice=twice,
        given_up=given_up,
        lost=silent + bad_tokens,
        stuck=stuck,
        not_connected=sum(1 for r in rows if r["status"] != "connected"),
        last_done=max(done) if done else None,
        bad_tokens=bad_tokens,
        notes=notes,
    )


async def refresh_failed_notices(pg: Pg) -> int:
    """`instagram_refresh_failed` notifications the IMO got (a refresh given up, or buried)."""
    return int(
        await pg.fetchval(
            "select count(*) from public.notifications where imo_id = $1 and kind = 'instagram_refresh_failed'",
            IMO,
        )
    )


async def exchanges(control: httpx.AsyncClient, seeded: Sequence[Seeded]) -> tuple[int, int]:
    """fb_exchange_token calls Meta answered for these users: (total, users exchanged more than once)."""
    counts = (await control.get("/_sandbox/state")).json()["exchanges"]
    mine = [int(counts.get(s.user_id, 0)) for s in seeded]
    return sum(mine), sum(1 for c in mine if c > 1)


def recovered_after(fault_end: float, last_done: float | None) -> float | None:
    return None if last_done is None else max(0.0, last_done - fault_end)


# ---- 1. kill -9 quick restarts ----------------------------------------------------------------------


async def kill9(ctx: Context) -> Row:
    n = 80 if ctx.quick else 200
    killing = 8.0 if ctx.quick else 15.0
    flags = worker_flags(concurrency=5, lease_seconds=2, poll_interval=0.2, retry_base_seconds=1)
    with (
        servers(api=False, log=ctx.log_file("kill9-servers")) as (sandbox_url, _api, env),
        Processes(ctx, "kill9") as procs,
    ):
        async with httpx.AsyncClient(base_url=sandbox_url, timeout=60) as control:
            await reset_imo(ctx.pg)
            seeded = await seed_connected(ctx.pg, control, n)
            # 3 calls of 100 ms a refresh, 5 at once: the work outlasts the killing, so kills land mid-job
            await control.post("/_sandbox/latency", json={"path": GRAPH, "ms": 100})
            enqueued = await ctx.pg.fetchval("select public.instagram_refresh_enqueue_v1()")
            if enqueued != n:
                raise Incomplete(f"{enqueued} of {n} refreshes enqueued")
            kills, killed_mid_job = 0, 0
            started = time.monotonic()
            proc = procs.worker(env, *flags)
            while time.monotonic() - started < killing:
                await asyncio.sleep(ctx.rng.uniform(0.5, 2.0))
                held = await held_by(ctx.pg, proc)
                procs.kill(proc)
                kills += 1
                killed_mid_job += held
                proc = procs.worker(env, *flags)
            fault_end = time.time()
            log.info("kill9: %d kills (%d jobs held at a kill); waiting for the rest", kills, killed_mid_job)
            finished = await wait_until(
                lambda: _no_live(ctx.pg), timeout=40 if ctx.quick else 60, interval=0.2
            )
            await procs.stop(proc)
            outcome = await refresh_outcome(ctx.pg, control, seeded, KEY)
            total, repeated = await exchanges(control, seeded)
            states = await job_states(ctx.pg)
            notices = await refresh_failed_notices(ctx.pg)
            expiries = await lease_expiry_note(ctx.pg)
    await drop_imo(ctx.pg)
    misses = []
    if outcome.refreshed != n:
        misses.append(f"{n - outcome.refreshed} not refreshed exactly once")
    if not finished:
        misses.append("jobs left unfinished")
    return Row(
        "kill -9 quick restarts",
        tried=n,
        failed=outcome.given_up,
        server_errors=None,
        lost=outcome.lost,
        stuck=outcome.stuck,
        wrong_reauth=outcome.not_connected,
        recovered_in=recovered_after(fault_end, outcome.last_done),
        notes=[
            f"{kills} kills in {killing:.0f} s, {killed_mid_job} jobs held by a killed worker",
            f"jobs: {states_note(states)}",
            f"refreshed once {outcome.refreshed}/{n}, twice {outcome.twice}; "
            f"IMO notified 'refresh failed' {notices} times; {expiries}",
            f"Meta exchanges {total} for {n} integrations ({repeated} exchanged again after a kill mid-job)",
            *outcome.notes,
        ],
        misses=misses,
    )


async def _no_live(pg: Pg) -> bool:
    return await live_jobs(pg) == 0


# ---- 2. crash loop ----------------------------------------------------------------------------------


async def crash_loop(ctx: Context) -> Row:
    n = 5 if ctx.quick else 8
    wanted = 5 if ctx.quick else 12  # more kills than a job's max_attempts (10) in the full run
    lease = 3
    flags = worker_flags(concurrency=10, lease_seconds=lease, poll_interval=0.2, retry_base_seconds=1)
    with (
        servers(api=False, log=ctx.log_file("crash-loop-servers")) as (sandbox_url, _api, env),
        Processes(ctx, "crash-loop") as procs,
    ):
        async with httpx.AsyncClient(base_url=sandbox_url, timeout=60) as control:
            await reset_imo(ctx.pg)
            seeded = await seed_connected(ctx.pg, control, n)
            # the exchange takes 600 ms: a kill 250 ms after the claim lands inside the job
            await control.post("/_sandbox/latency", json={"path": GRAPH + "oauth/access_token$", "ms": 600})
            if await ctx.pg.fetchval("select public.instagram_refresh_enqueue_v1()") != n:
                raise Incomplete("the refreshes were not all enqueued")
            kills, stopped_early, last_kill, proc = await kill_after_claims(
                ctx, procs, env, flags, wanted=wanted, lease=lease
            )
            at_end = await job_states(ctx.pg)
            log.info("crash-loop: %d kills; jobs then: %s", kills, states_note(at_end))
            if proc is None:
                proc = procs.worker(env, *flags)  # stop killing: one worker that stays
            settled = await wait_until(lambda: _no_live(ctx.pg), timeout=lease + 25, interval=0.1)
            settled_at = time.time()
            outcome = await refresh_outcome(ctx.pg, control, seeded, KEY)
            states = await job_states(ctx.pg)
            extremes = await _job_counters(ctx.pg)
            reasons = await ctx.pg.fetchval(
                """select count(*) from public.instagram_integrations
                   where imo_id = $1 and last_error_code is not null""",
                IMO,
            )
            told = await refresh_failed_notices(ctx.pg)
            # what tomorrow's 03:15 sweep (or `refresh-now --all-due`) then does for the ones given up
            swept = await ctx.pg.fetchval("select public.instagram_refresh_enqueue_v1()")
            sweep_started = time.monotonic()
            await wait_until(lambda: _no_live(ctx.pg), timeout=30, interval=0.1)
            sweep_took = time.monotonic() - sweep_started
            after_sweep = await refresh_outcome(ctx.pg, control, seeded, KEY)
            await procs.stop(proc)
    await drop_imo(ctx.pg)
    ended = outcome.refreshed + outcome.twice + outcome.given_up
    notes = [
        f"{kills} kills, each ~0.25 s after a claim" + (f"; {stopped_early}" if stopped_early else ""),
        f"jobs when the killing stopped: {states_note(at_end)}",
        f"jobs after one worker ran on: {states_note(states)} (max attempt {extremes[0]}, "
        f"max lease_expiries {extremes[1]})",
        f"integrations: refreshed {outcome.refreshed + outcome.twice}, given up {outcome.given_up} "
        f"(reason on {reasons}, notifications {told})",
        f"next sweep enqueued {swept}: refreshed {after_sweep.refreshed + after_sweep.twice}/{n} "
        f"in {sweep_took:.1f} s",
        *outcome.notes,
    ]
    misses = []
    if ended != n:
        misses.append(f"{n - ended} integrations neither refreshed nor given up with a reason")
    return Row(
        "crash loop",
        tried=n,
        failed=outcome.given_up,
        server_errors=None,
        lost=outcome.lost,
        stuck=outcome.stuck,
        wrong_reauth=outcome.not_connected,
        recovered_in=(settled_at - last_kill) if settled else None,
        notes=notes,
        misses=misses,
    )


async def kill_after_claims(
    ctx: Context, procs: Processes, env: dict[str, str], flags: tuple[str, ...], *, wanted: int, lease: int
) -> tuple[int, str | None, float, subprocess.Popen[bytes] | None]:
    """Start a worker, SIGKILL it 0.25 s after its first claim, `wanted` times, each time at once starting the
    next one. Stops early when a worker finds nothing left to claim (it is then left running). Returns
    (kills, why it stopped early, epoch of the last kill, the worker left running)."""
    kills, stopped_early, last_kill = 0, None, time.time()
    proc: subprocess.Popen[bytes] | None = None
    while kills < wanted:
        proc = procs.worker(env, *flags)

        async def claimed_or_none_left(proc: subprocess.Popen[bytes] = proc) -> bool:
            return await held_by(ctx.pg, proc) > 0 or await live_jobs(ctx.pg) == 0

        await wait_until(claimed_or_none_left, timeout=lease + 12, interval=0.02)
        if not await held_by(ctx.pg, proc):  # this worker stays: it is the one left running
            if kills == 0:
                raise Incomplete("the first worker claimed nothing")
            left = states_note(await job_states(ctx.pg))
            stopped_early = f"after {kills} kills nothing was left to claim ({left})"
            break
        await asyncio.sleep(0.25)
        procs.kill(proc)
        proc = None
        kills += 1
        last_kill = time.time()
    return kills, stopped_early, last_kill, proc


async def lease_expiry_note(pg: Pg) -> str:
    """How many refresh jobs lost their lease once, twice... (or that the queue does not count it)."""
    if not await _has_lease_expiries(pg):
        return "the queue does not count lease expiries"
    rows = await pg.fetch(
        """select lease_expiries as k, count(*) as n from public.instagram_refresh_jobs
           where imo_id = $1 and lease_expiries > 0 group by 1 order by 1""",
        IMO,
    )
    return "jobs by lease expiries: " + (", ".join(f"{r['k']}x {r['n']}" for r in rows) or "none")


async def _has_lease_expiries(pg: Pg) -> bool:
    return bool(
        await pg.fetchval(
            """select exists (select 1 from information_schema.columns where table_schema = 'public'
                 and table_name = 'instagram_refresh_jobs' and column_name = 'lease_expiries')"""
        )
    )


async def _job_counters(pg: Pg) -> tuple[int, int | str]:
    """The highest attempt and lease_expiries among the IMO's refresh jobs ('-' without that column)."""
    attempt = int(
        await pg.fetchval(
            "select coalesce(max(attempt), 0) from public.instagram_refresh_jobs where imo_id = $1", IMO
        )
    )
    has_column = await _has_lease_expiries(pg)
    if not has_column:
        return attempt, "-"
    expiries = await pg.fetchval(
        "select coalesce(max(lease_expiries), 0) from public.instagram_refresh_jobs where imo_id = $1", IMO
    )
    return attempt, int(expiries)


# ---- webhook deliveries ---------------------------------------------------------------------------


@dataclass
class Post:
    """One delivery: its bytes, the message it carries, and the first answer it got."""

    body: bytes
    mid: str | None
    sent_at: float  # epoch
    status: int | None = None  # None: no HTTP answer
    error: str | None = None
    elapsed: float = 0.0
    acked: bool = False  # 2xx, at the first try or a redelivery
    redelivered: int = 0


class Webhook:
    """The API's webhook, called as Meta calls it; every body sent is remembered in `sent` (the harness
    deletes those deliveries after the scenario)."""

    def __init__(self, http: httpx.AsyncClient, url: str, sent: set[bytes]) -> None:
        self.http, self.url, self.sent = http, url, sent

    async def post(self, body: bytes) -> tuple[int | None, str | None, float]:
        """POST the signed bytes; (status or None, the client's error, seconds)."""
        self.sent.add(body)
        started = time.monotonic()
        try:
            answer = await self.http.post(
                self.url, content=body, headers=meta.signature_headers(body, SECRET)
            )
        except httpx.HTTPError as exc:
            return None, type(exc).__name__, time.monotonic() - started
        return answer.status_code, None, time.monotonic() - started


async def first_send(hook: Webhook, post: Post) -> None:
    post.status, post.error, post.elapsed = await hook.post(post.body)
    post.acked = post.status is not None and 200 <= post.status < 300


class Load:
    """Signed one-message deliveries POSTed to the webhook at `rate` a second (each in a request of its own,
    as Meta's do), every answer kept."""

    def __init__(self, hook: Webhook, factory: meta.EventFactory, rate: float) -> None:
        self.hook, self.factory, self.rate = hook, factory, rate
        self.posts: list[Post] = []
        self._stop = asyncio.Event()

    def next_post(self) -> Post:
        n = len(self.posts)
        event = self.factory.message(self.factory.person(1 + n % 20), f"fault harness message {n}")
        delivery = meta.deliver(self.factory.account_id, [event])
        return Post(delivery.body, delivery.mids[0], time.time())

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate) + 1
            while len(self.posts) < due:
                post = self.next_post()
                self.posts.append(post)
                tasks.append(asyncio.create_task(first_send(self.hook, post)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.01)
        await asyncio.gather(*tasks)

    def stop(self) -> None:
        self._stop.set()


async def redeliver(hook: Webhook, posts: Sequence[Post], tries: int = 5) -> None:
    """What Meta does with a delivery it got no 2xx for: the same bytes again (here up to `tries` times, a
    second apart)."""
    pending = [p for p in posts if not p.acked]
    for _ in range(tries):
        if not pending:
            return
        answers = await asyncio.gather(*(hook.post(p.body) for p in pending))
        for post, (status, _error, _elapsed) in zip(pending, answers, strict=True):
            post.redelivered += 1
            post.acked = status is not None and 200 <= status < 300
        pending = [p for p in pending if not p.acked]
        if pending:
            await asyncio.sleep(1.0)


async def stored(pg: Pg, mids: Sequence[str]) -> dict[str, int]:
    rows = await pg.fetch(
        """select meta_message_id, count(*) as n from public.instagram_messages
           where meta_message_id = any($1::text[]) group by 1""",
        list(mids),
    )
    return {r["meta_message_id"]: int(r["n"]) for r in rows}


async def delivery_rows(pg: Pg, bodies: Sequence[bytes]) -> list[asyncpg.Record]:
    return await pg.fetch(
        """select body_sha256, state, attempt, last_error_code from public.instagram_webhook_events
           where body_sha256 = any($1::bytea[])""",
        [hashlib.sha256(b).digest() for b in bodies],
    )


async def webhook_account(pg: Pg, control: httpx.AsyncClient) -> str:
    """One connected integration (a sandbox user with a Page and an Instagram account, so the profile
    fetches the new conversations queue work too); returns the account deliveries are addressed to."""
    [seeded] = await seed_connected(pg, control, 1)
    return seeded.account_id


async def warm_up(pg: Pg, hook: Webhook, factory: meta.EventFactory) -> None:
    """One delivery all the way into instagram_messages before the fault: the pipeline works."""
    delivery = meta.deliver(factory.account_id, [factory.message(factory.person(99), "warm-up")])
    status, error, _ = await hook.post(delivery.body)
    if status != 200:
        raise Incomplete(f"the warm-up delivery was answered {status or error}")

    async def processed() -> bool:
        return bool(await stored(pg, delivery.mids))

    if not await wait_until(processed, timeout=30):
        raise Incomplete("the warm-up delivery was never processed")


async def webhook_fault(
    ctx: Context,
    name: str,
    title: str,
    fault: Callable[[], Awaitable[float]],
    *,
    database_url: str = DATABASE_URL,
    rate: float,
    before: float,
    after: float,
    notes: list[str],
) -> Row:
    """Deliveries at `rate` a second for `before` s, then `fault()` (it returns the epoch at which the
    fault ended), then `after` s more; then the unanswered ones again, as Meta would; then the counts."""
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    with (
        servers(api=True, database_url=database_url, log=ctx.log_file(f"{name}-servers")) as (
            sandbox_url,
            api_url,
            env,
        ),
        Processes(ctx, name) as procs,
    ):
        async with (
            httpx.AsyncClient(base_url=sandbox_url, timeout=60) as control,
            httpx.AsyncClient(timeout=HANG_AFTER + 10, limits=limits) as http,
        ):
            await reset_imo(ctx.pg)
            account = await webhook_account(ctx.pg, control)
            worker = procs.worker(env, *worker_flags(lease_seconds=10, poll_interval=0.5))
            hook = Webhook(http, api_url + WEBHOOK, ctx.sent)
            factory = meta.EventFactory(
                account, seed=f"{name}-{time.time_ns()}", start_ms=int(time.time() * 1000)
            )
            await warm_up(ctx.pg, hook, factory)
            load = Load(hook, factory, rate)
            sending = asyncio.create_task(load.run())
            try:
                await asyncio.sleep(before)
                fault_end = await fault()
                await asyncio.sleep(after)
            finally:
                load.stop()
                await sending
            posts = load.posts
            await redeliver(hook, posts)
            acked = [p.mid for p in posts if p.acked and p.mid]

            async def all_stored() -> bool:
                return len(await stored(ctx.pg, acked)) == len(acked)

            await wait_until(all_stored, timeout=30, interval=0.2)
            counts = await stored(ctx.pg, [p.mid for p in posts if p.mid])
            rows = await delivery_rows(ctx.pg, [p.body for p in posts])
            after_fault = [p.mid for p in posts if p.mid and p.sent_at >= fault_end and p.status == 200]
            first_done = await ctx.pg.fetchval(
                """select extract(epoch from min(created_at))::float8 from public.instagram_messages
                   where meta_message_id = any($1::text[])""",
                after_fault,
            )
            worker_alive = worker.poll() is None
            if not worker_alive:
                notes.append(f"the worker exited {worker.returncode}: {procs.last_line(worker)}")
            try:
                api_alive = (await http.get(api_url + "/healthz", timeout=5)).status_code == 200
            except httpx.HTTPError:
                api_alive = False
            await procs.stop(worker)
    await drop_imo(ctx.pg)
    row = webhook_row(title, posts, counts, rows, notes)
    row.recovered_in = None if first_done is None else max(0.0, first_done - fault_end)
    if not worker_alive or not api_alive:
        row.misses.append("a process died")
    row.notes.append(
        f"after the fault: worker {'alive' if worker_alive else 'DEAD'}, API {'alive' if api_alive else 'DEAD'}"
        " (neither restarted)"
    )
    return row


def vanished(post: Post, counts: dict[str, int], by_digest: dict[bytes, str]) -> bool:
    """An acknowledged delivery is lost when its row is gone, or processed without its message (one still
    waiting to be processed is stuck, not lost)."""
    state = by_digest.get(hashlib.sha256(post.body).digest())
    return state is None or (state not in LIVE and bool(post.mid) and counts.get(post.mid or "", 0) == 0)


def webhook_row(
    title: str,
    posts: Sequence[Post],
    counts: dict[str, int],
    rows: Sequence[asyncpg.Record],
    notes: list[str],
) -> Row:
    """The figures of a webhook load: first answers, what was acknowledged and stored, what is left."""
    ok = sum(1 for p in posts if p.status is not None and 200 <= p.status < 300)
    unavailable = [p for p in posts if p.status == 503]
    improper = [p for p in posts if not (p.status is not None and (200 <= p.status < 300 or p.status == 503))]
    slow = [p for p in posts if p.elapsed > HANG_AFTER]
    never_acked = sum(1 for p in posts if not p.acked)
    doubled = sum(1 for n in counts.values() if n > 1)
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    by_digest = {bytes(r["body_sha256"]): str(r["state"]) for r in rows}
    others = sorted({f"{p.status or p.error}" for p in improper})
    notes = [
        *notes,
        f"first answers: 2xx {ok}, 503 {len(unavailable)}"
        + (f" (slowest {max(p.elapsed for p in unavailable):.1f} s)" if unavailable else "")
        + (f", other {len(improper)} ({', '.join(others)})" if improper else "")
        + (f", {len(slow)} slower than {HANG_AFTER:.1f} s" if slow else ""),
        f"redelivered {sum(1 for p in posts if p.redelivered)} unacknowledged ones: "
        f"{never_acked} still not acknowledged",
        f"deliveries: {', '.join(f'{s} {n}' for s, n in sorted(states.items()))}; messages stored once "
        f"{sum(1 for n in counts.values() if n == 1)}, twice or more {doubled}",
    ]
    misses = []
    if doubled:
        misses.append(f"{doubled} messages stored more than once")
    if never_acked:
        misses.append(f"{never_acked} deliveries never acknowledged")
    if states.get("failed") or states.get("discarded"):
        misses.append("good deliveries failed")
    return Row(
        title,
        tried=len(posts),
        failed=len({id(p) for p in improper + slow}),
        server_errors=sum(1 for p in posts if p.status is not None and p.status >= 500),
        lost=sum(1 for p in posts if p.acked and vanished(p, counts, by_digest)),
        stuck=sum(n for s, n in states.items() if s in LIVE),
        wrong_reauth=None,
        recovered_in=None,
        notes=notes,
        misses=misses,
    )


# ---- 3. Postgres restart under load ---------------------------------------------------------------


async def pg_restart(ctx: Context) -> Row:
    if (why := embedded_cluster()) is not None:
        raise Incomplete(why)
    down = 3.0
    notes = [f"40 deliveries/s; Postgres stopped (fast), down {down:.0f} s, started again"]

    async def restart() -> float:
        started = time.monotonic()
        await db_sh("stop")
        stopping = time.monotonic() - started
        await asyncio.sleep(down)
        started = time.monotonic()
        await db_sh("start")
        notes.append(f"db.sh stop took {stopping:.1f} s, start {time.monotonic() - started:.1f} s")
        return time.time()

    try:
        return await webhook_fault(
            ctx,
            "pg-restart",
            "Postgres restart under load",
            restart,
            rate=40.0,
            before=4.0 if ctx.quick else 5.0,
            after=5.0 if ctx.quick else 6.0,
            notes=notes,
        )
    finally:
        await db_sh("start")  # whatever happened, the cluster runs again (a no-op when it does)


# ---- 4. black-holed database ----------------------------------------------------------------------


async def black_hole(ctx: Context) -> Row:
    silence = 6.0 if ctx.quick else 10.0
    target = urlsplit(DATABASE_URL)
    if target.port is None:
        raise Incomplete("DATABASE_URL names no port")
    with BlackHoleProxy(target.port) as proxy:
        netloc = f"{target.username}:{target.password}@127.0.0.1:{proxy.port}"
        through_proxy = target._replace(netloc=netloc).geturl()

        async def hole() -> float:
            proxy.black_hole()
            try:
                await asyncio.sleep(silence)
            finally:
                proxy.restore()
            return time.time()

        return await webhook_fault(
            ctx,
            "black-hole",
            "black-holed database",
            hole,
            database_url=through_proxy,
            rate=20.0,
            before=4.0,
            after=6.0 if ctx.quick else 8.0,
            notes=[
                f"20 deliveries/s; every packet to and from Postgres held for {silence:.0f} s "
                f"(INSTAGRAM_DB_TIMEOUT_SECONDS {DB_TIMEOUT:g})"
            ],
        )


# ---- 5. Meta 5xx / 429 / timeout storm --------------------------------------------------------------

# One after another for ~1 s each, on the exchange and debug_token calls.
STORM: tuple[dict[str, Any], ...] = (
    {"http_status": 500, "code": 2, "is_transient": True},
    {"http_status": 400, "code": 613, "headers": {"Retry-After": "1"}},
    {"http_status": 502, "body": "<html><body><h1>502 Bad Gateway</h1></body></html>"},
    {"http_status": 403, "code": 4, "headers": {"Retry-After": "1"}},
    {"http_status": 500, "code": 1},
    {"http_status": 400, "code": 17, "headers": {"Retry-After": "1"}},
    {"http_status": 429, "body": "Too Many Requests", "headers": {"Retry-After": "1"}},
    {"http_status": 504, "timeout_seconds": 3},
    {"http_status": 503, "code": 2, "is_transient": True, "message": "Service temporarily unavailable"},
)


async def storm(control: httpx.AsyncClient, seconds: float) -> dict[str, int]:
    """Meta's bad minute: each kind of failure in STORM for a second, in turn; returns the answers given by
    kind ('5xx' counts the hangs too)."""
    hits = {"5xx": 0, "throttled": 0}
    end = time.monotonic() + seconds
    turn = 0
    while (left := end - time.monotonic()) > 0:
        spec = STORM[turn % len(STORM)]
        turn += 1
        await control.post("/_sandbox/faults", json={"path": REFRESH_CALLS, "count": -1, **spec})
        await asyncio.sleep(min(1.0, left))
        listed = (await control.get("/_sandbox/faults")).json()["faults"]
        await control.delete("/_sandbox/faults")
        for fault in listed:
            hits["5xx" if fault["http_status"] >= 500 else "throttled"] += int(fault["hits"])
    return hits


async def meta_storm(ctx: Context) -> Row:
    n = 40 if ctx.quick else 100
    seconds = 6.0 if ctx.quick else 10.0
    flags = worker_flags(concurrency=20, lease_seconds=60, poll_interval=0.2, retry_base_seconds=0.5)
    with (
        servers(api=False, log=ctx.log_file("meta-storm-servers")) as (sandbox_url, _api, env),
        Processes(ctx, "meta-storm") as procs,
    ):
        async with httpx.AsyncClient(base_url=sandbox_url, timeout=60) as control:
            await reset_imo(ctx.pg)
            seeded = await seed_connected(ctx.pg, control, n)
            await control.post("/_sandbox/latency", json={"path": GRAPH, "ms": 30})
            worker = procs.worker(env, *flags)
            await asyncio.sleep(2.0)  # the worker is up and listening
            raging = asyncio.create_task(storm(control, seconds))
            await asyncio.sleep(0.2)
            if await ctx.pg.fetchval("select public.instagram_refresh_enqueue_v1()") != n:
                raging.cancel()
                raise Incomplete("the refreshes were not all enqueued")
            hits = await raging
            await control.delete("/_sandbox/faults")
            storm_end = time.time()
            during = await job_states(ctx.pg)
            finished = await wait_until(
                lambda: _no_live(ctx.pg), timeout=60 if ctx.quick else 90, interval=0.2
            )
            await procs.stop(worker)
            outcome = await refresh_outcome(ctx.pg, control, seeded, KEY)
            total, repeated = await exchanges(control, seeded)
            states = await job_states(ctx.pg)
            attempts = await _job_counters(ctx.pg)
    await drop_imo(ctx.pg)
    misses = []
    if outcome.refreshed + outcome.twice != n:
        misses.append(f"{n - outcome.refreshed - outcome.twice} not refreshed after the storm")
    if not finished:
        misses.append("jobs left unfinished")
    return Row(
        "Meta 5xx/429/timeout storm",
        tried=n,
        failed=outcome.given_up,
        server_errors=hits["5xx"],
        lost=outcome.lost,
        stuck=outcome.stuck,
        wrong_reauth=outcome.not_connected,
        recovered_in=recovered_after(storm_end, outcome.last_done),
        notes=[
            f"{seconds:.0f} s of {len(STORM)} failure kinds in turn on the exchange and debug_token calls: "
            f"{hits['5xx']} 5xx/hangs, {hits['throttled']} throttles (Retry-After: 1)",
            f"jobs when it ended: {states_note(during)}; at the end: {states_note(states)} "
            f"(max attempt {attempts[0]})",
            f"Meta exchanges that succeeded {total} for {n} integrations ({repeated} more than once)",
            *outcome.notes,
        ],
        misses=misses,
    )


# ---- 6. poison rows -------------------------------------------------------------------------------


def poison_bodies(account: str) -> list[tuple[str, bytes, str]]:
    """(what it is, the signed bytes, the reason processing must give)."""
    stamp = int(time.time() * 1000)

    def message(mid: str, text: str) -> dict[str, Any]:
        return {
            "sender": {"id": "6100000000009001"},
            "recipient": {"id": account},
            "timestamp": stamp,
            "message": {"mid": mid, "text": text},
        }

    def entry(*items: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"id": account, "time": stamp, "messaging": list(items)}]

    tag = time.time_ns()
    return [
        (
            "not JSON",
            b'{"object":"instagram","entry":[{"id":"' + account.encode() + b'","time":',
            "invalid_json",
        ),
        (
            "\\u0000 in a text",
            meta.encode({"object": "instagram", "entry": entry(message(f"poison-nul-{tag}", "a\x00b"))}),
            "invalid_json",
        ),
        (
            "a lone surrogate",
            meta.encode({"object": "instagram", "entry": entry(message(f"poison-sur-{tag}", "a\ud800b"))}),
            "invalid_json",
        ),
        (
            "entry not an array",
            meta.encode({"object": "instagram", "entry": entry(message(f"poison-obj-{tag}", "x"))[0]}),
            "unknown_shape",
        ),
        (
            "object page",
            meta.encode({"object": "page", "entry": entry(message(f"poison-page-{tag}", "x"))}),
            "unsupported_object",
        ),
    ]


async def poison(ctx: Context) -> Row:
    good_count = 50 if ctx.quick else 100
    with (
        servers(api=True, log=ctx.log_file("poison-servers")) as (sandbox_url, api_url, env),
        Processes(ctx, "poison") as procs,
    ):
        async with (
            httpx.AsyncClient(base_url=sandbox_url, timeout=60) as control,
            httpx.AsyncClient(timeout=HANG_AFTER + 10) as http,
        ):
            await reset_imo(ctx.pg)
            account = await webhook_account(ctx.pg, control)
            worker = procs.worker(env, *worker_flags(lease_seconds=10, poll_interval=0.5))
            hook = Webhook(http, api_url + WEBHOOK, ctx.sent)
            factory = meta.EventFactory(
                account, seed=f"poison-{time.time_ns()}", start_ms=int(time.time() * 1000)
            )
            await warm_up(ctx.pg, hook, factory)
            good = [
                meta.deliver(account, [factory.message(factory.person(1 + i % 10), f"good {i}")])
                for i in range(good_count)
            ]
            bad = poison_bodies(account)
            order: list[tuple[str, bytes, str | None]] = [("good", d.body, d.mids[0]) for d in good]
            step = len(order) // (len(bad) + 1)
            for i, (what, body, _reason) in enumerate(bad):  # spread among the good ones
                order.insert((i + 1) * step + i, (what, body, None))
            posts: list[Post] = []
            tasks = []
            for _what, body, mid in order:
                post = Post(body, mid, time.time())
                posts.append(post)
                tasks.append(asyncio.create_task(first_send(hook, post)))
                await asyncio.sleep(0.02)
            await asyncio.gather(*tasks)
            sent_end = time.monotonic()
            mids = [d.mids[0] for d in good]

            async def all_good() -> bool:
                return len(await stored(ctx.pg, mids)) == len(mids)

            drained = await wait_until(all_good, timeout=30, interval=0.1)
            drained_in = time.monotonic() - sent_end
            await asyncio.sleep(3.0)  # time to retry, if anything would
            first = {r["body_sha256"]: r for r in await delivery_rows(ctx.pg, [b for _, b, _ in bad])}
            await asyncio.sleep(3.0)
            second = {r["body_sha256"]: r for r in await delivery_rows(ctx.pg, [b for _, b, _ in bad])}
            good_rows = await delivery_rows(ctx.pg, [d.body for d in good])
            counts = await stored(ctx.pg, mids)
            await procs.stop(worker)
    await drop_imo(ctx.pg)
    ended, notes, misses = poison_verdicts(bad, first, second)
    good_states: dict[str, int] = {}
    for r in good_rows:
        good_states[r["state"]] = good_states.get(r["state"], 0) + 1
    notes.insert(
        0,
        f"{good_count} good deliveries, {len(bad)} poison among them: good ones "
        f"{', '.join(f'{s} {n}' for s, n in sorted(good_states.items()))}, all stored "
        f"{'in' if drained else 'NOT within'} {drained_in:.1f} s of the last POST",
    )
    if good_states.get("failed") or good_states.get("discarded"):
        misses.append("good deliveries failed")
    stuck = sum(1 for r in [*good_rows, *second.values()] if r["state"] in LIVE)
    unanswered = sum(1 for p in posts if p.status != 200)
    return Row(
        "poison row",
        tried=len(posts),
        failed=ended,
        server_errors=sum(1 for p in posts if p.status is not None and p.status >= 500),
        lost=sum(1 for m in mids if counts.get(m, 0) != 1),
        stuck=stuck,
        wrong_reauth=None,
        recovered_in=drained_in if drained else None,
        notes=notes,
        misses=misses + ([f"{unanswered} deliveries not answered 200"] if unanswered else []),
    )


def poison_verdicts(
    bad: Sequence[tuple[str, bytes, str]],
    first: dict[bytes, asyncpg.Record],
    second: dict[bytes, asyncpg.Record],
) -> tuple[int, list[str], list[str]]:
    """How each poison delivery ended (read twice, 3 s apart: a retry shows): (ended failed with a reason,
    notes, goals missed)."""
    ended, notes, misses = 0, [], []
    for what, body, reason in bad:
        digest = hashlib.sha256(body).digest()
        row, later = first.get(digest), second.get(digest)
        if row is None or later is None:
            misses.append(f"{what}: not stored")
            notes.append(f"{what}: NOT STORED")
            continue
        final = row["state"] in ("failed", "discarded") and bool(row["last_error_code"])
        ended += int(final)
        retried = later["attempt"] != row["attempt"] or later["state"] != row["state"]
        notes.append(
            f"{what}: {later['state']} {later['last_error_code']} (attempt {later['attempt']}"
            + (", retried" if retried else "")
            + ")"
        )
        if not final or later["last_error_code"] != reason:
            misses.append(
                f"{what} ended {later['state']} {later['last_error_code']} (expected failed {reason})"
            )
        if retried:
            misses.append(f"{what} retried")
    return ended, notes, misses


# ---- 7. key rotation interrupted halfway ------------------------------------------------------------

ROTATED = re.compile(r"rotated (\d+), remaining (\d+)")


async def rotate_key(
    env: dict[str, str], batch: int, log_path: Path, *, kill_at: int | None
) -> tuple[int, int | None, int | None]:
    """`instagram-dm rotate-key`; with `kill_at`, SIGKILL it once it says it rotated that many. Returns
    (rotated, remaining, exit status) as it last said (exit status -9 when killed)."""
    with log_path.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "--env-file",
            "/dev/null",
            "rotate-key",
            "--batch-size",
            str(batch),
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
        rotated, remaining = 0, None
        try:
            if proc.stdout is None:
                raise Incomplete("rotate-key's output cannot be read")
            async with asyncio.timeout(120):
                async for line in proc.stdout:
                    said = ROTATED.search(line.decode())
                    if said:
                        rotated, remaining = int(said.group(1)), int(said.group(2))
                        if kill_at is not None and rotated >= kill_at:
                            proc.kill()
                            break
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return rotated, remaining, proc.returncode


async def rotation(ctx: Context) -> Row:
    n = 200 if ctx.quick else 400
    batch = 10 if ctx.quick else 20
    with (
        servers(api=False, log=ctx.log_file("rotation-servers")) as (sandbox_url, _api, env),
        Processes(ctx, "rotation") as procs,
    ):
        async with httpx.AsyncClient(base_url=sandbox_url, timeout=60) as control:
            await reset_imo(ctx.pg)
            seeded = await seed_connected(ctx.pg, control, n, key=KEY)
            both = {
                **env,
                "INSTAGRAM_TOKEN_ENCRYPTION_KEY": NEW_KEY,
                "INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS": KEY,
            }
            said, _, status = await rotate_key(both, batch, ctx.log_file("rotation-rotate-1"), kill_at=n // 2)
            killed_at = time.time()
            if status != -signal.SIGKILL:
                raise Incomplete(f"rotate-key was not killed halfway (exit {status}, rotated {said} of {n})")
            # the batch the killed process had sent still commits on the server: wait for it, then count
            await wait_until(lambda: _no_rotation_running(ctx.pg), timeout=10)
            fingerprints = await _fingerprints(ctx.pg)
            rotated, remaining, status = await rotate_key(
                both, batch, ctx.log_file("rotation-rotate-2"), kill_at=None
            )
            finished = time.time()
            if status != 0 or remaining != 0:
                raise Incomplete(f"the rerun of rotate-key ended with exit {status}, remaining {remaining}")
            after = await _fingerprints(ctx.pg)
            unreadable, changed = 0, 0
            for s in seeded:  # the new key alone opens every row, and the tokens are the ones stored before
                try:
                    tokens = json.loads(
                        await ctx.pg.fetchval(
                            "select public.instagram_integration_tokens($1::uuid, $2, null)::text",
                            s.id,
                            NEW_KEY,
                        )
                    )
                except asyncpg.PostgresError:
                    unreadable += 1
                    continue
                changed += int(tokens["user_token"] != s.user_token or tokens["page_token"] != s.page_token)
            new_only = {k: v for k, v in env.items() if k != "INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS"}
            new_only["INSTAGRAM_TOKEN_ENCRYPTION_KEY"] = NEW_KEY
            if await ctx.pg.fetchval("select public.instagram_refresh_enqueue_v1()") != n:
                raise Incomplete("the refreshes were not all enqueued")
            worker = procs.worker(
                new_only, *worker_flags(concurrency=20, poll_interval=0.2, lease_seconds=30)
            )
            refreshed = await wait_until(lambda: _no_live(ctx.pg), timeout=90, interval=0.2)
            await procs.stop(worker)
            outcome = await refresh_outcome(ctx.pg, control, seeded, NEW_KEY)
            states = await job_states(ctx.pg)
    await drop_imo(ctx.pg)
    misses = []
    if outcome.refreshed + outcome.twice != n:
        misses.append(f"{n - outcome.refreshed - outcome.twice} not refreshed with the new key")
    if not refreshed:
        misses.append("refreshes left unfinished")
    return Row(
        "rotation killed halfway",
        tried=n,
        failed=outcome.given_up,
        server_errors=None,
        lost=unreadable + changed + outcome.lost,
        stuck=outcome.stuck,
        wrong_reauth=outcome.not_connected,
        recovered_in=finished - killed_at,
        notes=[
            f"rotate-key --batch-size {batch} killed after it said 'rotated {said}': rows then "
            f"{fingerprints.get('new', 0)} new key, {fingerprints.get('old', 0)} old key",
            f"the rerun rotated {rotated} more: {after.get('new', 0)} new, {after.get('old', 0)} old; "
            f"{unreadable} unreadable and {changed} changed with the new key alone",
            f"refresh by a worker holding only the new key: {states_note(states)}",
            *outcome.notes,
        ],
        misses=misses,
    )


async def _no_rotation_running(pg: Pg) -> bool:
    return not await pg.fetchval(
        """select count(*) from pg_stat_activity
           where state = 'active' and query like '%instagram_rotate_key_batch%' and pid <> pg_backend_pid()"""
    )


async def _fingerprints(pg: Pg) -> dict[str, int]:
    rows = await pg.fetch(
        """select case token_key_fingerprint when instagram_private.key_fingerprint($2) then 'new'
                    when instagram_private.key_fingerprint($3) then 'old' else 'other' end as k, count(*) as n
           from public.instagram_integrations where imo_id = $1 group by 1""",
        IMO,
        NEW_KEY,
        KEY,
    )
    return {r["k"]: int(r["n"]) for r in rows}


# ---- the table --------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[Context], Awaitable[Row]]] = {
    "kill9": kill9,
    "crash-loop": crash_loop,
    "pg-restart": pg_restart,
    "black-hole": black_hole,
    "meta-storm": meta_storm,
    "poison": poison,
    "rotation": rotation,
}
COLUMNS = ("scenario", "tried", "failed", "5xx", "lost", "stuck", "wrong-reauth", "recovered-in s", "goals")


def cells(row: Row) -> list[str]:
    if row.error is not None:
        return [row.scenario, "-", "-", "-", "-", "-", "-", "-", "COULD NOT RUN"]

    def opt(value: int | None) -> str:
        return "-" if value is None else str(value)

    misses = row.goal_misses()
    return [
        row.scenario,
        str(row.tried),
        str(row.failed),
        opt(row.server_errors),
        str(row.lost),
        str(row.stuck),
        opt(row.wrong_reauth),
        "never" if row.recovered_in is None else f"{row.recovered_in:.1f}",
        "met" if not misses else f"MISSED ({len(misses)})",
    ]


def render(rows: Sequence[Row], logs: Path, quick: bool, started: float) -> str:
    table = [list(COLUMNS), *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]

    def line(values: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(values, widths, strict=True))
            )
            + " |"
        )

    out = [
        f"[{CORES} cores] fault harness, {time.strftime('%Y-%m-%d %H:%M')}, {'--quick' if quick else 'full run'}, "
        f"{time.monotonic() - started:.0f} s",
        line(table[0]),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *(line(values) for values in table[1:]),
        "",
    ]
    for row in rows:
        out.append(f"{row.scenario}:")
        if row.error is not None:
            out.append(f"  could not run: {row.error}")
            continue
        out.extend(f"  {note}" for note in row.notes)
        out.extend(f"  MISSED: {miss}" for miss in row.goal_misses())
    out.append(f"logs: {logs}")
    return "\n".join(out)


async def run(names: Sequence[str], rounds: int, ctx: Context) -> list[Row]:
    rows = []
    try:
        for turn in range(rounds):
            for name in names:
                log.info("%s: starting", name)
                started = time.monotonic()
                try:
                    row = await SCENARIOS[name](ctx)
                except Incomplete as exc:
                    row = Row(name, 0, 0, None, 0, 0, None, None, error=str(exc))
                except Exception as exc:  # a harness that could not run fails its row, never prints a figure
                    log.exception("%s: could not run", name)
                    row = Row(name, 0, 0, None, 0, 0, None, None, error=f"{type(exc).__name__}: {exc}")
                finally:
                    await drop_imo(ctx.pg)
                    await forget_deliveries(ctx)
                if rounds > 1:
                    row.scenario += f" #{turn + 1}"
                log.info("%s: done in %.0f s", name, time.monotonic() - started)
                rows.append(row)
    finally:
        await ctx.pg.close()
    return rows


def exit_status(rows: Sequence[Row]) -> int:
    if any(r.error is not None for r in rows):
        return 1
    return 2 if any(r.goal_misses() for r in rows) else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "which", nargs="*", metavar="{" + ",".join(SCENARIOS) + "}", help="scenarios (default all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer integrations and shorter faults (a smoke run)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every scenario this many times (one row each)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill intervals (default: random)")
    args = parser.parse_args(argv)
    if unknown := set(args.which) - set(SCENARIOS):
        parser.error(
            f"unknown scenario(s): {', '.join(sorted(unknown))} (choose from {', '.join(SCENARIOS)})"
        )
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


async def main(args: argparse.Namespace) -> tuple[list[Row], Path]:
    running = asyncio.current_task()
    if running is not None:  # SIGTERM unwinds like Ctrl-C: every scenario's clean-up runs
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, running.cancel)
    logs = Path(tempfile.mkdtemp(prefix="instagram-dm-faults-"))
    ctx = Context(quick=args.quick, rng=random.Random(args.seed), logs=logs, pg=Pg(DATABASE_URL))
    names = [n for n in SCENARIOS if n in set(args.which)] if args.which else list(SCENARIOS)
    return await run(names, args.rounds, ctx), logs


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=logging.INFO, format="faults: %(message)s", stream=sys.stderr)
    began = time.monotonic()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    try:
        result, folder = asyncio.run(main(arguments))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(f"[{CORES} cores] FAIL interrupted: no figures")
    print(render(result, folder, arguments.quick, began), flush=True)
    sys.exit(exit_status(result))
