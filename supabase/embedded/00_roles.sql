-- What the Supabase Postgres image provides and our migrations rely on, for a plain PostgreSQL 15.
-- Follows supabase/postgres: migrations/db/init-scripts/00000000000000-initial-schema.sql,
-- 00000000000003-post-setup.sql and migrations/db/migrations/{20230201083204_grant_auth_roles_to_postgres,
-- 20230529180330_alter_api_roles_for_inherit,20221028101028_set_authenticator_timeout}.sql.
-- Never applied to a real Supabase project. Every statement is guarded, so re-running is a no-op.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit password 'postgres';
  end if;
end
$$;

-- 20230529180330_alter_api_roles_for_inherit.sql
alter role anon inherit;
alter role authenticated inherit;
alter role service_role inherit;

grant anon, authenticated, service_role to authenticator;
-- 20230201083204_grant_auth_roles_to_postgres.sql
grant anon, authenticated, service_role to postgres;

alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
-- Not in the image: a bound for service_role too (the API and worker), so no statement or lock wait
-- runs forever even if a client-side timeout is lost. Applies where sessions log in as (or PostgREST
-- switches to) service_role; our asyncpg connections are bounded on the client side as well
-- (INSTAGRAM_DB_TIMEOUT_SECONDS). The README advises the same for a real Supabase project.
alter role service_role set statement_timeout = '30s';
alter role service_role set lock_timeout = '10s';
alter role postgres set search_path = "$user", public, extensions;

create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;
create extension if not exists "uuid-ossp" with schema extensions;
grant usage on schema public, extensions to postgres, anon, authenticated, service_role;

-- Default privileges as the image sets them for objects postgres creates in public (post-setup),
-- before `[api] auto_expose_new_tables = false` revokes them. Our migrations grant explicitly and
-- revoke what they must not expose, so they are correct either way; see the README.
alter default privileges in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to postgres, anon, authenticated, service_role;

-- pg_cron lives in pg_catalog on Supabase; the migrations create it the same way on both.
-- The supabase_migrations schema is created by the Supabase CLI itself.
