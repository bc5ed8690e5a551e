"""Retry rules, in one place for every kind: a failure is classified by Meta's error class (never by
message text), then each kind's :class:`RetryRules` say what that class means for it::

    token invalid (190, 102), permission (10, 200-299)  -> rules.on_auth (refresh: reauth)
    damaged ciphertext (token_corrupt)                  -> rules.on_poison, at once: no retry can fix it
    another key's fingerprint (encryption_key_mismatch) -> rules.on_poison, or retried with backoff where
                                                           rules.retry_foreign_key (a rolling restart
                                                           with new keys may be under way)
    rate limited (4, 17, 32, 341, 613, 80006, 429)      -> retry no sooner than Meta's regain-access time
    transient (1, 2, 5xx, timeouts, DB hiccups)         -> retry with backoff, then discard (an outage is
                                                           never a reason to ask for reauth)
    anything else                                       -> retry with backoff, then rules.on_exhausted

Attempts are counted on the job row (``attempt`` / ``max_attempts``); the fail RPCs turn a retry with no
attempt left into a discard, so Python and SQL cannot disagree about the limit.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from instagram_dm import errors
from instagram_dm.backoff import Backoff
from instagram_dm.graph import (
    MetaPermissionError,
    MetaRateLimitedError,
    MetaTokenInvalidError,
    MetaTransientError,
)
from worker.queue import Action, Failed, Job

DEFAULT_RATE_LIMIT_WAIT = 15 * 60.0  # Meta gave no regain-access time


@dataclass(frozen=True)
class ErrorInfo:
    """A failure reduced to the fields a decision and the job row need."""

    kind: str  # token_invalid | permission | poison | foreign_key | rate_limited | transient | unknown
    code: str
    message: str
    retry_after: float | None = None


def describe(exc: BaseException) -> ErrorInfo:
    """Classify an exception raised while running a job; messages are already token-free."""
    code = getattr(exc, "code", None) or type(exc).__name__
    meta_code = getattr(exc, "meta_code", None)
    if meta_code is not None:
        subcode = getattr(exc, "meta_subcode", None)
        code = f"meta_{meta_code}" + (f"_{subcode}" if subcode is not None else "")
    message = str(getattr(exc, "message", None) or type(exc).__name__)
    if isinstance(exc, MetaTokenInvalidError):
        return ErrorInfo("token_invalid", code, message)
    if isinstance(exc, MetaPermissionError):
        return ErrorInfo("permission", code, message)
    if isinstance(exc, errors.TokenCorruptError):
        return ErrorInfo("poison", code, message)
    if isinstance(exc, errors.EncryptionKeyMismatchError):
        return ErrorInfo("foreign_key", code, message)
    if isinstance(exc, MetaRateLimitedError):
        return ErrorInfo("rate_limited", code, message, exc.retry_after)
    if isinstance(exc, MetaTransientError | errors.DatabaseUnavailableError | TimeoutError):
        return ErrorInfo("transient", code, message)
    return ErrorInfo("unknown", code, message)


def _no_deadline(_job: Job) -> datetime | None:
    return None


@dataclass(frozen=True)
class RetryRules:
    """What each failure class means for one kind, and how patiently it retries."""

    backoff: Backoff = field(default_factory=Backoff)
    on_auth: Action = "discard"
    on_poison: Action = "discard"
    retry_foreign_key: bool = False
    on_exhausted: Action = "discard"
    # Retries are squeezed to land before this time minus `margin` (a token's expiry), if any.
    deadline: Callable[[Job], datetime | None] = _no_deadline
    margin: float = 0.0


def decide(
    exc: BaseException | ErrorInfo,
    job: Job,
    *,
    now: datetime,
    rules: RetryRules,
    rng: random.Random | None = None,
) -> Failed:
    """The fate of `job` after failure `exc` at `now`."""
    info = exc if isinstance(exc, ErrorInfo) else describe(exc)
    if info.kind in {"token_invalid", "permission"}:
        return Failed(job.id, rules.on_auth, None, info.code, info.message)
    if info.kind == "poison" or (info.kind == "foreign_key" and not rules.retry_foreign_key):
        return Failed(job.id, rules.on_poison, None, info.code, info.message)
    run_at = rules.backoff.next_run_at(
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        now=now,
        deadline=rules.deadline(job),
        margin=rules.margin,
        rng=rng,
    )
    if info.kind == "rate_limited":
        if job.attempt >= job.max_attempts:
            return Failed(job.id, "discard", None, info.code, info.message)
        wait = info.retry_after if info.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
        earliest = now + timedelta(seconds=wait)
        return Failed(job.id, "retry", max(run_at or earliest, earliest), info.code, info.message)
    if run_at is not None:
        return Failed(job.id, "retry", run_at, info.code, info.message)
    if info.kind in {"transient", "foreign_key"}:
        return Failed(job.id, "discard", None, info.code, info.message)
    return Failed(job.id, rules.on_exhausted, None, info.code, info.message)
