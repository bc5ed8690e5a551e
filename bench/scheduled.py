"""Scheduled-message benchmark: how late a scheduled message reaches Meta (the sandbox, a process of its own).

    L1  --messages messages due over --seconds seconds (spread evenly, 10 accounts x 20 contacts), one worker
        with the send kind and the dispatch timer at the default poll interval (5 s): lateness = the sandbox's
        time of acceptance minus the scheduled time, median and p99 (goal: p99 <= 2 s)

Every run counts the copies the sandbox accepted: a duplicate, or a message not sent, fails the run instead
of printing a figure. Runs against the embedded database (DATABASE_URL) in a bench IMO deleted at the end.

Usage: python bench/scheduled.py [--messages 300] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._servers import DATABASE_URL, percentile, servers
from bench.send import BENCH_IMO, KEY, Incomplete, check_exactly_once, say, setup
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient, RetryPolicy
from worker.kinds.scheduled import ScheduledDispatch
from worker.kinds.send import SendKind
from worker.runner import Worker, WorkerOptions


async def schedule(pg: asyncpg.Connection, conversations: list[str], n: int, seconds: float) -> None:
    """`n` scheduled texts due from 2 s from now over `seconds` seconds, as instagram_schedule_message stores them."""
    await pg.execute(
        """insert into public.instagram_scheduled_messages (imo_id, conversation_id, body, scheduled_for)
           select c.imo_id, c.id, 'scheduled ' || g,
                  now() + interval '2 seconds' + make_interval(secs => $3 * g / $2)
           from generate_series(1, $2) g
           join public.instagram_conversations c on c.id = ($1::uuid[])[1 + g % cardinality($1::uuid[])]""",
        conversations,
        n,
        seconds,
    )


async def run(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, n: int, timeout: float
) -> None:
    """One worker (send kind + dispatch timer, poll interval 5 s) until every scheduled message was sent."""
    worker = Worker(db, [SendKind(db, graph, key=KEY, share=1.0)], timers=[ScheduledDispatch(db)],
                    options=WorkerOptions(concurrency=50, poll_interval=5.0, lease_seconds=60))  # fmt: skip
    task = asyncio.create_task(worker.run())
    started = time.perf_counter()
    try:
        while True:
            left = await pg.fetchval(
                "select count(*) from public.instagram_scheduled_messages where imo_id = $1 and status <> 'sent'",
                BENCH_IMO,
            )
            if left == 0:
                return
            failed = await pg.fetch(
                """select last_error_code, count(*) as n from public.instagram_scheduled_messages
                   where imo_id = $1 and status = 'failed' group by 1""",
                BENCH_IMO,
            )
            if failed:
                raise Incomplete(f"scheduled messages failed: {', '.join(f'{r[0]} x{r[1]}' for r in failed)}")
            if time.perf_counter() - started > timeout:
                raise Incomplete(f"{left} of {n} scheduled messages were not sent after {timeout:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        worker.request_stop(force=True)
        await task


async def main(args: argparse.Namespace) -> None:
    pg = await asyncpg.connect(DATABASE_URL)
    db = await AsyncpgDatabase.connect(DATABASE_URL, max_size=20)
    with servers(api=False) as (sandbox_url, _api, _env):
        async with (
            httpx.AsyncClient(base_url=f"{sandbox_url}/_sandbox", timeout=30) as control,
            httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0)) as http,
        ):
            graph = GraphClient(http, app_id="sandbox-app-id", app_secret="sandbox-app-secret",
                                graph_base_url=sandbox_url, dialog_base_url=sandbox_url,
                                retry=RetryPolicy.disabled())  # fmt: skip
            try:
                await control.post("/config", json={"echoes": "off", "require_appsecret_proof": False,
                                                     "send_rate_per_second": 100000})  # fmt: skip
                await db.rpc("instagram_settings_apply_v1", {"p_settings": {"send_rate_per_second": 1000}})
                conversations = await setup(pg, control)
                # The sending rules are checked when a scheduled message goes out: the bench IMO is on Team.
                await pg.execute(
                    """insert into public.imo_subscriptions (imo_id, plan_id, status)
                       select $1, id, 'active' from public.subscription_plans where name = 'Team'""",
                    BENCH_IMO,
                )
                await schedule(pg, conversations, args.messages, args.seconds)
                await run(db, graph, pg, args.messages, timeout=args.seconds + 60)
                await check_exactly_once(pg, control, args.messages)
                rows = await pg.fetch(
                    """select body, extract(epoch from scheduled_for)::float8 as due,
                              extract(epoch from dispatched_at - scheduled_for)::float8 as dispatch_late
                       from public.instagram_scheduled_messages where imo_id = $1""",
                    BENCH_IMO,
                )
                due = {r["body"]: r["due"] for r in rows}
                handed = [r["dispatch_late"] for r in rows]
                copies = (await control.get("/messages")).json()["messages"]
                late = [c["at_ms"] / 1000 - due[c["text"]] for c in copies]
                if min(late) < -0.01:
                    raise Incomplete(f"a message went out {-min(late):.3f} s before its time")
                p99 = percentile(late, 99)
                verdict = "met" if p99 <= 2.0 else "NOT met"
                say(
                    f"L1 {args.messages} scheduled messages due over {args.seconds:.0f} s, poll interval 5 s: "
                    f"lateness median {statistics.median(late) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                    f"max {max(late) * 1000:.0f} ms (goal p99 <= 2 s, {verdict}); handed to the send path: median "
                    f"{statistics.median(handed) * 1000:.0f} ms, p99 {percentile(handed, 99) * 1000:.0f} ms late; "
                    "0 duplicates"
                )
            finally:
                await pg.execute("delete from public.imos where id = $1", BENCH_IMO)
                await db.close()
                await pg.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(main(parser.parse_args()))
    except Incomplete as exc:
        say(f"FAILED: {exc}")
        sys.exit(1)
