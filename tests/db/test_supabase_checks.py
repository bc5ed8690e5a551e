"""What Supabase's advisor checks (scripts/dbcheck.py), held from pg_catalog on any database the tests run on."""

from __future__ import annotations

import asyncpg

SCHEMAS = ["public", "instagram_private"]


async def test_every_foreign_key_is_covered_by_an_index(pg: asyncpg.Connection) -> None:
    """Each foreign key has a valid index leading with its columns, in order, so a delete of the
    referenced row (cascade or set null) looks up instead of scanning; a partial index counts only
    when its predicate is `<column> is not null`, which every such lookup implies."""
    keys = await pg.fetch(
        """select c.conrelid, c.conrelid::regclass::text as tbl, c.conname, c.conkey::int[] as cols,
                  (select array_agg(a.attname::text order by k.i)
                   from unnest(c.conkey) with ordinality k(attnum, i)
                   join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum) as names
           from pg_catalog.pg_constraint c
           join pg_catalog.pg_namespace n on n.oid = c.connamespace
           where c.contype = 'f' and n.nspname = any($1::text[])
             and not exists (select 1 from pg_catalog.pg_depend d where d.objid = c.conrelid and d.deptype = 'e')""",
        SCHEMAS,
    )
    indexes = await pg.fetch(
        """select i.indrelid, string_to_array(i.indkey::text, ' ')::int[] as cols,
                  pg_catalog.pg_get_expr(i.indpred, i.indrelid) as predicate
           from pg_catalog.pg_index i
           where i.indisvalid and i.indrelid = any($1::oid[])""",
        list({k["conrelid"] for k in keys}),
    )
    assert keys, "no foreign keys found: is this the migrated database?"

    def covers(index: asyncpg.Record, key: asyncpg.Record) -> bool:
        if index["indrelid"] != key["conrelid"] or index["cols"][: len(key["cols"])] != key["cols"]:
            return False
        nullable_ok = {f"({name} IS NOT NULL)" for name in key["names"]} if len(key["names"]) == 1 else set()
        return index["predicate"] is None or index["predicate"] in nullable_ok

    uncovered = [
        f"{k['tbl']}.{k['conname']} ({', '.join(k['names'])})"
        for k in keys
        if not any(covers(i, k) for i in indexes)
    ]
    assert uncovered == [], f"add an index leading with the key's columns in a new migration: {uncovered}"


async def test_no_two_permissive_policies_for_one_role_and_action(pg: asyncpg.Connection) -> None:
    """Per table, role and action at most one permissive policy applies (Postgres runs each of them on
    every row; merge them with `or`): `for all` counts for select, insert, update and delete."""
    rows = await pg.fetch(
        """with p as (
             select schemaname || '.' || tablename as tbl, policyname, r.role, a.action
             from pg_catalog.pg_policies
             cross join lateral unnest(roles) r(role)
             cross join lateral unnest(case when cmd = 'ALL' then array['SELECT', 'INSERT', 'UPDATE', 'DELETE']
                                            else array[cmd] end) a(action)
             where permissive = 'PERMISSIVE' and schemaname = any($1::text[])
           )
           select tbl, role, action, array_agg(policyname::text order by policyname) as policies
           from p group by tbl, role, action having count(*) > 1 order by 1, 2, 3""",
        SCHEMAS,
    )
    assert [dict(r) for r in rows] == []
