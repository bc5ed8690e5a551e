"""Send benchmarks: outbound messages through the worker's send kind against the sandbox (a process of its own).

    S1  10 accounts, 100 ms per Send API call, a rate limit of --limit per account: sends/s, against the
        ceiling the limit sets (goal >= 0.95 x 10 x limit)
    S2  no limit (1,000/s per account), 0 ms: sends/s, against the sandbox's own POST /messages req/s measured
        in the same run by a plain client (goal >= 0.8x)
    S3  half of S2's rate offered for a few seconds: queued -> sent latency, median and p99
        (goal p99 <= 100 ms + one Meta round trip)

Every run counts the copies the sandbox accepted: a duplicate (or a message not sent) fails the run instead of
printing a figure. Runs against the embedded database (DATABASE_URL) in a bench IMO deleted at the end;
echoes are off (no API runs), so nothing here waits for one.

Usage: python bench/send.py [--messages 2000] [--limit 20]
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

from bench import sandbox as raw_sandbox
from bench._servers import DATABASE_URL, percentile, servers
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient, RetryPolicy
from worker.kinds.send import SendKind
from worker.runner import Worker, WorkerOptions

KEY = "bench-token-encryption-key-0123456789abcdef"
BENCH_IMO = "00000000-0000-4000-8000-00000000be5d"
CORES = os.cpu_count() or 1
ACCOUNTS = 10
PEOPLE = 20


class Incomplete(Exception):
    """The benchmark's work did not all finish, so its figures would mean nothing."""


def say(line: str) -> None:
    print(f"[{CORES} cores] {line}", flush=True)


async def setup(pg: asyncpg.Connection, control: httpx.AsyncClient) -> list[str]:
    """The bench IMO with ACCOUNTS connected integrations (real sandbox Page tokens) and PEOPLE contacts each
    who wrote just now; returns the conversation ids."""
    await pg.execute("delete from public.imos where id = $1", BENCH_IMO)
    await pg.execute("insert into public.imos (id, name) values ($1, 'Bench IMO')", BENCH_IMO)
    users = (await control.post("/users", json=[{"page_count": 1}] * ACCOUNTS)).json()["users"]
    conversations: list[str] = []
    for user in users:
        page = user["pages"][0]
        [token] = (await control.post("/tokens", json={"user_id": user["id"], "kind": "page",
                                                       "page_id": page["id"]})).json()["tokens"]  # fmt: skip
        integration = await pg.fetchval(
            """insert into public.instagram_integrations (imo_id, facebook_page_id, instagram_business_account_id,
                 user_access_token_encrypted, page_access_token_encrypted, token_key_fingerprint, token_expires_at,
                 status)
               values ($1, $2, $3, instagram_private.encrypt_token($4, $5), instagram_private.encrypt_token($4, $5),
                 instagram_private.key_fingerprint($5), now() + interval '50 days', 'connected') returning id""",
            BENCH_IMO, page["id"], page["instagram_id"], token, KEY,
        )  # fmt: skip
        for n in range(PEOPLE):
            igsid = f"88{len(conversations):013d}{n}"
            await control.post("/people", json={"igsid": igsid, "last_message_at": "now",
                                                "account_id": page["instagram_id"]})  # fmt: skip
            conversations.append(
                await pg.fetchval(
                    """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid,
                         last_inbound_at) values ($1, $2, $3, now()) returning id""",
                    integration,
                    BENCH_IMO,
                    igsid,
                )
            )
    return conversations


async def enqueue(pg: asyncpg.Connection, conversations: list[str], n: int) -> None:
    """`n` queued outbound messages spread over the conversations, as instagram_send_message stores them."""
    await pg.execute(
        """with m as (
             insert into public.instagram_messages (conversation_id, imo_id, direction, text, status)
             select c.id, c.imo_id, 'outbound', 'bench ' || g, 'queued'
             from generate_series(1, $2) g
             join public.instagram_conversations c on c.id = ($1::uuid[])[1 + g % cardinality($1::uuid[])]
             returning id, imo_id, conversation_id)
           insert into public.instagram_send_jobs (message_id, imo_id, integration_id)
           select m.id, m.imo_id, c.integration_id
           from m join public.instagram_conversations c on c.id = m.conversation_id""",
        conversations,
        n,
    )


async def drain(db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, expected: int,
                timeout: float) -> tuple[float, int]:  # fmt: skip
    """Run one worker until every queued send finished; return the seconds it took and the slots it missed."""
    kind = SendKind(db, graph, key=KEY, share=1.0)
    worker = Worker(db, [kind],
                    options=WorkerOptions(concurrency=200, poll_interval=0.2, lease_seconds=60))  # fmt: skip
    started = time.perf_counter()
    task = asyncio.create_task(worker.run())
    try:
        while True:
            left = await pg.fetchval(
                "select count(*) from public.instagram_send_jobs where state in ('available', 'running', 'retryable')"
            )
            if left == 0:
                return time.perf_counter() - started, kind.missed_slots
            if time.perf_counter() - started > timeout:
                raise Incomplete(f"{left} of {expected} sends were not finished after {timeout:.0f} s")
            await asyncio.sleep(0.05)
    finally:
        worker.request_stop(force=True)
        await task


async def check_exactly_once(pg: asyncpg.Connection, control: httpx.AsyncClient, expected: int) -> None:
    copies = (await control.get("/messages")).json()["messages"]
    sent = await pg.fetchval(
        "select count(*) from public.instagram_messages where imo_id = $1 and status = 'sent'", BENCH_IMO
    )
    mids = {c["mid"] for c in copies}
    if sent != expected or len(copies) != expected or len(mids) != expected:
        raise Incomplete(
            f"expected {expected} sends once each: {sent} sent, {len(copies)} copies at the sandbox"
        )


async def sandbox_rps(url: str, token: str, page_id: str, recipient: str, seconds: float = 3.0) -> float:
    """The sandbox's own POST /messages req/s with a plain client at concurrency 64."""
    done = 0
    stop = time.perf_counter() + seconds

    async def one(http: httpx.AsyncClient) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            response = await http.post(f"/v25.0/{page_id}/messages", params={"access_token": token},
                                       json={"recipient": {"id": recipient}, "message": {"text": "x"}})  # fmt: skip
            if response.status_code != 200:
                raise Incomplete(f"the sandbox answered {response.status_code} to a plain send")
            done += 1

    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as http:
        await asyncio.gather(*(one(http) for _ in range(64)))
    return done / seconds


async def sandbox_raw_rps(seconds: float = 3.0) -> float:
    """bench/sandbox.py's throughput (raw keep-alive sockets, 64 connections, its refresh-like GET mix)."""
    port = raw_sandbox.free_port()
    proc = raw_sandbox.start_server(port)
    try:
        paths = raw_sandbox.targets(port)
        done, errors = await raw_sandbox.throughput(port, paths, seconds, 64)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if errors:
        raise Incomplete(f"bench/sandbox.py's run met {errors} non-200 answers")
    return done / seconds


async def main(args: argparse.Namespace) -> None:  # noqa: PLR0915 - three scenarios in order
    pg = await asyncpg.connect(DATABASE_URL)
    db = await AsyncpgDatabase.connect(DATABASE_URL, max_size=20)
    with servers(api=False) as (sandbox_url, _api, _env):
        async with (
            httpx.AsyncClient(base_url=f"{sandbox_url}/_sandbox", timeout=30) as control,
            httpx.AsyncClient(
                timeout=httpx.Timeout(15.0, connect=5.0), limits=httpx.Limits(max_connections=300)
            ) as http,
        ):
            graph = GraphClient(http, app_id="sandbox-app-id", app_secret="sandbox-app-secret",
                                graph_base_url=sandbox_url, dialog_base_url=sandbox_url,
                                retry=RetryPolicy.disabled())  # fmt: skip
            try:
                await control.post("/config", json={"echoes": "off", "require_appsecret_proof": False,
                                                     "send_rate_per_second": 100000})  # fmt: skip
                conversations = await setup(pg, control)

                # S1: the limit is the ceiling
                await control.post("/latency", json={"path": "/messages$", "ms": 100})
                await db.rpc(
                    "instagram_settings_apply_v1", {"p_settings": {"send_rate_per_second": args.limit}}
                )
                await enqueue(pg, conversations, args.messages)
                took, missed = await drain(
                    db, graph, pg, args.messages, timeout=args.messages / (ACCOUNTS * args.limit) * 3
                )
                await check_exactly_once(pg, control, args.messages)
                rate, ceiling = args.messages / took, ACCOUNTS * args.limit
                verdict = "met" if rate >= 0.95 * ceiling else "NOT met"
                say(
                    f"S1 {args.messages} sends, {ACCOUNTS} accounts, 100 ms per call, limit {args.limit}/s each: "
                    f"{rate:,.1f} sends/s = {rate / ceiling:.3f} x the ceiling {ceiling}/s (goal >= 0.95, {verdict}); "
                    f"{missed} slots exchanged (woke too late)"
                )

                # S2: no limit, no latency: the sandbox is the ceiling
                await control.post("/reset")
                await control.post("/config", json={"echoes": "off", "require_appsecret_proof": False,
                                                     "send_rate_per_second": 100000})  # fmt: skip
                conversations = await setup(pg, control)
                await db.rpc("instagram_settings_apply_v1", {"p_settings": {"send_rate_per_second": 1000}})
                await enqueue(pg, conversations, args.messages)
                took, missed = await drain(db, graph, pg, args.messages, timeout=120)
                await check_exactly_once(pg, control, args.messages)
                ours = args.messages / took
                row = await pg.fetchrow(
                    """select i.facebook_page_id, c.participant_igsid, instagram_private.decrypt_token_any(
                         i.page_access_token_encrypted, i.token_key_fingerprint, $2, null) as token
                       from public.instagram_conversations c
                       join public.instagram_integrations i on i.id = c.integration_id
                       where c.imo_id = $1 limit 1""",
                    BENCH_IMO, KEY,
                )  # fmt: skip
                if row is None:
                    raise Incomplete("no conversation to measure the plain sandbox with")
                plain = await sandbox_rps(
                    sandbox_url, row["token"], row["facebook_page_id"], row["participant_igsid"]
                )
                raw = await sandbox_raw_rps()
                verdict = "met" if ours >= 0.8 * raw else "NOT met"
                say(
                    f"S2 {args.messages} sends, no limit, 0 ms: {ours:,.0f} sends/s ({missed} slots exchanged); "
                    f"bench/sandbox.py's raw-socket req/s in this run {raw:,.0f} -> {ours / raw:.2f}x (goal >= 0.8, "
                    f"{verdict}); a plain httpx client POSTing /messages at concurrency 64: {plain:,.0f} req/s -> "
                    f"{ours / plain:.2f}x"
                )

                # S3: latency at half of S2's rate
                await control.post("/reset")
                await control.post("/config", json={"echoes": "off", "require_appsecret_proof": False,
                                                     "send_rate_per_second": 100000})  # fmt: skip
                conversations = await setup(pg, control)
                options = WorkerOptions(concurrency=200, poll_interval=0.2, lease_seconds=60)
                worker = Worker(db, [SendKind(db, graph, key=KEY, share=1.0)], options=options)
                task = asyncio.create_task(worker.run())
                offered = ours / 2
                total = 0
                started = time.perf_counter()
                while time.perf_counter() - started < args.seconds:
                    await enqueue(pg, conversations, max(1, round(offered / 20)))
                    total += max(1, round(offered / 20))
                    await asyncio.sleep(0.05)
                deadline = time.perf_counter() + 30
                while await pg.fetchval(
                    "select count(*) from public.instagram_send_jobs "
                    "where state in ('available', 'running', 'retryable')"
                ):
                    if time.perf_counter() > deadline:
                        raise Incomplete("S3 did not finish its sends")
                    await asyncio.sleep(0.05)
                worker.request_stop(force=True)
                await task
                await check_exactly_once(pg, control, total)
                rows = await pg.fetch(
                    "select extract(epoch from updated_at - created_at) * 1000 as ms from public.instagram_messages "
                    "where imo_id = $1 and status = 'sent'",
                    BENCH_IMO,
                )
                latencies = [float(r["ms"]) for r in rows]
                median, p99 = statistics.median(latencies), percentile(latencies, 99)
                say(
                    f"S3 {total} sends offered at {offered:,.0f}/s: queued -> sent median {median:.1f} ms, "
                    f"p99 {p99:.1f} ms (goal p99 <= 100 ms + one Meta round trip); duplicates at the sandbox: 0"
                )
            finally:
                await pg.execute("delete from public.imos where id = $1", BENCH_IMO)
    await db.close()
    await pg.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000, help="sends per scenario (default 2000)")
    parser.add_argument(
        "--limit", type=int, default=10, help="S1's limit per account per second (default 10)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="S3's offered-load duration (default 5)")
    try:
        asyncio.run(main(parser.parse_args()))
    except Incomplete as exc:
        print(f"bench/send.py: did not finish: {exc}", file=sys.stderr)
        sys.exit(1)
