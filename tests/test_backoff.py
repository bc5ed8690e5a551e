"""The one backoff (Graph in-call retries and every job kind): exponential with jitter, never past a deadline."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instagram_dm.backoff import Backoff
from instagram_dm.graph import RetryPolicy

NOW = datetime(2026, 11, 26, 3, 15, tzinfo=UTC)


def test_delay_doubles_per_attempt_up_to_the_cap() -> None:
    """Without jitter the delays are base, 2*base, 4*base ... capped."""
    backoff = Backoff(base=30, cap=100, jitter=False)
    assert [backoff.delay(n) for n in range(1, 5)] == [30, 60, 100, 100]


def test_jitter_stays_within_half_to_full_delay() -> None:
    """Equal jitter keeps each delay in [d/2, d]."""
    backoff = Backoff(base=10, cap=1000)
    rng = random.Random(1)
    assert all(20 <= backoff.delay(3, rng) <= 40 for _ in range(100))


def test_no_retry_after_the_last_attempt() -> None:
    """Attempt 10 of 10 has no next run."""
    assert Backoff().next_run_at(attempt=10, max_attempts=10, now=NOW, deadline=None) is None


def test_no_retry_when_no_time_is_left_before_expiry() -> None:
    """A token expiring inside the safety margin gets no retry (it cannot be refreshed in time)."""
    deadline = NOW + timedelta(seconds=300)
    assert Backoff().next_run_at(attempt=1, max_attempts=10, now=NOW, deadline=deadline, margin=600) is None


def test_retries_are_squeezed_before_a_near_expiry() -> None:
    """With an hour left and 9 retries, the next one comes within 1/9 of the remaining budget."""
    backoff = Backoff(base=3600, cap=6 * 3600)
    run_at = backoff.next_run_at(
        attempt=1, max_attempts=10, now=NOW, deadline=NOW + timedelta(hours=1), margin=600
    )
    assert run_at is not None
    assert run_at - NOW <= timedelta(seconds=(3600 - 600) / 9)


def test_negative_delays_are_refused() -> None:
    """A negative base is a programming error."""
    with pytest.raises(ValueError, match="negative"):
        Backoff(base=-1)


@settings(max_examples=300, deadline=None)
@given(
    base=st.floats(min_value=0.0, max_value=86_400.0),
    cap=st.floats(min_value=0.0, max_value=7 * 86_400.0),
    margin=st.floats(min_value=0.0, max_value=3600.0),
    max_attempts=st.integers(min_value=1, max_value=30),
    budget=st.floats(min_value=0.0, max_value=8 * 86_400.0),
    run_seconds=st.floats(min_value=0.0, max_value=30.0),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_backoff_schedule_never_passes_expiry(
    *, base: float, cap: float, margin: float, max_attempts: int, budget: float, run_seconds: float, seed: int
) -> None:
    """Failing every attempt, each scheduled retry lands before expiry - margin, and no more than
    max_attempts attempts are ever made."""
    backoff = Backoff(base=base, cap=cap)
    rng = random.Random(seed)
    deadline = NOW + timedelta(seconds=budget)
    now, attempt = NOW, 1
    while True:
        run_at = backoff.next_run_at(
            attempt=attempt, max_attempts=max_attempts, now=now, deadline=deadline, margin=margin, rng=rng
        )
        if run_at is None:
            break
        assert now <= run_at <= deadline - timedelta(seconds=margin)
        attempt += 1
        now = run_at + timedelta(seconds=rng.uniform(0, run_seconds))  # the attempt runs, then fails
    assert attempt <= max_attempts


def test_graph_retry_policy_uses_the_same_backoff() -> None:
    """The Graph client's in-call delays are the one Backoff's: same doubling, same cap, same jitter."""
    policy = RetryPolicy(attempts=4, base_delay=0.2, max_delay=0.5, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3)] == [
        Backoff(0.2, 0.5, jitter=False).delay(n) for n in (1, 2, 3)
    ]
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.5]
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert RetryPolicy(base_delay=1, max_delay=8).delay(3, rng_a) == Backoff(1, 8).delay(3, rng_b)
