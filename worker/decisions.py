"""What to do with a failed refresh, by Meta error class (never by message text)::

token invalid (190, 102), permission (10, 200-299)  -> reauth: discard, integration reauth_required
rate limited (4, 17, 32, 341, 613, 80006, 429)      -> retry no sooner than Meta's regain-access time
transient (1, 2, 5xx, timeouts, DB hiccups)         -> retry, backoff capped before expiry, then discard
                                                       (the integration stays connected: an outage is
                                                       never a reason to ask for reauth)
anything else                                       -> retry with backoff, then discard with the
                                                       integration in `error`
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from instagram_dm import errors
from instagram_dm.graph import (
    MetaPermissionError,
    MetaRateLimitedError,
    MetaTokenInvalidError,
    MetaTransientError,
)
from worker.backoff import Backoff
from worker.jobs import Failed, RefreshJob

DEFAULT_RATE_LIMIT_WAIT = 15 * 60.0  # Meta gave no regain-access time


@dataclass(frozen=True)
class ErrorInfo:
    """A failure reduced to the fields a decision and the job row need."""

    kind: str  # token_invalid | permission | rate_limited | transient | unknown
    code: str
    message: str
    retry_after: float | None = None


def describe(exc: BaseException) -> ErrorInfo:
    """Classify an exception raised while refreshing; messages are already token-free."""
    code = getattr(exc, "code", None) or type(exc).__name__
    meta_code = getattr(exc, "meta_code", None)
    if meta_code is not None:
        subcode = getattr(exc, "meta_subcode", None)
        code = f"meta_{meta_code}" + (f"_{subcode}" if subcode is not None else "")
    message = getattr(exc, "message", None) or type(exc).__name__
    if isinstance(exc, MetaTokenInvalidError):
        return ErrorInfo("token_invalid", code, message)
    if isinstance(exc, MetaPermissionError):
        return ErrorInfo("permission", code, message)
    if isinstance(exc, MetaRateLimitedError):
        return ErrorInfo("rate_limited", code, message, exc.retry_after)
    if isinstance(exc, MetaTransientError | errors.DatabaseUnavailableError | TimeoutError):
        return ErrorInfo("transient", code, str(message))
    return ErrorInfo("unknown", code, str(message))


def decide(
    info: ErrorInfo,
    job: RefreshJob,
    *,
    now: datetime,
    backoff: Backoff,
    rng: random.Random | None = None,
) -> Failed:
    """The fate of `job` after failure `info` at `now`."""
    if info.kind in {"token_invalid", "permission"}:
        return Failed(job.id, "reauth", None, info.code, info.message)
    run_at = backoff.next_run_at(
        attempt=job.attempt, max_attempts=job.max_attempts, now=now, deadline=job.token_expires_at, rng=rng
    )
    if info.kind == "rate_limited":
        if job.attempt >= job.max_attempts:
            return Failed(job.id, "discard", None, info.code, info.message)
        wait = info.retry_after if info.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
        earliest = now + timedelta(seconds=wait)
        return Failed(job.id, "retry", max(run_at or earliest, earliest), info.code, info.message)
    if run_at is not None:
        return Failed(job.id, "retry", run_at, info.code, info.message)
    if info.kind == "transient":
        return Failed(job.id, "discard", None, info.code, info.message)
    return Failed(job.id, "error", None, info.code, info.message)
