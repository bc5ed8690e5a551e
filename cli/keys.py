"""`instagram-dm rotate-key`: re-encrypt every stored token from the previous key to the current one.

The new key is INSTAGRAM_TOKEN_ENCRYPTION_KEY; the old one is read from
INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS (never from the command line, where `ps` would show it).
Batches commit one by one, so an interrupted rotation resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio

from instagram_dm import errors
from instagram_dm.bootstrap import open_database
from instagram_dm.db import rpc
from instagram_dm.settings import Settings

PREVIOUS_KEY_VAR = "INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS"
# Under running workers the last rows may be locked for a moment; how long to wait for them.
LOCKED_RETRIES = 20
LOCKED_WAIT_SECONDS = 0.5


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "rotate-key", help=f"re-encrypt tokens from ${PREVIOUS_KEY_VAR} to the current key"
    )
    parser.add_argument(
        "--batch-size", type=int, default=500, help="rows re-encrypted per transaction (default 500)"
    )
    parser.set_defaults(func=run)


def previous_key(settings: Settings) -> str:
    """The key to rotate from: the validated setting (environment first, then the env file)."""
    settings.require("crypto")
    if settings.previous_key is None:
        raise errors.ConfigError(f"{PREVIOUS_KEY_VAR} is not set (the key the tokens are encrypted with now)")
    return settings.previous_key


async def rotate(settings: Settings, old_key: str, batch_size: int) -> int:
    settings.require("crypto", "database")
    db = await open_database(settings, max_size=1)
    total, idle_rounds = 0, 0
    try:
        while True:
            result = await rpc.rotate_key_batch(
                db, old_key=old_key, new_key=settings.token_encryption_key.reveal(), batch=batch_size
            )
            total += result.rotated
            idle_rounds = 0 if result.rotated else idle_rounds + 1
            print(f"rotated {total}, remaining {result.remaining}", flush=True)
            if result.remaining and idle_rounds <= LOCKED_RETRIES:
                if not result.rotated:
                    # The rows left are locked for the moment (a refresh or disconnect under way, the
                    # batch skips locked rows): wait for them instead of giving up.
                    await asyncio.sleep(LOCKED_WAIT_SECONDS)
                continue
            if result.foreign:
                print(f"note: {result.foreign} rows use a third key and were left alone")
            return 0 if result.remaining == 0 else 1
    finally:
        await db.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch_size < 1:
        raise errors.BadRequestError("--batch-size must be at least 1")
    return asyncio.run(rotate(settings, previous_key(settings), args.batch_size))
