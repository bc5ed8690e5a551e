/**
 * Findings of Supabase's Security and Performance Advisor (`supabase db advisors`, run by
 * `make dbcheck` on every `make test`), fixed. Before this migration the advisor reported:
 *
 *   WARN multiple_permissive_policies  instagram_message_templates had two permissive SELECT policies
 *                                      for `authenticated` (`…_select_member`, and `…_write_admin`,
 *                                      which was `for all`); Postgres evaluates both for every row read.
 *   INFO unindexed_foreign_keys x 13   a delete or key update on the referenced table (an IMO, an
 *                                      integration, a conversation, an auth user) scanned the whole
 *                                      referencing table to cascade or set null.
 *
 * After it: no WARN, and every foreign key has an index whose leading columns are the key's columns
 * (tests/db/test_supabase_checks.py holds later migrations to that). Keys on nullable columns that
 * are mostly null (who sent, who created, which message it became) get partial indexes `where … is
 * not null`: the lookups a cascade makes (`col = $1`) can use them, and rows without a value cost
 * nothing. The remaining INFO findings are accepted, with reasons, in scripts/dbcheck.py.
 *
 * Indexes are built with plain `create index` (a migration is one transaction, so not
 * `concurrently`): each takes a SHARE lock on its table, blocking writes while it builds.
 */

/** --- Section: instagram_message_templates — one permissive policy per action --- */

-- The same access as before: SELECT is allowed to members or admins (the union of the two old
-- policies; today every admin is a member, so the second arm only keeps that true by construction);
-- INSERT, UPDATE and DELETE to admins, with the same USING and WITH CHECK as the old `for all`.
drop policy instagram_message_templates_select_member on public.instagram_message_templates;
drop policy instagram_message_templates_write_admin on public.instagram_message_templates;

create policy instagram_message_templates_select_member on public.instagram_message_templates
  for select to authenticated
  using (imo_id in (select instagram_private.user_imo_ids()) or instagram_private.is_imo_admin(imo_id));
create policy instagram_message_templates_insert_admin on public.instagram_message_templates
  for insert to authenticated
  with check (instagram_private.is_imo_admin(imo_id));
create policy instagram_message_templates_update_admin on public.instagram_message_templates
  for update to authenticated
  using (instagram_private.is_imo_admin(imo_id))
  with check (instagram_private.is_imo_admin(imo_id));
create policy instagram_message_templates_delete_admin on public.instagram_message_templates
  for delete to authenticated
  using (instagram_private.is_imo_admin(imo_id));

/** --- Section: indexes covering foreign keys --- */

-- Composite (…, imo_id) keys: the parent's (id, imo_id) unique key is referenced, so the index must
-- lead with both columns.
create index instagram_conversations_integration_idx
  on public.instagram_conversations (integration_id, imo_id);
create index instagram_messages_conversation_idx
  on public.instagram_messages (conversation_id, imo_id);
-- These two replace an index that led with the key's first column (same name, same lookups) instead of
-- adding one: every job state change rewrites each index of the queue table, so a second index would
-- slow every claim and completion. An integration has few job rows, so ordering them by created_at
-- after the imo_id column costs nothing.
drop index if exists public.instagram_refresh_jobs_integration_idx;
create index instagram_refresh_jobs_integration_idx
  on public.instagram_refresh_jobs (integration_id, imo_id, created_at desc);
drop index if exists public.instagram_scheduled_messages_conversation_idx;
create index instagram_scheduled_messages_conversation_idx
  on public.instagram_scheduled_messages (conversation_id, imo_id);

-- Short-lived connect states: both keys are not null.
create index instagram_oauth_states_imo_idx on public.instagram_oauth_states (imo_id);
create index instagram_oauth_states_user_idx on public.instagram_oauth_states (user_id);

-- Nullable references, mostly null.
create index instagram_integrations_connected_by_idx
  on public.instagram_integrations (connected_by) where connected_by is not null;
create index instagram_message_templates_created_by_idx
  on public.instagram_message_templates (created_by) where created_by is not null;
create index instagram_messages_sent_by_user_idx
  on public.instagram_messages (sent_by_user_id) where sent_by_user_id is not null;
create index instagram_page_unsubscriptions_integration_idx
  on public.instagram_page_unsubscriptions (integration_id) where integration_id is not null;
create index instagram_scheduled_messages_created_by_idx
  on public.instagram_scheduled_messages (created_by) where created_by is not null;
create index instagram_scheduled_messages_sent_message_idx
  on public.instagram_scheduled_messages (sent_message_id) where sent_message_id is not null;

-- public.notifications is the CRM's table. Like the baseline, change it only where it is our stand-in
-- (the baseline's `notifications_select_recipient` policy marks that) and nothing covers the key yet.
do $notifications$
begin
  if exists (
       select 1 from pg_catalog.pg_policies
       where schemaname = 'public' and tablename = 'notifications' and policyname = 'notifications_select_recipient'
     )
     and not exists (
       select 1 from pg_catalog.pg_index i
       where i.indrelid = 'public.notifications'::regclass
         and i.indkey[0] = (select a.attnum from pg_catalog.pg_attribute a
                            where a.attrelid = 'public.notifications'::regclass and a.attname = 'user_id')
     )
  then
    create index notifications_user_id_idx on public.notifications (user_id) where user_id is not null;
  end if;
end
$notifications$;
