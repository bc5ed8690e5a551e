"""Receive Instagram DMs: benchmarks (see docs/webhooks-performance.md for the figures).

    ingest   signed deliveries durably stored per second and p99 at 64 concurrent senders (wrk, a unique
             signed body per request) against `instagram-dm api` with 1 and 2 uvicorn processes, beside the
             anchors' naive receiver (Starlette + HMAC + one asyncpg insert per request, one process:
             bench_http.sh case db_w1) and pgbench's durable single-row and 100-row inserts
             (bench_pgbench_ingest.sh), all on this database cluster. Every acknowledged (HTTP 200)
             delivery must be in the table afterwards.
    process  events/s turned into messages and conversations by the worker's `webhooks` kind alone (no
             profile kind, so no leads), and the lag from received_at to the message's created_at under a
             sustained load of half that rate.
    inbox    instagram_list_conversations / instagram_list_messages p99 as an authenticated member
             (rpc_as_user) at 1,000 conversations / 10,000 messages and 100,000 / 1,000,000 in one IMO,
             first page and a deep page (p_before).

Runs against the embedded database (DATABASE_URL); the anchors' scripts are read from --anchors. The
anchors' tables live in a database of their own (webhooks_anchors) on the same cluster; bench IMOs are
deleted at the end. Usage: python bench/webhooks.py [ingest] [process] [inbox] [--quick]

A run that did not finish its work (an acknowledged delivery missing, events left unprocessed) prints no
figure: it exits 1 with one line saying what did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._servers import CLI, DATABASE_URL, ROOT, bench_env, free_port
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.db.port import ActingUser
from worker.kinds.webhooks import WebhookKind
from worker.runner import Worker, WorkerOptions

CORES = os.cpu_count() or 1
SECRET = "sandbox-app-secret"  # bench_env's INSTAGRAM_APP_SECRET, also the naive receiver's WEBHOOK_SECRET
ANCHOR_DB = "webhooks_anchors"
BENCH_IMO = "00000000-0000-4000-8000-00000000be1c"
SMALL_IMO = "00000000-0000-4000-8000-00000000be1d"
BENCH_USER = "00000000-0000-4000-8000-00000000be1e"
ACCOUNT = "17841400000099001"
CONNECTIONS = 64
BIN = Path(sys.executable).parent


class Incomplete(Exception):
    """The benchmark's work did not all finish, so its figures would mean nothing."""


def say(line: str) -> None:
    print(f"[{CORES} cores] {line}", flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def dsn_for(database: str) -> str:
    return urlsplit(DATABASE_URL)._replace(path=f"/{database}").geturl()


# ---- processes and wrk ------------------------------------------------------------------------------


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def server(cmd: list[str], env: dict[str, str], port: int) -> Iterator[None]:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    try:
        wait_port(port, proc)
        time.sleep(0.5)  # every uvicorn process has run its lifespan (pools open)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=20)


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNIT[unit]


def wrk(url: str, seconds: float, lua: Path, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--latency", "-s", str(lua), url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


# ---- the anchors' database and pgbench --------------------------------------------------------------


async def anchor_database() -> str:
    pg = await asyncpg.connect(DATABASE_URL)
    try:
        if not await pg.fetchval("select 1 from pg_database where datname = $1", ANCHOR_DB):
            await pg.execute(f"create database {ANCHOR_DB}")
    finally:
        await pg.close()
    dsn = dsn_for(ANCHOR_DB)
    conn = await asyncpg.connect(dsn)
    try:  # bench_http.sh's table for the naive receiver
        await conn.execute(
            """create table if not exists webhook_http_events (
                 id bigserial primary key, body_sha256 bytea not null unique,
                 received_at timestamptz not null default now(), payload jsonb not null)"""
        )
    finally:
        await conn.close()
    return dsn


def pgbench(anchors: Path, runs: int, seconds: int) -> dict[tuple[str, int], dict[str, float]]:
    """bench_pgbench_ingest.sh on this cluster: medians per (mode, clients)."""
    host, port = re.search(r"@([^:/]+):(\d+)/", DATABASE_URL).groups()  # type: ignore[union-attr]
    pgbin = "/usr/lib/postgresql/15/bin"
    env = {**os.environ, "PGPASSWORD": "postgres", "PATH": f"{pgbin}:/usr/bin:/bin"}
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run(
            [
                "bash",
                str(anchors / "bench_pgbench_ingest.sh"),
                host,
                port,
                ANCHOR_DB,
                str(runs),
                str(seconds),
                work,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        raise Incomplete(f"pgbench did not finish: {out.stderr.strip().splitlines()[-1:]}")
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            f = dict(kv.split("=", 1) for kv in line.split()[1:])
            results.setdefault((f["mode"], int(f["clients"])), []).append(
                {"rows_per_s": float(f["rows_per_s"]), "p99": float(f["p99_ms"])}
            )
    return {
        key: {
            "rows_per_s": statistics.median(r["rows_per_s"] for r in rs),
            "p99": statistics.median(r["p99"] for r in rs),
        }
        for key, rs in results.items()
    }


# ---- ingest -----------------------------------------------------------------------------------------


def prefix_file(work: Path) -> Path:
    """bench_http.sh's body prefix (seed 7, ~2 KB, a multiple of 64 bytes): wrk_unique.lua appends a unique
    suffix and signs each body."""
    random.seed(7)
    words = [
        "".join(random.choice(string.ascii_letters) for _ in range(random.randint(2, 9))) for _ in range(400)
    ]
    msg: dict[str, Any] = {
        "object": "instagram",
        "entry": [
            {
                "id": "17841400000000000",
                "time": 1732570000000,
                "messaging": [
                    {
                        "sender": {"id": "1234567890123456"},
                        "recipient": {"id": "17841400000000000"},
                        "timestamp": 1732570000000,
                        "message": {"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAw", "text": ""},
                    }
                ],
            }
        ],
    }
    i = 0
    while True:
        prefix = json.dumps(msg)[:-1] + ', "bench_id": "'
        if len(prefix) >= 2000 and len(prefix) % 64 == 0:
            break
        msg["entry"][0]["messaging"][0]["message"]["text"] += words[i % 400][0]
        i += 1
    path = work / "prefix.json.part"
    path.write_text(prefix)
    return path


async def count_rows(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"select count(*) from {table}"))  # noqa: S608 - our table names
    finally:
        await conn.close()


async def reset_table(dsn: str, table: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"truncate {table}")
        await conn.execute("checkpoint")
    finally:
        await conn.close()


async def ingest(args: argparse.Namespace, anchors: Path) -> dict[tuple[str, int], dict[str, float]]:
    anchor_dsn = await anchor_database()
    uvicorn = shutil.which("uvicorn", path=str(BIN)) or "uvicorn"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        url_base = f"http://127.0.0.1:{port}"
        env = {
            **bench_env("http://127.0.0.1:9", url_base),
            "WEBHOOK_SECRET": SECRET,
            "BENCH_DSN": anchor_dsn,
            "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "bench-verify-token",
        }
        env["PREFIX_FILE"] = str(prefix_file(work))
        lua = anchors / "wrk_unique.lua"
        cases: dict[str, tuple[list[str], str, str, str]] = {
            "naive receiver (anchors db_w1)": (
                [
                    uvicorn,
                    "webhook_app:app",
                    "--app-dir",
                    str(anchors),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                "/webhook_db",
                anchor_dsn,
                "webhook_http_events",
            ),
        }
        for workers in args.api_workers:
            cases[f"instagram-dm api, {workers} process(es)"] = (
                [*CLI, "--env-file", "/dev/null", "api", "--port", str(port), "--workers", str(workers)],
                "/functions/v1/instagram-webhook",
                DATABASE_URL,
                "public.instagram_webhook_events",
            )
        figures: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
        for _ in range(args.runs):  # the cases interleaved, so drift on a shared machine hits them alike
            for name, (cmd, path, dsn, table) in cases.items():
                await reset_table(dsn, table)
                with server(cmd, env, port):
                    wrk(url_base + path, 2, lua, env)  # warm-up
                    await reset_table(dsn, table)
                    figure = wrk(url_base + path, args.seconds, lua, env)
                    await asyncio.sleep(0.5)  # requests wrk cut off at the end may still commit
                rows = await count_rows(dsn, table)
                acked = figure["requests"] - figure["non2xx"]
                if figure["non2xx"] or rows < acked:
                    raise Incomplete(
                        f"ingest did not store what it acknowledged: {name}: {acked:,.0f} acknowledged, "
                        f"{rows:,} rows, {figure['non2xx']:,.0f} non-2xx"
                    )
                figure["rows"] = rows
                figures[name].append(figure)
        await reset_table(DATABASE_URL, "public.instagram_webhook_events")
    bench = pgbench(anchors, args.pgbench_runs, args.pgbench_seconds)
    medians = {}
    for name, runs in figures.items():
        rps = statistics.median(f["rps"] for f in runs)
        p99 = statistics.median(f["p99"] for f in runs)
        p50 = statistics.median(f["p50"] for f in runs)
        medians[name] = (rps, p99)
        each = ", ".join(f"{f['rps']:,.0f}/{f['p99']:.0f}ms" for f in runs)
        say(
            f"P3 ingest {name}, {CONNECTIONS} connections: median {rps:,.0f} deliveries/s, p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms (runs: {each}; "
            f"every acknowledged delivery stored: {sum(f['rows'] for f in runs):,.0f} rows)"
        )
    for (mode, clients), f in sorted(bench.items()):
        say(
            f"P3 ingest pgbench {mode}, {clients} clients: median {f['rows_per_s']:,.0f} rows/s, p99 {f['p99']:.1f} ms"
        )
    naive = medians.pop("naive receiver (anchors db_w1)")[0]
    for name, (rps, p99) in medians.items():
        say(
            f"P3 ingest goal, {name}: {rps / naive:.2f} x the naive receiver (goal >= 1.4), p99 {p99:.1f} ms "
            f"(goal <= 50); {rps / bench[('single', 32)]['rows_per_s']:.2f} x pgbench single-row 32 clients"
        )
    return bench


# ---- processing -------------------------------------------------------------------------------------

T0 = 1_764_547_200_000


def deliveries(run: str, n: int, senders: int, per: int = 1) -> list[bytes]:
    """`n` messages (~2 KB of text each, a unique mid) for ACCOUNT from `senders` participants, `per` to a
    delivery (Meta batches up to 1,000 events per POST when there is much to send)."""
    text = " ".join("".join(random.choice(string.ascii_letters) for _ in range(7)) for _ in range(230))

    def event(i: int) -> dict[str, object]:
        return {
            "sender": {"id": str(900_000 + i % senders)},
            "recipient": {"id": ACCOUNT},
            "timestamp": T0 + i,
            "message": {"mid": f"bench-{run}-{i}", "text": text},
        }

    return [
        json.dumps(
            {
                "object": "instagram",
                "entry": [
                    {
                        "id": ACCOUNT,
                        "time": T0 + first,
                        "messaging": [event(i) for i in range(first, min(n, first + per))],
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        for first in range(0, n, per)
    ]


async def store(db: AsyncpgDatabase, bodies: list[bytes], batch: int = 500) -> None:
    for i in range(0, len(bodies), batch):
        await rpc.webhook_ingest(db, bodies=bodies[i : i + batch])


async def reset_imo(pg: asyncpg.Connection, imo: str) -> None:
    await pg.execute("delete from public.imos where id = $1", imo)
    await pg.execute("insert into public.imos (id, name) values ($1, 'Bench IMO')", imo)


async def bench_integration(pg: asyncpg.Connection, imo: str, account: str) -> str:
    """A routable integration needing no tokens ('reauth_required': the webhooks still land)."""
    return str(
        await pg.fetchval(
            """insert into public.instagram_integrations (imo_id, facebook_page_id, instagram_business_account_id,
                 status) values ($1, $2, $3, 'reauth_required') returning id""",
            imo,
            str(int(account) - 10**16),
            account,
        )
    )


async def process_run(
    pg: asyncpg.Connection, db: AsyncpgDatabase, run: str, n: int, concurrency: int, *, per: int = 1
) -> tuple[float, int, int]:
    """Events per second turned into messages: `n` events, `per` to a delivery."""
    await pg.execute("truncate public.instagram_webhook_events")
    bodies = deliveries(run, n, senders=n // 10, per=per)
    await store(db, bodies)
    await pg.execute("vacuum analyze public.instagram_webhook_events")
    await pg.execute("checkpoint")
    conversations0 = await pg.fetchval(
        "select count(*) from public.instagram_conversations where imo_id = $1", BENCH_IMO
    )
    worker = Worker(
        db,
        [WebhookKind()],
        options=WorkerOptions(concurrency=concurrency, exit_when_idle=True, listen=False, poll_interval=1.0),
    )
    started = time.perf_counter()
    await worker.run()
    elapsed = time.perf_counter() - started
    done = await pg.fetchval("select count(*) from public.instagram_webhook_events where state = 'completed'")
    messages = await pg.fetchval(
        "select count(*) from public.instagram_messages where imo_id = $1 and meta_message_id like $2",
        BENCH_IMO,
        f"bench-{run}-%",
    )
    conversations = await pg.fetchval(
        "select count(*) from public.instagram_conversations where imo_id = $1", BENCH_IMO
    )
    if done != len(bodies) or messages != n:
        raise Incomplete(
            f"processing did not finish: {done:,} of {len(bodies):,} deliveries completed, {messages:,} of {n:,} "
            "messages"
        )
    return n / elapsed, messages, conversations - conversations0


async def lag_run(
    pg: asyncpg.Connection, db: AsyncpgDatabase, rate: float, seconds: float, concurrency: int
) -> list[float]:
    await pg.execute("truncate public.instagram_webhook_events")
    await pg.execute("vacuum analyze public.instagram_webhook_events")
    n = int(rate * seconds)
    bodies = deliveries("lag", n, senders=max(1, n // 10))
    worker = Worker(db, [WebhookKind()], options=WorkerOptions(concurrency=concurrency, poll_interval=1.0))
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.5)
    tick = 0.02
    started = time.perf_counter()
    sent = 0
    while sent < n:  # paced: every tick, what the rate owes so far
        due = min(n, int((time.perf_counter() - started) * rate))
        if due > sent:
            await rpc.webhook_ingest(db, bodies=bodies[sent:due])
            sent = due
        await asyncio.sleep(tick)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = await pg.fetchval(
            "select count(*) from public.instagram_webhook_events where state <> 'completed'"
        )
        if left == 0:
            break
        await asyncio.sleep(0.2)
    worker.request_stop()
    await running
    lags = await pg.fetch(
        """select extract(epoch from m.created_at - e.received_at) * 1000 as lag
           from public.instagram_webhook_events e
           join public.instagram_messages m
             on m.meta_message_id = convert_from(e.body, 'UTF8')::jsonb #>> '{entry,0,messaging,0,message,mid}'"""
    )
    if len(lags) != n:
        raise Incomplete(
            f"processing under load did not finish: {len(lags):,} of {n:,} deliveries became messages"
        )
    return [float(r["lag"]) for r in lags]


async def process(args: argparse.Namespace, bench: dict[tuple[str, int], dict[str, float]] | None) -> None:
    """The webhooks kind draining stored deliveries, then the lag at half the rate it reached."""
    pg = await asyncpg.connect(DATABASE_URL)
    try:
        await reset_imo(pg, BENCH_IMO)
        await bench_integration(pg, BENCH_IMO, ACCOUNT)
        db = await AsyncpgDatabase.connect(DATABASE_URL, max_size=4)
        try:
            await process_case(args, pg, db, bench)
        finally:
            await db.close()
    finally:
        await pg.execute("truncate public.instagram_webhook_events")
        await pg.execute("delete from public.imos where id = $1", BENCH_IMO)
        await pg.close()


async def process_case(
    args: argparse.Namespace,
    pg: asyncpg.Connection,
    db: AsyncpgDatabase,
    bench: dict[tuple[str, int], dict[str, float]] | None,
) -> None:
    n = args.process_events
    runs = args.runs
    best = (0.0, 0)
    for concurrency in args.process_concurrency:
        rates = []
        for r in range(runs):
            rate, messages, conversations = await process_run(pg, db, f"c{concurrency}r{r}", n, concurrency)
            rates.append(rate)
        median = statistics.median(rates)
        best = max(best, (median, concurrency))
        say(
            f"P3 processing, webhooks kind only (no profile kind, so no leads), {n:,} deliveries "
            f"of one message, concurrency {concurrency} (claim batch {int(concurrency * 0.5)}): median "
            f"{median:,.0f} events/s (runs: {', '.join(f'{r:,.0f}' for r in rates)}); last run {messages:,} "
            f"messages, {conversations:,} new conversations"
        )
    for per in args.events_per_delivery:
        if per == 1:
            continue
        rates = [(await process_run(pg, db, f"p{per}r{r}", n, best[1], per=per))[0] for r in range(runs)]
        say(
            f"P3 processing, webhooks kind only, {n:,} events {per} to a delivery (Meta's batching under load), "
            f"concurrency {best[1]}: median {statistics.median(rates):,.0f} events/s "
            f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})"
        )
        if bench is not None:
            multi = max(bench[("multi100", c)]["rows_per_s"] for c in (8, 32))
            say(
                f"P3 processing, {per} events to a delivery: {statistics.median(rates) / multi:.2f} x pgbench's "
                f"100-row insert {multi:,.0f} rows/s"
            )
    rate, concurrency = best
    seconds = args.lag_seconds
    lags = await lag_run(pg, db, rate / 2, seconds, concurrency)
    say(
        f"P3 processing lag received_at -> message created_at at {rate / 2:,.0f} deliveries/s for "
        f"{seconds:.0f} s (concurrency {concurrency}): p50 {pct(lags, 0.5):.0f} ms, "
        f"p99 {pct(lags, 0.99):.0f} ms (goal <= 1000), max {max(lags):.0f} ms"
    )
    if bench is not None:
        multi = max(bench[("multi100", c)]["rows_per_s"] for c in (8, 32))
        say(
            f"P3 processing goal: {rate:,.0f} events/s = {rate / multi:.2f} x pgbench's 100-row "
            f"insert {multi:,.0f} rows/s (goal >= 0.25)"
        )


# ---- inbox ------------------------------------------------------------------------------------------


async def inbox_data(
    pg: asyncpg.Connection, imo: str, account: str, conversations: int, messages: int
) -> tuple[str, str]:
    """`conversations` conversations; one of them holds a tenth of the `messages`, the others share the rest.
    Returns (the long conversation's id, the integration id). Triggers are off for the bulk load, so the
    conversations' last_message_at is set here as the trigger would."""
    await reset_imo(pg, imo)
    await pg.execute(
        "insert into public.imo_members (imo_id, user_id, role) values ($1, $2, 'member')", imo, BENCH_USER
    )
    integration = await bench_integration(pg, imo, account)
    long_messages = messages // 10
    per_other = (messages - long_messages) // (conversations - 1)
    async with pg.transaction():
        await pg.execute("set local session_replication_role = replica")
        await pg.execute(
            """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid, last_message_at,
                 last_message_preview, last_inbound_at, unread_count)
               select $1, $2, (800000 + g)::text, now() - make_interval(secs => g * 60), 'hello ' || g,
                      now() - make_interval(secs => g * 60), g % 3
               from generate_series(1, $3) g""",
            integration,
            imo,
            conversations,
        )
        await pg.execute(
            """insert into public.instagram_messages (conversation_id, imo_id, meta_message_id, direction, text,
                 sent_at)
               select c.id, c.imo_id, 'inbox-' || c.imo_id || '-' || c.participant_igsid || '-' || g,
                      (case when g % 2 = 0 then 'inbound' else 'outbound' end)::public.instagram_message_direction,
                      'message ' || g, c.last_message_at - make_interval(secs => g)
               from public.instagram_conversations c
               cross join lateral generate_series(
                 0, case when c.participant_igsid = '800001' then $3::int else $4::int end - 1) g
               where c.imo_id = $1 and c.integration_id = $2""",
            imo,
            integration,
            long_messages,
            per_other,
        )
    await pg.execute("analyze public.instagram_conversations")
    await pg.execute("analyze public.instagram_messages")
    long_id = await pg.fetchval(
        "select id::text from public.instagram_conversations where imo_id = $1 and participant_igsid = '800001'",
        imo,
    )
    return str(long_id), integration


async def inbox_case(
    db: AsyncpgDatabase, pg: asyncpg.Connection, imo: str, long_id: str, samples: int
) -> dict[str, list[float]]:
    user = ActingUser(
        token="not-sent-over-asyncpg",
        claims={"sub": BENCH_USER, "role": "authenticated", "aud": "authenticated"},
    )
    count = await pg.fetchval("select count(*) from public.instagram_conversations where imo_id = $1", imo)
    deep_conv = await pg.fetchval(
        "select last_message_at from public.instagram_conversations where imo_id = $1"
        " order by last_message_at desc offset $2 limit 1",
        imo,
        count // 2,
    )
    held = await pg.fetchval(
        "select count(*) from public.instagram_messages where conversation_id = $1", long_id
    )
    deep_msg = await pg.fetchval(
        "select sent_at from public.instagram_messages where conversation_id = $1"
        " order by sent_at desc offset $2 limit 1",
        long_id,
        held // 2,
    )
    calls = {
        "conversations first page": (
            "instagram_list_conversations",
            {"p_imo_id": imo, "p_limit": 50, "p_before": None},
        ),
        "conversations deep page": (
            "instagram_list_conversations",
            {"p_imo_id": imo, "p_limit": 50, "p_before": deep_conv},
        ),
        "messages first page": (
            "instagram_list_messages",
            {"p_conversation_id": long_id, "p_limit": 50, "p_before": None},
        ),
        "messages deep page": (
            "instagram_list_messages",
            {"p_conversation_id": long_id, "p_limit": 50, "p_before": deep_msg},
        ),
    }
    out: dict[str, list[float]] = {}
    for label, (name, call_args) in calls.items():
        full = dict(call_args)
        if name == "instagram_list_conversations":
            full |= {"p_integration_id": None, "p_unread_only": False}
        for _ in range(20):  # warm-up (statement cache, buffers)
            rows = await db.rpc_as_user(user, name, full)
        if len(rows) != 50:
            raise Incomplete(f"inbox {label} returned {len(rows)} of 50 rows")
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            await db.rpc_as_user(user, name, full)
            times.append((time.perf_counter() - started) * 1000)
        out[label] = times
    return out


async def inbox(args: argparse.Namespace) -> None:
    pg = await asyncpg.connect(DATABASE_URL)
    db = await AsyncpgDatabase.connect(DATABASE_URL, max_size=2)
    try:
        await pg.execute("delete from auth.users where id = $1", BENCH_USER)
        await pg.execute(
            "insert into auth.users (id, aud, role, email)"
            " values ($1, 'authenticated', 'authenticated', 'bench@bench.test')",
            BENCH_USER,
        )
        sizes = [
            (1_000, 10_000, SMALL_IMO, "17841400000099002"),
            (args.inbox_conversations, args.inbox_messages, BENCH_IMO, "17841400000099003"),
        ]
        results = []
        for conversations, messages, imo, account in sizes:
            started = time.perf_counter()
            long_id, _ = await inbox_data(pg, imo, account, conversations, messages)
            say(
                f"P6 setup: {conversations:,} conversations, {messages:,} messages in "
                f"{time.perf_counter() - started:.1f} s"
            )
            results.append(await inbox_case(db, pg, imo, long_id, args.inbox_samples))
        small, large = results
        for label in small:
            s99, l99 = pct(small[label], 0.99), pct(large[label], 0.99)
            say(
                f"P6 inbox {label} (as a member, rpc_as_user): 1,000/10,000 median "
                f"{statistics.median(small[label]):.2f} ms "
                f"p99 {s99:.2f} ms; {args.inbox_conversations:,}/{args.inbox_messages:,} median "
                f"{statistics.median(large[label]):.2f} ms p99 {l99:.2f} ms (goal <= 5); "
                f"ratio {l99 / s99:.2f} (goal <= 1.2)"
            )
    finally:
        for imo in (SMALL_IMO, BENCH_IMO):
            await pg.execute("delete from public.imos where id = $1", imo)
        await pg.execute("delete from auth.users where id = $1", BENCH_USER)
        await db.close()
        await pg.close()


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    anchors = Path(args.anchors)
    which = set(args.which) or {"ingest", "process", "inbox"}
    bench = None
    if "ingest" in which:
        bench = await ingest(args, anchors)
    elif "process" in which:
        await anchor_database()
        bench = pgbench(anchors, args.pgbench_runs, args.pgbench_seconds)
    if "process" in which:
        await process(args, bench)
    if "inbox" in which:
        await inbox(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "which", nargs="*", metavar="{ingest,process,inbox}", help="benchmarks to run (default all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter runs and smaller sizes, for a smoke run"
    )
    parser.add_argument(
        "--anchors", default="/work/shared/anchors", help="the anchors' scripts (webhook_app.py, ...)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of one wrk run")
    parser.add_argument("--api-workers", type=int, nargs="+", default=[1, 2], help="uvicorn processes to try")
    parser.add_argument("--pgbench-runs", type=int, default=3)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--process-events", type=int, default=20_000)
    parser.add_argument("--process-concurrency", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--lag-seconds", type=float, default=15.0)
    parser.add_argument(
        "--events-per-delivery",
        type=int,
        nargs="+",
        default=[1, 10],
        help="events in one delivery (1 = worst case)",
    )
    parser.add_argument("--inbox-conversations", type=int, default=100_000)
    parser.add_argument("--inbox-messages", type=int, default=1_000_000)
    parser.add_argument("--inbox-samples", type=int, default=500)
    arguments = parser.parse_args()
    if unknown := set(arguments.which) - {"ingest", "process", "inbox"}:
        parser.error(
            f"unknown benchmark(s): {', '.join(sorted(unknown))} (choose from ingest, process, inbox)"
        )
    if arguments.quick:
        arguments.runs, arguments.seconds, arguments.pgbench_runs, arguments.pgbench_seconds = 1, 4, 1, 3
        arguments.process_events, arguments.lag_seconds = 5_000, 5.0
        arguments.inbox_conversations, arguments.inbox_messages, arguments.inbox_samples = (
            10_000,
            100_000,
            100,
        )
    if not (Path(arguments.anchors) / "webhook_app.py").is_file():
        sys.exit(f"[{CORES} cores] FAIL the anchors' scripts are not in {arguments.anchors} (--anchors)")
    try:
        asyncio.run(main(arguments))
    except Incomplete as exc:
        sys.exit(f"[{CORES} cores] FAIL {exc}")
