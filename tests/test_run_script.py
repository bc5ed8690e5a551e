"""`make run` (scripts/run.sh) next to one that is already up: one line, and nothing of the first touched."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_make_run_refuses_in_one_line_before_touching_anything() -> None:
    """With the API's port taken, run.sh exits 1 with one line naming the port, before the database, the
    env file or the logs are touched."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", 54330))
        listener.listen()
    except OSError:
        pass  # already taken: that is the situation under test anyway
    log = ROOT / ".local" / "api.log"
    before = log.stat().st_mtime_ns if log.exists() else None
    try:
        result = subprocess.run(
            ["scripts/run.sh"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
        )
    finally:
        listener.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "run: port 54330 is already in use (is another make run up? stop it with Ctrl-C first)"
    ]
    assert result.stdout == ""
    assert (log.stat().st_mtime_ns if log.exists() else None) == before
