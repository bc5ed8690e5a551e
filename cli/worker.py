"""`instagram-dm worker` and `instagram-dm refresh-now` (the token refresh worker; see worker/ and
docs/worker.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import httpx

from instagram_dm import errors
from instagram_dm.backoff import Backoff
from instagram_dm.bootstrap import open_database, open_media_store
from instagram_dm.db import rpc
from instagram_dm.db.port import Database
from instagram_dm.graph import GraphClient, InstagramLoginClient
from instagram_dm.settings import Settings
from instagram_dm.usage import CallMeter
from worker import signals
from worker.keys import check_keys
from worker.kinds.media import MediaKind, MediaPurgeKind
from worker.kinds.profiles import ProfileKind
from worker.kinds.refresh import FacebookLoginRefresher, RefreshKind, refresh_rules
from worker.kinds.scheduled import ScheduledDispatch
from worker.kinds.send import SendKind
from worker.kinds.unsubscribe import UnsubscribeKind
from worker.kinds.webhooks import WebhookKind
from worker.metrics_server import MetricsServer
from worker.queue import JobKind
from worker.runner import Worker, WorkerOptions
from worker.startup import open_when_ready
from worker.usage_report import report_calls_forever

DAY = 86_400
log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker",
        help="run the background worker (every kind: token refresh, unsubscribes, webhooks, profiles, sends, media)",
        description="Claims jobs of every kind (token refreshes enqueued daily by pg_cron, Page "
        "unsubscriptions queued by disconnect, stored webhook deliveries, participant profiles, outbound "
        "messages) and runs them. Wakes on NOTIFY with DATABASE_URL, else polls. SIGTERM/SIGINT: graceful stop.",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobs at once (default INSTAGRAM_WORKER_CONCURRENCY, 20)",
    )
    worker.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls (default 5)")
    worker.add_argument("--lease-seconds", type=int, default=300, help="job lease (default 300)")
    worker.add_argument(
        "--grace-period", type=float, default=25.0, help="seconds in-flight jobs get on shutdown (default 25)"
    )
    worker.add_argument("--no-listen", action="store_true", help="poll only, even when LISTEN is available")
    worker.add_argument(
        "--retry-base-seconds",
        type=float,
        default=30.0,
        help="first retry delay, doubled per attempt (default 30)",
    )
    worker.add_argument("--exit-when-idle", action="store_true", help="stop once nothing is due or running")
    worker.add_argument(
        "--window-days", type=float, default=7.0, help="refresh window for warnings (default 7)"
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="N",
        help="serve GET /metrics on this port (default: off; 0 picks a free one)",
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address for --metrics-port (default 127.0.0.1; elsewhere, set INSTAGRAM_METRICS_TOKEN)",
    )
    worker.set_defaults(func=run_worker)

    now = sub.add_parser(
        "refresh-now", help="enqueue token refresh jobs now (operators, demos)", description=__doc__
    )
    which = now.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--integration", metavar="ID", help="refresh this integration now, whatever its expiry"
    )
    which.add_argument("--all-due", action="store_true", help="what the daily cron job does, right now")
    now.add_argument(
        "--window-days", type=float, default=7.0, help="with --all-due: expiring within (default 7)"
    )
    now.set_defaults(func=refresh_now)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("meta", "crypto", "database")
    options = WorkerOptions(
        concurrency=args.concurrency or settings.worker_concurrency,
        poll_interval=args.poll_interval,
        lease_seconds=args.lease_seconds,
        grace_period=args.grace_period,
        listen=not args.no_listen,
        exit_when_idle=args.exit_when_idle,
    )
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise errors.ConfigError(f"--metrics-port must be a port number, got {args.metrics_port}")
    backoff = Backoff(base=args.retry_base_seconds)
    metrics_at = None if args.metrics_port is None else (args.metrics_host, args.metrics_port)
    return asyncio.run(_run_worker(settings, options, backoff, timedelta(days=args.window_days), metrics_at))


async def _run_worker(
    settings: Settings,
    options: WorkerOptions,
    backoff: Backoff,
    window: timedelta,
    metrics_at: tuple[str, int] | None = None,
) -> int:
    key, previous = settings.token_encryption_key.reveal(), settings.previous_key
    stop = asyncio.Event()

    async def open_db() -> Database:
        return await open_database(settings, max_size=min(options.concurrency, 10) + 2)

    async def check(db: Database) -> None:
        await check_keys(db, key=key, previous_key=previous)

    with signals.on_stop(lambda _sig: stop.set()):
        db = await open_when_ready(open_db, check, stop)
    if db is None:
        log.info("worker.stopped", extra={"exit_code": 0, "waited_for_database": True})
        return 0
    try:
        limits = httpx.Limits(max_connections=options.concurrency + 10)
        async with httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0), limits=limits) as http:
            meter = CallMeter()
            graph = GraphClient.from_settings(settings, http, meter=meter)
            # Each job picks the client by its integration's provider; Instagram Login only when configured.
            ig = InstagramLoginClient.from_settings(settings, http, meter=meter)
            refresher = FacebookLoginRefresher(
                db, graph, key=key, previous_key=previous, window=window, instagram_login=ig
            )
            media = open_media_store(settings, http)
            kinds: list[JobKind[Any]] = [
                RefreshKind(refresher, key=key, previous_key=previous, rules=refresh_rules(backoff)),
                UnsubscribeKind(db, graph, key=key, previous_key=previous),
                WebhookKind(),
                ProfileKind(db, graph, key=key, previous_key=previous, instagram_login=ig),
                SendKind(db, graph, key=key, previous_key=previous, instagram_login=ig),
                MediaKind(db, http, media, graph_base_url=settings.graph_base_url),
                MediaPurgeKind(media),
            ]
            # The app's sending RPCs run in the database (PostgREST has no environment): they read these.
            await rpc.settings_apply(db, settings=sending_settings(settings))
            worker = Worker(db, kinds, timers=[ScheduledDispatch(db)], options=options)
            reporter = asyncio.create_task(report_calls_forever(db, meter), name="usage-report")
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if metrics_at is not None:
                        host, port = metrics_at
                        server = MetricsServer(
                            db, host=host, port=port, token=settings.metrics_token.reveal()
                        )
                        await stack.enter_async_context(server.running())
                    with signals.on_stop(worker.on_signal):
                        return await worker.run()
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
    finally:
        await db.close()


def sending_settings(settings: Settings) -> rpc.SendingSettings:
    return rpc.SendingSettings(
        human_agent_enabled=settings.human_agent_enabled,
        send_rate_per_second=settings.send_rate_per_second,
        echo_wait_seconds=settings.send_echo_wait_seconds,
    )


def refresh_now(args: argparse.Namespace, settings: Settings) -> int:
    if args.integration is not None:
        try:
            args.integration = str(uuid.UUID(args.integration))
        except ValueError:
            raise errors.BadRequestError(f"--integration {args.integration!r} is not a UUID") from None
    settings.require("database")
    result = asyncio.run(_refresh_now(settings, args.integration, int(args.window_days * DAY)))
    print(json.dumps(result))
    return 0


async def _refresh_now(settings: Settings, integration: str | None, window_seconds: int) -> object:
    db = await open_database(settings, max_size=1)
    try:
        if integration is not None:
            one = await rpc.refresh_enqueue_one(db, integration_id=integration)
            return {"enqueued": one.enqueued, "job_id": one.job_id}
        return {"enqueued": await rpc.refresh_enqueue(db, window_seconds=window_seconds)}
    finally:
        await db.close()
