"""Prometheus metrics of this process, in one registry: what the API's ``GET /metrics`` and the worker's
``--metrics-port`` expose (names and labels: README "Metrics and health").

Counters and histograms are fed where things happen — the API's middleware and webhook receiver, the
worker's runner and send kind, and the Graph client (every request to Meta, so the core instruments itself
without knowing who runs it). Gauges about the database's state (queues, integrations, expiring tokens,
webhook lag) are read at scrape time by :func:`render`, in one call to ``instagram_ops_snapshot_v1``
bounded by :data:`SNAPSHOT_TIMEOUT_SECONDS`; a database that does not answer makes
``instagram_dm_snapshot_up`` 0 and leaves the last values, never a failed scrape.

Labels carry only bounded, non-secret values: route templates (never raw paths), Meta endpoints with ids
replaced by ``{id}``, status codes, error codes, job kinds, outcomes. No token, id or message text.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.port import Database

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "SNAPSHOT_TIMEOUT_SECONDS",
    "authorized",
    "meta_endpoint",
    "observe_meta_call",
    "observe_snapshot",
    "render",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
SNAPSHOT_TIMEOUT_SECONDS = 2.0
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

# ---- HTTP (the API) --------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "instagram_dm_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "instagram_dm_http_request_duration_seconds",
    "Time from request to the start of the answer, by route template and method.",
    ["route", "method"],
    buckets=_FAST,
    registry=REGISTRY,
)

# ---- webhooks ----------------------------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "instagram_dm_webhook_deliveries",
    "Webhook POSTs by outcome: accepted (stored), or the refusal's error code.",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_INGEST = Histogram(
    "instagram_dm_webhook_ingest_duration_seconds",
    "Time to check and durably store one accepted webhook delivery.",
    buckets=_FAST,
    registry=REGISTRY,
)

# ---- the worker ------------------------------------------------------------------------------------------
JOBS = Counter(
    "instagram_dm_jobs",
    "Jobs finished by kind and outcome: completed, stale (lease lost), retry, discard, error, reauth, "
    "poison, released. kind=webhooks counts processed deliveries, kind=refresh token refreshes.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "instagram_dm_job_duration_seconds",
    "Time one job's handler ran, by kind.",
    ["kind"],
    buckets=_SLOW,
    registry=REGISTRY,
)
SENDS = Counter(
    "instagram_dm_sends",
    "Outbound sends by outcome (sent, unknown, retry, throttled, reauth, failed) and Meta error code "
    "(empty when Meta gave none).",
    ["outcome", "meta_code"],
    registry=REGISTRY,
)

# ---- Meta ----------------------------------------------------------------------------------------------
META_REQUESTS = Counter(
    "instagram_dm_meta_requests",
    "HTTP requests sent to Meta's Graph API (retries included), by endpoint and HTTP status (none: no answer).",
    ["endpoint", "status"],
    registry=REGISTRY,
)
META_DURATION = Histogram(
    "instagram_dm_meta_request_duration_seconds",
    "Time of one request to Meta, by endpoint.",
    ["endpoint"],
    buckets=_SLOW,
    registry=REGISTRY,
)
META_ERRORS = Counter(
    "instagram_dm_meta_errors",
    "Failed requests to Meta by endpoint, Meta's error code (empty when none) and our error code.",
    ["endpoint", "meta_code", "error"],
    registry=REGISTRY,
)

# ---- the database's state, read at scrape time -----------------------------------------------------------
SNAPSHOT_UP = Gauge(
    "instagram_dm_snapshot_up",
    "1 when the last scrape read the database's state in time, else 0 (the gauges below keep older values).",
    registry=REGISTRY,
)
SNAPSHOT_DURATION = Gauge(
    "instagram_dm_snapshot_duration_seconds",
    "Time the last scrape's database read took.",
    registry=REGISTRY,
)
QUEUE_JOBS = Gauge(
    "instagram_dm_queue_jobs",
    "Jobs in each kind's queue by state (available, running, retryable, due; webhooks also failed and "
    "unroutable deliveries kept).",
    ["kind", "state"],
    registry=REGISTRY,
)
QUEUE_OLDEST_DUE = Gauge(
    "instagram_dm_queue_oldest_due_age_seconds",
    "How long the most overdue job of each kind has been due (0: none due).",
    ["kind"],
    registry=REGISTRY,
)
QUEUE_DISCARDED = Gauge(
    "instagram_dm_queue_discarded_24h",
    "Jobs of each kind discarded (given up) in the last 24 hours.",
    ["kind"],
    registry=REGISTRY,
)
WEBHOOK_LAG = Gauge(
    "instagram_dm_webhook_processing_lag_seconds",
    "Age of the oldest webhook delivery not processed yet (0: none waiting).",
    registry=REGISTRY,
)
INTEGRATIONS = Gauge(
    "instagram_dm_integrations",
    "Instagram integrations by status.",
    ["status"],
    registry=REGISTRY,
)
TOKENS_EXPIRING = Gauge(
    "instagram_dm_tokens_expiring_7d",
    "Connected integrations whose token expires within 7 days.",
    registry=REGISTRY,
)

_QUEUE_STATES = ("available", "running", "retryable", "due", "failed", "unroutable")
_STATUSES = ("pending", "connected", "reauth_required", "disconnected", "error")
_ID_SEGMENT = re.compile(r"^(?:\d+|[A-Za-z0-9_-]{15,})$")
_VERSION_SEGMENT = re.compile(r"^v\d+\.\d+$")


def meta_endpoint(path: str) -> str:
    """A Graph URL path as a bounded label: the version dropped, ids as ``{id}``
    (``/v25.0/17841400000/messages`` → ``/{id}/messages``)."""
    parts = [p for p in path.split("/") if p]
    if parts and _VERSION_SEGMENT.match(parts[0]):
        parts = parts[1:]
    return "/" + "/".join("{id}" if _ID_SEGMENT.match(p) else p for p in parts)


def observe_meta_call(
    endpoint: str,
    *,
    status: int | None,
    seconds: float,
    error: errors.InstagramDMError | None = None,
    meta_code: int | None = None,
) -> None:
    """One request to Meta: its status (None: no answer) and, when it failed, the codes."""
    META_REQUESTS.labels(endpoint, "none" if status is None else str(status)).inc()
    META_DURATION.labels(endpoint).observe(seconds)
    if error is not None:
        META_ERRORS.labels(endpoint, "" if meta_code is None else str(meta_code), error.code).inc()


def observe_snapshot(snapshot: rpc.OpsSnapshot) -> None:
    """Set the database-state gauges from one snapshot."""
    for queue in snapshot.queues:
        for state in _QUEUE_STATES:
            QUEUE_JOBS.labels(queue.kind, state).set(getattr(queue, state))
        QUEUE_OLDEST_DUE.labels(queue.kind).set(queue.oldest_due_seconds)
        QUEUE_DISCARDED.labels(queue.kind).set(queue.discarded_24h)
    for status in {*_STATUSES, *snapshot.integrations}:
        INTEGRATIONS.labels(status).set(snapshot.integrations.get(status, 0))
    TOKENS_EXPIRING.set(snapshot.tokens_expiring_7d)
    WEBHOOK_LAG.set(snapshot.webhook_lag_seconds)


async def refresh(db: Database | None, *, timeout: float = SNAPSHOT_TIMEOUT_SECONDS) -> bool:
    """Read the database's state into the gauges; False (and snapshot_up 0) when it did not answer in time."""
    if db is None:
        return False
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            snapshot = await rpc.ops_snapshot(db)
    except (TimeoutError, errors.InstagramDMError) as exc:
        SNAPSHOT_UP.set(0)
        log.warning("metrics.snapshot_failed", extra={"error_code": getattr(exc, "code", "timeout")})
        return False
    finally:
        SNAPSHOT_DURATION.set(time.perf_counter() - started)
    observe_snapshot(snapshot)
    SNAPSHOT_UP.set(1)
    return True


async def render(db: Database | None) -> bytes:
    """The text exposition of every metric, the database's state read first."""
    await refresh(db)
    return generate_latest(REGISTRY)


def authorized(*, token: str, authorization: str | None, client_host: str | None) -> bool:
    """The /metrics access rule: with a token configured, ``Authorization: Bearer <token>`` (constant time)
    from anywhere; without one, loopback clients only."""
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return client_host in {"127.0.0.1", "::1", "localhost"}
