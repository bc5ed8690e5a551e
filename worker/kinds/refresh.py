"""Kind ``refresh``: renew one integration's tokens (jobs enqueued daily by pg_cron), the way its provider
(``instagram_integrations.provider``) needs. Facebook Login:

1. decrypt the current long-lived user token and Page token (`instagram_integration_tokens`; the
   previous key is accepted during a rotation);
2. ``fb_exchange_token`` for a new long-lived user token;
3. ``debug_token`` on it for the new expiry and ``data_access_expires_at``;
4. ``debug_token`` on the Page token; fetch a fresh one through the new user token if it is no longer valid;
5. return the result `instagram_refresh_complete_v2` stores (with the current key), with an early
   warning when the expiry did not move or data access is about to lapse.

Errors propagate (Meta's typed errors, the database's); `worker.retry.decide` with this kind's rules
turns them into a fate. The old token stays stored until the new one is: nothing is written before 5.
A token no key opens fails this job only: the integration shows ``encryption_key_mismatch`` (or
``token_corrupt``) as its error, the IMO gets a notification, and the worker goes on.

Instagram Login (one Instagram User token, 60 days, dead if not refreshed in time): an expired token cannot be
refreshed (Meta's 190/463: reauth, without a call); one issued less than 24 hours ago is skipped without a
call (Meta refuses it); otherwise ``ig_refresh_token`` gives a new 60 days, stored as both the user and the
messaging token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from instagram_dm.backoff import Backoff
from instagram_dm.db import rpc
from instagram_dm.db.port import Database
from instagram_dm.graph import (
    INSTAGRAM_LOGIN,
    GraphClient,
    InstagramLoginClient,
    MetaTokenInvalidError,
    ProviderNotConfiguredError,
)
from worker import health
from worker.queue import Job, QueueRPCs, parse_when, utcnow
from worker.retry import RetryRules

log = logging.getLogger(__name__)

META_CALLS_PER_REFRESH = 3  # exchange, debug the user token, debug the Page token (4 when it is renewed)
EXPIRY_MARGIN_SECONDS = 600.0  # the last retry must leave this much time before the token expires
# Meta refreshes an Instagram Login token only once it is at least this old.
INSTAGRAM_LOGIN_MIN_TOKEN_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class RefreshJob(Job):
    """A claimed refresh job (ids and expiries only; tokens are fetched by the handler)."""

    integration_id: str
    imo_id: str
    token_expires_at: datetime | None
    data_access_expires_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RefreshJob:
        return cls(
            id=int(row["id"]),
            attempt=int(row["attempt"]),
            max_attempts=int(row["max_attempts"]),
            integration_id=str(row["integration_id"]),
            imo_id=str(row["imo_id"]),
            token_expires_at=parse_when(row.get("token_expires_at")),
            data_access_expires_at=parse_when(row.get("data_access_expires_at")),
        )

    def log_extra(self) -> dict[str, object]:
        return {**super().log_extra(), "integration_id": self.integration_id, "imo_id": self.imo_id}


@dataclass(frozen=True)
class Refreshed:
    """A successful run; without ``user_token`` the job just finishes (nothing to store)."""

    user_token: str | None = field(default=None, repr=False)
    page_token: str | None = field(default=None, repr=False)
    token_expires_at: datetime | None = None
    data_access_expires_at: datetime | None = None
    warning: health.HealthWarning | None = None
    # of the tokens this refresh started from: their ciphertext and plaintext (see the complete RPC)
    token_version: str | None = None
    token_digest: str | None = None

    def as_result(self) -> dict[str, Any]:
        """The JSON object `instagram_refresh_complete_v2` takes for one job (the runner adds job_id)."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "user_token": self.user_token,
            "page_token": self.page_token,
            "token_expires_at": iso(self.token_expires_at),
            "data_access_expires_at": iso(self.data_access_expires_at),
            "warning_code": self.warning.code if self.warning else None,
            "warning_message": self.warning.message if self.warning else None,
            "warning_deadline": iso(self.warning.deadline) if self.warning else None,
            "token_version": self.token_version,
            "token_digest": self.token_digest,
        }


def _deadline(job: Job) -> datetime | None:
    return job.token_expires_at if isinstance(job, RefreshJob) else None


def refresh_rules(backoff: Backoff | None = None) -> RetryRules:
    """Refresh failures: Meta refusing the token asks for reauth; a stored token no key opens is poison
    (job discarded, integration keeps its status with the reason, the IMO is told, tomorrow's sweep tries
    again); a failure that outlasts every retry marks the integration `error`; retries land before the
    token expires."""
    return RetryRules(
        backoff=backoff or Backoff(),
        on_auth="reauth",
        on_poison="poison",
        on_exhausted="error",
        deadline=_deadline,
        margin=EXPIRY_MARGIN_SECONDS,
    )


class FacebookLoginRefresher:
    """Refreshes one integration's tokens through Facebook Login's long-lived token exchange, or, for an
    integration connected through Instagram Login, with ``ig_refresh_token`` (`instagram_login`)."""

    def __init__(
        self,
        db: Database,
        graph: GraphClient,
        *,
        key: str,
        previous_key: str | None = None,
        window: timedelta = timedelta(days=7),
        clock: Callable[[], datetime] = utcnow,
        instagram_login: InstagramLoginClient | None = None,
    ) -> None:
        self._db = db
        self._graph = graph
        self._instagram = instagram_login
        self._key = key
        self._previous_key = previous_key
        self._window = window
        self._clock = clock

    def __repr__(self) -> str:
        return f"FacebookLoginRefresher(graph={self._graph!r})"

    async def __call__(self, job: RefreshJob) -> Refreshed:
        tokens = await rpc.integration_tokens(
            self._db, integration_id=job.integration_id, key=self._key, previous_key=self._previous_key
        )
        if tokens.status != "connected" or not tokens.user_token:
            log.info("refresh.skipped", extra={**job.log_extra(), "status": tokens.status})
            return Refreshed()
        if tokens.provider == INSTAGRAM_LOGIN:
            return await self._refresh_instagram_login(job, tokens)

        exchanged = await self._graph.exchange_long_lived(tokens.user_token)
        info = await self._graph.debug_token(exchanged.token)
        if not info.is_valid:
            raise MetaTokenInvalidError(
                "Meta says the exchanged token is not valid",
                meta_code=info.error_code or 190,
                meta_subcode=info.error_subcode,
            )
        now = self._clock()
        new_expires = info.expires_at
        if new_expires is None and exchanged.expires_in is not None:
            new_expires = now + timedelta(seconds=exchanged.expires_in)

        page_token: str | None = None
        page_info = await self._graph.debug_token(tokens.page_token) if tokens.page_token else None
        if page_info is None or not page_info.is_valid:
            page_token = await self._graph.page_token(str(tokens.facebook_page_id), exchanged.token)
            log.info("refresh.page_token_renewed", extra=job.log_extra())

        warning = health.check(
            now=now,
            old_expires_at=tokens.token_expires_at,
            new_expires_at=new_expires,
            data_access_expires_at=info.data_access_expires_at,
            window=self._window,
        )
        if warning is not None:
            log.warning(
                "refresh.warning",
                extra={**job.log_extra(), "warning": warning.code, "deadline": warning.deadline},
            )
        return Refreshed(
            user_token=exchanged.token,
            page_token=page_token,
            token_expires_at=new_expires,
            data_access_expires_at=info.data_access_expires_at,
            warning=warning,
            token_version=tokens.token_version,
            token_digest=tokens.token_digest,
        )

    async def _refresh_instagram_login(self, job: RefreshJob, tokens: rpc.IntegrationTokens) -> Refreshed:
        """``ig_refresh_token`` when Meta allows it: expired -> reauth, under 24 hours old -> nothing to do."""
        assert tokens.user_token is not None  # noqa: S101  # checked by the caller
        now = self._clock()
        if tokens.token_expires_at is not None and tokens.token_expires_at <= now:
            # An expired Instagram User token cannot be refreshed: only a new login brings it back.
            raise MetaTokenInvalidError(
                "The Instagram token expired before it was refreshed; the account must be reconnected",
                meta_code=190,
                meta_subcode=463,
            )
        issued = tokens.token_issued_at
        if issued is not None and now - issued < INSTAGRAM_LOGIN_MIN_TOKEN_AGE:
            log.info("refresh.too_young", extra={**job.log_extra(), "token_issued_at": issued})
            return Refreshed()
        if self._instagram is None:
            raise ProviderNotConfiguredError(
                "This integration was connected through Instagram Login, which this worker is not configured "
                "for (INSTAGRAM_LOGIN_APP_ID, INSTAGRAM_LOGIN_APP_SECRET)."
            )
        refreshed = await self._instagram.refresh_token(tokens.user_token)
        new_expires = now + timedelta(seconds=refreshed.expires_in) if refreshed.expires_in else None
        warning = health.check(
            now=now,
            old_expires_at=tokens.token_expires_at,
            new_expires_at=new_expires,
            data_access_expires_at=None,
            window=self._window,
        )
        return Refreshed(
            user_token=refreshed.token,
            page_token=refreshed.token,  # the messaging token of an Instagram Login integration is the same
            token_expires_at=new_expires,
            warning=warning,
            token_version=tokens.token_version,
            token_digest=tokens.token_digest,
        )


class RefreshKind:
    """The refresh job kind: queue `instagram_refresh_jobs`, handler :class:`FacebookLoginRefresher`."""

    name: ClassVar[str] = "refresh"
    channel: ClassVar[str] = "instagram_refresh_jobs"
    rpcs: ClassVar[QueueRPCs] = QueueRPCs(
        claim="instagram_refresh_claim_v1",
        complete="instagram_refresh_complete_v2",
        fail="instagram_refresh_fail_v1",
        release="instagram_refresh_release_v1",
    )

    def __init__(
        self,
        handler: Callable[[RefreshJob], Awaitable[Refreshed]],
        *,
        key: str,
        previous_key: str | None = None,
        rules: RetryRules | None = None,
        share: float = 1.0,
    ) -> None:
        self._handler = handler
        self._key = key
        self._previous_key = previous_key
        self.rules = rules or refresh_rules()
        self.share = share

    def complete_args(self) -> Mapping[str, Any]:
        return {"p_key": self._key, "p_previous_key": self._previous_key}

    def parse(self, row: Mapping[str, Any]) -> RefreshJob:
        return RefreshJob.from_row(row)

    async def run(self, job: RefreshJob, *, worker_id: str) -> Mapping[str, Any]:
        refreshed = await self._handler(job)
        if log.isEnabledFor(logging.INFO):  # the hot path: build no log record nobody reads
            log.info(
                "refresh.completed",
                extra={
                    **job.log_extra(),
                    "worker_id": worker_id,
                    "stored": refreshed.user_token is not None,
                    "token_expires_at": refreshed.token_expires_at,
                    "warning": refreshed.warning.code if refreshed.warning else None,
                },
            )
        return refreshed.as_result()
