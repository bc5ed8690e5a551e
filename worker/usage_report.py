"""Reporting the Meta API calls the worker's jobs made, per IMO, in one database call every few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.port import Database
from instagram_dm.usage import CallMeter

log = logging.getLogger(__name__)


async def flush_calls(db: Database, meter: CallMeter) -> None:
    """Store the counts so far; what could not be stored goes with the next report."""
    counts = meter.drain()
    if not counts:
        return
    try:
        await rpc.usage_add_calls(db, counts=counts)
    except errors.InstagramDMError as exc:
        meter.restore(counts)
        log.warning("usage.report_failed", extra={"error_code": exc.code, "imos": len(counts)})


async def report_calls_forever(db: Database, meter: CallMeter, *, interval: float = 5.0) -> None:
    """Flush every `interval` seconds until cancelled, then once more."""
    try:
        while True:
            await asyncio.sleep(interval)
            await flush_calls(db, meter)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(flush_calls(db, meter))
