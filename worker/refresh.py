"""The Facebook-Login refresh of one integration.

1. decrypt the current long-lived user token and Page token (`instagram_integration_tokens`);
2. ``fb_exchange_token`` for a new long-lived user token;
3. ``debug_token`` on it for the new expiry and ``data_access_expires_at``;
4. ``debug_token`` on the Page token; fetch a fresh one through the new user token if it is no longer valid;
5. return a :class:`~worker.jobs.Completed` the loop stores with `instagram_refresh_complete_v1`,
   with an early warning when the expiry did not move or data access is about to lapse.

Errors propagate (Meta's typed errors, the database's); `decisions.decide` turns them into a fate.
The old token stays stored until the new one is: nothing is written before step 5.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from instagram_dm.db.port import Database
from instagram_dm.graph import GraphClient, MetaTokenInvalidError
from worker import health
from worker.jobs import Completed, RefreshJob

log = logging.getLogger(__name__)

META_CALLS_PER_REFRESH = 3  # exchange, debug the user token, debug the Page token (4 when it is renewed)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class FacebookLoginRefresher:
    """Refreshes one integration's tokens through Facebook Login's long-lived token exchange."""

    def __init__(
        self,
        db: Database,
        graph: GraphClient,
        *,
        key: str,
        window: timedelta = timedelta(days=7),
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._db = db
        self._graph = graph
        self._key = key
        self._window = window
        self._clock = clock

    def __repr__(self) -> str:
        return f"FacebookLoginRefresher(graph={self._graph!r})"

    async def __call__(self, job: RefreshJob) -> Completed:
        tokens: dict[str, Any] = await self._db.rpc(
            "instagram_integration_tokens", {"p_integration_id": job.integration_id, "p_key": self._key}
        )
        if tokens.get("status") != "connected" or not tokens.get("user_token"):
            log.info("refresh.skipped", extra=job.log_extra(status=tokens.get("status")))
            return Completed(job.id)

        exchanged = await self._graph.exchange_long_lived(str(tokens["user_token"]))
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
        current_page_token = tokens.get("page_token")
        page_info = await self._graph.debug_token(str(current_page_token)) if current_page_token else None
        if page_info is None or not page_info.is_valid:
            page_token = await self._graph.page_token(str(tokens["facebook_page_id"]), exchanged.token)
            log.info("refresh.page_token_renewed", extra=job.log_extra())

        old_expires = _parse(tokens.get("token_expires_at"))
        warning = health.check(
            now=now,
            old_expires_at=old_expires,
            new_expires_at=new_expires,
            data_access_expires_at=info.data_access_expires_at,
            window=self._window,
        )
        if warning is not None:
            extra = job.log_extra(warning=warning.code, deadline=warning.deadline)
            log.warning("refresh.warning", extra=extra)
        return Completed(
            job.id,
            user_token=exchanged.token,
            page_token=page_token,
            token_expires_at=new_expires,
            data_access_expires_at=info.data_access_expires_at,
            warning_code=warning.code if warning else None,
            warning_message=warning.message if warning else None,
            warning_deadline=warning.deadline if warning else None,
            token_version=tokens.get("token_version"),
        )


def _parse(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
