/**
 * Extensions the integration relies on, created the same way on Supabase and on the embedded
 * database: pgcrypto in `extensions` (token encryption), pg_cron in pg_catalog (daily refresh sweep).
 * pg_cron can only live in the database named by cron.database_name (`postgres`, as on Supabase).
 */

create extension if not exists pgcrypto with schema extensions;
create extension if not exists pg_cron with schema pg_catalog;
grant usage on schema cron to postgres;
