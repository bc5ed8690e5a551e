"""The worker loop, one for every job kind (see `worker.queue.JobKind`).

One asyncio task per claimed job, never more than ``concurrency`` at once and never more than a kind's
share of them; each kind claims exactly as many jobs as it has free slots, so nothing sits locked and
idle. The loop wakes on a NOTIFY on any kind's channel (one LISTEN connection for all of them), a
finished job, the poll interval, or a stop request. Outcomes are written in batches per kind: every
completion gathered since the last pass goes in one complete call; failures one by one.

Timers (`worker.timers`) run beside the kinds: work due at a time, such as scheduled messages, each in a
task of its own that fires when its work is due, on a NOTIFY on its channel, or at the poll interval.

Shutdown (`request_stop`, SIGTERM/SIGINT via `worker.signals`): stop claiming, give in-flight jobs
``grace_period`` seconds, cancel the rest and hand them back through each kind's release RPC (no
attempt charged). A second signal cuts the grace period short. A crash loses nothing either: leases
expire and any worker claims the jobs again.

A failing job never stops the worker: only errors that no job can survive (a missing RPC, a broken
configuration) do, with exit status 1 and every job handed back untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from instagram_dm import errors, metrics, usage
from instagram_dm.db.port import Database
from worker import retry
from worker.queue import Done, Failed, Job, JobId, JobKind, Outcome, Queue, utcnow
from worker.timers import Timer

log = logging.getLogger(__name__)

# Errors from the database that no job can survive (a missing function, a missing grant, a refused service
# key, a broken configuration): the worker stops (exit 1) and hands its jobs back untouched.
FATAL_ERRORS: tuple[type[errors.InstagramDMError], ...] = (
    errors.RPCNotFoundError,
    errors.ConfigError,
    errors.ForbiddenError,
    errors.AuthError,
)

#: A timer whose work is due already (held by another worker) is fired again after this many seconds.
TIMER_MIN_DELAY = 0.2


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class WorkerOptions:
    """Knobs of the loop; the CLI sets them from flags and INSTAGRAM_WORKER_CONCURRENCY."""

    concurrency: int = 20
    poll_interval: float = 5.0
    lease_seconds: int = 300
    grace_period: float = 25.0
    listen: bool = True
    job_timeout: float | None = None  # default: half the lease
    exit_when_idle: bool = False  # stop once nothing is due and nothing runs (operators, benchmarks)
    worker_id: str = field(default_factory=default_worker_id)

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 1000:
            raise errors.ConfigError("worker concurrency must be between 1 and 1000")
        if self.poll_interval <= 0 or self.lease_seconds < 1 or self.grace_period < 0:
            raise errors.ConfigError("poll interval and lease must be positive, grace period not negative")
        if self.effective_job_timeout >= self.lease_seconds:
            # A job outliving its lease could be claimed and run by a second worker meanwhile.
            raise errors.ConfigError("the job timeout must be shorter than the lease")

    @property
    def effective_job_timeout(self) -> float:
        return self.job_timeout if self.job_timeout is not None else self.lease_seconds / 2


class _Lane:
    """One kind's share of the worker: its queue, its running tasks and its unwritten outcomes."""

    def __init__(self, kind: JobKind[Any], db: Database, options: WorkerOptions) -> None:
        if not 0 < kind.share <= 1:
            raise errors.ConfigError(f"the share of job kind {kind.name} must be in (0, 1]")
        self.kind = kind
        self.queue = Queue(db, kind.rpcs, worker_id=options.worker_id)
        self.limit = max(1, int(options.concurrency * kind.share))
        self.tasks: dict[asyncio.Task[None], Job] = {}
        self.outcomes: list[Outcome] = []
        self.to_release: list[JobId] = []
        self.want_claim = True
        self.drained = False  # the last claim found nothing
        self.waiting_since: float | None = None  # wanted work, but every slot was taken (since when)


class Worker:
    """Claims jobs of every kind given and runs them; see the module docstring for the lifecycle."""

    def __init__(
        self,
        db: Database,
        kinds: Sequence[JobKind[Any]],
        *,
        timers: Sequence[Timer] = (),
        options: WorkerOptions | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if not kinds:
            raise errors.ConfigError("a worker needs at least one job kind")
        names = [k.name for k in kinds]
        if len(set(names)) != len(names):
            raise errors.ConfigError(f"job kinds must have distinct names: {names}")
        self._db = db
        self.options = options or WorkerOptions()
        self._clock = clock
        self._lanes = [_Lane(kind, db, self.options) for kind in kinds]
        channels = [k.channel for k in kinds] + [t.channel for t in timers]
        if len(set(channels)) != len(channels):
            raise errors.ConfigError(f"job kinds and timers must have distinct NOTIFY channels: {channels}")
        self._by_channel = {lane.kind.channel: lane for lane in self._lanes}
        self._timers = {timer.channel: (timer, asyncio.Event()) for timer in timers}
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._wake = asyncio.Event()
        self._signals = 0
        self._exit_code = 0
        self.stats: dict[str, int] = {"claimed": 0, "completed": 0, "failed": 0, "released": 0, "stale": 0}

    @property
    def worker_id(self) -> str:
        return self.options.worker_id

    @property
    def in_flight(self) -> int:
        return sum(len(lane.tasks) for lane in self._lanes)

    def _extra(self, **more: Any) -> dict[str, Any]:
        return {"worker_id": self.worker_id, **more}

    # ---- stopping --------------------------------------------------------------------------------

    def request_stop(self, *, force: bool = False) -> None:
        """Stop claiming and shut down; `force` skips the grace period."""
        if force:
            self._force.set()
        self._stop.set()
        self._wake.set()

    def on_signal(self, sig: object) -> None:
        """SIGTERM/SIGINT: the first one stops gracefully, a second one cuts the grace period short."""
        self._signals += 1
        log.info("worker.stopping", extra=self._extra(signal=str(sig), in_flight=self.in_flight))
        self.request_stop(force=self._signals > 1)

    def _fatal(self, exc: errors.InstagramDMError) -> None:
        # However many jobs hit it, a fatal error is one graceful stop: jobs in flight still finish.
        log.critical("worker.fatal", extra=self._extra(error_code=exc.code, error=exc.message))
        self._exit_code = 1
        self.request_stop()

    # ---- the loop ----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; return the exit status (0 after a clean shutdown, 1 after a fatal error)."""
        opts = self.options
        listening = opts.listen and self._db.supports_listen
        log.info(
            "worker.started",
            extra=self._extra(
                kinds=[lane.kind.name for lane in self._lanes],
                timers=[timer.name for timer, _ in self._timers.values()],
                concurrency=opts.concurrency,
                poll_interval=opts.poll_interval,
                lease_seconds=opts.lease_seconds,
                listen=listening,
            ),
        )
        helpers = [asyncio.create_task(self._listen(), name="worker-listen")] if listening else []
        helpers += [
            asyncio.create_task(self._run_timer(timer, wake), name=f"timer-{timer.name}")
            for timer, wake in self._timers.values()
        ]
        try:
            await self._loop()
        finally:
            for helper in helpers:
                helper.cancel()
            # Whatever became of the LISTEN and timer tasks, they must not keep the jobs from being handed
            # back (a timer's work is one transaction: cancelled, it rolls back).
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await helper
            await self._shutdown()
        log.info("worker.stopped", extra=self._extra(exit_code=self._exit_code, **self.stats))
        return self._exit_code

    async def _loop(self) -> None:
        opts = self.options
        next_poll = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            await self._flush()
            if self._stop.is_set():
                break
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + opts.poll_interval
                for lane in self._lanes:
                    lane.want_claim = True
            await self._claim_round()
            if self._stop.is_set():
                break
            if opts.exit_when_idle and self._idle():
                break
            if any(lane.outcomes for lane in self._lanes):
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_poll - time.monotonic()))

    async def _claim_round(self) -> None:
        """Each lane that wants work claims its free slots. Lanes that found every slot taken go first,
        the one waiting longest first, then the least busy for its share: a waiting kind gets the next
        freed slot, however busy another kind keeps the rest (even when its jobs finish in lockstep)."""

        def order(lane: _Lane) -> tuple[float, float]:
            waited = float("inf") if lane.waiting_since is None else lane.waiting_since
            return waited, len(lane.tasks) / lane.limit

        for lane in sorted(self._lanes, key=order):
            if not lane.want_claim:
                lane.waiting_since = None
                continue
            free = min(lane.limit - len(lane.tasks), self.options.concurrency - self.in_flight)
            if free <= 0:
                if lane.waiting_since is None:
                    lane.waiting_since = time.monotonic()
                continue
            lane.waiting_since = None
            jobs = await self._claim(lane, free)
            for job in jobs:
                self._spawn(lane, job)
            lane.drained = not jobs
            # A full batch suggests more are due: claim again as soon as a slot frees up.
            lane.want_claim = len(jobs) == free

    async def _claim(self, lane: _Lane, limit: int) -> list[Job]:
        try:
            rows = await lane.queue.claim(limit, lease_seconds=self.options.lease_seconds)
        except FATAL_ERRORS as exc:
            self._fatal(exc)
            return []
        except errors.InstagramDMError as exc:
            log.warning("worker.claim_failed", extra=self._extra(kind=lane.kind.name, error_code=exc.code))
            return []
        jobs: list[Job] = []
        for row in rows:
            try:
                jobs.append(lane.kind.parse(row))
            except Exception as exc:  # a row this worker cannot read must not take the batch with it
                job_id = row.get("id") if isinstance(row, dict) else None
                log.error("job.unparseable", extra=self._extra(kind=lane.kind.name, job_id=job_id))
                if job_id is not None:
                    message = f"The worker could not read the claimed job ({type(exc).__name__})."
                    lane.outcomes.append(Failed(job_id, "discard", None, "unparseable_job", message))
        if jobs:
            self.stats["claimed"] += len(jobs)
            log.debug("job.claimed", extra=self._extra(kind=lane.kind.name, count=len(jobs)))
        return jobs

    def _spawn(self, lane: _Lane, job: Job) -> None:
        task = asyncio.create_task(self._run_job(lane, job), name=f"{lane.kind.name}-job-{job.id}")
        lane.tasks[task] = job

        def done(finished: asyncio.Task[None]) -> None:
            lane.tasks.pop(finished, None)
            self._wake.set()

        task.add_done_callback(done)

    async def _run_job(self, lane: _Lane, job: Job) -> None:
        started = time.monotonic()
        kind = lane.kind
        usage.current_imo.set(getattr(job, "imo_id", None))  # this task's Meta calls count for its IMO
        try:
            async with asyncio.timeout(self.options.effective_job_timeout):
                result = await kind.run(job, worker_id=self.worker_id)
        except FATAL_ERRORS as exc:
            lane.to_release.append(job.id)
            self._fatal(exc)
        except Exception as exc:
            failed = self._decide(lane, exc, job)
            log.warning(
                "job.failed",
                extra={
                    **job.log_extra(),
                    "kind": kind.name,
                    "worker_id": self.worker_id,
                    "error_code": failed.error_code,
                    "error": failed.error_message,
                    "action": failed.action,
                    "run_at": failed.run_at,
                },
            )
            lane.outcomes.append(failed)
        else:
            lane.outcomes.append(Done(job, result))
            metrics.JOB_DURATION.labels(kind.name).observe(time.monotonic() - started)
            if log.isEnabledFor(logging.DEBUG):  # the hot path: build no log record nobody reads
                elapsed = round((time.monotonic() - started) * 1000, 1)
                log.debug(
                    "job.completed", extra={**job.log_extra(), "kind": kind.name, "elapsed_ms": elapsed}
                )

    def _decide(self, lane: _Lane, exc: BaseException, job: Job) -> Failed:
        """The fate of `job` by its kind's rules; should deciding itself fail, a plain retry (attempts still
        count)."""
        try:
            return retry.decide(exc, job, now=self._clock(), rules=lane.kind.rules)
        except Exception as bug:
            log.error(
                "job.decide_failed",
                extra={**job.log_extra(), "kind": lane.kind.name, "error": type(bug).__name__},
            )
            run_at = self._clock() + timedelta(seconds=self.options.lease_seconds)
            return Failed(
                job.id, "retry", run_at, getattr(exc, "code", type(exc).__name__), type(exc).__name__
            )

    async def _flush(self) -> None:
        for lane in self._lanes:
            await self._flush_lane(lane)

    async def _flush_lane(self, lane: _Lane) -> None:
        """Write the lane's outcomes so far: completions in one call, failures one by one. What an outage
        kept from being written stays for the next pass, after a short pause."""
        if not lane.outcomes:
            return
        outcomes, lane.outcomes = lane.outcomes, []
        done = [o for o in outcomes if isinstance(o, Done)]
        failed = [o for o in outcomes if isinstance(o, Failed)]
        stored = await self._complete(lane, done, failed) if done else True
        for failure in failed:
            stored = await self._fail(lane, failure) and stored
        if not stored:
            await asyncio.sleep(min(1.0, self.options.poll_interval))

    async def _fail(self, lane: _Lane, failure: Failed) -> bool:
        """Record one failure; False when the database is away (the failure is kept for the next pass)."""
        try:
            await lane.queue.fail(failure)
        except FATAL_ERRORS as exc:
            lane.to_release.append(failure.job_id)
            self._fatal(exc)
        except errors.InstagramDMError as exc:
            log.warning(
                "worker.fail_failed",
                extra=self._extra(kind=lane.kind.name, job_id=failure.job_id, error_code=exc.code),
            )
            if isinstance(exc, errors.DatabaseUnavailableError):
                lane.outcomes.append(failure)  # the lease outlives a short hiccup
                return False
            # Otherwise not recordable: the lease expires and the job runs again (its attempt counted).
        else:
            self.stats["failed"] += 1
            metrics.JOBS.labels(lane.kind.name, failure.action).inc()
        return True

    async def _complete(self, lane: _Lane, done: list[Done], failed: list[Failed]) -> bool:
        """Finish `done` in one call. If the database refuses the batch for a reason other than an
        outage, finish them one by one, so one row it cannot store fails only its own job (its failure
        goes to `failed`). False when the database is away: what is left is kept for the next pass."""
        kind = lane.kind.name
        try:
            completed, stale = await lane.queue.complete(done, lane.kind.complete_args())
        except FATAL_ERRORS as exc:
            lane.to_release.extend(d.job.id for d in done)
            self._fatal(exc)
            return True
        except errors.DatabaseUnavailableError as exc:
            log.warning(
                "worker.complete_failed", extra=self._extra(kind=kind, error_code=exc.code, count=len(done))
            )
            lane.outcomes.extend(done)
            return False
        except Exception as exc:
            if len(done) == 1:
                log.warning("worker.complete_refused", extra={**done[0].job.log_extra(), "kind": kind})
                failed.append(self._decide(lane, exc, done[0].job))
                return True
            for index, one in enumerate(done):
                if not await self._complete(lane, [one], failed) or self._force.is_set():
                    lane.outcomes.extend(done[index + 1 :])  # the rest wait for the next pass
                    return False
            return True
        self.stats["completed"] += completed
        metrics.JOBS.labels(kind, "completed").inc(completed)
        if stale:
            self.stats["stale"] += stale
            metrics.JOBS.labels(kind, "stale").inc(stale)
            log.warning("job.lease_lost", extra=self._extra(kind=kind, count=stale))
        return True

    def _idle(self) -> bool:
        return all(lane.drained and not lane.tasks and not lane.outcomes for lane in self._lanes)

    # ---- timers ------------------------------------------------------------------------------------

    async def _run_timer(self, timer: Timer, wake: asyncio.Event) -> None:
        """Fire `timer` when it is due, on a NOTIFY on its channel, or at the poll interval."""
        while not self._stop.is_set():
            wake.clear()
            delay = self.options.poll_interval
            try:
                due = await timer.fire()
            except FATAL_ERRORS as exc:
                self._fatal(exc)
                return
            except errors.InstagramDMError as exc:
                log.warning("timer.failed", extra=self._extra(timer=timer.name, error_code=exc.code))
            else:
                if due is not None:
                    # Never a busy loop: rows already due but held by another worker's dispatch come back soon.
                    delay = min(delay, max(TIMER_MIN_DELAY, (due - self._clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)

    # ---- wake-ups --------------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Wake the loop (and the kind) on every NOTIFY; reconnect after losing the LISTEN connection."""
        channels = [*self._by_channel, *self._timers]
        while not self._stop.is_set():
            try:
                notifications = await self._db.listen(channels)
            except NotImplementedError:
                log.warning("worker.listen_unsupported", extra=self._extra())
                return
            except Exception as exc:  # whatever it was, polling goes on and LISTEN is tried again
                log.warning("worker.listen_failed", extra=self._extra(error=type(exc).__name__))
                await asyncio.sleep(self.options.poll_interval)
                continue
            try:
                async for notification in notifications:
                    lane = self._by_channel.get(notification.channel)
                    if lane is not None:
                        lane.want_claim = True
                        self._wake.set()
                    elif notification.channel in self._timers:
                        self._timers[notification.channel][1].set()
            except Exception as exc:
                log.warning("worker.listen_lost", extra=self._extra(error=type(exc).__name__))
                await asyncio.sleep(min(1.0, self.options.poll_interval))
            finally:
                with contextlib.suppress(Exception):
                    await notifications.close()

    # ---- shutdown ----------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        deadline = time.monotonic() + self.options.grace_period
        waiting: set[asyncio.Task[None]] = {t for lane in self._lanes for t in lane.tasks}
        while waiting and not self._force.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            forced = asyncio.ensure_future(self._force.wait())
            await asyncio.wait({*waiting, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            forced.cancel()
            waiting = {t for t in waiting if not t.done()}
        for lane in self._lanes:
            cut_off = [job.id for task, job in lane.tasks.items() if not task.done()]
            lane.to_release.extend(cut_off)
            everything = list(lane.tasks)
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
        try:
            await self._flush()
        except Exception as exc:  # the release below must happen whatever the flush met
            log.error("worker.flush_failed", extra=self._extra(error=type(exc).__name__))
        for lane in self._lanes:
            await self._release(lane)

    async def _release(self, lane: _Lane) -> None:
        if not lane.to_release:
            return
        ids, lane.to_release = lane.to_release, []
        try:
            released = await lane.queue.release(ids)
        except errors.InstagramDMError as exc:
            log.warning("worker.release_failed", extra=self._extra(kind=lane.kind.name, error_code=exc.code))
            return
        self.stats["released"] += released
        metrics.JOBS.labels(lane.kind.name, "released").inc(released)
        log.info("job.released", extra=self._extra(kind=lane.kind.name, count=released, job_ids=ids))
