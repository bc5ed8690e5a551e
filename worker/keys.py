"""The start-up key check: a worker whose keys open none of the stored tokens stops with one line.

A single row under a foreign key (left mid-rotation, restored from a backup) fails only its own job;
but when *no* stored row matches the current or the previous key, the worker was started with the
wrong key, and running it would only fail every job.
"""

from __future__ import annotations

import logging

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.port import Database

log = logging.getLogger(__name__)


async def check_keys(db: Database, *, key: str, previous_key: str | None) -> rpc.KeyCheck:
    """Count the stored token rows each key opens; raise EncryptionKeyMismatchError when none does."""
    counts = await rpc.key_check(db, key=key, previous_key=previous_key)
    if counts.foreign and not counts.current and not counts.previous:
        raise errors.EncryptionKeyMismatchError(
            f"None of the {counts.foreign} stored token rows was encrypted with INSTAGRAM_TOKEN_ENCRYPTION_KEY"
            + (" or INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS" if previous_key else "")
            + "; start the worker with the key the tokens were stored with."
        )
    if counts.foreign:
        extra = {"count": counts.foreign, "current": counts.current, "previous": counts.previous}
        log.warning("worker.foreign_key_rows", extra=extra)
    return counts
