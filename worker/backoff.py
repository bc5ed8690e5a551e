"""When to retry a failed job: exponential backoff with equal jitter, capped so that every remaining
attempt still lands before the token expires (after that no refresh is possible)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Backoff:
    """``base * 2**(attempt-1)`` seconds, at most ``cap``, jittered in ``[d/2, d]``; ``margin`` is kept
    free before the deadline (the token's expiry) for the attempt itself to run."""

    base: float = 30.0
    cap: float = 6 * 3600.0
    margin: float = 600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.margin < 0:
            raise ValueError("Backoff delays must not be negative")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Uncapped-by-deadline delay in seconds after failed attempt `attempt` (1-based)."""
        raw = min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 60))
        if not self.jitter or raw == 0:
            return raw
        return (rng or random).uniform(raw / 2, raw)

    def next_run_at(
        self,
        *,
        attempt: int,
        max_attempts: int,
        now: datetime,
        deadline: datetime | None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to run the next attempt after failed attempt `attempt`, or None when none is left:
        attempts used up, or no time left before `deadline` (minus the margin).

        With a deadline the delay is at most ``budget / retries_left``, so however the retries go,
        each one is scheduled before ``deadline - margin``.
        """
        retries_left = max_attempts - attempt
        if retries_left <= 0:
            return None
        delay = self.delay(attempt, rng)
        if deadline is not None:
            budget = (deadline - now).total_seconds() - self.margin
            if budget <= 0:
                return None
            delay = min(delay, budget / retries_left)
        return now + timedelta(seconds=delay)

    def not_before(self, run_at: datetime, earliest: datetime) -> datetime:
        """`run_at`, moved to `earliest` when that is later (rate limits: Meta's regain-access time)."""
        return max(run_at, earliest)
