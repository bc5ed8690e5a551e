"""The Messages page in a real browser: Debian's Chromium driven by Playwright (no browser download),
against the API and the worker started as real processes (`instagram-dm api`, `instagram-dm worker`) and
the session's sandbox, on the test database.

    stack    (module)    the API and worker processes; their base URL
    page_for (function)  a new browser page at a given viewport, failing the test on any console error
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.api import settings_env
from tests.worker.conftest import KEY

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = ROOT / ".local" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.slow

if not CHROMIUM.exists():  # `make test` installs it (scripts/chromium.sh); these tests never skip
    raise RuntimeError(
        f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (apt-get install chromium)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "--env-file", "/nonexistent", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(sandbox_server: str, database_url: str) -> Iterator[str]:
    """`instagram-dm api` (development) and `instagram-dm worker` as processes; yields the API's URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LOG_LEVEL": "WARNING",
        **settings_env(
            sandbox_server,
            database_url,
            INSTAGRAM_DM_ENV="development",
            INSTAGRAM_TOKEN_ENCRYPTION_KEY=KEY,
            INSTAGRAM_OAUTH_REDIRECT_URI=f"{url}/functions/v1/instagram-oauth-callback",
            INSTAGRAM_RETURN_URL=f"{url}/dev",
        ),
    }
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):  # this run's steps only
        old.unlink()
    logs = ROOT / ".local"
    api = _start(["api", "--port", str(port)], env, logs / "browser-test-api.log")
    worker = _start(["worker", "--poll-interval", "0.5"], env, logs / "browser-test-worker.log")
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if api.poll() is not None:
                raise RuntimeError(f"the API exited: see {logs / 'browser-test-api.log'}")
            time.sleep(0.05)
        else:
            raise RuntimeError("the API did not become ready")
        yield url
    finally:
        _stop(api)
        _stop(worker)


@pytest.fixture
async def live(stack: str, sandbox: Any, pg: Any) -> str:
    """The stack on a database reset to the seed and a reset sandbox that delivers webhooks to the API; media
    URLs point at this API again (the API published its URL at start-up, and the reset put back the default)."""
    sandbox.configure(webhook_url=f"{stack}/functions/v1/instagram-webhook")
    await pg.execute(
        "update public.instagram_media_settings set url_base = $1", f"{stack}/functions/v1/instagram-media"
    )
    return stack


@dataclass
class Console:
    """What the page said on its console (errors only) and its uncaught exceptions."""

    errors: list[str] = field(default_factory=list)

    def expect_refusal(self, status: int) -> None:
        """The browser logs a refused fetch as a console error: take exactly one with this status."""
        wanted = f"status of {status}"
        matching = [e for e in self.errors if wanted in e]
        assert len(matching) == 1, self.errors
        self.errors.remove(matching[0])


PageFactory = Callable[..., Awaitable[Any]]


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield browser
        await browser.close()


@pytest.fixture
async def page_for(chromium: Any) -> AsyncIterator[PageFactory]:
    """new(viewport) → (page, console); at the end every console error left fails the test."""
    contexts: list[Any] = []
    consoles: list[Console] = []

    async def new(viewport: dict[str, int] = DESKTOP) -> tuple[Any, Console]:
        context = await chromium.new_context(viewport=viewport, locale="en-US", timezone_id="UTC")
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = await context.new_page()
        console = Console()
        page.on("console", lambda m: console.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: console.errors.append(f"uncaught: {exc}"))
        consoles.append(console)
        return page, console

    yield new
    for context in contexts:
        await context.close()
    for console in consoles:
        assert console.errors == [], console.errors


async def shot(page: Any, name: str) -> None:
    """A screenshot of the step, for people to look at (.local/screenshots/)."""
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
