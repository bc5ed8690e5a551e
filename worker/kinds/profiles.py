"""Kind ``profiles``: fetch a conversation participant's name, username and picture with the Page token
(`instagram_profile_fetches`, queued by webhook processing for each new conversation and for one not
checked for a day).

Completing a fetch names the participant and gives the conversation its recruiting lead (a new one, or
the IMO's lead with the same Instagram username). When Meta will not say (the token no longer works, the
IGSID is refused) the job still completes as ``unavailable``, so the lead is made anyway; outages retry with
the common backoff. A failure here never holds up messages: they were stored before the job was queued.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from instagram_dm.backoff import Backoff
from instagram_dm.db import rpc
from instagram_dm.db.port import Database
from instagram_dm.graph import (
    INSTAGRAM_LOGIN,
    GraphClient,
    InstagramLoginClient,
    MetaInvalidRequestError,
    MetaPermissionError,
    MetaTokenInvalidError,
)
from worker.queue import Job, QueueRPCs
from worker.retry import RetryRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileJob(Job):
    """A claimed profile fetch."""

    conversation_id: str
    integration_id: str
    igsid: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ProfileJob:
        return cls(
            id=int(row["id"]),
            attempt=int(row["attempt"]),
            max_attempts=int(row["max_attempts"]),
            conversation_id=str(row["conversation_id"]),
            integration_id=str(row["integration_id"]),
            igsid=str(row["igsid"]),
        )

    def log_extra(self) -> dict[str, object]:
        return {**super().log_extra(), "conversation_id": self.conversation_id}


def _unavailable(code: str, message: str) -> dict[str, Any]:
    return {"outcome": "unavailable", "error_code": code, "error_message": message}


class ProfileKind:
    """The participant profile job kind."""

    name: ClassVar[str] = "profiles"
    channel: ClassVar[str] = "instagram_profile_fetches"
    rpcs: ClassVar[QueueRPCs] = QueueRPCs(
        claim="instagram_profile_claim_v1",
        complete="instagram_profile_complete_v1",
        fail="instagram_profile_fail_v1",
        release="instagram_profile_release_v1",
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
        instagram_login: InstagramLoginClient | None = None,
    ) -> None:
        self._db = db
        self._graph = graph
        self._instagram = instagram_login
        self._key = key
        self._previous_key = previous_key
        self.rules = RetryRules(backoff=backoff or Backoff(base=30.0, cap=3600.0), retry_foreign_key=True)
        self.share = share

    def complete_args(self) -> Mapping[str, Any]:
        return {}

    def parse(self, row: Mapping[str, Any]) -> ProfileJob:
        return ProfileJob.from_row(row)

    async def run(self, job: ProfileJob, *, worker_id: str) -> Mapping[str, Any]:
        result = await self._fetch(job, worker_id)
        log.info(
            "profile.finished",
            extra={**job.log_extra(), "outcome": result["outcome"], "error_code": result.get("error_code")},
        )
        return result

    async def _fetch(self, job: ProfileJob, worker_id: str) -> dict[str, Any]:
        token = await rpc.profile_token(
            self._db, job_id=int(job.id), worker=worker_id, key=self._key, previous_key=self._previous_key
        )
        if not token.page_token:
            return _unavailable("no_token", "The integration has no Page token.")
        client: GraphClient | InstagramLoginClient = self._graph
        if token.provider == INSTAGRAM_LOGIN:  # graph.instagram.com, with the Instagram User token
            if self._instagram is None:
                return _unavailable(
                    "provider_not_configured", "This worker is not configured for Instagram Login."
                )
            client = self._instagram
        try:
            user = await client.instagram_user(job.igsid, token.page_token)
        except (MetaTokenInvalidError, MetaPermissionError, MetaInvalidRequestError) as exc:
            # No retry can fix these; the refresh kind deals with the integration's token.
            return _unavailable(exc.code, exc.message)
        return {
            "outcome": "fetched",
            "name": user.name,
            "username": user.username,
            "profile_pic": user.profile_pic,
            "error_code": None,
            "error_message": None,
        }
