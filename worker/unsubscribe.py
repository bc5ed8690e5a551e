"""Page unsubscriptions queued by disconnect (`instagram_unsubscribe_claim/finish`): the second job kind."""

from __future__ import annotations

import logging
from typing import Any

from instagram_dm.db.port import Database
from instagram_dm.graph import (
    GraphClient,
    MetaPermissionError,
    MetaRateLimitedError,
    MetaTokenInvalidError,
    MetaTransientError,
)

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8


async def run_unsubscription(db: Database, graph: GraphClient, item: dict[str, Any]) -> str:
    """Unsubscribe one Page (or skip it when another live integration still uses it); return the outcome."""
    extra = {
        "unsubscription_id": item["id"],
        "page_id": item["facebook_page_id"],
        "attempt": item["attempts"],
    }
    outcome, code, message = "done", None, None
    if item.get("still_in_use"):
        outcome = "skipped"
    elif not item.get("page_token"):
        outcome, code, message = "failed", "no_token", "No Page token was stored."
    else:
        try:
            await graph.unsubscribe_page(str(item["facebook_page_id"]), str(item["page_token"]))
        except (MetaTokenInvalidError, MetaPermissionError) as exc:
            # The token no longer works: Meta has already dropped our access to the Page.
            outcome, code, message = "skipped", exc.code, exc.message
        except (MetaTransientError, MetaRateLimitedError) as exc:
            retry = int(item["attempts"]) < MAX_ATTEMPTS
            outcome, code, message = ("retry" if retry else "failed"), exc.code, exc.message
        except Exception as exc:  # unknown: record it, do not retry forever
            retry = int(item["attempts"]) < MAX_ATTEMPTS
            outcome = "retry" if retry else "failed"
            code = getattr(exc, "code", type(exc).__name__)
            message = getattr(exc, "message", type(exc).__name__)
    await db.rpc(
        "instagram_unsubscribe_finish",
        {"p_id": item["id"], "p_outcome": outcome, "p_error_code": code, "p_error_message": message},
    )
    log.info("unsubscribe.finished", extra={**extra, "outcome": outcome, "error_code": code})
    return outcome
