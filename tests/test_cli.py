"""The `instagram-dm` command: doctor's checks, one readable line (exit 1) for bad input, and where
rotate-key finds the previous key."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import asyncpg
import jwt
import pytest

from cli import keys
from instagram_dm.errors import ConfigError
from instagram_dm.settings import Settings
from tests.db.factories import DEMO_ADMIN, integration
from tests.fixtures.api import JWT_SECRET, TOKEN_KEY, settings_env

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "--env-file", "/dev/null", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def good_env(database_url: str, pg: object) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", **settings_env("http://127.0.0.1:9", database_url)}


def test_doctor_all_green(good_env: dict[str, str]) -> None:
    """With a full configuration and the migrated database, every doctor line is ok and it exits 0."""
    result = cli("doctor", env=good_env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("ok") for line in lines)
    assert any("pg_cron" in line for line in lines) and any("migrations:" in line for line in lines)


def test_doctor_names_the_missing_setting_and_the_fix(good_env: dict[str, str]) -> None:
    """A missing encryption key is one FAIL line naming the variable, with a fix line; exit 1."""
    env = {k: v for k, v in good_env.items() if k != "INSTAGRAM_TOKEN_ENCRYPTION_KEY"}
    result = cli("doctor", env=env)
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failing == ["FAIL  config: INSTAGRAM_TOKEN_ENCRYPTION_KEY is not set (at least 32 characters)"]
    assert "fix:" in result.stdout


def test_doctor_reports_an_unreachable_database(good_env: dict[str, str]) -> None:
    """A database that does not answer is a FAIL line with how to start it, not a traceback."""
    env = good_env | {"DATABASE_URL": "postgresql://postgres:postgres@127.0.0.1:9/postgres"}
    result = cli("doctor", env=env)
    assert result.returncode == 1
    assert "FAIL  database:" in result.stdout and "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("url_template", "line", "fix"),
    [
        (
            "postgresql://postgres:wrong-password@127.0.0.1:{port}/postgres",
            "FAIL  database: Cannot connect to the database 'postgres' at 127.0.0.1:{port}: the user or password "
            "was refused.",
            "check the user and password in DATABASE_URL",
        ),
        (
            "postgresql://postgres:postgres@127.0.0.1:{port}/no_such_database",
            "FAIL  database: Cannot connect to the database 'no_such_database' at 127.0.0.1:{port}: no such database.",
            "use a database that exists in DATABASE_URL",
        ),
        (
            "postgresql://postgres:postgres@127.0.0.1:9/postgres",
            "FAIL  database: Cannot connect to the database 'postgres' at 127.0.0.1:9: nothing listens there.",
            "start it with `make run` or `scripts/db.sh up`",
        ),
    ],
    ids=["wrong-password", "no-such-database", "not-running"],
)
def test_doctor_names_host_port_and_the_fix_that_matches(
    good_env: dict[str, str], url_template: str, line: str, fix: str
) -> None:
    """Each way the database connect fails is one line naming the database, host and port (never the password),
    with the fix for that failure: credentials, database name, or start it."""
    port = good_env["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]
    result = cli("doctor", env=good_env | {"DATABASE_URL": url_template.format(port=port)})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    index = lines.index(line.format(port=port))
    assert lines[index + 1].strip().startswith(f"fix: {fix}")
    assert "wrong-password" not in result.stdout + result.stderr


def test_api_refuses_a_short_key_in_one_line(good_env: dict[str, str]) -> None:
    """`instagram-dm api` with a 10-character key stops before serving, with one line naming the variable."""
    result = cli("api", "--port", "9", env=good_env | {"INSTAGRAM_TOKEN_ENCRYPTION_KEY": "0123456789"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "instagram-dm api: INSTAGRAM_TOKEN_ENCRYPTION_KEY must be at least 32 characters"
    ]


def test_placeholder_secret_is_refused_in_production(good_env: dict[str, str]) -> None:
    """A placeholder app secret stops the worker with a line naming it."""
    result = cli("worker", env=good_env | {"INSTAGRAM_APP_SECRET": "<meta-app-secret>"})
    assert result.returncode == 1
    assert "INSTAGRAM_APP_SECRET is a placeholder" in result.stderr


async def test_rotate_key_without_previous_key_is_one_line(
    pg: asyncpg.Connection, good_env: dict[str, str]
) -> None:
    """rotate-key without INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS says so in one line and changes nothing."""
    integration_id = await integration(pg, status="connected", key=TOKEN_KEY)
    stored = """select user_access_token_encrypted, token_key_fingerprint
                from public.instagram_integrations where id = $1"""
    before = await pg.fetchrow(stored, integration_id)
    result = cli("rotate-key", env=good_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "instagram-dm rotate-key: INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS is not set"
        " (the key the tokens are encrypted with now)"
    ]
    assert await pg.fetchrow(stored, integration_id) == before


def test_unknown_environment_is_one_line() -> None:
    """INSTAGRAM_DM_ENV=test (not a documented value) stops any subcommand with one line naming the variable."""
    env = {"PATH": "/usr/bin:/bin", **settings_env("http://127.0.0.1:9", "postgresql://u:p@127.0.0.1:9/x")}
    result = cli("doctor", env=env | {"INSTAGRAM_DM_ENV": "test"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "instagram-dm doctor: INSTAGRAM_DM_ENV must be 'production' or 'development', got 'test'"
    ]


# ---- rotate-key: where the previous key comes from --------------------------------------------------


KEY_A = "current-key-for-the-cli-tests-0123456789ab"
KEY_B = "previous-key-for-the-cli-tests-0123456789a"


def test_previous_key_comes_from_the_environment_first(tmp_path: Path) -> None:
    """keys.previous_key() prefers INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS from the environment over the file."""
    env_file = tmp_path / ".env"
    env_file.write_text(f"INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS={KEY_A}-file\n")
    environ = {"INSTAGRAM_TOKEN_ENCRYPTION_KEY": KEY_A, keys.PREVIOUS_KEY_VAR: KEY_B}
    assert keys.previous_key(Settings.from_environ(environ, env_file=env_file)) == KEY_B


def test_previous_key_falls_back_to_the_env_file(tmp_path: Path) -> None:
    """keys.previous_key() reads the --env-file when the environment does not set the variable."""
    env_file = tmp_path / ".env"
    env_file.write_text(f"INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS={KEY_B}\n")
    settings = Settings.from_environ({"INSTAGRAM_TOKEN_ENCRYPTION_KEY": KEY_A}, env_file=env_file)
    assert keys.previous_key(settings) == KEY_B


def test_previous_key_missing_everywhere_is_a_config_error(tmp_path: Path) -> None:
    """keys.previous_key() with the variable in neither place raises ConfigError naming it."""
    settings = Settings.from_environ(
        {"INSTAGRAM_TOKEN_ENCRYPTION_KEY": KEY_A}, env_file=tmp_path / "absent.env"
    )
    with pytest.raises(ConfigError, match="INSTAGRAM_TOKEN_ENCRYPTION_KEY_PREVIOUS is not set"):
        keys.previous_key(settings)


def test_previous_key_equal_to_the_current_one_is_refused(tmp_path: Path) -> None:
    """Rotating from a key to itself is a configuration error, before any database call."""
    environ = {"INSTAGRAM_TOKEN_ENCRYPTION_KEY": KEY_A, keys.PREVIOUS_KEY_VAR: KEY_A}
    with pytest.raises(ConfigError, match="must differ"):
        keys.previous_key(Settings.from_environ(environ, env_file=None))


def test_dev_token_is_a_valid_user_jwt(good_env: dict[str, str]) -> None:
    """dev-token prints an HS256 token for the demo admin that verifies with the JWT secret."""
    result = cli("dev-token", env=good_env)
    assert result.returncode == 0
    claims = jwt.decode(result.stdout.strip(), JWT_SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["sub"] == DEMO_ADMIN and claims["role"] == "authenticated"


async def test_webhooks_replay_queues_failed_deliveries(
    good_env: dict[str, str], pg: asyncpg.Connection
) -> None:
    """`webhooks replay --failed --since T` queues the failed deliveries received since T and says how many."""
    await pg.execute(
        """insert into public.instagram_webhook_events (body, body_sha256, state, finalized_at, received_at)
           select convert_to(n::text, 'utf8'), sha256(convert_to(n::text, 'utf8')),
                  case when n <= 3 then 'failed' else 'completed' end, now(),
                  case when n = 1 then now() - interval '3 days' else now() end
           from generate_series(1, 5) n"""
    )
    since = "2000-01-01T00:00Z"
    result = cli("webhooks", "replay", "--failed", "--since", since, env=good_env)
    assert (result.returncode, result.stdout.strip()) == (0, "queued 3 deliveries for processing")
    recent = cli("webhooks", "replay", "--since", "2099-01-01", env=good_env)
    assert recent.stdout.strip() == "queued 0 deliveries for processing"
    assert (
        await pg.fetchval("select count(*) from public.instagram_webhook_events where state = 'available'")
        == 3
    )


def test_webhooks_replay_with_a_bad_time_is_one_readable_line(good_env: dict[str, str]) -> None:
    """An unparseable --since is one line naming the value and an example, exit 1, no traceback."""
    result = cli("webhooks", "replay", "--since", "yesterday", env=good_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "instagram-dm webhooks: --since 'yesterday' is not an ISO 8601 time (e.g. 2026-12-01T00:00Z)"
    ]


def _options(
    parser: argparse.ArgumentParser, path: str = "instagram-dm"
) -> list[tuple[str, argparse.Action]]:
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            found.append((path, action))
    return found


def test_every_option_has_help_that_names_its_default() -> None:
    """Each option of every subcommand has a help text, and one with a default value says what it is."""
    from cli.main import build_parser

    missing = []
    for path, action in _options(build_parser()):
        name = f"{path} {'/'.join(action.option_strings) or action.dest}"
        if not action.help:
            missing.append(f"{name}: no help")
        elif action.default not in (None, False, argparse.SUPPRESS) and "default" not in action.help:
            missing.append(f"{name}: default {action.default!r} not in its help")
    assert missing == []


def test_refresh_now_with_an_integration_that_is_not_a_uuid_is_one_line(good_env: dict[str, str]) -> None:
    """`refresh-now --integration nope` says it is not a UUID, in one line, exit 1."""
    result = cli("refresh-now", "--integration", "nope", env=good_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "instagram-dm refresh-now: --integration 'nope' is not a UUID"
    ]


@pytest.mark.parametrize("command", ["api", "sandbox"])
def test_serving_on_a_busy_port_is_one_line(good_env: dict[str, str], command: str) -> None:
    """`api` / `sandbox` on a port already taken say so in one line (exit 1) and the API never logs that it
    started."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(command, "--port", str(port), env=good_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"instagram-dm {command}: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
