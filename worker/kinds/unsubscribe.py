"""Kind ``unsubscribe``: remove our app from a Page's webhooks after a disconnect queued it
(`instagram_page_unsubscriptions`, woken by a NOTIFY from the insert).

Outcomes: ``done`` (Meta unsubscribed it) or ``skipped`` (another live integration still uses the Page,
no token was stored, or Meta had already dropped our access). Outages retry with the common backoff; a
token no key opens is discarded at once. The Page token is wiped when the job ends, whichever way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from instagram_dm.backoff import Backoff
from instagram_dm.db import rpc
from instagram_dm.db.port import Database
from instagram_dm.graph import GraphClient, MetaPermissionError, MetaTokenInvalidError
from worker.queue import Job, QueueRPCs
from worker.retry import RetryRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnsubscribeJob(Job):
    """A claimed Page unsubscription (the token is fetched by the handler)."""

    facebook_page_id: str
    integration_id: str | None
    still_in_use: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> UnsubscribeJob:
        integration = row.get("integration_id")
        return cls(
            id=str(row["id"]),
            attempt=int(row["attempt"]),
            max_attempts=int(row["max_attempts"]),
            facebook_page_id=str(row["facebook_page_id"]),
            integration_id=None if integration is None else str(integration),
            still_in_use=bool(row.get("still_in_use")),
        )

    def log_extra(self) -> dict[str, object]:
        return {
            **super().log_extra(),
            "page_id": self.facebook_page_id,
            "integration_id": self.integration_id,
        }


def _skipped(code: str, message: str) -> dict[str, Any]:
    return {"outcome": "skipped", "error_code": code, "error_message": message}


class UnsubscribeKind:
    """The unsubscribe job kind."""

    name: ClassVar[str] = "unsubscribe"
    channel: ClassVar[str] = "instagram_page_unsubscriptions"
    rpcs: ClassVar[QueueRPCs] = QueueRPCs(
        claim="instagram_unsubscribe_claim_v1",
        complete="instagram_unsubscribe_complete_v1",
        fail="instagram_unsubscribe_fail_v1",
        release="instagram_unsubscribe_release_v1",
    )

    def __init__(
        self,
        db: Database,
        graph: GraphClient,
        *,
        key: str,
        previous_key: str | None = None,
        backoff: Backoff | None = None,
        share: float = 0.25,
    ) -> None:
        self._db = db
        self._graph = graph
        self._key = key
        self._previous_key = previous_key
        # A token under another key may become readable once a rolling restart with new keys is done:
        # retried; damaged ciphertext cannot: discarded at once.
        self.rules = RetryRules(backoff=backoff or Backoff(base=60.0, cap=3600.0), retry_foreign_key=True)
        self.share = share

    def complete_args(self) -> Mapping[str, Any]:
        return {}

    def parse(self, row: Mapping[str, Any]) -> UnsubscribeJob:
        return UnsubscribeJob.from_row(row)

    async def run(self, job: UnsubscribeJob, *, worker_id: str) -> Mapping[str, Any]:
        result = await self._unsubscribe(job, worker_id)
        log.info("unsubscribe.finished", extra={**job.log_extra(), **result, "worker_id": worker_id})
        return result

    async def _unsubscribe(self, job: UnsubscribeJob, worker_id: str) -> dict[str, Any]:
        if job.still_in_use:
            return _skipped("page_in_use", "Another connected integration still uses this Page.")
        token = await rpc.unsubscribe_token(
            self._db, job_id=str(job.id), worker=worker_id, key=self._key, previous_key=self._previous_key
        )
        if token.still_in_use:  # reconnected since the claim
            return _skipped("page_in_use", "Another connected integration uses this Page again.")
        if not token.page_token:
            return _skipped("no_token", "No Page token was stored.")
        try:
            await self._graph.unsubscribe_page(job.facebook_page_id, token.page_token)
        except (MetaTokenInvalidError, MetaPermissionError) as exc:
            # The token no longer works: Meta has already dropped our access to the Page.
            return _skipped(exc.code, exc.message)
        return {"outcome": "done", "error_code": None, "error_message": None}
