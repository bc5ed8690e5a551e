"""The start-up key check: a worker whose keys open none of the stored tokens stops with one line.

A single row under a foreign key (left mid-rotation, restored from a backup) fails only its own job;
but when *no* stored row matches the current or the previous key, the worker was started with the
wrong key, and running it would only fail every job.
"""

from __future__ import annotations

import logging

from instagram_dm import errors
from instagram_dm.db.port import Database

log = logging.getLogger(__name__)


async def check_keys(db: Database, *, key: str, previous_key: str | None) -> dict[str, int]:
    """Count the stored token rows each key opens; raise EncryptionKeyMismatchError when none does."""
    counts = await db.rpc("instagram_key_check_v1", {"p_key": key, "p_previous_key": previous_key})
    current, previous, foreign = int(counts["current"]), int(counts["previous"]), int(counts["foreign"])
    if foreign and not current and not previous:
        raise errors.EncryptionKeyMismatchError(
            f"None of the {foreign} stored token rows was encrypted with INSTAGRAM_TOKEN_ENCRYPTION_KEY"
            + (" or INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS" if previous_key else "")
            + "; start the worker with the key the tokens were stored with."
        )
    if foreign:
        log.warning(
            "worker.foreign_key_rows", extra={"count": foreign, "current": current, "previous": previous}
        )
    return {"current": current, "previous": previous, "foreign": foreign}
