"""Values the loop passes around: a claimed job, and what running it produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


def _when(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class RefreshJob:
    """A claimed refresh job (ids and expiries only; tokens are fetched by the handler)."""

    id: int
    integration_id: str
    imo_id: str
    attempt: int
    max_attempts: int
    token_expires_at: datetime | None
    data_access_expires_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RefreshJob:
        return cls(
            id=int(row["id"]),
            integration_id=str(row["integration_id"]),
            imo_id=str(row["imo_id"]),
            attempt=int(row["attempt"]),
            max_attempts=int(row["max_attempts"]),
            token_expires_at=_when(row.get("token_expires_at")),
            data_access_expires_at=_when(row.get("data_access_expires_at")),
        )

    def log_extra(self, **more: object) -> dict[str, object]:
        return {
            "job_id": self.id,
            "integration_id": self.integration_id,
            "imo_id": self.imo_id,
            "attempt": self.attempt,
            **more,
        }


@dataclass(frozen=True)
class Completed:
    """A successful run; without ``user_token`` the job just finishes (nothing to store)."""

    job_id: int
    user_token: str | None = field(default=None, repr=False)
    page_token: str | None = field(default=None, repr=False)
    token_expires_at: datetime | None = None
    data_access_expires_at: datetime | None = None
    warning_code: str | None = None
    warning_message: str | None = None
    warning_deadline: datetime | None = None
    token_version: str | None = None  # of the tokens this refresh started from (see the complete RPC)

    def as_result(self) -> dict[str, Any]:
        """The JSON object `instagram_refresh_complete_v1` takes."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "job_id": self.job_id,
            "user_token": self.user_token,
            "page_token": self.page_token,
            "token_expires_at": iso(self.token_expires_at),
            "data_access_expires_at": iso(self.data_access_expires_at),
            "warning_code": self.warning_code,
            "warning_message": self.warning_message,
            "warning_deadline": iso(self.warning_deadline),
            "token_version": self.token_version,
        }


Action = Literal["retry", "discard", "error", "reauth"]


@dataclass(frozen=True)
class Failed:
    """A failed run and what to do about it (see `decisions.decide`)."""

    job_id: int
    action: Action
    run_at: datetime | None
    error_code: str
    error_message: str


Outcome = Completed | Failed
