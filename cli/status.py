"""`instagram-dm status`: what an operator wants at a glance, read in one database call
(``instagram_ops_snapshot_v1``, the same one /metrics reads) — integrations by status, each job kind's
queue (depth, how late the most overdue job is, what was given up), webhook processing lag, last errors.

A database that does not answer is one line on stderr and exit 1, like every other command.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime

from instagram_dm import errors
from instagram_dm.bootstrap import open_database
from instagram_dm.db import rpc
from instagram_dm.settings import Settings

MESSAGE_WIDTH = 90
_COLUMNS = ("kind", "available", "running", "retryable", "due", "oldest due", "discarded 24h", "failed",
            "unroutable")  # fmt: skip


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        help="integrations, queues, processing lag and the last errors, for an operator",
        description=__doc__,
    )
    parser.set_defaults(func=run_status)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    settings.require("database")
    print(render(asyncio.run(_snapshot(settings))))
    return 0


async def _snapshot(settings: Settings) -> rpc.OpsSnapshot:
    db = await open_database(settings, max_size=1)
    try:
        async with asyncio.timeout(settings.db_timeout_seconds):
            return await rpc.ops_snapshot(db)
    except TimeoutError:
        raise errors.DatabaseUnavailableError(
            f"The database did not answer within {settings.db_timeout_seconds:g} s."
        ) from None
    finally:
        await db.close()


def duration(seconds: float) -> str:
    """A short human duration: ``-`` for none, ``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``4 d 3 h``."""
    if seconds <= 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{max(s, 1)} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _one_line(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= MESSAGE_WIDTH else flat[: MESSAGE_WIDTH - 1] + "…"


def _queue_row(q: rpc.OpsQueue) -> tuple[str, ...]:
    kept = q.kind == "webhooks"  # only deliveries are kept as failed / unroutable
    return (
        q.kind,
        str(q.available),
        str(q.running),
        str(q.retryable),
        str(q.due),
        duration(q.oldest_due_seconds),
        str(q.discarded_24h),
        str(q.failed) if kept else "-",
        str(q.unroutable) if kept else "-",
    )


def render(snapshot: rpc.OpsSnapshot) -> str:
    """The snapshot as plain text for a terminal."""
    out = [f"instagram-dm status at {_when(snapshot.server_time)}", ""]
    counts = snapshot.integrations
    statuses = ", ".join(f"{status} {counts[status]}" for status in sorted(counts)) or "none"
    out.append(f"Integrations: {statuses}")
    out.append(f"Tokens expiring within 7 days: {snapshot.tokens_expiring_7d}")
    out.append("")
    rows = [_COLUMNS] + [_queue_row(q) for q in snapshot.queues]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    out.append("Queues")
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)),
        ]
        out.append("  " + "  ".join(cells))
    out.append("")
    out.append(
        f"Webhook processing lag: {duration(snapshot.webhook_lag_seconds)} (oldest delivery not processed)"
    )
    out.append("")
    if not snapshot.last_errors:
        out.append("Last errors: none")
    else:
        out.append("Last errors")
        for error in snapshot.last_errors:
            out.append(
                f"  {_when(error.at)}  {error.source} {error.id}  {error.code}: {_one_line(error.message)}"
            )
    return "\n".join(out)
