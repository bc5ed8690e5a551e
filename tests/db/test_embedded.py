"""scripts/db.sh: a scratch cluster migrated from empty by the Supabase CLI, idempotently, with clear failures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DB_SH = ROOT / "scripts" / "db.sh"
SUPABASE = ROOT / "node_modules" / ".bin" / "supabase"
MIGRATIONS = sorted(p.name.split("_", 1)[0] for p in (ROOT / "supabase" / "migrations").glob("*.sql"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_db(cmd: str, data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INSTAGRAM_DM_DB_DIR": str(data_dir), "INSTAGRAM_DM_DB_PORT": str(port)}
    return subprocess.run(
        [str(DB_SH), cmd], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    # Under the repo (not /tmp/pytest-of-root, which the postgres OS user cannot enter).
    path = ROOT / ".local" / "scratch" / uuid.uuid4().hex[:8]
    path.parent.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_fresh_cluster_migrates_from_empty_and_twice_is_a_no_op(scratch_dir: Path) -> None:
    """A new cluster gets every migration through the CLI; `up` again applies nothing and still succeeds."""
    assert MIGRATIONS, "no migrations found: the check below would pass vacuously"
    port = free_port()
    try:
        first = run_db("up", scratch_dir, port)
        assert first.returncode == 0, first.stderr
        url = f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres?sslmode=disable"
        listing = subprocess.run(
            [str(SUPABASE), "migration", "list", "--db-url", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=ROOT,
        ).stdout
        for version in MIGRATIONS:
            assert listing.count(version) >= 2, (
                f"{version} not applied:\n{listing}"
            )  # local and remote columns
        second = run_db("up", scratch_dir, port)
        assert second.returncode == 0, second.stderr
        log = (scratch_dir / "migrate.log").read_text()
        assert "Applying migration" not in log and "up to date" in log
    finally:
        run_db("stop", scratch_dir, port)


def test_taken_port_fails_with_one_clear_line(scratch_dir: Path) -> None:
    """When something else listens on the port, `up` stops at once with one line naming the port."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_db("start", scratch_dir, port)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert f"port {port}" in lines[-1] and "taken" in lines[-1]


def test_broken_data_folder_fails_with_one_clear_line(scratch_dir: Path) -> None:
    """A data folder that is not a cluster is reported with the command to remove it, not overwritten."""
    pgdata = scratch_dir / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "junk").write_text("not a cluster")
    result = run_db("start", scratch_dir, free_port())
    assert result.returncode == 1
    assert "not a usable cluster" in result.stderr and "rm -rf" in result.stderr
    assert (pgdata / "junk").exists()


@pytest.mark.slow
def test_job_kinds_migration_converts_existing_unsubscriptions(scratch_dir: Path) -> None:
    """Rows queued before 20261201000002 (pending, retried, running, done, skipped, failed) arrive in the
    common queue vocabulary, each with the constraints of its new state met (tokens only on live rows)."""
    reshape = "20261201000002"
    tree = scratch_dir / "tree"
    (tree / "supabase" / "migrations").mkdir(parents=True)
    shutil.copytree(ROOT / "scripts", tree / "scripts")
    shutil.copytree(ROOT / "supabase" / "embedded", tree / "supabase" / "embedded")
    for name in ("config.toml", "seed.sql"):
        shutil.copy(ROOT / "supabase" / name, tree / "supabase" / name)
    (tree / "node_modules").symlink_to(ROOT / "node_modules")
    migrations = sorted((ROOT / "supabase" / "migrations").glob("*.sql"))
    for path in migrations:
        if path.name < reshape:
            shutil.copy(path, tree / "supabase" / "migrations" / path.name)
    port = free_port()
    env = {**os.environ, "INSTAGRAM_DM_DB_DIR": str(scratch_dir / "db"), "INSTAGRAM_DM_DB_PORT": str(port)}

    def db_sh(cmd: str) -> None:
        done = subprocess.run(
            [str(tree / "scripts" / "db.sh"), cmd],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    def sql(statement: str) -> str:
        url = f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres"
        return subprocess.run(
            ["psql", "-qAtX", url, "-c", statement], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        db_sh("up")
        sql(
            """insert into public.instagram_page_unsubscriptions
                 (facebook_page_id, page_access_token_encrypted, token_key_fingerprint, state, attempts,
                  lease_expires_at, last_error_code)
               values ('p-pending', '\\x01', 'fp', 'pending', 0, null, null),
                      ('p-retried', '\\x01', 'fp', 'pending', 3, null, 'meta_2'),
                      ('p-running', '\\x01', 'fp', 'running', 1, now() + interval '5 minutes', null),
                      ('p-done', null, null, 'done', 1, null, null),
                      ('p-skipped', null, null, 'skipped', 1, null, 'page_in_use'),
                      ('p-failed', null, null, 'failed', 8, null, 'meta_2')"""
        )
        for path in migrations:
            if path.name >= reshape:
                shutil.copy(path, tree / "supabase" / "migrations" / path.name)
        db_sh("migrate")
        rows = sql(
            """select string_agg(format('%s:%s:%s:%s:%s', facebook_page_id, state, attempt,
                                        page_access_token_encrypted is not null, finalized_at is not null),
                                 ' ' order by facebook_page_id)
               from public.instagram_page_unsubscriptions"""
        )
        assert rows.split() == [
            "p-done:completed:1:f:t",
            "p-failed:discarded:8:f:t",
            "p-pending:available:0:t:f",
            "p-retried:retryable:3:t:f",
            "p-running:retryable:1:t:f",  # its old lease had no owner: any worker takes it again
            "p-skipped:completed:1:f:t",
        ]
    finally:
        db_sh("stop")
