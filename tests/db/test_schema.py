"""The schema: the designed tables, enums, constraints, unique keys and indexes exist; and invariants
read from the catalogue (RLS, grants, token columns, function comments, search_path) hold for every
table and function the migrations create, present and future."""

from __future__ import annotations

import asyncpg
import pytest

from tests.db.factories import (
    DEMO_IMO,
    STARTER_IMO,
    integration,
    migration_schemas,
    migration_tables,
    our_tables,
    tenant_rows,
)

TABLES = [
    "imos",
    "imo_members",
    "subscription_plans",
    "imo_subscriptions",
    "recruiting_leads",
    "notifications",
    "instagram_integrations",
    "instagram_conversations",
    "instagram_messages",
    "instagram_scheduled_messages",
    "instagram_message_templates",
    "instagram_usage",
]

ENUMS = {
    "instagram_connection_status": ["pending", "connected", "reauth_required", "disconnected", "error"],
    "instagram_message_type": [
        "text",
        "image",
        "video",
        "audio",
        "file",
        "share",
        "story_mention",
        "story_reply",
        "reaction",
        "unsupported",
        "reel",
        "postback",
    ],
    "instagram_message_direction": ["inbound", "outbound"],
    "instagram_message_status": ["queued", "sending", "sent", "delivered", "read", "failed", "unknown"],
    "instagram_scheduled_status": ["scheduled", "sending", "sent", "failed", "cancelled"],
}

UNIQUE_KEYS = {
    "instagram_integrations_imo_account_key": ["imo_id", "instagram_business_account_id"],
    "instagram_conversations_participant_key": ["integration_id", "participant_igsid"],
    "instagram_messages_meta_message_id_key": ["meta_message_id"],
    "instagram_message_templates_imo_name_key": ["imo_id", "name"],
}

INDEXES = {
    "instagram_integrations_ig_account_idx": "(instagram_business_account_id)",
    "instagram_integrations_token_expiry_idx": "(token_expires_at) WHERE (status = 'connected'",
    "instagram_messages_conversation_time_idx": "(conversation_id, sent_at DESC)",
    "instagram_conversations_imo_recent_idx": "(imo_id, last_message_at DESC)",
}


@pytest.mark.parametrize("table", TABLES)
async def test_designed_table_exists(pg: asyncpg.Connection, table: str) -> None:
    """Each table of the design exists in public (RLS on every table is checked from the catalogue below)."""
    assert await pg.fetchval("select to_regclass($1) is not null", f"public.{table}") is True


@pytest.mark.parametrize(("enum", "labels"), sorted(ENUMS.items()))
async def test_enum_has_exact_labels(pg: asyncpg.Connection, enum: str, labels: list[str]) -> None:
    """Each enum exists with exactly the labels of the design, in order."""
    rows = await pg.fetch(
        """select e.enumlabel from pg_enum e join pg_type t on t.oid = e.enumtypid
           join pg_namespace n on n.oid = t.typnamespace
           where n.nspname = 'public' and t.typname = $1 order by e.enumsortorder""",
        enum,
    )
    assert [r["enumlabel"] for r in rows] == labels


@pytest.mark.parametrize(("name", "columns"), sorted(UNIQUE_KEYS.items()))
async def test_unique_key_covers_columns(pg: asyncpg.Connection, name: str, columns: list[str]) -> None:
    """Each unique key exists over the columns that make a row unique."""
    got = await pg.fetchval(
        """select array_agg(a.attname order by k.ord) from pg_constraint c
           cross join unnest(c.conkey) with ordinality k(attnum, ord)
           join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
           where c.conname = $1 and c.contype = 'u'""",
        name,
    )
    assert got == columns


@pytest.mark.parametrize(("name", "fragment"), sorted(INDEXES.items()))
async def test_lookup_index_exists(pg: asyncpg.Connection, name: str, fragment: str) -> None:
    """The indexes for known lookups exist with the expected keys."""
    definition = await pg.fetchval("select indexdef from pg_indexes where indexname = $1", name)
    assert definition is not None and fragment in definition


async def test_integration_row_is_unique_per_imo_and_account(pg: asyncpg.Connection) -> None:
    """A second integration for the same IMO and Instagram account is refused."""
    insert = """insert into public.instagram_integrations (imo_id, facebook_page_id, instagram_business_account_id)
                values ($1, '1', '17841400000000001')"""
    await pg.execute(insert, DEMO_IMO)
    with pytest.raises(asyncpg.UniqueViolationError):
        await pg.execute(insert, DEMO_IMO)


async def test_connected_integration_requires_tokens(pg: asyncpg.Connection) -> None:
    """An integration cannot be marked connected without both encrypted tokens and a key fingerprint."""
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute(
            """insert into public.instagram_integrations
                 (imo_id, facebook_page_id, instagram_business_account_id, status)
               values ($1, '1', '17841400000000002', 'connected')""",
            DEMO_IMO,
        )


async def test_conversation_imo_must_match_its_integration(pg: asyncpg.Connection) -> None:
    """A conversation cannot claim a different IMO than its integration's (composite foreign key)."""
    integration_id = await integration(pg, DEMO_IMO)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pg.execute(
            """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid)
               values ($1, $2, '123')""",
            integration_id,
            STARTER_IMO,
        )


async def test_updated_at_is_maintained_by_trigger(pg: asyncpg.Connection) -> None:
    """Updating a row moves its updated_at forward."""
    integration_id = await integration(pg, DEMO_IMO)
    before = await pg.fetchval(
        "update public.instagram_integrations set updated_at = now() - interval '1 hour' where id = $1 "
        "returning updated_at",
        integration_id,
    )
    after = await pg.fetchval(
        "update public.instagram_integrations set facebook_page_name = 'x' where id = $1 returning updated_at",
        integration_id,
    )
    assert after > before


async def test_lead_source_accepts_instagram_and_links_conversation(pg: asyncpg.Connection) -> None:
    """recruiting_leads takes lead_source 'instagram' and links to an Instagram conversation."""
    rows = await tenant_rows(pg, DEMO_IMO)
    lead = await pg.fetchrow(
        """update public.recruiting_leads set lead_source = 'instagram', instagram_conversation_id = $2
           where id = $1 returning lead_source, instagram_conversation_id::text""",
        rows["recruiting_leads"],
        rows["instagram_conversations"],
    )
    assert dict(lead) == {
        "lead_source": "instagram",
        "instagram_conversation_id": rows["instagram_conversations"],
    }
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute("update public.recruiting_leads set lead_source = 'carrier pigeon'")


async def test_usage_month_must_be_first_of_month(pg: asyncpg.Connection) -> None:
    """instagram_usage rows are keyed by the first day of a month only."""
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute(
            "insert into public.instagram_usage (imo_id, month) values ($1, '2026-11-15')", DEMO_IMO
        )


async def test_billing_feature_is_on_team_only(pg: asyncpg.Connection) -> None:
    """instagram_messaging is a feature of the Team plan and of no other plan."""
    rows = await pg.fetch(
        "select name from public.subscription_plans where 'instagram_messaging' = any (features) order by name"
    )
    assert [r["name"] for r in rows] == ["Team"]


async def test_seed_imos_have_their_tiers(pg: asyncpg.Connection) -> None:
    """The demo IMO is on Team (has the feature) and the Starter IMO is not."""
    has = await pg.fetch(
        """select i.name, instagram_private.imo_has_feature(i.id, 'instagram_messaging') as has
           from public.imos i order by i.name"""
    )
    assert {r["name"]: r["has"] for r in has} == {"Demo Agency": True, "Starter Agency": False}


# ---- invariants read from the catalogue -----------------------------------------------------------

TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")


# Functions that predate the comment rule; a migration should comment (or replace) each, and then it
# comes off this list (the test below fails while a listed function exists with a comment).
async def test_catalogue_checks_cover_every_table_the_migrations_create(pg: asyncpg.Connection) -> None:
    """The catalogue query below sees every table a migration creates, including the later ones
    (OAuth states, Page unsubscriptions, refresh jobs), and no schema outside the migrations' own."""
    tables = set(await our_tables(pg))
    assert migration_tables() <= tables
    assert {
        "public.instagram_oauth_states",
        "public.instagram_page_unsubscriptions",
        "public.instagram_refresh_jobs",
    } <= tables
    assert "instagram_private" in migration_schemas()
    assert {name.split(".")[0] for name in tables} <= set(migration_schemas())


async def test_every_table_has_row_level_security(pg: asyncpg.Connection) -> None:
    """Every table in public and in every schema the migrations create has RLS switched on."""
    tables = await our_tables(pg)
    without_rls = [
        name
        for name in tables
        if not await pg.fetchval("select relrowsecurity from pg_class where oid = $1::regclass", name)
    ]
    assert tables and without_rls == []


async def test_anon_has_no_privilege_on_any_table(pg: asyncpg.Connection) -> None:
    """No table or view of ours grants anon anything, table-wide or on a single column."""
    relations = await our_tables(pg, relkinds="rpvmf")
    granted = [
        name
        for name in relations
        if await pg.fetchval(
            """select has_table_privilege('anon', $1::regclass, $2)
                      or has_any_column_privilege('anon', $1::regclass, 'SELECT, INSERT, UPDATE, REFERENCES')""",
            name,
            TABLE_PRIVILEGES,
        )
    ]
    assert relations and granted == []


async def test_anon_has_no_privilege_on_any_sequence(pg: asyncpg.Connection) -> None:
    """No sequence of ours lets anon read, advance or set it."""
    sequences = await our_tables(pg, relkinds="S")
    granted = [
        name
        for name in sequences
        if await pg.fetchval(
            "select has_sequence_privilege('anon', $1::regclass, 'USAGE, SELECT, UPDATE')", name
        )
    ]
    assert sequences and granted == []


async def test_encrypted_columns_are_out_of_reach_of_api_roles(pg: asyncpg.Connection) -> None:
    """Neither anon nor authenticated holds any privilege on any *_encrypted column found in the catalogue."""
    columns = await pg.fetch(
        """select n.nspname || '.' || c.relname as table_name, a.attname as column_name
           from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = any($1::text[]) and c.relkind in ('r', 'p', 'v', 'm')
             and a.attnum > 0 and not a.attisdropped and a.attname like '%\\_encrypted'
           order by 1, 2""",
        migration_schemas(),
    )
    found = {f"{r['table_name']}.{r['column_name']}" for r in columns}
    assert {
        "public.instagram_integrations.user_access_token_encrypted",
        "public.instagram_integrations.page_access_token_encrypted",
        "public.instagram_page_unsubscriptions.page_access_token_encrypted",
    } <= found
    allowed = [
        (role, r["table_name"], r["column_name"], privilege)
        for r in columns
        for role in ("anon", "authenticated")
        for privilege in COLUMN_PRIVILEGES
        if await pg.fetchval(
            "select has_column_privilege($1, $2::regclass, $3, $4)",
            role,
            r["table_name"],
            r["column_name"],
            privilege,
        )
    ]
    assert allowed == []


async def _our_functions(pg: asyncpg.Connection, schemas: list[str]) -> list[asyncpg.Record]:
    return await pg.fetch(
        """select n.nspname || '.' || p.proname as qualified, p.oid::regprocedure::text as signature,
                  p.proname, p.prosecdef, p.proconfig,
                  obj_description(p.oid, 'pg_proc') as comment
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = any($1::text[])
             and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
           order by 1""",
        schemas,
    )


async def test_every_public_instagram_function_has_a_comment(pg: asyncpg.Connection) -> None:
    """Every function in public named instagram_* carries a `comment on function` (its documentation)."""
    functions = [f for f in await _our_functions(pg, ["public"]) if f["proname"].startswith("instagram_")]
    assert any(f["proname"] == "instagram_store_integrations" for f in functions)
    uncommented = {f["proname"] for f in functions if not (f["comment"] or "").strip()}
    assert uncommented == set(), "add `comment on function` for these"


async def test_security_definer_functions_pin_an_empty_search_path(pg: asyncpg.Connection) -> None:
    """Every security definer function in public and the migrations' other schemas sets search_path to ''."""
    definers = [f for f in await _our_functions(pg, migration_schemas()) if f["prosecdef"]]
    names = {f["qualified"] for f in definers}
    assert {"public.instagram_store_integrations", "instagram_private.user_is_imo_admin"} <= names
    unpinned = [f["signature"] for f in definers if 'search_path=""' not in (f["proconfig"] or [])]
    assert unpinned == []


async def test_service_role_has_a_statement_and_a_lock_timeout(pg: asyncpg.Connection) -> None:
    """service_role (the API and worker) is bounded on the server too: statement_timeout and lock_timeout."""
    config = await pg.fetchval("select rolconfig from pg_roles where rolname = 'service_role'")
    assert {"statement_timeout=30s", "lock_timeout=10s"} <= set(config or [])
