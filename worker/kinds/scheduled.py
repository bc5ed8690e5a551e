"""Scheduled messages: at its time, a row becomes one outbound message and its send job.

The turn happens in one SQL transaction (`instagram_scheduled_dispatch_v1`, SKIP LOCKED): the
template is rendered and the sending rules, the 24-hour window included, are checked at that moment,
and a row that breaks one fails with its code instead. The send kind does the rest, and the message's
outcome flows back onto the row. A worker killed mid-dispatch rolls the whole batch back, so each row
is handed over once, however many workers race.
"""

from __future__ import annotations

import logging
from datetime import datetime

from instagram_dm.db import rpc
from instagram_dm.db.port import Database

log = logging.getLogger(__name__)


class ScheduledDispatch:
    """The `worker.timers.Timer` that hands due scheduled messages to the send path."""

    name = "scheduled"
    channel = "instagram_scheduled_messages"

    def __init__(self, db: Database, *, batch: int = 200) -> None:
        self._db = db
        self._batch = batch

    async def fire(self) -> datetime | None:
        while True:
            result = await rpc.scheduled_dispatch(self._db, limit=self._batch)
            if result.dispatched or result.failed:
                log.info(
                    "scheduled.dispatched",
                    extra={"dispatched": result.dispatched, "failed": result.failed},
                )
            if result.dispatched + result.failed < self._batch:
                return result.next_due_at
