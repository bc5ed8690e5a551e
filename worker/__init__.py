"""The background worker: one loop for every kind of job (token refresh fed by pg_cron, Page
unsubscribes queued by disconnect; webhook processing, sends and scheduled sends to come).

Modules, from pure to I/O::

    queue       what a job kind is (`JobKind`), the common job/outcome values, the four queue calls
    retry       a failure (Meta error class, attempt, deadline) -> retry / discard / error / reauth,
                by each kind's `RetryRules` (backoff: `instagram_dm.backoff`, the one for everything)
    health      early warnings after a refresh: expiry not extended, data access about to lapse
    kinds/      one module per kind: `refresh`, `unsubscribe`
    keys        the start-up check that the worker's keys open the stored tokens
    signals     SIGTERM/SIGINT -> stop, restoring the previous handlers
    runner      the loop: claim free slots per kind, run, complete/fail in batches, LISTEN or poll, drain

The core package (`instagram_dm`) never imports this one.
"""

from __future__ import annotations
