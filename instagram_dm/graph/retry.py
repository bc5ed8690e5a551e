"""In-call retries of transient Graph errors: a few attempts with the one :class:`~instagram_dm.backoff.Backoff`."""

from __future__ import annotations

import random
from dataclasses import dataclass

from instagram_dm.backoff import Backoff


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure; ``attempts`` counts the first try."""

    attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt, no retries (tests)."""
        return cls(attempts=1, base_delay=0.0, max_delay=0.0, jitter=False)

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to sleep before retry `retry_number` (1-based)."""
        return Backoff(self.base_delay, self.max_delay, self.jitter).delay(retry_number, rng)
