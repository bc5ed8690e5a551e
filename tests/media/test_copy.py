"""Copying inbound attachments (kind `media`): every type copied with the type sniffed from its bytes, caps,
CDN expiry, hosts we never fetch from, the same bytes stored once, and deletion with the conversation."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from sandbox.people import picture_png
from tests.media.helpers import Env, attachment, cdn_file, media_rows, message_media, receive
from tests.worker.test_webhooks import integration

pytest_plugins = ["tests.fixtures.sandbox"]


@pytest.fixture
async def m(
    db: AsyncpgDatabase, graph_client: GraphClient, pg: asyncpg.Connection, sandbox: Any, tmp_path: Path
) -> Env:
    """A routed integration of Demo Agency and a media folder."""
    await integration(pg)
    return Env(db, pg, sandbox, tmp_path, graph_client)


def stored_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


async def test_each_type_is_copied_with_the_type_its_bytes_have(m: Env) -> None:
    """Image, audio, video, file and story mention are each stored, typed by their bytes, with their SHA-256."""
    kinds = ["image", "audio", "video", "file", "story_mention"]
    await receive(m.db, *(attachment(f"m-{k}", k, cdn_file(m.sandbox, k), at=i) for i, k in enumerate(kinds)))
    await m.settle()
    rows = await media_rows(m.pg)
    assert {k: rows[f"m-{k}"]["content_type"] for k in kinds} == {
        "image": "image/png",
        "audio": "audio/mp4",
        "video": "video/mp4",
        "file": "application/pdf",
        "story_mention": "image/png",
    }
    for k in kinds:
        data = (m.folder / rows[f"m-{k}"]["storage_key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rows[f"m-{k}"]["sha"]
        assert rows[f"m-{k}"]["state"] == "completed"
    assert (await message_media(m.pg, "m-video"))["status"] == "stored"


async def test_a_lying_content_type_is_not_believed(m: Env) -> None:
    """A 'video' whose CDN says video/mp4 but whose bytes are a PNG is stored as image/png."""
    url = cdn_file(m.sandbox, "video", body=picture_png("x", 16), content_type="video/mp4")
    await receive(m.db, attachment("m-lie", "video", url))
    await m.settle()
    assert (await media_rows(m.pg))["m-lie"]["content_type"] == "image/png"


async def test_an_oversized_image_is_refused_with_its_reason(m: Env) -> None:
    """A 9 MB image (Meta's cap is 8 MB) is not stored: too_large on the row and on the message, no file."""
    await receive(m.db, attachment("m-big", "image", cdn_file(m.sandbox, "image", size=9 * 1024 * 1024)))
    await m.settle()
    row = (await media_rows(m.pg))["m-big"]
    assert (row["state"], row["last_error_code"], row["attempt"]) == ("discarded", "too_large", 1)
    assert await message_media(m.pg, "m-big") == {"status": "unavailable", "error_code": "too_large"}
    assert stored_files(m.folder) == []


async def test_an_expired_cdn_link_ends_unavailable_after_retries(m: Env) -> None:
    """A link the CDN already calls expired is tried max_attempts times, then media_unavailable; the message stays."""
    url = cdn_file(m.sandbox, "image", ttl=0)
    m.sandbox.advance_clock(5)
    await receive(m.db, attachment("m-old", "image", url))
    await m.settle()
    row = (await media_rows(m.pg))["m-old"]
    assert (row["state"], row["last_error_code"]) == ("discarded", "url_signature_expired")
    assert row["attempt"] == row["max_attempts"] == 6
    assert await message_media(m.pg, "m-old") == {
        "status": "unavailable",
        "error_code": "url_signature_expired",
    }
    assert (
        await m.pg.fetchval("select count(*) from public.instagram_messages where meta_message_id = 'm-old'")
        == 1
    )


async def test_a_link_to_another_host_is_never_fetched(m: Env) -> None:
    """An attachment URL on a host that is neither Meta's CDN nor the Graph origin is refused, unfetched."""
    await receive(m.db, attachment("m-ssrf", "image", "http://169.254.169.254/latest/meta-data/"))
    await m.settle()
    row = (await media_rows(m.pg))["m-ssrf"]
    assert (row["state"], row["last_error_code"]) == ("discarded", "host_not_allowed")


async def test_the_same_image_twice_is_stored_once(m: Env) -> None:
    """Two messages with the same image bytes share one object and one file; usage counts its bytes once."""
    png = picture_png("same", 24)
    await receive(m.db, attachment("m-1", "image", cdn_file(m.sandbox, body=png)))
    await m.settle()
    await receive(m.db, attachment("m-2", "image", cdn_file(m.sandbox, body=png), at=1))
    await m.settle()
    rows = await media_rows(m.pg)
    assert rows["m-1"]["object_id"] == rows["m-2"]["object_id"] is not None
    assert len(stored_files(m.folder)) == 1
    assert await m.pg.fetchval("select count(*) from public.instagram_media_objects") == 1
    assert await m.pg.fetchval("select sum(media_bytes) from public.instagram_usage") == len(png)


async def test_deleting_the_conversation_deletes_the_bytes(m: Env) -> None:
    """After the conversation is deleted, its object rows are gone, the purge removes the file, usage is 0."""
    await receive(m.db, attachment("m-gone", "image", cdn_file(m.sandbox)))
    await m.settle()
    assert len(stored_files(m.folder)) == 1
    await m.pg.execute("delete from public.instagram_conversations")
    await m.settle()
    assert stored_files(m.folder) == []
    assert await m.pg.fetchval("select count(*) from public.instagram_media_objects") == 0
    assert await m.pg.fetchval("select state from public.instagram_media_deletions") == "completed"
    assert await m.pg.fetchval("select sum(media_bytes) from public.instagram_usage") == 0
