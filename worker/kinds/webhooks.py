"""Kind ``webhooks``: process stored webhook deliveries (`instagram_webhook_events`, woken by a NOTIFY from
the receiver's insert).

The handler is SQL: a claimed delivery needs nothing from Python, so ``run`` returns at once and the batch
of completions the runner writes in one call *is* the processing — ``instagram_webhook_complete_v1`` turns
every delivery of the batch into conversations, messages, reactions, reads and leads in one transaction
(set-based; see ``supabase/migrations/20261202000001_instagram_receive.sql``). A crash before that commit
changes nothing; the leases expire and any worker processes the deliveries again (idempotently). A batch
the database refuses is retried delivery by delivery by the runner, so one poison delivery fails alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from instagram_dm.backoff import Backoff
from worker.queue import Job, QueueRPCs
from worker.retry import RetryRules


class WebhookKind:
    """The webhook processing job kind."""

    name: ClassVar[str] = "webhooks"
    channel: ClassVar[str] = "instagram_webhook_events"
    rpcs: ClassVar[QueueRPCs] = QueueRPCs(
        claim="instagram_webhook_claim_v1",
        complete="instagram_webhook_complete_v1",
        fail="instagram_webhook_fail_v1",
        release="instagram_webhook_release_v1",
    )

    def __init__(self, *, backoff: Backoff | None = None, share: float = 0.5) -> None:
        self.rules = RetryRules(backoff=backoff or Backoff(base=5.0, cap=600.0))
        self.share = share

    def complete_args(self) -> Mapping[str, Any]:
        return {}

    def parse(self, row: Mapping[str, Any]) -> Job:
        return Job(id=int(row["id"]), attempt=int(row["attempt"]), max_attempts=int(row["max_attempts"]))

    async def run(self, job: Job, *, worker_id: str) -> Mapping[str, Any]:
        return {}
