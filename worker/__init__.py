"""The background worker: token refresh jobs (fed by pg_cron) and Page unsubscriptions.

Modules, from pure to I/O::

    backoff     retry times: exponential with jitter, capped so the last attempt lands before expiry
    decisions   a failure (Meta error class, attempt, expiry) -> retry / discard / error / reauth
    health      early warnings: expiry not extended, data access about to lapse
    jobs        the job and outcome values the loop passes around
    refresh     the Facebook-Login refresh of one integration (Graph calls + tokens RPC)
    unsubscribe one queued Page unsubscription
    signals     SIGTERM/SIGINT -> stop, restoring the previous handlers
    runner      the loop: claim free slots, run, complete/fail in batches, LISTEN or poll, shut down

The core package (`instagram_dm`) never imports this one.
"""

from __future__ import annotations
