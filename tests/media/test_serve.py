"""Signed media URLs: instagram_media_url for members only, and the API serving them (signature, expiry,
tampering, content type and disposition, range requests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from instagram_dm.settings import Settings
from tests.fixtures.api import acting_user, in_process_client, settings_env
from tests.fixtures.database import DEMO_MEMBER, STARTER_ADMIN
from tests.media.helpers import attachment, cdn_file, receive, settle
from tests.worker.test_webhooks import integration

pytest_plugins = ["tests.fixtures.sandbox"]
MP4_BODY = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 4


@pytest.fixture
async def stored(
    db: AsyncpgDatabase, graph_client: GraphClient, pg: asyncpg.Connection, sandbox: Any, tmp_path: Path
) -> dict[str, str]:
    """A video, a file and a pending image in one conversation; message ids by mid."""
    await integration(pg)
    await receive(
        db,
        attachment("m-video", "video", cdn_file(sandbox, "video", body=MP4_BODY)),
        attachment("m-file", "file", cdn_file(sandbox, "file"), at=1),
    )
    await settle(db, pg, tmp_path, sandbox.url, graph_client)
    rows = await pg.fetch("select meta_message_id, id::text from public.instagram_messages")
    return {r["meta_message_id"]: r["id"] for r in rows}


@pytest.fixture
async def client(sandbox: Any, database_url: str, tmp_path: Path, pg: asyncpg.Connection) -> Any:
    settings = Settings.from_environ(
        settings_env(sandbox.url, database_url, INSTAGRAM_MEDIA_DIR=str(tmp_path)), env_file=None
    )
    async with in_process_client(settings) as c:
        yield c


async def signed(db: AsyncpgDatabase, message_id: str, user: str = DEMO_MEMBER) -> rpc.MediaURL:
    return await rpc.media_url(db, acting_user(user), message_id=message_id)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_member_gets_the_video_with_its_type(
    db: AsyncpgDatabase, stored: dict[str, str], client: httpx.AsyncClient
) -> None:
    """A member's signed URL serves the stored bytes inline with the sniffed type, on the API's origin."""
    media = await signed(db, stored["m-video"])
    assert media.url.startswith("http://testserver/functions/v1/instagram-media/")
    assert (media.content_type, media.size) == ("video/mp4", len(MP4_BODY))
    response = await client.get(path_of(media.url))
    assert response.status_code == 200
    assert response.content == MP4_BODY
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-disposition"].startswith("inline")


async def test_a_file_downloads_as_an_attachment(
    db: AsyncpgDatabase, stored: dict[str, str], client: httpx.AsyncClient
) -> None:
    """A file attachment is served with Content-Disposition: attachment and a file name."""
    response = await client.get(path_of((await signed(db, stored["m-file"])).url))
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith('attachment; filename="instagram-')


async def test_another_imo_gets_not_found(db: AsyncpgDatabase, stored: dict[str, str]) -> None:
    """An admin of another IMO cannot get a URL for Demo Agency's attachment: not_found."""
    with pytest.raises(errors.NotFoundError) as caught:
        await signed(db, stored["m-video"], STARTER_ADMIN)
    assert caught.value.code == "not_found"


async def test_pending_media_is_refused_as_pending(
    db: AsyncpgDatabase, pg: asyncpg.Connection, sandbox: Any
) -> None:
    """Before the worker copied it, the attachment's URL is refused with media_pending."""
    await integration(pg)
    await receive(db, attachment("m-wait", "image", cdn_file(sandbox)))
    await pg.execute(
        "update public.instagram_webhook_events set state = 'running', lease_owner = 'w',"
        " lease_expires_at = now() + interval '1 minute'"
    )
    await pg.execute(
        "select instagram_private.webhook_process('w', array(select id from public.instagram_webhook_events))"
    )
    message_id = await pg.fetchval("select id::text from public.instagram_messages")
    with pytest.raises(errors.BadRequestError) as caught:
        await signed(db, message_id)
    assert caught.value.code == "media_pending"


async def test_tampered_and_missing_signatures_are_refused(
    db: AsyncpgDatabase, stored: dict[str, str], client: httpx.AsyncClient
) -> None:
    """A changed signature, a changed expiry, another id or no signature: 403 in the JSON error shape."""
    url = path_of((await signed(db, stored["m-video"])).url)
    path, query = url.split("?")
    params = {k: v[0] for k, v in parse_qs(query).items()}
    flipped = ("0" if params["signature"][0] != "0" else "1") + params["signature"][1:]
    media_id = int(path.rsplit("/", 1)[1])
    bad = [
        f"{path}?expires={params['expires']}&signature={flipped}",
        f"{path}?expires={int(params['expires']) + 3600}&signature={params['signature']}",
        f"{path.rsplit('/', 1)[0]}/{media_id + 1}?{query}",
        path,
    ]
    for attempt in bad:
        response = await client.get(attempt)
        assert response.status_code == 403, attempt
        assert response.json()["error"]["code"] == "invalid_signature"


async def test_an_expired_url_is_refused(
    pg: asyncpg.Connection, stored: dict[str, str], client: httpx.AsyncClient
) -> None:
    """A correctly signed URL whose expiry has passed is 403 url_expired."""
    media_id, signature = await pg.fetchrow(
        """select m.id, instagram_private.media_signature(m.id, 1000, s.signing_key)
           from public.instagram_media m, public.instagram_media_settings s where m.attachment_type = 'video'"""
    )
    response = await client.get(
        f"/functions/v1/instagram-media/{media_id}?expires=1000&signature={signature}"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "url_expired"


async def test_range_requests_on_the_video(
    db: AsyncpgDatabase, stored: dict[str, str], client: httpx.AsyncClient
) -> None:
    """Range: bytes=10-19 is a 206 of those ten bytes; a range past the end is 416 with the size."""
    url = path_of((await signed(db, stored["m-video"])).url)
    part = await client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == MP4_BODY[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(MP4_BODY)}"
    tail = await client.get(url, headers={"Range": "bytes=-4"})
    assert tail.content == MP4_BODY[-4:]
    outside = await client.get(url, headers={"Range": f"bytes={len(MP4_BODY)}-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{len(MP4_BODY)}"
    assert outside.json()["error"]["code"] == "range_not_satisfiable"
