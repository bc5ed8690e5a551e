"""Failure -> fate, by Meta error class, for each kind's rules; and the early warnings after a refresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instagram_dm import errors
from instagram_dm.backoff import Backoff
from instagram_dm.graph import (
    MetaInvalidRequestError,
    MetaOtherError,
    MetaPermissionError,
    MetaRateLimitedError,
    MetaTokenInvalidError,
    MetaTransientError,
)
from worker import health
from worker.kinds.refresh import RefreshJob, refresh_rules
from worker.kinds.unsubscribe import UnsubscribeJob, UnsubscribeKind
from worker.retry import decide, describe

NOW = datetime(2026, 11, 26, 3, 15, tzinfo=UTC)
BACKOFF = Backoff(base=30, cap=3600, jitter=False)
REFRESH = refresh_rules(BACKOFF)
UNSUBSCRIBE = UnsubscribeKind(None, None, key="k" * 32, backoff=BACKOFF).rules  # type: ignore[arg-type]


def job(
    attempt: int = 1, max_attempts: int = 10, expires_in: timedelta | None = timedelta(days=3)
) -> RefreshJob:
    return RefreshJob(
        id=7,
        integration_id="i",
        imo_id="m",
        attempt=attempt,
        max_attempts=max_attempts,
        token_expires_at=NOW + expires_in if expires_in is not None else None,
        data_access_expires_at=None,
    )


def fate(exc: BaseException, **kw: object) -> tuple[str, datetime | None]:
    failed = decide(exc, job(**kw), now=NOW, rules=REFRESH)  # type: ignore[arg-type]
    return failed.action, failed.run_at


def unsubscribe_fate(exc: BaseException, attempt: int = 1) -> tuple[str, datetime | None]:
    unsubscription = UnsubscribeJob(
        id="u", attempt=attempt, max_attempts=8, facebook_page_id="p", integration_id=None, still_in_use=False
    )
    failed = decide(exc, unsubscription, now=NOW, rules=UNSUBSCRIBE)
    return failed.action, failed.run_at


@pytest.mark.parametrize(
    "exc",
    [
        MetaTokenInvalidError("expired", meta_code=190, meta_subcode=463),
        MetaTokenInvalidError("invalid", meta_code=102),
        MetaPermissionError("perm", meta_code=10),
        MetaPermissionError("perm", meta_code=200),
    ],
)
def test_token_and_permission_errors_ask_for_reauth_on_the_first_attempt(exc: Exception) -> None:
    """190/102 and 10/200-299 discard at once and mark the integration reauth_required."""
    assert fate(exc) == ("reauth", None)


def test_error_code_carries_meta_code_and_subcode() -> None:
    """The stored error code is meta_<code>_<subcode>."""
    assert describe(MetaTokenInvalidError("x", meta_code=190, meta_subcode=460)).code == "meta_190_460"


def test_rate_limit_retries_no_sooner_than_metas_regain_time() -> None:
    """A rate limit with a 45-minute regain time retries at now + 45 minutes, not at the backoff's 30 s."""
    action, run_at = fate(MetaRateLimitedError("slow down", meta_code=4, retry_after=45 * 60))
    assert action == "retry"
    assert run_at == NOW + timedelta(minutes=45)


def test_rate_limit_without_a_regain_time_waits_a_default() -> None:
    """Without usage headers the retry waits the default 15 minutes."""
    assert fate(MetaRateLimitedError("slow", meta_code=613))[1] == NOW + timedelta(minutes=15)


def test_transient_retries_with_backoff() -> None:
    """A 5xx on attempt 2 retries after 60 s (base 30 doubled)."""
    assert fate(MetaTransientError("down", meta_http_status=503), attempt=2) == (
        "retry",
        NOW + timedelta(seconds=60),
    )


def test_transient_on_the_last_attempt_discards_but_never_asks_for_reauth() -> None:
    """An outage that outlasts every attempt discards the job and leaves the integration connected."""
    assert fate(MetaTransientError("down", meta_http_status=503), attempt=10) == ("discard", None)


def test_unknown_errors_retry_then_mark_the_integration_error() -> None:
    """Unknown errors (368, 100, anything) retry, and on the last attempt set the integration to error."""
    assert fate(MetaOtherError("policy", meta_code=368))[0] == "retry"
    assert fate(MetaInvalidRequestError("bad", meta_code=100), attempt=10) == ("error", None)
    assert fate(RuntimeError("bug"), attempt=10) == ("error", None)


@pytest.mark.parametrize("exc", [errors.EncryptionKeyMismatchError(), errors.TokenCorruptError()])
def test_an_unreadable_token_is_poison_for_its_refresh(exc: Exception) -> None:
    """Another key's fingerprint or damaged ciphertext: no retry of this job; poison (status kept, reason shown)."""
    assert fate(exc, attempt=1) == ("poison", None)


def test_a_damaged_token_discards_an_unsubscription_at_once() -> None:
    """An unsubscription whose Page token is damaged ciphertext is discarded on its first attempt."""
    assert unsubscribe_fate(errors.TokenCorruptError(), attempt=1) == ("discard", None)


def test_another_keys_token_is_retried_by_an_unsubscription() -> None:
    """Under another key (a rolling key change) an unsubscription retries with backoff, then discards."""
    assert unsubscribe_fate(errors.EncryptionKeyMismatchError(), attempt=1) == (
        "retry",
        NOW + timedelta(seconds=30),
    )
    assert unsubscribe_fate(errors.EncryptionKeyMismatchError(), attempt=8) == ("discard", None)


def test_unsubscribe_outage_retries_with_the_common_backoff_then_discards() -> None:
    """The unsubscribe kind retries an outage after base * 2**(n-1) and discards after its last attempt."""
    assert unsubscribe_fate(MetaTransientError("down", meta_http_status=502), attempt=2) == (
        "retry",
        NOW + timedelta(seconds=60),
    )
    assert unsubscribe_fate(MetaTransientError("down", meta_http_status=502), attempt=8) == ("discard", None)
    assert unsubscribe_fate(RuntimeError("bug"), attempt=8) == ("discard", None)


def test_retries_of_a_refresh_land_before_the_token_expires() -> None:
    """With 20 minutes left and a 10-minute margin, the retry is squeezed into the remaining 10 minutes."""
    action, run_at = fate(MetaTransientError("down", meta_http_status=503), expires_in=timedelta(minutes=20))
    assert action == "retry" and run_at is not None
    assert run_at <= NOW + timedelta(minutes=10)


def test_database_outage_is_transient() -> None:
    """A database that went away mid-job is retried like a Meta outage."""
    assert describe(errors.DatabaseUnavailableError()).kind == "transient"


@given(attempt=st.integers(1, 10), status=st.sampled_from([500, 502, 503, 504]), hours=st.floats(0, 500))
def test_an_outage_never_asks_for_reauth(attempt: int, status: int, hours: float) -> None:
    """Whatever the attempt and time left, a transient failure is retry or discard, never reauth/error."""
    action, _ = fate(
        MetaTransientError("down", meta_http_status=status),
        attempt=attempt,
        expires_in=timedelta(hours=hours),
    )
    assert action in {"retry", "discard"}


def test_warning_when_the_expiry_did_not_move() -> None:
    """Re-exchange returning the same expiry warns token_not_extended with that expiry as deadline."""
    old = NOW + timedelta(days=5)
    warning = health.check(
        now=NOW, old_expires_at=old, new_expires_at=old, data_access_expires_at=None, window=timedelta(days=7)
    )
    assert warning is not None
    assert (warning.code, warning.deadline) == (health.NOT_EXTENDED, old)


def test_no_warning_when_the_expiry_moved_and_data_access_lasts() -> None:
    """A 60-day extension with data access for 90 days is fine."""
    assert (
        health.check(
            now=NOW,
            old_expires_at=NOW + timedelta(days=5),
            new_expires_at=NOW + timedelta(days=60),
            data_access_expires_at=NOW + timedelta(days=90),
            window=timedelta(days=7),
        )
        is None
    )


def test_warning_when_data_access_lapses_before_the_next_refresh() -> None:
    """Data access ending in 30 days, before the next refresh (in 53 days), warns data_access_expiring."""
    warning = health.check(
        now=NOW,
        old_expires_at=NOW + timedelta(days=5),
        new_expires_at=NOW + timedelta(days=60),
        data_access_expires_at=NOW + timedelta(days=30),
        window=timedelta(days=7),
    )
    assert warning is not None
    assert warning.code == health.DATA_ACCESS_EXPIRING
    assert "2026-12-26" in warning.message
