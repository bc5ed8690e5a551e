"""`instagram-dm doctor`: each check on one line, ok or fail, with the fix."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from pathlib import Path

from instagram_dm import errors
from instagram_dm.bootstrap import open_database
from instagram_dm.db import rpc
from instagram_dm.settings import Settings

CONFIG_GROUPS = {
    "meta": "Meta app credentials and Graph endpoints",
    "crypto": "token encryption key",
    "oauth": "OAuth redirect and return URLs",
    "jwt": "Supabase JWT verification",
    "database": "database connection settings",
    "webhook": "webhook verify token",
}


@dataclass(frozen=True)
class Check:
    ok: bool
    what: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark}  {self.what}" + ("" if self.ok or not self.fix else f"\n      fix: {self.fix}")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("doctor", help="check configuration, database, extensions and migrations")
    parser.add_argument(
        "--migrations-dir",
        default="supabase/migrations",
        type=Path,
        help="the migrations to compare with the database (default supabase/migrations)",
    )
    parser.set_defaults(func=run)


def config_checks(settings: Settings) -> list[Check]:
    out: list[Check] = []
    for group, label in CONFIG_GROUPS.items():
        problems = settings.problems(group)
        if problems:
            out += [Check(False, f"config: {p}", "set it in .env (see .env.example)") for p in problems]
        else:
            out.append(Check(True, f"config: {label}"))
    return out


# The fix for each way a connect fails (the codes of instagram_dm.db.asyncpg_adapter.connect_error).
_CONNECT_FIXES = {
    "database_auth_failed": "check the user and password in DATABASE_URL (the embedded one is postgres/postgres)",
    "database_not_found": "use a database that exists in DATABASE_URL (the embedded one is postgres)",
}
_START_IT = "start it with `make run` or `scripts/db.sh up`, or fix the host and port in DATABASE_URL"


def _unreachable(exc: errors.InstagramDMError) -> Check:
    return Check(False, f"database: {exc.message}", _CONNECT_FIXES.get(exc.code, _START_IT))


async def database_checks(settings: Settings, local: list[str], migrations_dir: Path) -> list[Check]:
    if settings.problems("database"):
        return [Check(False, "database: not configured", "set DATABASE_URL (make run uses the embedded one)")]
    try:
        db = await open_database(settings, max_size=1)
    except errors.InstagramDMError as exc:
        return [_unreachable(exc)]
    try:
        health = await rpc.health(db)
    except errors.RPCNotFoundError:
        return [
            Check(True, "database: reachable"),
            Check(False, "migrations: not applied", "run `scripts/db.sh migrate` (or `supabase db push`)"),
        ]
    except errors.InstagramDMError as exc:
        return [_unreachable(exc)]
    finally:
        await db.close()
    out = [
        Check(True, "database: reachable"),
        Check(
            health.pgcrypto,
            "extension: pgcrypto",
            "create extension pgcrypto with schema extensions",
        ),
        Check(
            health.pg_cron,
            "extension: pg_cron",
            "install postgresql-15-cron and preload it (shared_preload_libraries = 'pg_cron')",
        ),
    ]
    applied = set(health.migrations)
    if not local:
        out.append(Check(True, f"migrations: {len(applied)} applied (no local {migrations_dir} to compare)"))
    else:
        missing = [v for v in local if v not in applied]
        out.append(
            Check(
                not missing,
                f"migrations: {len(local) - len(missing)}/{len(local)} applied"
                + (f", pending {', '.join(missing)}" if missing else ""),
                "run `scripts/db.sh migrate` (or `supabase migration up --db-url ...`)",
            )
        )
    return out


def run(args: argparse.Namespace, settings: Settings) -> int:
    migrations_dir: Path = args.migrations_dir
    local = (
        sorted(p.name.split("_", 1)[0] for p in migrations_dir.glob("*.sql"))
        if migrations_dir.is_dir()
        else []
    )
    checks = config_checks(settings) + asyncio.run(database_checks(settings, local, migrations_dir))
    for check in checks:
        print(check.line())
    return 0 if all(c.ok for c in checks) else 1
