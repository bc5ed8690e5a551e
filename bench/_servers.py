"""Start the sandbox and the API as real processes for the benchmarks (shared helper)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "cli.main"]
# DATABASE_URL wins; otherwise the embedded cluster on INSTAGRAM_DM_DB_PORT (as scripts/db.sh), default 54322.
_DB_PORT = os.environ.get("INSTAGRAM_DM_DB_PORT", "54322")
DATABASE_URL = os.environ.get("DATABASE_URL", f"postgresql://postgres:postgres@127.0.0.1:{_DB_PORT}/postgres")
JWT_SECRET = "bench-jwt-secret-with-at-least-32-characters"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_env(sandbox_url: str, api_url: str, *, database_url: str = DATABASE_URL) -> dict[str, str]:
    return {
        **os.environ,
        "INSTAGRAM_APP_ID": "sandbox-app-id",
        "INSTAGRAM_APP_SECRET": "sandbox-app-secret",
        "INSTAGRAM_TOKEN_ENCRYPTION_KEY": "bench-token-encryption-key-0123456789abcdef",
        "INSTAGRAM_OAUTH_REDIRECT_URI": f"{api_url}/functions/v1/instagram-oauth-callback",
        "INSTAGRAM_RETURN_URL": "http://app.test/messages",
        "META_GRAPH_BASE_URL": sandbox_url,
        "META_OAUTH_DIALOG_BASE_URL": sandbox_url,
        "DATABASE_URL": database_url,
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
        except httpx.HTTPError:
            time.sleep(0.05)
        else:
            return
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def servers(
    *,
    api: bool = True,
    database_url: str = DATABASE_URL,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Yield (sandbox_url, api_url, env) with both processes running; stop them afterwards. `database_url`
    is what the API (and whoever uses the yielded env) connects to; `env` adds to the environment; `log`
    takes both processes' output (else it goes to this process's)."""
    sandbox_url = f"http://127.0.0.1:{free_port()}"
    api_url = f"http://127.0.0.1:{free_port()}"
    full_env = {**bench_env(sandbox_url, api_url, database_url=database_url), **(env or {})}
    procs: list[subprocess.Popen[bytes]] = []
    out = log.open("ab") if log is not None else None
    try:
        port = sandbox_url.rsplit(":", 1)[1]
        procs.append(
            subprocess.Popen(
                [*CLI, "--env-file", "/dev/null", "sandbox", "--port", port],
                env=full_env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )
        )
        _wait(f"{sandbox_url}/_sandbox/state", procs[-1])
        if api:
            port = api_url.rsplit(":", 1)[1]
            procs.append(
                subprocess.Popen(
                    [*CLI, "--env-file", "/dev/null", "api", "--port", port],
                    env=full_env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=out,
                )
            )
            _wait(f"{api_url}/healthz", procs[-1])
        yield sandbox_url, api_url, full_env
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a stop that hangs must not leave the process behind
                proc.kill()
                proc.wait()
        if out is not None:
            out.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
