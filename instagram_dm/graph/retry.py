"""Bounded exponential backoff with jitter, for transient Graph errors only."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
        """Seconds to sleep before retry `retry_number` (1-based): base * 2**(n-1), capped, then
        "equal jitter" (uniform in [d/2, d]) so concurrent clients spread out but never retry at once."""
        capped = min(self.max_delay, self.base_delay * 2.0 ** max(0, retry_number - 1))
        if not self.jitter or capped == 0:
            return capped
        uniform = rng.uniform if rng is not None else random.uniform
        return float(uniform(capped / 2, capped))
