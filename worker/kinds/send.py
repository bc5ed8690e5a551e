"""Kind ``send``: send queued outbound messages to Meta, exactly once (`instagram_send_jobs`, woken by a
NOTIFY from ``instagram_send_message``).

The claim does what needs no request (a message its echo confirmed completes, one whose 24-hour window
closed fails, a dead worker's send waits for its echo) and gives each job a pacing slot of its Instagram
account, shared by every worker (``slot_at``). ``run`` waits for the slot (one it woke too late for, more
than ``max_lateness_seconds``, is exchanged for a new one: a busy worker cannot crowd one second at Meta),
sends once, and turns
whatever happened into an outcome for ``instagram_send_complete_v1``, by Meta's code and subcode (never by
text):

    sent        Meta's message_id is stored; delivery and read come from webhooks
    unknown     no answer we can trust (timeout after the request left, 5xx, 1/1357046): the message waits
                for its echo and is sent again only if none came (INSTAGRAM_SEND_ECHO_WAIT_SECONDS)
    retry       the request never left (no connection): again with backoff
    throttled   4, 17, 32, 613 (2534040), 80006: the account pauses for every worker
    reauth      190, 102: the integration needs reconnecting; the message fails with reauth_required
    failed      Meta refused this message (outside the window, not a user, not accepting, restricted ...)

A failure of the run itself (its timeout, say) goes through the runner to ``instagram_send_fail_v1``,
which, while the message was being sent, also waits for the echo. The Page token is decrypted in SQL and
kept in memory per account until the stored ciphertext changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, cast

from instagram_dm import errors, metrics
from instagram_dm.backoff import Backoff
from instagram_dm.db import rpc
from instagram_dm.db.port import Database
from instagram_dm.graph import (
    INSTAGRAM_LOGIN,
    GraphClient,
    GraphError,
    InstagramLoginClient,
    MetaRateLimitedError,
    MetaTokenInvalidError,
    MetaTransientError,
    reached_meta,
)
from worker.queue import Job, QueueRPCs, utcnow
from worker.retry import RetryRules

log = logging.getLogger(__name__)

THROTTLE_WAIT = 60.0  # seconds, when Meta throttles without saying for how long

# Meta refused this message for good: (code, subcode) -> (our error code, what the app can show).
REFUSALS: dict[tuple[int, int | None], tuple[str, str]] = {
    (10, 2534022): ("outside_messaging_window", "Meta says the 24-hour window to reply has closed."),
    (100, 2534014): (
        "recipient_not_found",
        "Meta does not know this person as an Instagram user of this account.",
    ),
    (200, 2534041): ("recipient_not_accepting", "This person does not accept messages from this account."),
    (551, None): ("recipient_not_accepting", "This person is not accepting messages right now."),
    (10, 1893063): ("account_restricted", "Meta has temporarily restricted messaging from this account."),
    (100, 2534029): (
        "account_blocked",
        "Meta has blocked this account from sending messages through the API.",
    ),
}
# Meta's answer says nothing reliable about whether the message went out.
UNCERTAIN: frozenset[tuple[int, int | None]] = frozenset({(1, 1357046)})


@dataclass(frozen=True)
class SendJob(Job):
    """A claimed send with its pacing slot."""

    message_id: str
    imo_id: str
    integration_id: str
    page_id: str | None  # None for an account connected through Instagram Login (no Page)
    recipient_id: str
    text: str | None
    attachment: Mapping[str, Any] | None
    messaging_type: str
    tag: str | None
    slot_monotonic: float  # when this account's slot comes, on this process's monotonic clock
    max_lateness_seconds: float
    token_version: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SendJob:
        attachment = row.get("attachment")
        return cls(
            id=int(row["id"]),
            attempt=int(row["attempt"]),
            max_attempts=int(row["max_attempts"]),
            message_id=str(row["message_id"]),
            imo_id=str(row["imo_id"]),
            integration_id=str(row["integration_id"]),
            page_id=None if row.get("page_id") is None else str(row["page_id"]),
            recipient_id=str(row["recipient_id"]),
            text=row.get("text"),
            attachment=attachment if isinstance(attachment, Mapping) else None,
            messaging_type=str(row["messaging_type"]),
            tag=row.get("tag"),
            slot_monotonic=cast(float, rpc.SendSlot.from_json(row).monotonic()),  # a claim always gives one
            max_lateness_seconds=float(row["max_lateness_seconds"]),
            token_version=str(row["token_version"]),
        )

    def log_extra(self) -> dict[str, object]:
        return {**super().log_extra(), "message_id": self.message_id, "integration_id": self.integration_id}


def outcome_for(
    exc: GraphError, *, attempt: int, max_attempts: int, backoff: Backoff, now: datetime
) -> dict[str, Any]:
    """What a Meta error means for one send (see the module docstring)."""
    code, subcode = exc.meta_code, exc.meta_subcode
    base = {
        "error_code": exc.code if code is None else f"meta_{code}" + (f"_{subcode}" if subcode else ""),
        "error_message": exc.message,
    }
    if code is not None:
        refusal = REFUSALS.get((code, subcode)) or REFUSALS.get((code, None))
        if refusal is not None:
            return {"outcome": "failed", "error_code": refusal[0], "error_message": refusal[1]}
        if (code, subcode) in UNCERTAIN:
            return {"outcome": "unknown", **base}
    if isinstance(exc, MetaTokenInvalidError):
        return {"outcome": "reauth", **base}
    if isinstance(exc, MetaRateLimitedError):
        wait = exc.retry_after if exc.retry_after is not None else THROTTLE_WAIT
        return {"outcome": "throttled", "run_at": (now + timedelta(seconds=wait)).isoformat(), **base}
    if not reached_meta(exc):
        run_at = backoff.next_run_at(attempt=attempt, max_attempts=max_attempts, now=now) or now
        return {"outcome": "retry", "run_at": run_at.isoformat(), **base}
    if isinstance(exc, MetaTransientError):
        return {"outcome": "unknown", **base}
    return {"outcome": "failed", **base}  # Meta refused this message (permission, parameter, anything else)


class SendKind:
    """The outbound send job kind."""

    name: ClassVar[str] = "send"
    channel: ClassVar[str] = "instagram_send_jobs"
    rpcs: ClassVar[QueueRPCs] = QueueRPCs(
        claim="instagram_send_claim_v1",
        complete="instagram_send_complete_v1",
        fail="instagram_send_fail_v1",
        release="instagram_send_release_v1",
    )

    def __init__(
        self,
        db: Database,
        graph: GraphClient,
        *,
        key: str,
        previous_key: str | None = None,
        backoff: Backoff | None = None,
        share: float = 0.5,
        clock: Callable[[], datetime] = utcnow,
        instagram_login: InstagramLoginClient | None = None,
    ) -> None:
        self._db = db
        self._graph = graph
        self._instagram = instagram_login
        self._key = key
        self._previous_key = previous_key
        self._clock = clock
        self._backoff = backoff or Backoff(base=2.0, cap=300.0)
        # integration -> (token_version, messaging token, provider, Instagram account id)
        self._tokens: dict[str, tuple[str, str | None, str, str | None]] = {}
        self.rules = RetryRules(backoff=self._backoff)
        self.share = share
        self.missed_slots = 0  # slots this worker woke too late for (and exchanged)

    def complete_args(self) -> Mapping[str, Any]:
        return {}

    def parse(self, row: Mapping[str, Any]) -> SendJob:
        return SendJob.from_row(row)

    async def run(self, job: SendJob, *, worker_id: str) -> Mapping[str, Any]:
        result: Mapping[str, Any]
        meta_code: int | None = None  # Meta's error code, when Meta refused the send
        try:
            await self._page_token(job, worker_id)  # before the slot: the request leaves on time
            ready = await self._wait_for_slot(job, worker_id)
        except (errors.TokenCorruptError, errors.EncryptionKeyMismatchError) as exc:
            result = {"outcome": "failed", "error_code": exc.code, "error_message": exc.message}
        except errors.InstagramDMError as exc:  # the database, before anything was sent: try again later
            result = self._not_sent(job, exc.code, exc.message)
        else:
            if ready:
                meta_code, result = await self._send(job, worker_id)
            else:
                result = self._not_sent(job, "no_slot", "No free slot.")
        metrics.SENDS.labels(result["outcome"], "" if meta_code is None else str(meta_code)).inc()
        log.info(
            "send.finished",
            extra={**job.log_extra(), "outcome": result["outcome"], "error_code": result.get("error_code")},
        )
        return result

    async def _wait_for_slot(self, job: SendJob, worker_id: str) -> bool:
        """Sleep until the slot; one woken more than max_lateness_seconds late (a busy worker: sending now could
        crowd one second at Meta) is exchanged for the next free one. False when there is none soon."""
        slot = job.slot_monotonic
        while True:
            if (wait := slot - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if time.monotonic() - slot <= job.max_lateness_seconds:
                return True
            self.missed_slots += 1
            log.debug("send.missed_slot", extra=job.log_extra())
            fresh = (await rpc.send_reslot(self._db, job_id=int(job.id), worker=worker_id)).monotonic()
            if fresh is None:
                return False
            slot = fresh

    def _not_sent(self, job: SendJob, code: str, message: str) -> dict[str, Any]:
        """Nothing reached Meta: back to queued, again after the backoff."""
        run_at = self._backoff.next_run_at(
            attempt=job.attempt, max_attempts=job.max_attempts, now=self._clock()
        )
        return {"outcome": "retry", "run_at": (run_at or self._clock()).isoformat(), "error_code": code,
                "error_message": message}  # fmt: skip

    async def _page_token(self, job: SendJob, worker_id: str) -> tuple[str | None, str, str | None]:
        """The messaging token, the integration's provider and its Instagram account (cached per version)."""
        cached = self._tokens.get(job.integration_id)
        if cached is not None and cached[0] == job.token_version:
            return cached[1], cached[2], cached[3]
        token = await rpc.send_token(
            self._db,
            integration_id=job.integration_id,
            worker=worker_id,
            key=self._key,
            previous_key=self._previous_key,
        )
        self._tokens[job.integration_id] = (
            token.token_version,
            token.page_token,
            token.provider,
            token.account_id,
        )
        return token.page_token, token.provider, token.account_id

    async def _send(self, job: SendJob, worker_id: str) -> tuple[int | None, dict[str, Any]]:
        """Send once; (Meta's error code or None, the outcome for the complete RPC)."""
        page_token, provider, account_id = await self._page_token(job, worker_id)
        if not page_token:
            return None, {
                "outcome": "reauth",
                "error_code": "no_token",
                "error_message": "The account has no Page token.",
            }
        # The integration's provider says where the message goes: graph.facebook.com from its Page, or
        # graph.instagram.com from the Instagram account (Bearer), for Instagram Login.
        client: GraphClient | InstagramLoginClient = self._graph
        sender = job.page_id
        if provider == INSTAGRAM_LOGIN:
            if self._instagram is None:
                return None, self._not_sent(
                    job, "provider_not_configured", "This worker is not configured for Instagram Login."
                )
            client, sender = self._instagram, account_id
        if sender is None:
            return None, {
                "outcome": "failed",
                "error_code": "no_sender",
                "error_message": "The account has no sender id.",
            }
        try:
            sent = await client.send_message(
                sender,
                page_token,
                recipient_id=job.recipient_id,
                text=job.text,
                attachment=job.attachment,
                messaging_type=job.messaging_type,
                tag=job.tag,
            )
        except GraphError as exc:
            return exc.meta_code, outcome_for(
                exc,
                attempt=job.attempt,
                max_attempts=job.max_attempts,
                backoff=self._backoff,
                now=self._clock(),
            )
        return None, {
            "outcome": "sent",
            "meta_message_id": sent.message_id,
            "usage_percent": sent.usage_percent,
            "regain_seconds": sent.regain_seconds,
        }
