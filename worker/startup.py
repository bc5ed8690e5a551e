"""Start-up: wait for the database (with backoff) instead of dying when it is down.

The worker opens its pool and checks its keys against the stored rows; while the database cannot be
reached it logs one ``worker.database_unavailable`` line per attempt and tries again, doubling the pause
up to a cap. A stop request (SIGTERM/SIGINT) while waiting ends the wait: the caller exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from instagram_dm import errors
from instagram_dm.backoff import Backoff
from instagram_dm.db.port import Database

log = logging.getLogger(__name__)

STARTUP_BACKOFF = Backoff(base=0.5, cap=30.0)


async def open_when_ready(
    open_db: Callable[[], Awaitable[Database]],
    check: Callable[[Database], Awaitable[None]],
    stop: asyncio.Event,
    *,
    backoff: Backoff = STARTUP_BACKOFF,
) -> Database | None:
    """The opened and checked database, or None once `stop` is set while waiting for it. Errors other
    than DatabaseUnavailableError (a wrong key, a broken configuration) are raised as they are."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            db = await open_db()
        except errors.DatabaseUnavailableError as exc:
            failure = exc
        else:
            try:
                await check(db)
            except errors.DatabaseUnavailableError as exc:
                await db.close()
                failure = exc
            except BaseException:
                await db.close()
                raise
            else:
                return db
        delay = backoff.delay(attempt)
        log.warning(
            "worker.database_unavailable",
            extra={
                "error_code": failure.code,
                "error": failure.message,
                "attempt": attempt,
                "retry_in": delay,
            },
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
    return None
