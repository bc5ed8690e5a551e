"""`instagram-dm api` and `instagram-dm sandbox`: serve the Starlette apps with uvicorn."""

from __future__ import annotations

import argparse
import os
import socket

from starlette.applications import Starlette

from instagram_dm import errors, logs
from instagram_dm.settings import Settings

# With --workers > 1 uvicorn starts each process from an import string: the env file travels in the
# environment, and every process builds (and validates) its own app from it.
_ENV_FILE = "INSTAGRAM_DM_API_ENV_FILE"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = sub.add_parser("api", help="serve the HTTP API (OAuth init/callback, webhooks, health)")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    api.add_argument("--port", type=int, default=54330, help="port to listen on (default 54330)")
    api.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (default 1; each has its own pool)"
    )
    api.set_defaults(func=run_api)

    sandbox = sub.add_parser("sandbox", help="serve the local Meta stand-in (OAuth dialog + Graph API)")
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=54331, help="port to listen on (default 54331)")
    sandbox.set_defaults(func=run_sandbox)


def app_from_environ() -> Starlette:
    """The app of one worker process (uvicorn's factory when --workers > 1)."""
    from api.app import create_app

    settings = Settings.from_environ(env_file=os.environ.get(_ENV_FILE, ".env"))
    logs.configure(settings.log_level)
    return create_app(settings)


def check_port(host: str, port: int) -> None:
    """ConfigError (one line) when nothing can listen on host:port: uvicorn would run the app's start-up
    first, log api.started, and only then fail to bind."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise errors.ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app

    app = create_app(settings)  # validates settings before binding the port
    check_port(args.host, args.port)
    if args.workers > 1:
        os.environ[_ENV_FILE] = args.env_file  # each process builds its own app (and pool) from it
    uvicorn.run(
        "cli.serve:app_from_environ" if args.workers > 1 else app,
        factory=args.workers > 1,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return 0


def run_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from sandbox.server import serve

    check_port(args.host, args.port)
    serve(args.host, args.port)
    return 0
