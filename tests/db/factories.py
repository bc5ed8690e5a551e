"""The one place tests arrange database rows: the seed's ids, integration factories, one row per table
for an IMO, and the catalogue queries that say which tables and functions are ours.

Everything runs as a superuser connection (RLS tests then read the rows back as users). Integrations
either carry dummy ciphertext (``key=None``: enough for constraints and RLS) or tokens really encrypted
with ``key`` by the migration's own helpers, so the app's RPCs can decrypt them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import asyncpg

# The seed's ids (supabase/seed.sql); defined once, in instagram_dm/demo.py.
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO, DEMO_MEMBER, STARTER_ADMIN, STARTER_IMO

__all__ = [
    "DEMO_ADMIN",
    "DEMO_IMO",
    "DEMO_MEMBER",
    "STARTER_ADMIN",
    "STARTER_IMO",
    "IntegrationRow",
    "integration",
    "integrations",
    "migration_schemas",
    "our_tables",
    "tenant_rows",
]

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
DAY = 86_400
_ids = count(10**6)


@dataclass(frozen=True)
class IntegrationRow:
    """What to store for one integration; ids are made up (unique per test run) when left out."""

    page_id: str | None = None
    ig_account_id: str | None = None
    user_token: str = "user-old"
    page_token: str = "page-old"


def _fresh_ids() -> tuple[str, str]:
    n = next(_ids)
    return str(100_000_000_000_000 + n), str(17_841_400_000_000_000 + n)


async def integrations(
    conn: asyncpg.Connection,
    rows: Sequence[IntegrationRow],
    *,
    imo_id: str = DEMO_IMO,
    status: str = "connected",
    key: str | None = None,
    expires_in: float = 3 * DAY,
    data_access_expires_in: float = 80 * DAY,
    connected_by: str | None = DEMO_ADMIN,
    webhook_subscribed: bool = False,
) -> list[str]:
    """Insert one integration per row in one statement; returns their ids in the order of `rows`.

    With `key`, the tokens are encrypted with it (``instagram_private.encrypt_token``) and fingerprinted;
    without, the row holds dummy ciphertext and the fingerprint ``'fp'``.
    """
    ids = [(r.page_id, r.ig_account_id) if r.page_id and r.ig_account_id else _fresh_ids() for r in rows]
    records = await conn.fetch(
        """insert into public.instagram_integrations as i (
             imo_id, connected_by, facebook_page_id, facebook_page_name, instagram_business_account_id,
             instagram_username, status, user_access_token_encrypted, page_access_token_encrypted,
             token_key_fingerprint, token_expires_at, data_access_expires_at, webhook_subscribed)
           select $1, $2, t.page_id, 'Page ' || t.page_id, t.ig_id, 'ig.' || t.page_id,
                  $3::public.instagram_connection_status,
                  case when $4::text is null then '\\xdeadbeef'::bytea
                       else instagram_private.encrypt_token(t.user_token, $4) end,
                  case when $4::text is null then '\\xfeedface'::bytea
                       else instagram_private.encrypt_token(t.page_token, $4) end,
                  case when $4::text is null then 'fp' else instagram_private.key_fingerprint($4) end,
                  now() + make_interval(secs => $5), now() + make_interval(secs => $6), $7
           from unnest($8::text[], $9::text[], $10::text[], $11::text[])
                with ordinality as t(page_id, ig_id, user_token, page_token, ord)
           order by t.ord
           returning i.id::text, i.facebook_page_id""",
        imo_id,
        connected_by,
        status,
        key,
        expires_in,
        data_access_expires_in,
        webhook_subscribed,
        [page for page, _ in ids],
        [ig for _, ig in ids],
        [r.user_token for r in rows],
        [r.page_token for r in rows],
    )
    by_page = {r["facebook_page_id"]: r["id"] for r in records}
    return [by_page[page] for page, _ in ids]


async def integration(
    conn: asyncpg.Connection,
    imo_id: str = DEMO_IMO,
    *,
    status: str = "pending",
    key: str | None = None,
    ig_account_id: str | None = None,
    page_id: str | None = None,
    user_token: str = "user-old",  # noqa: S107 - a dummy token the tests encrypt, not a credential
    page_token: str = "page-old",  # noqa: S107
    expires_in: float = 3 * DAY,
) -> str:
    """One integration of `imo_id` (see :func:`integrations`); returns its id."""
    fresh_page, fresh_ig = _fresh_ids()
    row = IntegrationRow(page_id or fresh_page, ig_account_id or fresh_ig, user_token, page_token)
    (row_id,) = await integrations(conn, [row], imo_id=imo_id, status=status, key=key, expires_in=expires_in)
    return row_id


async def tenant_rows(conn: asyncpg.Connection, imo_id: str) -> dict[str, str]:
    """One row in each IMO-scoped table (and in the service-only tables that hang off an IMO);
    returns their ids by table."""
    integration_id = await integration(conn, imo_id)
    lead_id = await conn.fetchval(
        "insert into public.recruiting_leads (imo_id, first_name) values ($1, 'Lee') returning id::text",
        imo_id,
    )
    conversation_id = await conn.fetchval(
        """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid, recruiting_lead_id)
           values ($1, $2, $3, $4) returning id::text""",
        integration_id,
        imo_id,
        str(uuid.uuid4().int % 10**15),
        lead_id,
    )
    message_id = await conn.fetchval(
        """insert into public.instagram_messages (conversation_id, imo_id, meta_message_id, direction, text)
           values ($1, $2, $3, 'inbound', 'hello') returning id::text""",
        conversation_id,
        imo_id,
        f"mid.{uuid.uuid4().hex}",
    )
    scheduled_id = await conn.fetchval(
        """insert into public.instagram_scheduled_messages (imo_id, conversation_id, body, scheduled_for)
           values ($1, $2, 'later', now() + interval '1 day') returning id::text""",
        imo_id,
        conversation_id,
    )
    template_id = await conn.fetchval(
        """insert into public.instagram_message_templates (imo_id, name, body)
           values ($1, 'Welcome', 'Hi {{first_name}}') returning id::text""",
        imo_id,
    )
    await conn.execute(
        "insert into public.instagram_usage (imo_id, month, messages_sent) values ($1, date_trunc('month', now()), 3)"
        " on conflict (imo_id, month) do update set messages_sent = 3",
        imo_id,
    )
    notification_id = await conn.fetchval(
        "insert into public.notifications (imo_id, kind, title) values ($1, 'test', 'Hello') returning id::text",
        imo_id,
    )
    job_id = await conn.fetchval(
        "insert into public.instagram_refresh_jobs (integration_id, imo_id) values ($1, $2) returning id::text",
        integration_id,
        imo_id,
    )
    state_id = await conn.fetchval(
        """insert into public.instagram_oauth_states (state_hash, user_id, imo_id, return_to, expires_at)
           select encode(sha256(convert_to($2, 'utf8')), 'hex'), m.user_id, $1, 'http://app.test/messages',
                  now() + interval '10 minutes'
           from public.imo_members m where m.imo_id = $1 order by m.user_id limit 1
           returning id::text""",
        imo_id,
        uuid.uuid4().hex,
    )
    unsubscription_id = await conn.fetchval(
        """insert into public.instagram_page_unsubscriptions (integration_id, facebook_page_id)
           select id, facebook_page_id from public.instagram_integrations where id = $1 returning id::text""",
        integration_id,
    )
    return {
        "instagram_integrations": integration_id,
        "recruiting_leads": lead_id,
        "instagram_conversations": conversation_id,
        "instagram_messages": message_id,
        "instagram_scheduled_messages": scheduled_id,
        "instagram_message_templates": template_id,
        "notifications": notification_id,
        "instagram_refresh_jobs": job_id,
        "instagram_oauth_states": state_id,
        "instagram_page_unsubscriptions": unsubscription_id,
    }


# ---- the catalogue: what is ours -----------------------------------------------------------------


def migration_schemas() -> list[str]:
    """public plus every schema a migration creates (instagram_private today)."""
    created = re.findall(
        r"(?im)^\s*create\s+schema\s+(?:if\s+not\s+exists\s+)?([a-z_][a-z0-9_]*)",
        "\n".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.sql"))),
    )
    return sorted({"public", *created})


def migration_tables() -> set[str]:
    """`schema.table` for every `create table` in the migrations (unqualified names are public)."""
    found = re.findall(
        r"(?im)^\s*create\s+table\s+(?:if\s+not\s+exists\s+)?(?:([a-z_][a-z0-9_]*)\.)?([a-z_][a-z0-9_]*)",
        "\n".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.sql"))),
    )
    return {f"{schema or 'public'}.{name}" for schema, name in found}


async def our_tables(conn: asyncpg.Connection, relkinds: str = "rp") -> list[str]:
    """`schema.table` of every relation of the given kinds in the migrations' schemas, extensions' own
    objects excepted, read from pg_class."""
    rows = await conn.fetch(
        """select n.nspname || '.' || c.relname as name
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = any($1::text[]) and c.relkind::text = any($2::text[])
             and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')
           order by 1""",
        migration_schemas(),
        list(relkinds),
    )
    return [r["name"] for r in rows]
