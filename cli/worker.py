"""`instagram-dm worker` and `instagram-dm refresh-now` (the token refresh worker; see worker/)."""

from __future__ import annotations

import argparse

from instagram_dm.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="run the background worker (token refresh, page unsubscribes)")
    worker.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    raise NotImplementedError("the worker arrives with the token refresh issue")
