"""Meta webhook deliveries: the verification handshake, the signature check, and durable storage with
group commit.

Nothing here parses a delivery: the receiver checks the signature over the exact bytes and stores them;
the worker's `webhooks` kind processes them in SQL (``supabase/migrations/20261202000001_instagram_receive.sql``).

:class:`DeliveryStore` is the group commit: concurrent requests wait on one shared multi-row insert (one
round trip, one WAL flush), so a receiver under load makes far fewer commits than it acknowledges
deliveries. A request is answered only after the insert holding its body has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Mapping

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.port import Database

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-hub-signature-256"
MAX_DELIVERY_BYTES = 1 << 20  # 1 MiB; Meta sends at most 1,000 events per POST
_SIGNATURE_PREFIX = "sha256="
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def signature_valid(body: bytes, header: str | None, app_secret: str) -> bool:
    """Whether `header` (``sha256=<hex>``) is the HMAC-SHA256 of the exact `body` bytes under `app_secret`,
    compared in constant time. Missing, malformed or wrong: False."""
    if not header or not app_secret or not header.startswith(_SIGNATURE_PREFIX):
        return False
    given = header[len(_SIGNATURE_PREFIX) :]
    if len(given) != 64 or not _HEX_DIGITS.issuperset(given):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.lower())


def handshake_challenge(params: Mapping[str, str], verify_token: str) -> str | None:
    """Meta's subscription check: the challenge to echo when the mode is ``subscribe`` and the verify token
    is ours (constant time), else None."""
    if not verify_token or params.get("hub.mode") != "subscribe":
        return None
    given = params.get("hub.verify_token", "")
    if not hmac.compare_digest(given.encode(), verify_token.encode()):
        return None
    challenge = params.get("hub.challenge")
    return challenge if challenge else None


def _expire(future: asyncio.Future[None]) -> None:
    """The timeout: the insert may still commit (Meta delivers again and the hash makes the repeat a no-op),
    but the request stops waiting for it."""
    if not future.done():
        future.set_exception(
            errors.DatabaseUnavailableError(
                "The delivery could not be stored in time; Meta will deliver it again."
            )
        )


class DeliveryStore:
    """Stores deliveries durably, sharing one insert among all the requests that arrive while the previous
    insert is in flight. At most `max_in_flight` inserts run at once, each of at most `max_batch` bodies."""

    def __init__(
        self, db: Database, *, max_batch: int = 500, max_in_flight: int = 2, timeout: float = 5.0
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or timeout <= 0:
            raise errors.ConfigError("delivery batches, in-flight inserts and the timeout must be positive")
        self._db = db
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        # (body, its future, the provider whose app signed it): one insert holds one provider's bodies
        self._pending: list[tuple[bytes, asyncio.Future[None], str]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    async def store(self, body: bytes, provider: str = "facebook_login") -> None:
        """Return once `body` (signed by `provider`'s app) is committed (or was already stored);
        DatabaseUnavailableError when the database does not answer within the timeout or refuses the insert."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # One timer per request, not wait_for + shield (a task and two futures each, on the hot path).
        timer = loop.call_later(self._timeout, _expire, future)
        self._pending.append((body, future, provider))
        self._start_inserts()
        try:
            await future
        finally:
            timer.cancel()

    def _start_inserts(self) -> None:
        while self._pending and len(self._in_flight) < self._max_in_flight:
            provider = self._pending[0][2]
            if all(item[2] == provider for item in self._pending):  # the usual case: one app
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            else:
                same = [item for item in self._pending if item[2] == provider]
                batch = same[: self._max_batch]
                taken = {id(item) for item in batch}
                self._pending = [item for item in self._pending if id(item) not in taken]
            pairs = [(body, future) for body, future, _ in batch]
            task = asyncio.create_task(self._insert(pairs, provider), name="webhook-ingest")
            self._in_flight.add(task)
            task.add_done_callback(self._inserted)

    def _inserted(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start_inserts()

    async def _insert(self, batch: list[tuple[bytes, asyncio.Future[None]]], provider: str) -> None:
        try:
            await rpc.webhook_ingest(self._db, bodies=[body for body, _ in batch], provider=provider)
        except Exception as exc:
            failure = (
                exc
                if isinstance(exc, errors.DatabaseUnavailableError)
                else errors.DatabaseUnavailableError("The delivery could not be stored.")
            )
            log.error(
                "webhook.store_failed",
                extra={"count": len(batch), "error_code": getattr(exc, "code", type(exc).__name__)},
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
        else:
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def close(self) -> None:
        """Let the inserts in flight finish (their requests are still waiting for them)."""
        while self._in_flight:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._in_flight, return_exceptions=True)
