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
