"""The one backoff: exponential with "equal jitter", used by the Graph client's in-call retries and by
every job kind's retries in the worker."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Backoff:
    """``base * 2**(attempt-1)`` seconds, at most ``cap``, jittered uniformly in ``[d/2, d]`` so that
    concurrent clients spread out but never retry at once."""

    base: float = 30.0
    cap: float = 6 * 3600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("Backoff delays must not be negative")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based)."""
        raw = min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 60))
        if not self.jitter or raw == 0:
            return raw
        return float((rng or random).uniform(raw / 2, raw))

    def next_run_at(
        self,
        *,
        attempt: int,
        max_attempts: int,
        now: datetime,
        deadline: datetime | None = None,
        margin: float = 0.0,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to run the next attempt after failed attempt `attempt`, or None when none is left:
        attempts used up, or no time left before `deadline` minus `margin`.

        With a deadline the delay is at most ``budget / retries_left``, so however the retries go,
        each one is scheduled before ``deadline - margin`` (a token refresh must land before expiry).
        """
        retries_left = max_attempts - attempt
        if retries_left <= 0:
            return None
        delay = self.delay(attempt, rng)
        if deadline is not None:
            budget = (deadline - now).total_seconds() - margin
            if budget <= 0:
                return None
            delay = min(delay, budget / retries_left)
        return now + timedelta(seconds=delay)
