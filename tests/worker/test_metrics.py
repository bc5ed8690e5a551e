"""Metrics after a real flow: a DM delivered by the sandbox to the live API's webhook and processed by the
worker, and a reply sent through the sandbox's Send API (whose echo comes back the same way); then GET
/metrics on the API and on the worker's own port show the samples that moved, and no secret."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from instagram_dm import metrics
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from instagram_dm.settings import Settings
from tests.fixtures.api import FAST_RETRY, JWT_SECRET, settings_env
from tests.fixtures.servers import serve_in_thread, silent_server
from tests.worker.conftest import KEY, make_worker, run_until
from tests.worker.test_send import conversations, kinds, send_all, send_graph, settled
from worker.metrics_server import MetricsServer

__all__ = ["send_graph"]  # the fixture, used here by name

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
METRICS_TOKEN = "metrics-token-for-the-test-0123456789"


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(data: Samples, name: str, **labels: str) -> float:
    return data.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metrics_api(sandbox: Any, database_url: str, pg: Any) -> Iterator[str]:
    """The API on a real port; the sandbox delivers its webhooks (the DM, the echo) to it."""
    env = settings_env(sandbox.url, database_url, INSTAGRAM_TOKEN_ENCRYPTION_KEY=KEY)
    app = create_app(Settings.from_environ(env, env_file=None), graph_retry=FAST_RETRY)
    with serve_in_thread(app, lifespan="on") as url:
        sandbox.configure(webhook_url=f"{url}/functions/v1/instagram-webhook", echo_delay_ms=20)
        yield url


@pytest.fixture(autouse=True)
async def quick_echo_wait(db: AsyncpgDatabase) -> None:
    await db.rpc("instagram_settings_apply_v1", {"p_settings": {"echo_wait_seconds": 1}})


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_a_delivery_and_a_send_move_their_metrics(
    metrics_api: str, sandbox: Any, db: AsyncpgDatabase, send_graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """After a DM is received and processed and a reply sent, /metrics counts the webhook POSTs by route
    template, the accepted deliveries and their ingest time, the processed webhook jobs, the sent reply, the
    Meta Send API call, and shows the queues, integrations and the token expiring within 7 days."""
    [conv] = await conversations(pg, sandbox)
    account = await pg.fetchval(
        "select i.instagram_business_account_id from public.instagram_conversations c"
        " join public.instagram_integrations i on i.id = c.integration_id where c.id = $1",
        conv,
    )
    before = scrape(metrics_api)
    sandbox.control("POST", "webhooks/send", {"kind": "message", "account_id": account, "text": "Hi there"})
    await send_all(db, [conv])
    await run_until([make_worker(db, send_graph, kinds=kinds(db, send_graph))], settled(pg, sandbox))
    after = scrape(metrics_api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    webhook = {"route": "/functions/v1/instagram-webhook", "method": "POST", "status": "200"}
    assert moved("instagram_dm_http_requests_total", **webhook) >= 2  # the DM and the echo
    assert moved("instagram_dm_webhook_deliveries_total", outcome="accepted") >= 2
    assert moved("instagram_dm_webhook_ingest_duration_seconds_count") >= 2
    assert moved("instagram_dm_jobs_total", kind="webhooks", outcome="completed") >= 2
    assert moved("instagram_dm_jobs_total", kind="send", outcome="completed") == 1
    assert moved("instagram_dm_sends_total", outcome="sent", meta_code="") == 1
    assert moved("instagram_dm_meta_requests_total", endpoint="/{id}/messages", status="200") == 1
    assert moved("instagram_dm_job_duration_seconds_count", kind="send") == 1
    assert moved("instagram_dm_http_requests_total", route="/metrics", method="GET", status="200") == 1
    assert value(after, "instagram_dm_snapshot_up") == 1
    assert value(after, "instagram_dm_integrations", status="connected") == 1
    assert value(after, "instagram_dm_tokens_expiring_7d") == 1  # connected with 3 days left
    for kind in ("refresh", "unsubscribe", "webhooks", "profiles", "send"):
        assert ("instagram_dm_queue_jobs", frozenset({("kind", kind), ("state", "due")})) in after, kind
        assert ("instagram_dm_queue_oldest_due_age_seconds", frozenset({("kind", kind)})) in after, kind


async def test_raw_paths_become_one_unmatched_route(metrics_api: str) -> None:
    """Requests to paths no route knows count under route="unmatched", never under their own path."""
    for n in range(3):
        assert httpx.get(f"{metrics_api}/no/such/path/{n}").status_code == 404
    text = httpx.get(f"{metrics_api}/metrics").text
    assert "/no/such/path" not in text
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(samples(text), "instagram_dm_http_requests_total", **unmatched) >= 3


async def test_metrics_show_no_secret(metrics_api: str, sandbox: Any, pg: asyncpg.Connection) -> None:
    """Nothing of the app secret, the encryption key, the JWT secret, the verify token or a token in the
    sandbox's state appears in the exposition."""
    await conversations(pg, sandbox)
    text = httpx.get(f"{metrics_api}/metrics").text
    tokens = [t for t in sandbox.state(tokens=True).get("tokens", {}) if isinstance(t, str)]
    for secret in ("sandbox-app-secret", KEY, JWT_SECRET, "verify-me-please", *tokens):
        assert secret not in text


def test_a_metrics_token_is_required_once_configured(sandbox: Any, database_url: str, pg: Any) -> None:
    """With INSTAGRAM_METRICS_TOKEN set, /metrics is 401 without it or with another, 200 with it."""
    env = settings_env(sandbox.url, database_url, INSTAGRAM_METRICS_TOKEN=METRICS_TOKEN)
    with serve_in_thread(create_app(Settings.from_environ(env, env_file=None)), lifespan="on") as url:
        missing = httpx.get(f"{url}/metrics")
        wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"})
        right = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["error"]["code"] == "invalid_token"
    assert METRICS_TOKEN not in right.text


async def test_worker_port_serves_the_same_metrics(db: AsyncpgDatabase) -> None:
    """The worker's metrics server answers GET /metrics with the exposition (the database's state read),
    404 elsewhere, and 401 without its token when one is set."""
    plain = MetricsServer(db, host="127.0.0.1", port=0)
    async with plain.running(), httpx.AsyncClient(base_url=f"http://127.0.0.1:{plain.port}") as client:
        ok = await client.get("/metrics")
        elsewhere = await client.get("/")
    assert ok.status_code == 200
    assert value(samples(ok.text), "instagram_dm_snapshot_up") == 1
    assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (404, "not_found")
    guarded = MetricsServer(db, host="127.0.0.1", port=0, token=METRICS_TOKEN)
    async with guarded.running(), httpx.AsyncClient(base_url=f"http://127.0.0.1:{guarded.port}") as client:
        refused = await client.get("/metrics")
        allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert (refused.status_code, allowed.status_code) == (401, 200)


async def test_a_silent_database_makes_snapshot_up_0_within_the_bound() -> None:
    """A scrape whose database never answers still answers within the snapshot bound, with
    instagram_dm_snapshot_up 0."""
    async with silent_server() as port:
        db = await AsyncpgDatabase.connect(f"postgresql://u:p@127.0.0.1:{port}/db", min_size=0, timeout=30)
        started = time.monotonic()
        text = (await metrics.render(db)).decode()
        elapsed = time.monotonic() - started
        await db.close()
    assert value(samples(text), "instagram_dm_snapshot_up") == 0
    assert elapsed < metrics.SNAPSHOT_TIMEOUT_SECONDS + 1
