"""The database must never hang a request: locked tables, a silent database and a database that is down
at start-up all answer 503 `database_unavailable` within INSTAGRAM_DB_TIMEOUT_SECONDS."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from starlette.testclient import TestClient

from api.app import create_app
from instagram_dm.settings import Settings
from tests.fixtures.api import FAST_RETRY, INIT, in_process_client, settings_env, user_token
from tests.fixtures.database import DEMO_IMO
from tests.fixtures.servers import SilenceableProxy, silent_server

UNAVAILABLE = {"status": "unavailable", "database": "database_unavailable"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(sandbox: Any, database_url: str, timeout: str = "1") -> Settings:
    env = settings_env(sandbox.url, database_url, INSTAGRAM_DB_TIMEOUT_SECONDS=timeout)
    return Settings.from_environ(env, env_file=None)


def url_on_port(database_url: str, port: int) -> str:
    return database_url.replace(f":{urlsplit(database_url).port}/", f":{port}/")


async def test_init_answers_503_within_the_timeout_while_its_table_is_locked(
    sandbox: Any, database_url: str, pg: asyncpg.Connection
) -> None:
    """With instagram_oauth_states locked by another session, init answers 503 database_unavailable
    within the 1-second timeout instead of waiting for the lock."""
    app = create_app(settings_for(sandbox, database_url), graph_retry=FAST_RETRY)
    with TestClient(app, base_url="http://testserver") as client:
        async with pg.transaction():
            await pg.execute("lock table public.instagram_oauth_states in access exclusive mode")
            started = time.monotonic()
            response = client.post(
                INIT, json={"imo_id": DEMO_IMO}, headers={"Authorization": f"Bearer {user_token()}"}
            )
            elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
        assert elapsed < 3


async def test_readyz_answers_503_within_the_timeout_while_its_query_is_locked(
    sandbox: Any, database_url: str, pg: asyncpg.Connection
) -> None:
    """readyz runs a real query under the same limit: with the table it reads locked, 503 in time."""
    app = create_app(settings_for(sandbox, database_url), graph_retry=FAST_RETRY)
    with TestClient(app, base_url="http://testserver") as client:
        assert client.get("/readyz").status_code == 200
        async with pg.transaction():
            await pg.execute("lock table supabase_migrations.schema_migrations in access exclusive mode")
            started = time.monotonic()
            response = client.get("/readyz")
            elapsed = time.monotonic() - started
        assert (response.status_code, response.json()) == (503, UNAVAILABLE)
        assert elapsed < 3
        assert client.get("/readyz").status_code == 200


async def test_the_api_starts_on_a_silent_database_and_readyz_answers_503_in_time(
    sandbox: Any, database_url: str, pg: asyncpg.Connection
) -> None:
    """A black-holed database: the lifespan still starts (within the timeout) and readyz is 503 in time."""
    async with silent_server() as port:
        settings = settings_for(sandbox, url_on_port(database_url, port), timeout="0.5")
        started = time.monotonic()
        async with in_process_client(settings) as client:
            response = await client.get("/readyz")
        assert (response.status_code, response.json()) == (503, UNAVAILABLE)
        assert time.monotonic() - started < 4


async def test_the_api_starts_while_the_database_is_down_and_becomes_ready_when_it_is_back(
    sandbox: Any, database_url: str, pg: asyncpg.Connection
) -> None:
    """DATABASE_URL on a closed port: the lifespan starts, readyz and init answer 503; once the database
    is reachable on that port, readyz answers 200 without a restart."""
    port = closed_port()
    settings = settings_for(sandbox, url_on_port(database_url, port))
    async with in_process_client(settings) as client:
        response = await client.get("/readyz")
        assert (response.status_code, response.json()) == (503, UNAVAILABLE)
        init = await client.post(
            INIT, json={"imo_id": DEMO_IMO}, headers={"Authorization": f"Bearer {user_token()}"}
        )
        assert (init.status_code, init.json()["error"]["code"]) == (503, "database_unavailable")
        real_port = urlsplit(database_url).port
        assert real_port is not None
        async with SilenceableProxy(real_port, port=port):
            for _ in range(50):
                response = await client.get("/readyz")
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert response.status_code == 200, response.text
