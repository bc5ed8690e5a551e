"""`instagram-dm status`: the operator's picture in plain text, and one line when the database is away."""

from __future__ import annotations

import asyncpg

from cli.status import duration
from tests.db.test_ops_snapshot import seed_queues
from tests.test_cli import cli, good_env

__all__ = ["good_env"]  # the fixture, used here by name


async def test_status_prints_integrations_queues_lag_and_errors(
    pg: asyncpg.Connection, good_env: dict[str, str]
) -> None:
    """Integrations by status, one line per job kind with its due jobs and burials, the lag and the last
    errors, each on one line; exit 0."""
    iid = await seed_queues(pg)
    result = cli("status", env=good_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Integrations: connected 1" in out
    assert "Tokens expiring within 7 days: 1" in out
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ") and line.split()
    }
    assert rows["refresh"][1:5] == ["1", "0", "0", "1"]  # available, running, retryable, due
    assert rows["refresh"][-3:] == [
        "1",
        "-",
        "-",
    ]  # discarded in 24 h; failed / unroutable are webhooks' only
    assert rows["webhooks"][-2:] == ["1", "0"]
    assert "Webhook processing lag: 2 min" in out
    assert f"integration {iid}  token_not_extended: Meta kept the expiry." in out
    assert "Traceback" not in result.stderr


def test_status_with_the_database_down_is_one_line(good_env: dict[str, str]) -> None:
    """A database that refuses connections is one readable line on stderr and exit 1."""
    env = {**good_env, "DATABASE_URL": "postgresql://postgres:postgres@127.0.0.1:1/postgres"}
    result = cli("status", env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("instagram-dm status: ")
    assert "postgres:postgres" not in line


def test_durations_read_like_a_person_would_say_them() -> None:
    """Nothing is "-", then seconds, minutes, hours and days, two units at most."""
    assert [duration(s) for s in (0, 0.4, 42, 185, 7800, 360_000)] == ["-", "1 s", "42 s", "3 min 5 s",
                                                                        "2 h 10 min", "4 d 4 h"]  # fmt: skip
