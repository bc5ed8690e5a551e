"""Metering Meta API calls per IMO without one database write per call.

The worker runs each job in its own task with :data:`current_imo` set to the job's IMO; the Graph client
counts every request it sends into a :class:`CallMeter` under that IMO; the worker reports the counts in
one call every few seconds (``instagram_usage_add_calls_v1``) and once more at shutdown.
"""

from __future__ import annotations

from collections import Counter
from contextvars import ContextVar

__all__ = ["CallMeter", "current_imo"]

#: The IMO the running job works for (None outside a job, or for work no IMO owns).
current_imo: ContextVar[str | None] = ContextVar("instagram_dm_current_imo", default=None)


class CallMeter:
    """Meta API calls per IMO since the last :meth:`drain`."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def count(self, calls: int = 1) -> None:
        imo_id = current_imo.get()
        if imo_id is not None:
            self._counts[imo_id] += calls

    def drain(self) -> dict[str, int]:
        """The counts so far, and start again from zero."""
        counts, self._counts = dict(self._counts), Counter()
        return counts

    def restore(self, counts: dict[str, int]) -> None:
        """Put back counts a report could not store (they go with the next one)."""
        self._counts.update(counts)
