"""What every job kind is made of, and the queue calls they share.

A kind (one file in ``worker/kinds/``) is a :class:`JobKind`: a name, the NOTIFY channel its work
arrives on, the names of its four queue RPCs, its share of the worker's slots, its retry rules (what a
failure means, `worker.retry`), and two methods — ``parse`` a claimed row, ``run`` a job. The runner
knows no kind by name.

Every kind's RPCs have the same shapes (see ``supabase/migrations/20261201000002_instagram_job_kinds.sql``)::

    claim(p_worker, p_limit, p_lease_seconds)                          -> [{id, attempt, max_attempts, ...}]
    complete(p_worker, p_results, **kind.complete_args)                -> {completed, stale}
    fail(p_job_id, p_worker, p_action, p_run_at, p_error_code, p_error_message)
    release(p_worker, p_job_ids)                                       -> count

and one state vocabulary: available -> running -> completed | retryable | discarded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from instagram_dm import errors
from instagram_dm.db.port import Database

if TYPE_CHECKING:
    from worker.retry import RetryRules  # retry imports this module's values

JobId = int | str
# retry: again at run_at; discard: give up; error / reauth: give up and mark the integration so;
# poison: give up on a token no key opens, keep the integration's status, record the reason
Action = Literal["retry", "discard", "error", "reauth", "poison"]


@dataclass(frozen=True)
class Job:
    """What every claimed job has; kinds add their own fields in a subclass."""

    id: JobId
    attempt: int
    max_attempts: int

    def log_extra(self) -> dict[str, object]:
        return {"job_id": self.id, "attempt": self.attempt}


@dataclass(frozen=True)
class Done:
    """A job that ran to the end; `result` is the object its kind's complete RPC takes (without job_id)."""

    job: Job
    result: Mapping[str, Any] = field(repr=False)  # may hold tokens

    def as_result(self) -> dict[str, Any]:
        return {"job_id": self.job.id, **self.result}


@dataclass(frozen=True)
class Failed:
    """A failed run and what to do about it (see `worker.retry.decide`)."""

    job_id: JobId
    action: Action
    run_at: datetime | None
    error_code: str
    error_message: str


Outcome = Done | Failed
J = TypeVar("J", bound=Job)


@dataclass(frozen=True)
class QueueRPCs:
    """The names of a kind's four queue functions."""

    claim: str
    complete: str
    fail: str
    release: str


class JobKind(Protocol[J]):
    """One kind of background work; see the module docstring."""

    name: ClassVar[str]
    channel: ClassVar[str]
    rpcs: ClassVar[QueueRPCs]
    share: float  # at most this fraction of the worker's slots (at least one slot)
    rules: RetryRules  # what each class of failure means for this kind

    def complete_args(self) -> Mapping[str, Any]:
        """Arguments the complete RPC takes besides p_worker and p_results (a key, say)."""
        ...

    def parse(self, row: Mapping[str, Any]) -> J: ...

    async def run(self, job: J, *, worker_id: str) -> Mapping[str, Any]:
        """Do the work; return the result for the complete RPC. Raise to fail (see `rules`)."""
        ...


class Queue:
    """The four queue calls of one kind, through the database port."""

    def __init__(self, db: Database, rpcs: QueueRPCs, *, worker_id: str) -> None:
        self._db = db
        self._rpcs = rpcs
        self._worker_id = worker_id

    async def claim(self, limit: int, *, lease_seconds: int) -> list[Mapping[str, Any]]:
        rows = await self._db.rpc(
            self._rpcs.claim,
            {"p_worker": self._worker_id, "p_limit": limit, "p_lease_seconds": lease_seconds},
        )
        if not isinstance(rows, list):
            raise errors.DatabaseError(
                f"{self._rpcs.claim} did not return an array.", code="unexpected_result"
            )
        return rows

    async def complete(self, done: Sequence[Done], extra: Mapping[str, Any]) -> tuple[int, int]:
        """Finish `done` in one call; return (completed, stale)."""
        result = await self._db.rpc(
            self._rpcs.complete,
            {"p_worker": self._worker_id, "p_results": [d.as_result() for d in done], **extra},
        )
        if not isinstance(result, Mapping):
            raise errors.DatabaseError(
                f"{self._rpcs.complete} did not return an object.", code="unexpected_result"
            )
        return int(result.get("completed", 0)), int(result.get("stale", 0))

    async def fail(self, failure: Failed) -> None:
        await self._db.rpc(
            self._rpcs.fail,
            {
                "p_job_id": failure.job_id,
                "p_worker": self._worker_id,
                "p_action": failure.action,
                "p_run_at": failure.run_at,
                "p_error_code": failure.error_code,
                "p_error_message": failure.error_message,
            },
        )

    async def release(self, job_ids: Sequence[JobId]) -> int:
        released = await self._db.rpc(
            self._rpcs.release, {"p_worker": self._worker_id, "p_job_ids": list(job_ids)}
        )
        return int(released or 0)


def utcnow() -> datetime:
    """Now, aware (the default clock of the runner and the kinds; tests pass their own)."""
    return datetime.now(UTC)


def parse_when(value: object) -> datetime | None:
    """A timestamp from a claimed row (ISO text over REST, a datetime over asyncpg)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
