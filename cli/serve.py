"""`instagram-dm api` and `instagram-dm sandbox`: serve the Starlette apps with uvicorn."""

from __future__ import annotations

import argparse

from instagram_dm.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = sub.add_parser("api", help="serve the HTTP API (OAuth init/callback, webhooks, health)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=54330)
    api.set_defaults(func=run_api)

    sandbox = sub.add_parser("sandbox", help="serve the local Meta stand-in (OAuth dialog + Graph API)")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=54331)
    sandbox.set_defaults(func=run_sandbox)


def run_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app

    app = create_app(settings)  # validates settings before binding the port
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on")
    return 0


def run_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    from sandbox.server import serve

    serve(args.host, args.port)
    return 0
