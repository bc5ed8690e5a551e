"""`instagram-dm dev-token`: mint a user access token locally (HS256, SUPABASE_JWT_SECRET), for demos."""

from __future__ import annotations

import argparse

from instagram_dm import errors
from instagram_dm.auth import mint_user_token
from instagram_dm.demo import DEMO_ADMIN
from instagram_dm.settings import Settings

LOCAL_ISSUER = "http://127.0.0.1:54321/auth/v1"  # what the local Supabase stack puts in iss


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "dev-token", help="print a user JWT signed with SUPABASE_JWT_SECRET (development)"
    )
    parser.add_argument("--user", default=DEMO_ADMIN, help="user id (default: the demo IMO's admin)")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.supabase_jwt_secret:
        raise errors.ConfigError("SUPABASE_JWT_SECRET is not set; dev-token signs HS256 tokens with it")
    print(mint_user_token(settings.supabase_jwt_secret.reveal(), args.user, ttl=args.ttl, iss=LOCAL_ISSUER))
    return 0
