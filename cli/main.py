"""`instagram-dm`: one command with a subcommand per job. Each reads `.env` and the environment.

Every subcommand module exposes ``register(subparsers)`` and sets ``func(args) -> int`` on its parser.
Errors from our exception tree become one readable line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cli import dev_token, doctor, keys, rpc_docs, serve, status, webhooks, worker
from instagram_dm import errors, logs
from instagram_dm.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instagram-dm", description="Instagram DMs for the CRM's Messages page."
    )
    parser.add_argument("--env-file", default=".env", help="dotenv file to read (default: .env)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in (serve, worker, webhooks, doctor, status, rpc_docs, keys, dev_token):
        module.register(sub)
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    return Settings.from_environ(env_file=args.env_file)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args)
        logs.configure(settings.log_level)
        return int(args.func(args, settings))
    except errors.InstagramDMError as exc:
        print(f"instagram-dm {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
