"""Supabase's own checks against the migrated database: `make dbcheck`, part of `make test`.

1. `supabase db lint --level warning --fail-on warning`: plpgsql_check over every function of our
   schemas (Debian's `postgresql-15-plpgsql-check`, which scripts/db.sh installs; the CLI creates the
   extension inside a transaction it rolls back).
2. `supabase db advisors --level info --fail-on warn`: the dashboard's Security and Performance
   Advisor (splinter). ERROR and WARN fail. INFO findings fail too, unless accepted below with a
   reason: a new one is fixed in a migration or written down here on purpose.

Both come from the pinned CLI (node_modules/.bin/supabase) with `--db-url`, so no Docker is needed.
Usage: python scripts/dbcheck.py [DATABASE_URL]   (default: the URL `scripts/db.sh url` prints)
Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUPABASE = ROOT / "node_modules" / ".bin" / "supabase"
TIMEOUT = 300

# INFO lints accepted wherever they occur.
ACCEPTED_LINTS = {
    "unused_index": "index usage statistics of a database migrated minutes ago say nothing; "
    "judge this one on production, in the dashboard's Performance Advisor",
}

# INFO findings accepted for one table (schema.table).
ACCEPTED = {
    ("rls_enabled_no_policy", "public.instagram_oauth_states"): "service-only table: RLS on and no "
    "policy denies anon and authenticated, as intended; only service_role and security-definer RPCs use it",
    ("rls_enabled_no_policy", "public.instagram_page_unsubscriptions"): "service-only table (queue of "
    "Page unsubscribes, holds a token): RLS on and no policy denies the API roles, as intended",
    (
        "rls_enabled_no_policy",
        "public.instagram_webhook_events",
    ): "service-only table (Meta's raw deliveries, "
    "every IMO's DMs together): RLS on and no policy denies the API roles; the app reads messages instead",
    ("rls_enabled_no_policy", "public.instagram_profile_fetches"): "service-only table (queue of profile "
    "fetches): RLS on and no policy denies the API roles, as intended",
    ("rls_enabled_no_policy", "public.instagram_send_jobs"): "service-only table (queue of outbound sends): "
    "RLS on and no policy denies the API roles; the app reads the messages instead",
    ("rls_enabled_no_policy", "public.instagram_send_pacing"): "service-only table (the next send slot per "
    "account): RLS on and no policy denies the API roles, as intended",
    ("rls_enabled_no_policy", "public.instagram_settings"): "service-only table (the workers' sending "
    "settings): RLS on and no policy denies the API roles; the sending RPCs read it as security definer",
    ("rls_enabled_no_policy", "public.instagram_media_settings"): "service-only table (the media URL signing "
    "key and URL base): RLS on and no policy denies the API roles; instagram_media_url reads it as security definer",
    (
        "rls_enabled_no_policy",
        "public.instagram_media_objects",
    ): "service-only table (where stored media bytes "
    "are): RLS on and no policy denies the API roles; members get signed URLs from instagram_media_url",
    ("rls_enabled_no_policy", "public.instagram_media"): "service-only table (queue of attachment copies): "
    "RLS on and no policy denies the API roles; the message carries each copy's status",
    (
        "rls_enabled_no_policy",
        "public.instagram_media_deletions",
    ): "service-only table (queue of stored bytes "
    "to delete): RLS on and no policy denies the API roles, as intended",
}


def fail(line: str) -> None:
    print(f"dbcheck: FAIL {line}", file=sys.stderr)


def supabase(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SUPABASE), *args], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def database_url(argv: list[str]) -> str:
    if argv:
        url = argv[0]
    else:
        url = subprocess.run(
            [str(ROOT / "scripts" / "db.sh"), "url"], capture_output=True, text=True, check=True
        ).stdout.strip()
    # Plain PostgreSQL has no TLS here; the CLI would otherwise insist on it.
    return url if "sslmode=" in url else f"{url}{'&' if '?' in url else '?'}sslmode=disable"


def lint(url: str) -> bool:
    run = supabase("db", "lint", "--db-url", url, "--level", "warning", "--fail-on", "warning")
    if run.returncode != 0:
        fail("supabase db lint found problems (or could not run):")
        print(run.stdout.strip(), run.stderr.strip(), sep="\n", file=sys.stderr)
        return False
    schemas = run.stderr.count("Linting schema:")
    print(f"dbcheck: supabase db lint: no warnings or errors in {schemas} schemas")
    return True


def findings(stdout: str) -> list[dict[str, Any]]:
    if not stdout.strip() or stdout.strip() == "No issues found":
        return []
    data = json.loads(stdout)
    if isinstance(data, dict):
        data = data.get("results") or []
    if not isinstance(data, list):
        raise TypeError(f"unexpected advisor output: {stdout[:200]}")
    return data


def acceptance(item: dict[str, Any]) -> str | None:
    if item.get("level") != "INFO":
        return None
    name = item.get("name", "")
    meta = item.get("metadata") or {}
    return ACCEPTED_LINTS.get(name) or ACCEPTED.get((name, f"{meta.get('schema')}.{meta.get('name')}"))


def advisors(url: str) -> bool:
    flags = ["--type", "all", "--level", "info", "--fail-on", "warn", "--output-format", "json"]
    run = supabase("db", "advisors", "--db-url", url, *flags)
    try:
        items = findings(run.stdout)
    except (ValueError, TypeError) as exc:
        fail(f"supabase db advisors gave no readable result ({exc}): {run.stderr.strip()}")
        return False
    refused = [i for i in items if acceptance(i) is None]
    for item in refused:
        fail(f"{item.get('level')} {item.get('name')}: {item.get('detail')} ({item.get('remediation')})")
    if refused or run.returncode != 0:
        if not refused:
            fail(f"supabase db advisors exited {run.returncode}: {run.stderr.strip()}")
        print(
            "dbcheck: fix these in a new migration under supabase/migrations/, or accept an INFO "
            "finding in scripts/dbcheck.py with the reason",
            file=sys.stderr,
        )
        return False
    levels = Counter(i.get("level") for i in items)
    accepted = Counter(i.get("name") for i in items)
    summary = ", ".join(f"{name} {count}" for name, count in sorted(accepted.items())) or "none"
    print(
        f"dbcheck: supabase db advisors: {levels['ERROR']} ERROR, {levels['WARN']} WARN, "
        f"{levels['INFO']} INFO, all accepted in scripts/dbcheck.py ({summary})"
    )
    return True


def main(argv: list[str]) -> int:
    if not SUPABASE.exists():
        fail(f"{SUPABASE} is missing; run `make install`")
        return 1
    url = database_url(argv)
    ok = lint(url)
    ok = advisors(url) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
