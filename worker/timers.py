"""Timers: background work that is due at a time rather than claimed from a queue.

A timer's `fire` does whatever is due now (in the database, in one transaction, so a killed worker
leaves nothing half done) and says when it is next due. The runner calls it again at that time, on a
NOTIFY on its channel (the due time may have moved), or at the poll interval, whichever comes first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Timer(Protocol):
    """Work due at a time; see the module docstring."""

    name: str
    #: NOTIFY channel on which the next due time may have changed.
    channel: str

    async def fire(self) -> datetime | None:
        """Do what is due now; return when the next work is due (None: nothing known)."""
        ...
