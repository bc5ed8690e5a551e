"""Row level security and grants, exercised the way PostgREST runs a request (role + JWT claims)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.db.factories import (
    DEMO_ADMIN,
    DEMO_IMO,
    DEMO_MEMBER,
    STARTER_ADMIN,
    STARTER_IMO,
    our_tables,
    tenant_rows,
)
from tests.fixtures.database import acting_as

APP_FACING_FUNCTIONS = {
    "instagram_integration_status",
    "instagram_disconnect",
    "instagram_list_conversations",
    "instagram_list_messages",
    "instagram_mark_conversation_read",
    "instagram_send_message",
    "instagram_retry_message",
    "instagram_usage_summary",
    "instagram_upsert_template",
    "instagram_delete_template",
    "instagram_render_template",
    "instagram_list_templates",
    "instagram_messaging_access",
    "instagram_schedule_message",
    "instagram_cancel_scheduled_message",
    "instagram_reschedule_message",
    "instagram_list_scheduled_messages",
    "instagram_media_url",
}
# Tables an authenticated user may read that have no imo_id: their own IMOs, and the plans catalogue.
READABLE_WITHOUT_IMO_ID = {"public.imos", "public.subscription_plans"}
# Tables only service_role touches.
SERVICE_ONLY = {
    "public.instagram_oauth_states",
    "public.instagram_page_unsubscriptions",
    "public.instagram_webhook_events",
    "public.instagram_profile_fetches",
    "public.instagram_send_jobs",
    "public.instagram_send_pacing",
    "public.instagram_settings",
    "public.instagram_media_settings",
    "public.instagram_media_objects",
    "public.instagram_media",
    "public.instagram_media_deletions",
}


@pytest.fixture
async def two_tenants(pg: asyncpg.Connection) -> asyncpg.Connection:
    await tenant_rows(pg, DEMO_IMO)
    await tenant_rows(pg, STARTER_IMO)
    return pg


async def classified_tables(pg: asyncpg.Connection) -> dict[str, tuple[bool, bool]]:
    """Every table of ours → (has an imo_id column, authenticated may read some column of it)."""
    out: dict[str, tuple[bool, bool]] = {}
    for name in await our_tables(pg):
        row = await pg.fetchrow(
            """select exists (select 1 from pg_attribute a where a.attrelid = $1::regclass
                                and a.attname = 'imo_id' and not a.attisdropped) as scoped,
                      has_any_column_privilege('authenticated', $1::regclass, 'SELECT') as readable""",
            name,
        )
        out[name] = (row["scoped"], row["readable"])
    return out


async def tenant_tables(pg: asyncpg.Connection) -> list[str]:
    """The tables users read that are scoped to an IMO, from the catalogue."""
    return sorted(
        name for name, (scoped, readable) in (await classified_tables(pg)).items() if scoped and readable
    )


async def test_every_table_is_tenant_scoped_or_listed(pg: asyncpg.Connection) -> None:
    """A table users may read has an imo_id (so the isolation tests cover it) unless listed as global;
    a table they may not read is one of the listed service-only ones."""
    tables = await classified_tables(pg)
    readable_unscoped = {name for name, (scoped, readable) in tables.items() if readable and not scoped}
    unreadable = {name for name, (_, readable) in tables.items() if not readable}
    assert readable_unscoped == READABLE_WITHOUT_IMO_ID
    assert unreadable == SERVICE_ONLY


async def test_member_reads_own_imo_rows_only(two_tenants: asyncpg.Connection) -> None:
    """In every IMO-scoped table a member of IMO A sees A's rows and none of IMO B's."""
    tables = await tenant_tables(two_tenants)
    assert "public.instagram_refresh_jobs" in tables
    seen: dict[str, tuple[int, int]] = {}
    for table in tables:
        async with acting_as(two_tenants, DEMO_MEMBER) as conn:
            own = await conn.fetchval(f"select count(*) from {table} where imo_id = $1", DEMO_IMO)  # noqa: S608
            foreign = await conn.fetchval(f"select count(*) from {table} where imo_id = $1", STARTER_IMO)  # noqa: S608
        seen[table] = (own, foreign)
    assert {t: counts for t, counts in seen.items() if counts[0] < 1 or counts[1] != 0} == {}


async def test_member_sees_only_own_imo(two_tenants: asyncpg.Connection) -> None:
    """The imos table shows a member their own IMO only."""
    async with acting_as(two_tenants, DEMO_MEMBER) as conn:
        names = [r["name"] for r in await conn.fetch("select name from public.imos")]
    assert names == ["Demo Agency"]


async def test_user_without_membership_reads_nothing(two_tenants: asyncpg.Connection) -> None:
    """An authenticated user who belongs to no IMO reads zero rows from every IMO-scoped table."""
    stranger = "00000000-0000-4000-8000-0000000000ff"
    tables = await tenant_tables(two_tenants)
    async with acting_as(two_tenants, stranger) as conn:
        counts = {t: await conn.fetchval(f"select count(*) from {t}") for t in tables}  # noqa: S608
    assert tables and set(counts.values()) == {0}


async def test_admin_cannot_read_service_only_tables(two_tenants: asyncpg.Connection) -> None:
    """OAuth states and Page unsubscriptions (which hold a token) are refused even to an IMO admin."""
    for table in sorted(SERVICE_ONLY):
        async with acting_as(two_tenants, DEMO_ADMIN) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval(f"select count(*) from {table}")  # noqa: S608


async def test_anon_reads_nothing(two_tenants: asyncpg.Connection) -> None:
    """The anon role is refused on every table of ours."""
    tables = await our_tables(two_tenants)
    readable = []
    for table in tables:
        async with acting_as(two_tenants, None, role="anon") as conn:
            try:
                await conn.fetchval(f"select count(*) from {table}")  # noqa: S608
            except asyncpg.InsufficientPrivilegeError:
                continue
            readable.append(table)
    assert tables and readable == []


async def test_member_select_of_token_column_is_denied(two_tenants: asyncpg.Connection) -> None:
    """Selecting page_access_token_encrypted as an authenticated admin fails with permission denied."""
    async with acting_as(two_tenants, DEMO_ADMIN) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("select page_access_token_encrypted from public.instagram_integrations")


async def test_admin_cannot_write_integrations(two_tenants: asyncpg.Connection) -> None:
    """Even an IMO admin cannot insert or update integrations directly; only service_role writes."""
    async with acting_as(two_tenants, DEMO_ADMIN) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("update public.instagram_integrations set status = 'connected'")
    async with acting_as(two_tenants, DEMO_ADMIN) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                """insert into public.instagram_integrations (imo_id, facebook_page_id, instagram_business_account_id)
                   values ($1, '1', '2')""",
                DEMO_IMO,
            )


async def test_member_cannot_write_templates_but_admin_can(pg: asyncpg.Connection) -> None:
    """Templates are written by IMO admins; a plain member's insert is refused by RLS."""
    insert = "insert into public.instagram_message_templates (imo_id, name, body) values ($1, $2, 'Hi')"
    async with acting_as(pg, DEMO_ADMIN) as conn:
        await conn.execute(insert, DEMO_IMO, "by admin")
    async with acting_as(pg, DEMO_MEMBER) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(insert, DEMO_IMO, "by member")


async def test_service_only_functions_are_not_executable_by_api_roles(pg: asyncpg.Connection) -> None:
    """Every public function of ours runs for service_role, never for anon, and for authenticated only if
    it is an app-facing RPC."""
    rows = await pg.fetch(
        """select p.oid::regprocedure::text as signature, p.proname,
                  has_function_privilege('anon', p.oid, 'execute') as anon,
                  has_function_privilege('authenticated', p.oid, 'execute') as authenticated,
                  has_function_privilege('service_role', p.oid, 'execute') as service
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           left join pg_depend d on d.objid = p.oid and d.deptype = 'e'
           where n.nspname = 'public' and d.objid is null"""
    )
    assert {"instagram_store_integrations", *APP_FACING_FUNCTIONS} <= {r["proname"] for r in rows}
    for row in rows:
        assert row["anon"] is False, row["signature"]
        assert row["service"] is True, row["signature"]
        if row["proname"] not in APP_FACING_FUNCTIONS:
            assert row["authenticated"] is False, row["signature"]


async def test_members_may_only_mark_notifications_read(pg: asyncpg.Connection) -> None:
    """Of a notification's columns, an authenticated member may update read_at and nothing else."""
    columns = await pg.fetch(
        "select column_name from information_schema.columns"
        " where table_schema = 'public' and table_name = 'notifications'"
    )
    updatable = {
        c["column_name"]
        for c in columns
        if await pg.fetchval(
            "select has_column_privilege('authenticated', 'public.notifications', $1, 'UPDATE')",
            c["column_name"],
        )
    }
    assert updatable == {"read_at"}


async def test_baseline_leaves_existing_crm_tables_alone(pg: asyncpg.Connection) -> None:
    """Re-applying the baseline where the CRM tables already exist keeps their grants and RLS as they were."""
    baseline = (
        Path(__file__).resolve().parents[2] / "supabase/migrations/20260101000000_crm_baseline.sql"
    ).read_text()
    tr = pg.transaction()
    await tr.start()
    try:
        # The CRM's own choices, which differ from ours:
        await pg.execute("grant select on public.subscription_plans to anon")
        await pg.execute("alter table public.recruiting_leads disable row level security")
        await pg.execute("drop policy imos_select_member on public.imos")
        await pg.execute(baseline)
        assert await pg.fetchval("select has_table_privilege('anon', 'public.subscription_plans', 'SELECT')")
        assert not await pg.fetchval(
            "select relrowsecurity from pg_class where oid = 'public.recruiting_leads'::regclass"
        )
        assert not await pg.fetchval(
            "select count(*) from pg_policies where policyname = 'imos_select_member'"
        )
    finally:
        await tr.rollback()


async def test_plan_features_are_told_only_to_members(pg: asyncpg.Connection) -> None:
    """imo_has_feature answers a signed-in member about their own IMO only; another IMO's plan stays hidden,
    while service-side callers (no claims) still get the answer."""
    ask = "select instagram_private.imo_has_feature($1, 'instagram_messaging')"
    async with acting_as(pg, DEMO_MEMBER) as conn:
        assert await conn.fetchval(ask, DEMO_IMO) is True
    async with acting_as(pg, STARTER_ADMIN) as conn:
        assert await conn.fetchval(ask, DEMO_IMO) is False  # Demo Agency has it; Starter's admin may not know
    assert await pg.fetchval(ask, DEMO_IMO) is True
