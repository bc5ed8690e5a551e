"""`make run`'s promise over real HTTP: a DM with a photo still shows the photo after the sandbox (Meta's CDN)
expired its URL, through the dev inbox and instagram_media_url."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from instagram_dm.media.storage import LocalMediaStore
from instagram_dm.settings import Settings
from tests.fixtures.api import FAST_RETRY, settings_env
from tests.fixtures.servers import serve_in_thread
from tests.worker.conftest import FAST_BACKOFF, KEY, create_integrations, make_worker, run_until
from worker.kinds.media import MediaKind
from worker.kinds.webhooks import WebhookKind

pytest_plugins = ["tests.fixtures.sandbox"]


@pytest.fixture
def dev_api(sandbox: Any, database_url: str, pg: Any, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The API in development mode on a real port, media in `tmp_path`; the sandbox sends its webhooks there."""
    env = settings_env(
        sandbox.url,
        database_url,
        INSTAGRAM_DM_ENV="development",
        INSTAGRAM_TOKEN_ENCRYPTION_KEY=KEY,
        INSTAGRAM_MEDIA_DIR=str(tmp_path),
    )
    app = create_app(Settings.from_environ(env, env_file=None), graph_retry=FAST_RETRY)
    with serve_in_thread(app, lifespan="on") as url:
        sandbox.configure(webhook_url=f"{url}/functions/v1/instagram-webhook")
        yield url, tmp_path


async def test_the_photo_outlives_the_cdn_link(
    dev_api: tuple[str, Path],
    sandbox: Any,
    pg: asyncpg.Connection,
    db: AsyncpgDatabase,
    graph_client: GraphClient,
) -> None:
    """A prospect's photo from the sandbox panel, copied by the worker, its CDN URL expired: the Messages page still
    shows the PNG (for the admin, not for another IMO's user)."""
    url, folder = dev_api
    await create_integrations(pg, sandbox, 1)
    await rpc.media_settings_apply(
        db, settings=rpc.MediaSettings(url_base=f"{url}/functions/v1/instagram-media", url_ttl_seconds=60)
    )
    async with (
        httpx.AsyncClient(base_url=url, timeout=10, cookies={"ig_dev_user": "admin"}) as http,
        httpx.AsyncClient() as fetcher,
    ):
        sent = await http.post("/dev/sandbox/dm", json={"kind": "image"})
        assert sent.status_code == 200, sent.text
        kinds: list[Any] = [
            WebhookKind(backoff=FAST_BACKOFF),
            MediaKind(db, fetcher, LocalMediaStore(folder), graph_base_url=sandbox.url, backoff=FAST_BACKOFF),
        ]

        async def copied() -> bool:
            return bool(
                await pg.fetchval("select count(*) = 1 from public.instagram_media where state = 'completed'")
            )

        await run_until([make_worker(db, graph_client, kinds=kinds)], copied)
        [original] = await pg.fetch("select source_url from public.instagram_media")
        sandbox.advance_clock(3600)
        assert (await fetcher.get(original["source_url"])).text == "URL signature expired"
        [conversation] = (await http.get("/dev/api/inbox")).json()["conversations"]
        [message] = (await http.get(f"/dev/api/inbox?conversation_id={conversation['id']}")).json()[
            "messages"
        ]
        assert message["attachments"][0]["media"]["status"] == "stored"
        assert (
            "`/dev/media/${encodeURIComponent(message.id)}"
            in (await http.get("/dev/static/messages.js")).text
        )
        photo = await http.get(f"/dev/media/{message['id']}", follow_redirects=True)
        async with httpx.AsyncClient(base_url=url, timeout=10, cookies={"ig_dev_user": "starter"}) as other:
            stranger = await other.get(f"/dev/media/{message['id']}")
    assert photo.status_code == 200
    assert photo.headers["content-type"] == "image/png"
    assert photo.content.startswith(b"\x89PNG")
    assert stranger.status_code == 404
