"""Arranging media tests: files on the sandbox's CDN, deliveries that carry them, and a worker running the
webhook, media and purge kinds into a media folder."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.media.storage import LocalMediaStore
from tests.webhook_payloads import delivery, encode, message
from tests.worker.conftest import FAST_BACKOFF, make_worker, run_until
from worker.kinds.media import MediaKind, MediaPurgeKind
from worker.kinds.webhooks import WebhookKind
from worker.queue import JobKind


def cdn_file(sandbox: Any, kind: str = "image", *, ttl: int = 600, **media: Any) -> str:
    """A URL of the sandbox's CDN serving a file for an attachment of `kind`."""
    if "body" in media:
        media["base64"] = base64.b64encode(media.pop("body")).decode()
    return str(sandbox.control("POST", "media", {"type": kind, "ttl_seconds": ttl, "media": media})["url"])


def attachment(mid: str, kind: str, url: str, *, at: int = 0) -> dict[str, Any]:
    return message(mid, None, attachments=[{"type": kind, "payload": {"url": url}}], at=at)


async def receive(db: AsyncpgDatabase, *items: dict[str, Any]) -> None:
    await rpc.webhook_ingest(db, bodies=[encode(delivery(*items))])


def media_kinds(
    db: AsyncpgDatabase, http: httpx.AsyncClient, folder: Path, graph_base_url: str
) -> list[JobKind[Any]]:
    store = LocalMediaStore(folder)
    return [
        WebhookKind(backoff=FAST_BACKOFF),
        MediaKind(db, http, store, graph_base_url=graph_base_url, backoff=FAST_BACKOFF, timeout=5.0),
        MediaPurgeKind(store, backoff=FAST_BACKOFF),
    ]


async def settle(
    db: AsyncpgDatabase, pg: asyncpg.Connection, folder: Path, graph_base_url: str, graph: Any
) -> None:
    """Run the worker until no delivery, copy or deletion is waiting."""

    async def done() -> bool:
        waiting = await pg.fetchval(
            """select (select count(*) from public.instagram_webhook_events where state in ('available', 'running'))
                    + (select count(*) from public.instagram_media where state in ('available', 'running', 'retryable'))
                    + (select count(*) from public.instagram_media_deletions
                       where state in ('available', 'running', 'retryable'))"""
        )
        return int(waiting) == 0

    async with httpx.AsyncClient() as http:
        worker = make_worker(db, graph, kinds=media_kinds(db, http, folder, graph_base_url))
        await run_until([worker], done)


@dataclass(frozen=True)
class Env:
    """What a media test works with."""

    db: AsyncpgDatabase
    pg: asyncpg.Connection
    sandbox: Any
    folder: Path
    graph: Any

    async def settle(self) -> None:
        await settle(self.db, self.pg, self.folder, self.sandbox.url, self.graph)


async def media_rows(pg: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    """Each media row with its object, by the message's mid."""
    rows = await pg.fetch(
        """select msg.meta_message_id as mid, m.*, o.content_type, o.size, o.storage_key, encode(o.sha256, 'hex') as sha
           from public.instagram_media m
           join public.instagram_messages msg on msg.id = m.message_id
           left join public.instagram_media_objects o on o.id = m.object_id"""
    )
    return {r["mid"]: r for r in rows}


async def message_media(pg: asyncpg.Connection, mid: str) -> dict[str, Any]:
    """What the message shows about its first attachment's copy."""
    raw = await pg.fetchval(
        "select attachments from public.instagram_messages where meta_message_id = $1", mid
    )
    return dict(json.loads(raw)[0].get("media") or {})
