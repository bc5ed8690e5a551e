"""Row level security and grants, exercised the way PostgREST runs a request (role + JWT claims)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.db.factories import tenant_rows
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO, DEMO_MEMBER, STARTER_IMO, acting_as

IMO_TABLES = [
    "instagram_integrations",
    "instagram_conversations",
    "instagram_messages",
    "instagram_scheduled_messages",
    "instagram_message_templates",
    "instagram_usage",
    "recruiting_leads",
    "notifications",
    "imo_members",
    "imo_subscriptions",
]
ALL_TABLES = [*IMO_TABLES, "imos", "subscription_plans"]
APP_FACING_FUNCTIONS = {"instagram_integration_status", "instagram_disconnect"}


@pytest.fixture
async def two_tenants(pg: asyncpg.Connection) -> asyncpg.Connection:
    await tenant_rows(pg, DEMO_IMO)
    await tenant_rows(pg, STARTER_IMO)
    return pg


@pytest.mark.parametrize("table", IMO_TABLES)
async def test_member_reads_own_imo_rows_only(two_tenants: asyncpg.Connection, table: str) -> None:
    """A member of IMO A sees A's rows and none of IMO B's."""
    column = "imo_id"
    async with acting_as(two_tenants, DEMO_MEMBER) as conn:
        own = await conn.fetchval(f"select count(*) from public.{table} where {column} = $1", DEMO_IMO)  # noqa: S608
        foreign = await conn.fetchval(f"select count(*) from public.{table} where {column} = $1", STARTER_IMO)  # noqa: S608
    assert own >= 1
    assert foreign == 0


async def test_member_sees_only_own_imo(two_tenants: asyncpg.Connection) -> None:
    """The imos table shows a member their own IMO only."""
    async with acting_as(two_tenants, DEMO_MEMBER) as conn:
        names = [r["name"] for r in await conn.fetch("select name from public.imos")]
    assert names == ["Demo Agency"]


async def test_user_without_membership_reads_nothing(two_tenants: asyncpg.Connection) -> None:
    """An authenticated user who belongs to no IMO reads zero rows from every IMO-scoped table."""
    stranger = "00000000-0000-4000-8000-0000000000ff"
    async with acting_as(two_tenants, stranger) as conn:
        counts = {t: await conn.fetchval(f"select count(*) from public.{t}") for t in IMO_TABLES}  # noqa: S608
    assert set(counts.values()) == {0}


@pytest.mark.parametrize("table", ALL_TABLES)
async def test_anon_reads_nothing(two_tenants: asyncpg.Connection, table: str) -> None:
    """The anon role has no access to any table."""
    async with acting_as(two_tenants, None, role="anon") as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval(f"select count(*) from public.{table}")  # noqa: S608


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_api_roles_cannot_select_token_columns(pg: asyncpg.Connection, role: str) -> None:
    """No API role has a privilege on any *_encrypted column, so tokens cannot be selected."""
    rows = await pg.fetch(
        """select c.table_name, c.column_name from information_schema.columns c
           where c.table_schema = 'public' and c.column_name like '%\\_encrypted'"""
    )
    assert rows, "expected token columns"
    for row in rows:
        for privilege in ("SELECT", "INSERT", "UPDATE", "REFERENCES"):
            allowed = await pg.fetchval(
                "select has_column_privilege($1, format('public.%I', $2::text), $3, $4)",
                role,
                row["table_name"],
                row["column_name"],
                privilege,
            )
            assert allowed is False, (role, row["table_name"], row["column_name"], privilege)


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
    """Every public function except the app-facing RPCs is revoked from public, anon and authenticated."""
    rows = await pg.fetch(
        """select p.oid::regprocedure::text as signature, p.proname,
                  has_function_privilege('anon', p.oid, 'execute') as anon,
                  has_function_privilege('authenticated', p.oid, 'execute') as authenticated,
                  has_function_privilege('service_role', p.oid, 'execute') as service
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           left join pg_depend d on d.objid = p.oid and d.deptype = 'e'
           where n.nspname = 'public' and d.objid is null"""
    )
    for row in rows:
        assert row["anon"] is False, row["signature"]
        assert row["service"] is True, row["signature"]
        if row["proname"] not in APP_FACING_FUNCTIONS:
            assert row["authenticated"] is False, row["signature"]


async def test_security_definer_functions_pin_an_empty_search_path(pg: asyncpg.Connection) -> None:
    """Every security definer function of ours sets search_path to ''."""
    rows = await pg.fetch(
        """select p.oid::regprocedure::text as signature, p.proconfig
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname in ('public', 'instagram_private') and p.prosecdef"""
    )
    assert rows
    for row in rows:
        assert 'search_path=""' in (row["proconfig"] or []), row["signature"]


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
