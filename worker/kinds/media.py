"""Kinds ``media`` and ``media_purge``: copy inbound attachments out of Meta's CDN into our storage, and
delete stored bytes no attachment uses any more (docs/media.md).

``media`` (`instagram_media`, one row per attachment, queued by a trigger on each inbound message): the
bytes are streamed from Meta's CDN (Meta's hosts or the configured Graph origin only), cut off at the cap
of their type, sniffed and hashed; bytes the IMO already stored are not stored again
(``instagram_media_lookup_v1``), others go to a fresh key, and the complete call records the object (one
per IMO and SHA-256). An attachment that can never be copied (too large, a foreign host) completes as
``refused`` at once; CDN answers (an expired signature, 404, outages) retry with the common backoff and,
after the last attempt, leave the attachment ``media_unavailable``. The message was stored before any of
this, so it never waits.

``media_purge`` (`instagram_media_deletions`, queued by the deletion of an object): deletes the key from
the store; a key that is already gone is fine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from instagram_dm import errors
from instagram_dm.backoff import Backoff
from instagram_dm.db import rpc
from instagram_dm.db.port import Database
from instagram_dm.media import fetch, sniff, storage
from instagram_dm.media.storage import MediaStore
from worker.queue import Job, QueueRPCs
from worker.retry import RetryRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaJob(Job):
    """A claimed attachment copy."""

    imo_id: str
    message_id: str
    attachment_index: int
    attachment_type: str
    source_url: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MediaJob:
        return cls(
            id=int(row["id"]),
            attempt=int(row["attempt"]),
            max_attempts=int(row["max_attempts"]),
            imo_id=str(row["imo_id"]),
            message_id=str(row["message_id"]),
            attachment_index=int(row["attachment_index"]),
            attachment_type=str(row["attachment_type"]),
            source_url=str(row["source_url"]),
        )

    def log_extra(self) -> dict[str, object]:
        return {**super().log_extra(), "message_id": self.message_id, "imo_id": self.imo_id}


class MediaKind:
    """The attachment copy job kind."""

    name: ClassVar[str] = "media"
    channel: ClassVar[str] = "instagram_media"
    rpcs: ClassVar[QueueRPCs] = QueueRPCs(
        claim="instagram_media_claim_v1",
        complete="instagram_media_complete_v1",
        fail="instagram_media_fail_v1",
        release="instagram_media_release_v1",
    )

    def __init__(
        self,
        db: Database,
        http: httpx.AsyncClient,
        store: MediaStore,
        *,
        graph_base_url: str,
        backoff: Backoff | None = None,
        share: float = 0.25,
        timeout: float = 60.0,
    ) -> None:
        self._db = db
        self._http = http
        self._store = store
        self._graph_base_url = graph_base_url
        self._timeout = timeout
        self.rules = RetryRules(backoff=backoff or Backoff(base=30.0, cap=3600.0))
        self.share = share

    def complete_args(self) -> Mapping[str, Any]:
        return {}

    def parse(self, row: Mapping[str, Any]) -> MediaJob:
        return MediaJob.from_row(row)

    async def run(self, job: MediaJob, *, worker_id: str) -> Mapping[str, Any]:
        try:
            result = await self._copy(job, worker_id)
        except errors.MediaRefusedError as exc:
            result = {"outcome": "refused", "error_code": exc.code, "error_message": exc.message}
        log.info(
            "media.finished",
            extra={
                **job.log_extra(),
                "outcome": result["outcome"],
                "error_code": result.get("error_code"),
                "size": result.get("size"),
                "content_type": result.get("content_type"),
            },
        )
        return result

    async def _copy(self, job: MediaJob, worker_id: str) -> dict[str, Any]:
        got = await fetch.download(
            self._http,
            job.source_url,
            cap=sniff.cap_for(job.attachment_type),
            graph_base_url=self._graph_base_url,
            timeout=self._timeout,
        )
        try:
            known = await rpc.media_lookup(self._db, job_id=int(job.id), worker=worker_id, sha256=got.sha256)
            if known is not None:
                key = known.storage_key  # the same bytes are stored once per IMO
            else:
                key = storage.new_key(job.imo_id, got.sha256)
                await self._store.put(key, got.file, content_type=got.content_type)
        finally:
            got.close()
        return {
            "outcome": "stored",
            "sha256": got.sha256,
            "size": got.size,
            "content_type": got.content_type,
            "storage_key": key,
        }


@dataclass(frozen=True)
class PurgeJob(Job):
    """A claimed deletion of stored bytes."""

    storage_key: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PurgeJob:
        return cls(
            id=int(row["id"]),
            attempt=int(row["attempt"]),
            max_attempts=int(row["max_attempts"]),
            storage_key=str(row["storage_key"]),
        )


class MediaPurgeKind:
    """The stored-bytes deletion job kind."""

    name: ClassVar[str] = "media_purge"
    channel: ClassVar[str] = "instagram_media_deletions"
    rpcs: ClassVar[QueueRPCs] = QueueRPCs(
        claim="instagram_media_purge_claim_v1",
        complete="instagram_media_purge_complete_v1",
        fail="instagram_media_purge_fail_v1",
        release="instagram_media_purge_release_v1",
    )

    def __init__(self, store: MediaStore, *, backoff: Backoff | None = None, share: float = 0.1) -> None:
        self._store = store
        self.rules = RetryRules(backoff=backoff or Backoff(base=60.0, cap=6 * 3600.0))
        self.share = share

    def complete_args(self) -> Mapping[str, Any]:
        return {}

    def parse(self, row: Mapping[str, Any]) -> PurgeJob:
        return PurgeJob.from_row(row)

    async def run(self, job: PurgeJob, *, worker_id: str) -> Mapping[str, Any]:
        try:
            await self._store.delete(job.storage_key)
        except ValueError:  # not one of our keys: nothing of ours to delete
            log.warning("media.purge_skipped", extra=job.log_extra())
        log.info("media.purged", extra=job.log_extra())
        return {}
