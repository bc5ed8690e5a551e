"""The worker loop.

One asyncio task per claimed job, never more than ``concurrency`` at once; the loop claims exactly as
many jobs as it has free slots (`instagram_refresh_claim_v1`), so nothing sits locked and idle. It
wakes on a NOTIFY (asyncpg transport), a finished job, the poll interval, or a stop request.
Outcomes are written in batches: every completion gathered since the last pass goes in one
`instagram_refresh_complete_v1` call; failures go one by one through `instagram_refresh_fail_v1`.

Shutdown (`request_stop`, SIGTERM/SIGINT via `worker.signals`): stop claiming, give in-flight jobs
``grace_period`` seconds, cancel the rest and hand them back with `instagram_refresh_release_v1`
(no attempt charged). A second signal cuts the grace period short. A crash loses nothing either:
leases expire and any worker claims the jobs again, and the old token stays stored until a new one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from instagram_dm import errors
from instagram_dm.db.port import Database
from instagram_dm.graph import GraphClient
from worker.backoff import Backoff
from worker.decisions import decide, describe
from worker.jobs import Completed, Failed, Outcome, RefreshJob
from worker.unsubscribe import run_unsubscription

log = logging.getLogger(__name__)

CHANNEL = "instagram_refresh_jobs"
Handler = Callable[[RefreshJob], Awaitable[Completed]]
# Errors that no retry can fix: the worker stops (exit 1) and hands its jobs back untouched.
FATAL_ERRORS: tuple[type[errors.InstagramDMError], ...] = (
    errors.EncryptionKeyMismatchError,
    errors.RPCNotFoundError,
    errors.ConfigError,
)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WorkerOptions:
    """Knobs of the loop; the CLI sets them from flags and INSTAGRAM_WORKER_CONCURRENCY."""

    concurrency: int = 20
    poll_interval: float = 5.0
    lease_seconds: int = 300
    grace_period: float = 25.0
    listen: bool = True
    job_timeout: float | None = None  # default: half the lease
    unsubscribe_batch: int = 10
    exit_when_idle: bool = False  # stop once nothing is due and nothing runs (operators, benchmarks)
    backoff: Backoff = field(default_factory=Backoff)
    worker_id: str = field(default_factory=default_worker_id)

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 1000:
            raise errors.ConfigError("worker concurrency must be between 1 and 1000")
        if self.poll_interval <= 0 or self.lease_seconds < 1 or self.grace_period < 0:
            raise errors.ConfigError("poll interval and lease must be positive, grace period not negative")

    @property
    def effective_job_timeout(self) -> float:
        return self.job_timeout if self.job_timeout is not None else self.lease_seconds / 2


class Worker:
    """Claims refresh jobs and runs `handler` on each; see the module docstring for the lifecycle."""

    def __init__(
        self,
        db: Database,
        handler: Handler,
        *,
        key: str,
        graph: GraphClient | None = None,
        options: WorkerOptions | None = None,
        clock: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._handler = handler
        self._key = key
        self._graph = graph
        self.options = options or WorkerOptions()
        self._clock = clock
        self._rng = rng
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._wake = asyncio.Event()
        self._notified = False
        self._tasks: dict[asyncio.Task[None], RefreshJob] = {}
        self._outcomes: list[Outcome] = []
        self._to_release: list[int] = []
        self._side_task: asyncio.Task[None] | None = None
        self._exit_code = 0
        self.stats: dict[str, int] = {"claimed": 0, "completed": 0, "failed": 0, "released": 0, "stale": 0}

    @property
    def worker_id(self) -> str:
        return self.options.worker_id

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def _extra(self, **more: Any) -> dict[str, Any]:
        return {"worker_id": self.worker_id, **more}

    # ---- stopping --------------------------------------------------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        """Stop claiming and shut down; `force` (or a second request) skips the grace period."""
        if self._stop.is_set() or force:
            self._force.set()
        self._stop.set()
        self._wake.set()

    def on_signal(self, sig: object) -> None:
        log.info("worker.stopping", extra=self._extra(signal=str(sig), in_flight=self.in_flight))
        self.request_stop()

    def _fatal(self, exc: errors.InstagramDMError) -> None:
        log.critical("worker.fatal", extra=self._extra(error_code=exc.code, error=exc.message))
        self._exit_code = 1
        self.request_stop()

    # ---- the loop ----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; return the exit status (0 after a clean shutdown, 1 after a fatal error)."""
        opts = self.options
        log.info(
            "worker.started",
            extra=self._extra(
                concurrency=opts.concurrency,
                poll_interval=opts.poll_interval,
                lease_seconds=opts.lease_seconds,
                listen=opts.listen and self._db.supports_listen,
            ),
        )
        listener = (
            asyncio.create_task(self._listen(), name="worker-listen")
            if opts.listen and self._db.supports_listen
            else None
        )
        try:
            await self._loop()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await self._shutdown()
        log.info("worker.stopped", extra=self._extra(exit_code=self._exit_code, **self.stats))
        return self._exit_code

    async def _loop(self) -> None:
        opts = self.options
        want_claim = True
        next_poll = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            await self._flush()
            if self._stop.is_set():
                break
            now = time.monotonic()
            if now >= next_poll:
                want_claim = True
                next_poll = now + opts.poll_interval
                self._start_unsubscriptions()
            if self._notified:
                self._notified, want_claim = False, True
            free = opts.concurrency - len(self._tasks)
            if want_claim and free > 0:
                jobs = await self._claim(free)
                for job in jobs:
                    self._spawn(job)
                # A full batch suggests more are due: claim again as soon as a slot frees up.
                want_claim = len(jobs) == free
                if opts.exit_when_idle and not jobs and self._idle():
                    break
            if self._outcomes or self._stop.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_poll - time.monotonic()))

    async def _claim(self, limit: int) -> list[RefreshJob]:
        try:
            rows = await self._db.rpc(
                "instagram_refresh_claim_v1",
                {"p_worker": self.worker_id, "p_limit": limit, "p_lease_seconds": self.options.lease_seconds},
            )
        except FATAL_ERRORS as exc:
            self._fatal(exc)
            return []
        except errors.DatabaseError as exc:
            log.warning("worker.claim_failed", extra=self._extra(error_code=exc.code))
            return []
        jobs = [RefreshJob.from_row(row) for row in rows or []]
        if jobs:
            self.stats["claimed"] += len(jobs)
            log.debug("refresh.claimed", extra=self._extra(count=len(jobs)))
        return jobs

    def _spawn(self, job: RefreshJob) -> None:
        task = asyncio.create_task(self._run_job(job), name=f"refresh-job-{job.id}")
        self._tasks[task] = job
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._wake.set()

    async def _run_job(self, job: RefreshJob) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.options.effective_job_timeout):
                completed = await self._handler(job)
        except FATAL_ERRORS as exc:
            self._to_release.append(job.id)
            self._fatal(exc)
            return
        except Exception as exc:
            info = describe(exc)
            failed = decide(info, job, now=self._clock(), backoff=self.options.backoff, rng=self._rng)
            log.warning(
                "refresh.failed",
                extra=job.log_extra(
                    worker_id=self.worker_id,
                    error_kind=info.kind,
                    error_code=info.code,
                    error=info.message,
                    action=failed.action,
                    run_at=failed.run_at,
                ),
            )
            self._outcomes.append(failed)
        else:
            log.info(
                "refresh.completed",
                extra=job.log_extra(
                    worker_id=self.worker_id,
                    stored=completed.user_token is not None,
                    token_expires_at=completed.token_expires_at,
                    warning=completed.warning_code,
                    elapsed_ms=round((time.monotonic() - started) * 1000, 1),
                ),
            )
            self._outcomes.append(completed)

    async def _flush(self) -> None:
        """Write the outcomes gathered so far: completions in one call, failures one by one."""
        if not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, []
        completed = [o for o in outcomes if isinstance(o, Completed)]
        failed = [o for o in outcomes if isinstance(o, Failed)]
        if completed:
            try:
                result = await self._db.rpc(
                    "instagram_refresh_complete_v1",
                    {
                        "p_worker": self.worker_id,
                        "p_key": self._key,
                        "p_results": [c.as_result() for c in completed],
                    },
                )
            except FATAL_ERRORS as exc:
                self._to_release.extend(c.job_id for c in completed)
                self._fatal(exc)
            except errors.DatabaseError as exc:
                # Keep them for the next pass; the lease outlives a short database hiccup.
                extra = self._extra(error_code=exc.code, count=len(completed))
                log.warning("worker.complete_failed", extra=extra)
                self._outcomes.extend(completed)
                await asyncio.sleep(min(1.0, self.options.poll_interval))
            else:
                self.stats["completed"] += int(result.get("completed", 0))
                stale = int(result.get("stale", 0))
                if stale:
                    self.stats["stale"] += stale
                    log.warning("refresh.lease_lost", extra=self._extra(count=stale))
        for failure in failed:
            try:
                await self._db.rpc(
                    "instagram_refresh_fail_v1",
                    {
                        "p_job_id": failure.job_id,
                        "p_worker": self.worker_id,
                        "p_action": failure.action,
                        "p_run_at": failure.run_at,
                        "p_error_code": failure.error_code,
                        "p_error_message": failure.error_message,
                    },
                )
                self.stats["failed"] += 1
            except errors.DatabaseError as exc:
                log.warning(
                    "worker.fail_failed", extra=self._extra(job_id=failure.job_id, error_code=exc.code)
                )

    def _idle(self) -> bool:
        side_idle = self._side_task is None or self._side_task.done()
        return not self._tasks and not self._outcomes and side_idle

    # ---- wake-ups --------------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Set the wake event on every NOTIFY; reconnect after losing the LISTEN connection."""
        while not self._stop.is_set():
            try:
                notifications = await self._db.listen(CHANNEL)
            except (errors.DatabaseError, NotImplementedError) as exc:
                log.warning("worker.listen_failed", extra=self._extra(error=type(exc).__name__))
                await asyncio.sleep(self.options.poll_interval)
                continue
            try:
                async for _payload in notifications:
                    self._notified = True
                    self._wake.set()
            except errors.DatabaseError:
                log.warning("worker.listen_lost", extra=self._extra())
                await asyncio.sleep(min(1.0, self.options.poll_interval))
            finally:
                await notifications.close()

    # ---- page unsubscriptions (second job kind) ----------------------------------------------------

    def _start_unsubscriptions(self) -> None:
        if self._graph is None or self.options.unsubscribe_batch < 1:
            return
        if self._side_task is not None and not self._side_task.done():
            return
        self._side_task = asyncio.create_task(self._unsubscriptions(), name="worker-unsubscribe")

    async def _unsubscriptions(self) -> None:
        assert self._graph is not None  # noqa: S101  # _start_unsubscriptions checked it
        try:
            items = await self._db.rpc(
                "instagram_unsubscribe_claim", {"p_key": self._key, "p_limit": self.options.unsubscribe_batch}
            )
            if items:
                graph = self._graph
                await asyncio.gather(*(run_unsubscription(self._db, graph, item) for item in items))
        except FATAL_ERRORS as exc:
            self._fatal(exc)
        except errors.DatabaseError as exc:
            log.warning("unsubscribe.claim_failed", extra=self._extra(error_code=exc.code))

    # ---- shutdown ----------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        deadline = time.monotonic() + self.options.grace_period
        waiting = {*self._tasks, *([self._side_task] if self._side_task else [])}
        while waiting and not self._force.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            forced = asyncio.ensure_future(self._force.wait())
            await asyncio.wait({*waiting, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            forced.cancel()
            waiting = {t for t in waiting if not t.done()}
        cut_off = [job.id for task, job in self._tasks.items() if not task.done()]
        everything = [*self._tasks, *([self._side_task] if self._side_task else [])]
        for task in everything:
            task.cancel()
        await asyncio.gather(*everything, return_exceptions=True)
        await self._flush()
        release = [*cut_off, *self._to_release]
        if release:
            try:
                released = await self._db.rpc(
                    "instagram_refresh_release_v1", {"p_worker": self.worker_id, "p_job_ids": release}
                )
                self.stats["released"] += int(released or 0)
                log.info("refresh.released", extra=self._extra(count=released, job_ids=release))
            except errors.DatabaseError as exc:
                log.warning("worker.release_failed", extra=self._extra(error_code=exc.code))
