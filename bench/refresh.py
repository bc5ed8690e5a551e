"""Token refresh benchmarks (see docs/worker.md for the figures).

    P1  5,000 due integrations, sandbox latency 200 ms per Meta call, concurrency 50:
        total time and its ratio to the ideal (integrations x Meta calls per refresh x 200 ms / 50)
    P2  claim + complete with a no-op handler, jobs/s; with fresh statistics and right after a bulk
        enqueue with no statistics at all
    P4  the enqueue sweep over 1,000,000 integrations with 1 % due; claim latency at 10k vs 1M job rows

Runs against the embedded database (DATABASE_URL), in a bench IMO of its own that is deleted at the
end; the sandbox runs as a separate process. Usage: python bench/refresh.py [p1] [p2] [p4] [--quick]

A run that did not finish its work (a worker that died, jobs left unclaimed, a short claim) prints no
figure: it exits 1 with one line saying what did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._servers import DATABASE_URL, servers
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from worker.kinds.refresh import (
    META_CALLS_PER_REFRESH,
    FacebookLoginRefresher,
    Refreshed,
    RefreshJob,
    RefreshKind,
)
from worker.kinds.unsubscribe import UnsubscribeKind
from worker.runner import Worker, WorkerOptions

KEY = "bench-token-encryption-key-0123456789abcdef"
BENCH_IMO = "00000000-0000-4000-8000-00000000be0c"
CORES = os.cpu_count() or 1


class Incomplete(Exception):
    """The benchmark's work did not all finish, so its figures would mean nothing."""


def say(line: str) -> None:
    print(f"[{CORES} cores] {line}", flush=True)


async def reset_imo(pg: asyncpg.Connection) -> None:
    await pg.execute("delete from public.imos where id = $1", BENCH_IMO)
    await pg.execute("insert into public.imos (id, name) values ($1, 'Bench IMO')", BENCH_IMO)


async def bulk_integrations(pg: asyncpg.Connection, n: int, *, due: int, start: int = 0) -> None:
    """`n` integrations of the bench IMO with one shared ciphertext (no Meta behind them); `due` of them
    expire in 3 days, the rest in 40."""
    await pg.execute(
        """with c as (select instagram_private.encrypt_token('bench-token', $1) as t,
                             instagram_private.key_fingerprint($1) as f)
           insert into public.instagram_integrations (imo_id, facebook_page_id, instagram_business_account_id,
             user_access_token_encrypted, page_access_token_encrypted, token_key_fingerprint,
             token_expires_at, status)
           select $2, (7 * 10^12 + g)::bigint::text, (6 * 10^12 + g)::bigint::text, c.t, c.t, c.f,
                  now() + case when g - $4 <= $5 then interval '3 days' else interval '40 days' end, 'connected'
           from c, generate_series($4 + 1, $4 + $3) g""",
        KEY,
        BENCH_IMO,
        n,
        start,
        due,
    )


# ---- P1 -----------------------------------------------------------------------------------------------


async def p1(pg: asyncpg.Connection, n: int, latency_ms: float, concurrency: int) -> None:
    with servers(api=False) as (sandbox_url, _api, _env):
        control = httpx.Client(base_url=sandbox_url, timeout=120)
        users = control.post("/_sandbox/users", json=[{"page_count": 1} for _ in range(n)]).json()["users"]
        longs = control.post(
            "/_sandbox/tokens",
            json=[{"user_id": u["id"], "kind": "long", "expires_in": 3 * 86400} for u in users],
        ).json()["tokens"]
        pages = control.post(
            "/_sandbox/tokens",
            json=[{"user_id": u["id"], "kind": "page", "page_id": u["pages"][0]["id"]} for u in users],
        ).json()["tokens"]
        await reset_imo(pg)
        await pg.execute(
            """insert into public.instagram_integrations (imo_id, facebook_page_id, instagram_business_account_id,
                 user_access_token_encrypted, page_access_token_encrypted, token_key_fingerprint,
                 token_expires_at, data_access_expires_at, status)
               select $1, t.p, t.ig, instagram_private.encrypt_token(t.u, $2),
                      instagram_private.encrypt_token(t.pt, $2),
                      instagram_private.key_fingerprint($2), now() + interval '3 days', now() + interval '80 days',
                      'connected'
               from unnest($3::text[], $4::text[], $5::text[], $6::text[]) t(p, ig, u, pt)""",
            BENCH_IMO,
            KEY,
            [u["pages"][0]["id"] for u in users],
            [u["pages"][0]["instagram_id"] for u in users],
            [t[0] for t in longs],
            [t[0] for t in pages],
        )
        enqueued = await pg.fetchval("select public.instagram_refresh_enqueue_v1()")
        control.post("/_sandbox/latency", json={"path": "^/v", "ms": latency_ms})
        db = await AsyncpgDatabase.connect(DATABASE_URL, max_size=12)
        async with httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=concurrency + 10)
        ) as http:
            graph = GraphClient(
                http, app_id="sandbox-app-id", app_secret="sandbox-app-secret", graph_base_url=sandbox_url
            )
            refresher = FacebookLoginRefresher(db, graph, key=KEY)
            worker = Worker(  # the worker as `instagram-dm worker` builds it: both kinds
                db,
                [RefreshKind(refresher, key=KEY), UnsubscribeKind(db, graph, key=KEY)],
                options=WorkerOptions(concurrency=concurrency, exit_when_idle=True, poll_interval=1.0),
            )
            started = time.perf_counter()
            await worker.run()
            elapsed = time.perf_counter() - started
            calls = graph.calls
        await db.close()
        state = control.get("/_sandbox/state").json()
        done = await pg.fetchval(
            "select count(*) from public.instagram_refresh_jobs where imo_id = $1 and state = 'completed'",
            BENCH_IMO,
        )
        if enqueued != n or done != n:
            raise Incomplete(
                f"P1 did not finish: {done} of {n} refreshes completed ({enqueued} enqueued) "
                f"after {elapsed:.1f} s; see the worker's log lines above"
            )
        ideal = n * META_CALLS_PER_REFRESH * latency_ms / 1000 / concurrency
        say(
            f"P1 {n} due (enqueued {enqueued}), {latency_ms:.0f} ms/call, concurrency {concurrency}: "
            f"{elapsed:.1f} s, ideal {ideal:.1f} s, ratio {elapsed / ideal:.3f} (goal <= 1.15); "
            f"completed {done}, Meta calls {calls} ({calls / n:.2f}/refresh), "
            f"exchanges {sum(state['exchanges'].values())} over {len(state['exchanges'])} users"
        )
        control.close()


# ---- P2 -----------------------------------------------------------------------------------------------


async def noop(job: RefreshJob) -> Refreshed:
    return Refreshed()


async def p2_run(pg: asyncpg.Connection, jobs: int, concurrency: int, *, analyze: bool, loops: int) -> float:
    await pg.execute("delete from public.instagram_refresh_jobs where imo_id = $1", BENCH_IMO)
    await pg.execute(
        """insert into public.instagram_refresh_jobs (integration_id, imo_id, run_at)
           select id, imo_id, now() - interval '1 second' from public.instagram_integrations where imo_id = $1
           limit $2""",
        BENCH_IMO,
        jobs,
    )
    if analyze:
        await pg.execute("vacuum analyze public.instagram_refresh_jobs")
    else:  # as right after creating the table: no column statistics, no reltuples
        await pg.execute(
            "delete from pg_statistic where starelid = 'public.instagram_refresh_jobs'::regclass"
        )
        await pg.execute(
            "update pg_class set reltuples = -1, relpages = 0 where oid = 'public.instagram_refresh_jobs'::regclass"
        )
    await pg.execute("checkpoint")
    db = await AsyncpgDatabase.connect(DATABASE_URL, max_size=2 * loops)
    workers = [
        Worker(
            db,
            [RefreshKind(noop, key=KEY)],
            options=WorkerOptions(
                concurrency=concurrency,
                exit_when_idle=True,
                listen=False,
                poll_interval=1.0,
                worker_id=f"bench-{i}",
            ),
        )
        for i in range(loops)
    ]
    started = time.perf_counter()
    await asyncio.gather(*(w.run() for w in workers))
    elapsed = time.perf_counter() - started
    await db.close()
    done = await pg.fetchval(
        "select count(*) from public.instagram_refresh_jobs where imo_id = $1 and state = 'completed'",
        BENCH_IMO,
    )
    if done != jobs:
        raise Incomplete(f"P2 did not finish: {done} of {jobs} jobs completed after {elapsed:.1f} s")
    return jobs / elapsed


async def p2(pg: asyncpg.Connection, jobs: int, concurrency: int, runs: int, loops: int) -> None:
    await reset_imo(pg)
    await bulk_integrations(pg, jobs, due=jobs)
    for analyze in (True, False):
        rates = [await p2_run(pg, jobs, concurrency, analyze=analyze, loops=loops) for _ in range(runs)]
        label = "fresh statistics" if analyze else "no statistics (right after bulk enqueue)"
        say(
            f"P2 claim+complete, no-op handler, {jobs} jobs, {loops} loop(s) x concurrency {concurrency}, {label}: "
            f"median {statistics.median(rates):,.0f} jobs/s (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
        )


# ---- P4 -----------------------------------------------------------------------------------------------


async def claim_latencies(db: AsyncpgDatabase, samples: int) -> list[float]:
    out = []
    for i in range(samples):
        started = time.perf_counter()
        rows = await db.rpc("instagram_refresh_claim_v1", {"p_worker": f"p4-{i}", "p_limit": 10})
        out.append((time.perf_counter() - started) * 1000)
        if len(rows) != 10:
            raise Incomplete(f"P4 claim did not finish: sample {i + 1} claimed {len(rows)} of 10 jobs")
        await db.rpc(
            "instagram_refresh_release_v1", {"p_worker": f"p4-{i}", "p_job_ids": [r["id"] for r in rows]}
        )
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def p4(pg: asyncpg.Connection, total: int, runs: int) -> None:
    due = total // 100
    await reset_imo(pg)
    started = time.perf_counter()
    await bulk_integrations(pg, total, due=due)
    await pg.execute("analyze public.instagram_integrations")
    say(f"P4 setup: {total:,} integrations inserted in {time.perf_counter() - started:.1f} s")
    times = []
    for _ in range(runs):
        await pg.execute("delete from public.instagram_refresh_jobs where imo_id = $1", BENCH_IMO)
        await pg.execute("vacuum analyze public.instagram_refresh_jobs")
        started = time.perf_counter()
        count = await pg.fetchval("select public.instagram_refresh_enqueue_v1()")
        times.append((time.perf_counter() - started) * 1000)
        if count < due:
            raise Incomplete(f"P4 enqueue sweep did not finish: enqueued {count} of {due} due integrations")
    say(
        f"P4 enqueue sweep over {total:,} integrations, {due:,} due: median {statistics.median(times):.0f} ms "
        f"(runs: {', '.join(f'{t:.0f}' for t in times)}; goal <= 500 ms)"
    )
    db = await AsyncpgDatabase.connect(DATABASE_URL, max_size=2)
    await pg.execute("vacuum analyze public.instagram_refresh_jobs")
    small = await claim_latencies(db, 300)
    # 990k finished jobs beside the 10k live ones
    await pg.execute(
        """insert into public.instagram_refresh_jobs (integration_id, imo_id, state, finalized_at, attempt)
           select i.id, i.imo_id, 'completed', now() - interval '1 day', 1
           from public.instagram_integrations i
           where i.imo_id = $1
             and not exists (select 1 from public.instagram_refresh_jobs j where j.integration_id = i.id)""",
        BENCH_IMO,
    )
    rows = await pg.fetchval(
        "select count(*) from public.instagram_refresh_jobs where imo_id = $1", BENCH_IMO
    )
    if rows != total:
        raise Incomplete(f"P4 setup did not finish: {rows:,} of {total:,} job rows inserted")
    await pg.execute("vacuum analyze public.instagram_refresh_jobs")
    large = await claim_latencies(db, 300)
    await db.close()
    ratio = statistics.median(large) / statistics.median(small)
    say(
        f"P4 claim of 10 (+release): {due:,} rows median {statistics.median(small):.2f} ms "
        f"p99 {pct(small, 0.99):.2f} ms; "
        f"{rows:,} rows median {statistics.median(large):.2f} ms p99 {pct(large, 0.99):.2f} ms; "
        f"ratio {ratio:.2f} (goal <= 1.2)"
    )


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    pg = await asyncpg.connect(DATABASE_URL)
    try:
        which = set(args.which) or {"p1", "p2", "p4"}
        if "p2" in which:
            await p2(pg, 20_000 if not args.quick else 5_000, args.p2_concurrency, 3, args.p2_loops)
        if "p4" in which:
            await p4(pg, 1_000_000 if not args.quick else 100_000, 3)
        if "p1" in which:
            await p1(pg, 5_000 if not args.quick else 500, 200.0, 50)
    finally:
        await pg.execute("delete from public.imos where id = $1", BENCH_IMO)
        await pg.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # No `choices=`: with nargs="*" Python 3.11's argparse rejects the empty default ("invalid choice: []").
    parser.add_argument("which", nargs="*", metavar="{p1,p2,p4}", help="benchmarks to run (default all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--p2-concurrency", type=int, default=50, help="slots per worker loop")
    parser.add_argument("--p2-loops", type=int, default=4, help="worker loops in the process (one pool)")
    arguments = parser.parse_args()
    if unknown := set(arguments.which) - {"p1", "p2", "p4"}:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))} (choose from p1, p2, p4)")
    try:
        asyncio.run(main(arguments))
    except Incomplete as exc:
        sys.exit(f"[{CORES} cores] FAIL {exc}")
