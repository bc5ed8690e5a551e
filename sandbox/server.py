"""Run the sandbox with uvicorn (`instagram-dm sandbox --port 54331`)."""

from __future__ import annotations

import uvicorn

from sandbox.app import create_app
from sandbox.state import SandboxConfig


def serve(host: str = "127.0.0.1", port: int = 54331) -> None:
    """Serve the sandbox until interrupted; app id/secret from INSTAGRAM_APP_ID / INSTAGRAM_APP_SECRET."""
    uvicorn.run(
        create_app(SandboxConfig.from_env()),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )
