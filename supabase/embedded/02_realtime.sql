-- Supabase's initial schema creates the (empty) `supabase_realtime` publication; Realtime streams the
-- changes of the tables added to it. Migrations add ours, so a plain PostgreSQL needs it too.
-- Never applied to a real Supabase project. Re-running is a no-op.

set client_min_messages = error;

do $$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;
