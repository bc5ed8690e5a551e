"""The Milestone-1 schema: tables, enums, constraints, unique keys and indexes exist as designed."""

from __future__ import annotations

import asyncpg
import pytest

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
    ],
    "instagram_message_direction": ["inbound", "outbound"],
    "instagram_message_status": ["queued", "sending", "sent", "delivered", "read", "failed"],
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
async def test_table_exists_with_rls_enabled(pg: asyncpg.Connection, table: str) -> None:
    """Each table exists in public and has row level security switched on."""
    enabled = await pg.fetchval(
        "select relrowsecurity from pg_class where oid = to_regclass($1)", f"public.{table}"
    )
    assert enabled is True


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
                values ('00000000-0000-4000-8000-0000000000a1', '1', '17841400000000001')"""
    await pg.execute(insert)
    with pytest.raises(asyncpg.UniqueViolationError):
        await pg.execute(insert)


async def test_connected_integration_requires_tokens(pg: asyncpg.Connection) -> None:
    """An integration cannot be marked connected without both encrypted tokens and a key fingerprint."""
    with pytest.raises(asyncpg.CheckViolationError):
        await pg.execute(
            """insert into public.instagram_integrations
                 (imo_id, facebook_page_id, instagram_business_account_id, status)
               values ('00000000-0000-4000-8000-0000000000a1', '1', '17841400000000002', 'connected')"""
        )


async def test_conversation_imo_must_match_its_integration(pg: asyncpg.Connection) -> None:
    """A conversation cannot claim a different IMO than its integration's (composite foreign key)."""
    from tests.db.factories import integration

    integration_id = await integration(pg, "00000000-0000-4000-8000-0000000000a1")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pg.execute(
            """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid)
               values ($1, '00000000-0000-4000-8000-0000000000a2', '123')""",
            integration_id,
        )


async def test_updated_at_is_maintained_by_trigger(pg: asyncpg.Connection) -> None:
    """Updating a row moves its updated_at forward."""
    from tests.db.factories import integration

    integration_id = await integration(pg, "00000000-0000-4000-8000-0000000000a1")
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
    from tests.db.factories import tenant_rows

    rows = await tenant_rows(pg, "00000000-0000-4000-8000-0000000000a1")
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
            "insert into public.instagram_usage (imo_id, month)"
            " values ('00000000-0000-4000-8000-0000000000a1', '2026-11-15')"
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
