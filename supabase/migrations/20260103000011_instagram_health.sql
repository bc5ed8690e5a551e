/**
 * instagram_health(): what `instagram-dm doctor` and GET /readyz ask the database — extensions
 * present and which migrations the Supabase CLI has recorded. Service-only.
 */

create or replace function public.instagram_health()
returns jsonb
language sql stable
security definer
set search_path = ''
as $$
  select jsonb_build_object(
    'pgcrypto', exists (select 1 from pg_catalog.pg_extension where extname = 'pgcrypto'),
    'pg_cron', exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron'),
    'migrations', coalesce(
      (select jsonb_agg(m.version order by m.version) from supabase_migrations.schema_migrations m), '[]'::jsonb),
    'server_time', now()
  )
$$;
comment on function public.instagram_health() is 'Readiness facts for doctor and /readyz (service_role only).';
revoke execute on function public.instagram_health() from public, anon, authenticated;
grant execute on function public.instagram_health() to service_role;
