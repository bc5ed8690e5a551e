"""Early warnings after a refresh. Facebook Login has no refresh token and Meta does not document that
re-exchanging a valid long-lived token extends it, so the worker checks what it got and warns an admin
days before the connection stops working."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

NOT_EXTENDED = "token_not_extended"
DATA_ACCESS_EXPIRING = "data_access_expiring"
# Meta may move an expiry by seconds; anything under this is "did not move".
EXTENSION_TOLERANCE = timedelta(hours=1)


@dataclass(frozen=True)
class HealthWarning:
    code: str
    message: str
    deadline: datetime


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%d")


def check(
    *,
    now: datetime,
    old_expires_at: datetime | None,
    new_expires_at: datetime | None,
    data_access_expires_at: datetime | None,
    window: timedelta,
) -> HealthWarning | None:
    """The most urgent warning, or None.

    - the new expiry is not later than the old one: the connection ends at that time;
    - data access lapses before the next refresh would look again (``new expiry - window``).
    """
    found: list[HealthWarning] = []
    if (
        new_expires_at is not None
        and old_expires_at is not None
        and new_expires_at <= old_expires_at + EXTENSION_TOLERANCE
    ):
        found.append(
            HealthWarning(
                NOT_EXTENDED,
                f"Meta did not extend the Instagram connection; it stops working on {_date(new_expires_at)} "
                "unless an admin reconnects it.",
                new_expires_at,
            )
        )
    if data_access_expires_at is not None:
        next_look = (new_expires_at - window) if new_expires_at is not None else now + window
        if data_access_expires_at <= max(next_look, now + window):
            found.append(
                HealthWarning(
                    DATA_ACCESS_EXPIRING,
                    f"Meta's data access for the Instagram connection lapses on "
                    f"{_date(data_access_expires_at)}; an admin should reconnect before then.",
                    data_access_expires_at,
                )
            )
    return min(found, key=lambda w: w.deadline) if found else None
