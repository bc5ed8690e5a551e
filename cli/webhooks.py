"""`instagram-dm webhooks replay [--failed] [--since T]`: process stored webhook deliveries again.

Processing is idempotent, so a replay only adds what is missing (a delivery that failed on a bug since
fixed, one that was unroutable). The worker picks the queued deliveries up.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from instagram_dm import errors
from instagram_dm.bootstrap import open_database
from instagram_dm.db import rpc
from instagram_dm.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    webhooks = sub.add_parser("webhooks", help="stored webhook deliveries (replay)")
    actions = webhooks.add_subparsers(dest="action", required=True, metavar="action")
    replay = actions.add_parser(
        "replay", help="queue stored deliveries for processing again", description=__doc__
    )
    replay.add_argument("--failed", action="store_true", help="only failed and discarded deliveries")
    replay.add_argument(
        "--since",
        metavar="T",
        help="only deliveries received at or after T (ISO 8601, e.g. 2026-12-01T00:00Z)",
    )
    replay.set_defaults(func=run_replay)


def parse_since(value: str | None) -> datetime | None:
    """An ISO 8601 time (UTC when no offset is given), or a readable BadRequestError."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise errors.BadRequestError(
            f"--since {value!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00Z)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def replay(settings: Settings, *, failed_only: bool, since: datetime | None) -> int:
    db = await open_database(settings, max_size=1)
    try:
        return await rpc.webhook_replay(db, failed_only=failed_only, since=since)
    finally:
        await db.close()


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("database")
    since = parse_since(args.since)
    queued = asyncio.run(replay(settings, failed_only=args.failed, since=since))
    print(f"queued {queued} deliveries for processing")
    return 0
