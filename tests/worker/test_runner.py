"""The kind-agnostic loop on its own: an in-memory queue behind the database port and a test kind,
for the branches a real database reaches only by accident (fatal errors mid-batch, a batch the
database refuses, an outage while completing)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from instagram_dm import errors
from instagram_dm.db.memory import Call, InMemoryDatabase
from instagram_dm.db.port import Notifications
from worker.queue import Job, QueueRPCs
from worker.retry import RetryRules
from worker.runner import Worker, WorkerOptions

OPTIONS = WorkerOptions(concurrency=10, poll_interval=0.02, lease_seconds=30, grace_period=5.0, listen=False)


class MemoryQueue(InMemoryDatabase):
    """The four queue RPCs of kind `fake`, in memory (a stand-in for one queue table)."""

    def __init__(
        self,
        available: list[int],
        *,
        refuse_batches_with: frozenset[int] = frozenset(),
        outages: int = 0,
        complete_raises: Exception | None = None,
        fail_outages: int = 0,
        bad_rows: frozenset[int] = frozenset(),
        listen_raises: Exception | None = None,
    ):
        super().__init__()
        self.complete_raises = complete_raises
        self.fail_outages = fail_outages
        self.bad_rows = bad_rows  # claimed rows missing a field the kind needs
        self.listen_raises = listen_raises
        self.supports_listen = listen_raises is not None
        self.available = available
        self.running: set[int] = set()
        self.completed: list[int] = []
        self.failed: list[tuple[int, str]] = []
        self.released: list[int] = []
        self.refuse_batches_with = refuse_batches_with  # complete raises when one of these is in the batch
        self.outages = outages  # complete raises DatabaseUnavailableError this many times

    def instagram_fake_claim(self, call: Call) -> list[dict[str, Any]]:
        limit = call.args["p_limit"]
        taken, self.available = self.available[:limit], self.available[limit:]
        self.running.update(taken)
        return [
            {"id": i, "attempt": 1} if i in self.bad_rows else {"id": i, "attempt": 1, "max_attempts": 3}
            for i in taken
        ]

    def instagram_fake_complete(self, call: Call) -> dict[str, int]:
        ids = [r["job_id"] for r in call.args["p_results"]]
        if self.complete_raises is not None:
            raise self.complete_raises
        if self.outages:
            self.outages -= 1
            raise errors.DatabaseUnavailableError()
        if self.refuse_batches_with & set(ids):
            raise errors.DatabaseError("cannot store one of these")
        self.completed += ids
        self.running -= set(ids)
        return {"completed": len(ids), "stale": 0}

    def instagram_fake_fail(self, call: Call) -> dict[str, bool]:
        if self.fail_outages:
            self.fail_outages -= 1
            raise errors.DatabaseUnavailableError()
        self.failed.append((call.args["p_job_id"], call.args["p_action"]))
        self.running.discard(call.args["p_job_id"])
        return {"stale": False}

    def instagram_fake_release(self, call: Call) -> int:
        self.released += call.args["p_job_ids"]
        self.running -= set(call.args["p_job_ids"])
        return len(call.args["p_job_ids"])

    async def listen(self, channels: Sequence[str]) -> Notifications:
        assert self.listen_raises is not None
        raise self.listen_raises


class FakeKind:
    """Runs each job for `seconds`; jobs in `fatal` raise an error no job survives."""

    name: ClassVar[str] = "fake"
    channel: ClassVar[str] = "fake_jobs"
    rpcs: ClassVar[QueueRPCs] = QueueRPCs(
        "instagram_fake_claim", "instagram_fake_complete", "instagram_fake_fail", "instagram_fake_release"
    )

    def __init__(
        self,
        *,
        seconds: float = 0.0,
        fatal: frozenset[int] = frozenset(),
        failing: frozenset[int] = frozenset(),
        share: float = 1.0,
    ) -> None:
        self.seconds = seconds
        self.fatal = fatal
        self.failing = failing  # raise an ordinary (retryable) error
        self.share = share
        self.rules = RetryRules()

    def complete_args(self) -> Mapping[str, Any]:
        return {}

    def parse(self, row: Mapping[str, Any]) -> Job:
        return Job(id=int(row["id"]), attempt=int(row["attempt"]), max_attempts=int(row["max_attempts"]))

    async def run(self, job: Job, *, worker_id: str) -> Mapping[str, Any]:
        if job.id in self.fatal:
            raise errors.RPCNotFoundError()
        if job.id in self.failing:
            raise RuntimeError("boom")
        await asyncio.sleep(self.seconds)
        return {}


async def test_fatal_errors_in_two_jobs_still_let_the_others_finish() -> None:
    """Two jobs hitting a fatal error stop the worker (exit 1) gracefully: the 8 jobs in flight complete
    and the 2 are handed back (a second fatal error is not a second stop request)."""
    queue = MemoryQueue(available=list(range(10)))
    kind = FakeKind(seconds=0.3, fatal=frozenset({3, 7}))
    worker = Worker(queue, [kind], options=OPTIONS)
    assert await asyncio.wait_for(worker.run(), 10) == 1
    assert sorted(queue.completed) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert sorted(queue.released) == [3, 7]


async def test_a_batch_the_database_refuses_is_completed_one_by_one() -> None:
    """When one result in a batch cannot be stored, the others still complete and only that job fails."""
    queue = MemoryQueue(available=list(range(5)), refuse_batches_with=frozenset({2}))
    worker = Worker(
        queue, [FakeKind()], options=WorkerOptions(**{**OPTIONS.__dict__, "exit_when_idle": True})
    )
    assert await asyncio.wait_for(worker.run(), 10) == 0
    assert sorted(queue.completed) == [0, 1, 3, 4]
    assert queue.failed == [(2, "retry")]


async def test_an_outage_while_completing_keeps_the_results_for_the_next_pass() -> None:
    """complete failing twice with the database unavailable loses nothing: the third pass stores all."""
    queue = MemoryQueue(available=list(range(3)), outages=2)
    worker = Worker(
        queue, [FakeKind()], options=WorkerOptions(**{**OPTIONS.__dict__, "exit_when_idle": True})
    )
    assert await asyncio.wait_for(worker.run(), 10) == 0
    assert sorted(queue.completed) == [0, 1, 2]
    assert len(queue.calls_to("instagram_fake_complete")) >= 3 and queue.failed == []


async def test_a_second_signal_cuts_the_grace_period_short() -> None:
    """One SIGTERM waits for in-flight jobs; a second one releases them at once."""
    queue = MemoryQueue(available=list(range(2)))
    worker = Worker(queue, [FakeKind(seconds=30)], options=OPTIONS)
    task = asyncio.create_task(worker.run())
    for _ in range(500):
        if worker.in_flight == 2:
            break
        await asyncio.sleep(0.01)
    assert worker.in_flight == 2
    worker.on_signal("SIGTERM")
    await asyncio.sleep(0.1)
    assert not task.done()
    worker.on_signal("SIGTERM")
    assert await asyncio.wait_for(task, 2) == 0
    assert sorted(queue.released) == [0, 1]


def test_a_worker_needs_kinds_with_distinct_names() -> None:
    """No kind, or two kinds of one name, is a configuration error."""
    queue = MemoryQueue(available=[])
    with pytest.raises(errors.ConfigError):
        Worker(queue, [], options=OPTIONS)
    with pytest.raises(errors.ConfigError, match="distinct"):
        Worker(queue, [FakeKind(), FakeKind()], options=OPTIONS)


def test_a_share_outside_zero_to_one_is_refused() -> None:
    """A kind asking for no slots or more than all of them is a configuration error."""
    with pytest.raises(errors.ConfigError, match="share"):
        Worker(MemoryQueue(available=[]), [FakeKind(share=0)], options=OPTIONS)


IDLE = WorkerOptions(**{**OPTIONS.__dict__, "exit_when_idle": True})


async def test_a_dead_listen_task_still_lets_the_worker_hand_its_jobs_back() -> None:
    """LISTEN failing with a raw OSError leaves the worker polling, and its stop still releases the
    jobs in flight (the failure never escapes into the shutdown)."""
    queue = MemoryQueue(available=[1, 2], listen_raises=OSError("connection reset"))
    worker = Worker(
        queue,
        [FakeKind(seconds=30)],
        options=WorkerOptions(**{**OPTIONS.__dict__, "listen": True, "grace_period": 0.1}),
    )
    task = asyncio.create_task(worker.run())
    for _ in range(500):
        if worker.in_flight == 2:
            break
        await asyncio.sleep(0.01)
    worker.request_stop()
    assert await asyncio.wait_for(task, 5) == 0
    assert sorted(queue.released) == [1, 2]


async def test_a_refused_grant_on_complete_stops_the_worker_and_releases_the_batch() -> None:
    """complete answering 42501 (a grant is missing): exit 1, and the finished jobs are handed back, not lost."""
    queue = MemoryQueue(available=[1, 2, 3], complete_raises=errors.ForbiddenError())
    worker = Worker(queue, [FakeKind()], options=IDLE)
    assert await asyncio.wait_for(worker.run(), 5) == 1
    assert sorted(queue.released) == [1, 2, 3] and queue.completed == []


async def test_a_claimed_row_the_kind_cannot_parse_fails_alone() -> None:
    """A claimed row missing a field is discarded as unparseable_job; the rest of the batch runs."""
    queue = MemoryQueue(available=[1, 2, 3], bad_rows=frozenset({2}))
    worker = Worker(queue, [FakeKind()], options=IDLE)
    assert await asyncio.wait_for(worker.run(), 5) == 0
    assert sorted(queue.completed) == [1, 3]
    assert queue.failed == [(2, "discard")]
    assert [c.args["p_error_code"] for c in queue.calls_to("instagram_fake_fail")] == ["unparseable_job"]


async def test_a_failure_met_by_an_outage_is_recorded_on_the_next_pass() -> None:
    """fail answering 'database unavailable' twice: the failure is kept and written on the third try."""
    queue = MemoryQueue(available=[1], fail_outages=2)
    worker = Worker(queue, [FakeKind(failing=frozenset({1}))], options=IDLE)
    assert await asyncio.wait_for(worker.run(), 10) == 0
    assert queue.failed == [(1, "retry")]
    assert len(queue.calls_to("instagram_fake_fail")) == 3


def test_a_job_timeout_at_or_past_the_lease_is_refused() -> None:
    """A job allowed to outlive its lease could run twice: refused."""
    with pytest.raises(errors.ConfigError, match="shorter than the lease"):
        WorkerOptions(lease_seconds=300, job_timeout=300)


def test_two_kinds_on_one_channel_are_refused() -> None:
    """Kinds sharing a NOTIFY channel would leave one deaf: refused."""

    class Other(FakeKind):
        name: ClassVar[str] = "other"

    with pytest.raises(errors.ConfigError, match="channels"):
        Worker(MemoryQueue(available=[]), [FakeKind(), Other()], options=OPTIONS)


class FakeTimer:
    """A timer that raises `errors` in turn, then records each fire and says it is due again `every` s."""

    name = "fake-timer"
    channel = "fake_timer"

    def __init__(self, *, every: float, raises: Sequence[Exception] = ()) -> None:
        self.every = every
        self.raises = list(raises)
        self.fired: list[float] = []

    async def fire(self) -> datetime:
        loop = asyncio.get_running_loop()
        if self.raises:
            raise self.raises.pop(0)
        self.fired.append(loop.time())
        return datetime.now(UTC) + timedelta(seconds=self.every)


SLOW_POLL = WorkerOptions(**{**OPTIONS.__dict__, "poll_interval": 30.0})


async def test_a_timer_fires_at_the_time_it_asked_for_not_the_poll_interval() -> None:
    """A timer due every 0.25 s fires about every 0.25 s although the poll interval is 30 s."""
    timer = FakeTimer(every=0.25)
    worker = Worker(MemoryQueue(available=[]), [FakeKind()], timers=[timer], options=SLOW_POLL)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(1.2)
    worker.request_stop()
    assert await asyncio.wait_for(task, 5) == 0
    gaps = [b - a for a, b in zip(timer.fired, timer.fired[1:], strict=False)]
    assert len(timer.fired) >= 4 and all(0.2 <= g <= 0.45 for g in gaps), gaps


async def test_a_timer_outage_is_retried_and_a_fatal_error_stops_the_worker() -> None:
    """The database unavailable for a timer: it fires again at the poll interval; a missing RPC stops the
    worker with exit status 1."""
    flaky = FakeTimer(every=10, raises=[errors.DatabaseUnavailableError("down")])
    worker = Worker(MemoryQueue(available=[]), [FakeKind()], timers=[flaky], options=OPTIONS)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)
    worker.request_stop()
    assert await asyncio.wait_for(task, 5) == 0
    assert len(flaky.fired) >= 1 and not flaky.raises
    broken = FakeTimer(every=10, raises=[errors.RPCNotFoundError("no such function")])
    worker = Worker(MemoryQueue(available=[]), [FakeKind()], timers=[broken], options=SLOW_POLL)
    assert await asyncio.wait_for(worker.run(), 5) == 1


def test_a_timer_may_not_share_a_kinds_channel() -> None:
    """A timer listening on a kind's NOTIFY channel is a configuration error."""
    timer = FakeTimer(every=1)
    timer.channel = FakeKind.channel
    with pytest.raises(errors.ConfigError, match="distinct NOTIFY"):
        Worker(MemoryQueue(available=[]), [FakeKind()], timers=[timer], options=OPTIONS)
