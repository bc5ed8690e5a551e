/**
 * Operations (issue 14): what /metrics, the worker's metrics port and `instagram-dm status` read at scrape
 * time, and the RPC catalogue `docs/rpc.md` is generated from.
 *
 *   instagram_ops_snapshot_v1()    queues per kind (depth by state, how late the most overdue job is,
 *                                  recent burials), integrations by status, tokens expiring within 7 days,
 *                                  webhook processing lag, the last errors. Service-only; read-only.
 *   instagram_rpc_catalogue_v1()   every function of the public schema `authenticated` may execute: its
 *                                  arguments (types, defaults), result type, security, grants and comment.
 *                                  Service-only (`instagram-dm rpc-docs` renders it into docs/rpc.md).
 *
 * The app-facing RPCs' comments are rewritten below in one structured form the catalogue renders:
 *
 *   <what it does, one or two sentences>
 *   Caller: <who may call it>
 *   Returns: <the result's shape>
 *   Refuses: <code>: <when>; <code>: <when>; ...
 */

/** --- Section: the operations snapshot --- */

-- Failed, unroutable and discarded deliveries are kept (until replayed or pruned) and counted at every
-- scrape; without this index each count would read the whole table. Few rows, so a small index.
create index if not exists instagram_webhook_events_dead_idx on public.instagram_webhook_events (finalized_at)
  where state in ('failed', 'unroutable', 'discarded');

create or replace function public.instagram_ops_snapshot_v1()
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  with jobs (kind, state, run_at, finalized_at, error_code, error_message, id) as (
    select 'refresh', j.state, j.run_at, j.finalized_at, j.last_error_code, j.last_error_message, j.id::text
    from public.instagram_refresh_jobs j
    where j.state in ('available', 'running', 'retryable')
       or (j.state = 'discarded' and j.finalized_at > now() - interval '1 day')
    union all
    select 'unsubscribe', j.state, j.run_at, j.finalized_at, j.last_error_code, j.last_error_message, j.id::text
    from public.instagram_page_unsubscriptions j
    where j.state in ('available', 'running', 'retryable')
       or (j.state = 'discarded' and j.finalized_at > now() - interval '1 day')
    union all
    select 'webhooks', j.state, j.run_at, j.finalized_at, j.last_error_code, j.last_error_message, j.id::text
    from public.instagram_webhook_events j
    where j.state in ('available', 'running', 'retryable', 'failed', 'unroutable', 'discarded')
    union all
    select 'profiles', j.state, j.run_at, j.finalized_at, j.last_error_code, j.last_error_message, j.id::text
    from public.instagram_profile_fetches j
    where j.state in ('available', 'running', 'retryable')
       or (j.state = 'discarded' and j.finalized_at > now() - interval '1 day')
    union all
    select 'send', j.state, j.run_at, j.finalized_at, j.last_error_code, j.last_error_message, j.id::text
    from public.instagram_send_jobs j
    where j.state in ('available', 'running', 'retryable')
       or (j.state = 'discarded' and j.finalized_at > now() - interval '1 day')
    union all
    select 'media', j.state, j.run_at, j.finalized_at, j.last_error_code, j.last_error_message, j.id::text
    from public.instagram_media j
    where j.state in ('available', 'running', 'retryable')
       or (j.state = 'discarded' and j.finalized_at > now() - interval '1 day')
    union all
    select 'media_purge', j.state, j.run_at, j.finalized_at, j.last_error_code, j.last_error_message, j.id::text
    from public.instagram_media_deletions j
    where j.state in ('available', 'running', 'retryable')
       or (j.state = 'discarded' and j.finalized_at > now() - interval '1 day')
    union all
    -- The scheduled timer's rows in the same words: waiting (due once its time came), going out, failed.
    select 'scheduled',
      case s.status when 'scheduled' then 'available' when 'sending' then 'running' else 'discarded' end,
      s.scheduled_for, s.updated_at, s.last_error_code, s.last_error_message, s.id::text
    from public.instagram_scheduled_messages s
    where s.status in ('scheduled', 'sending')
       or (s.status = 'failed' and s.updated_at > now() - interval '1 day')
  ),
  kinds (kind) as (values ('refresh'), ('unsubscribe'), ('webhooks'), ('profiles'), ('send'), ('media'),
    ('media_purge'), ('scheduled')),
  queues as (
    select k.kind,
      count(j.state) filter (where j.state = 'available') as available,
      count(j.state) filter (where j.state = 'running') as running,
      count(j.state) filter (where j.state = 'retryable') as retryable,
      count(j.state) filter (where j.state in ('available', 'retryable') and j.run_at <= now()) as due,
      coalesce(extract(epoch from now() - min(j.run_at) filter (
        where j.state in ('available', 'retryable') and j.run_at <= now())), 0)::float8 as oldest_due_seconds,
      count(j.state) filter (where j.state = 'discarded' and j.finalized_at > now() - interval '1 day')
        as discarded_24h,
      count(j.state) filter (where j.state = 'failed') as failed,
      count(j.state) filter (where j.state = 'unroutable') as unroutable
    from kinds k left join jobs j on j.kind = k.kind
    group by k.kind
  ),
  errors as (
    select 'integration' as source, i.id::text as id, i.last_error_code as code,
           i.last_error_message as message, i.last_error_at as at
    from public.instagram_integrations i
    where i.last_error_code is not null and i.last_error_at is not null
    union all
    select j.kind, j.id, j.error_code, j.error_message, j.finalized_at
    from jobs j
    where j.state in ('discarded', 'failed') and j.error_code is not null and j.finalized_at is not null
  )
  select jsonb_build_object(
    'server_time', now(),
    'queues', (select coalesce(jsonb_agg(to_jsonb(q) order by q.kind), '[]'::jsonb) from queues q),
    'integrations', (
      select coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb)
      from (select i.status::text as status, count(*) as n from public.instagram_integrations i group by 1) s),
    'tokens_expiring_7d', (
      select count(*) from public.instagram_integrations i
      where i.status = 'connected' and i.token_expires_at < now() + interval '7 days'),
    'webhook_lag_seconds', (
      select coalesce(extract(epoch from now() - min(e.received_at)), 0)::float8
      from public.instagram_webhook_events e where e.state in ('available', 'running', 'retryable')),
    'last_errors', (
      select coalesce(jsonb_agg(to_jsonb(e) order by e.at desc), '[]'::jsonb)
      from (select * from errors order by at desc limit 10) e)
  )
$$;
comment on function public.instagram_ops_snapshot_v1() is
  'What /metrics and `instagram-dm status` show (service_role only, read-only): per job kind the jobs available, '
  'running, retryable, due, how late the most overdue one is (seconds), discarded in the last 24 h, and for '
  'webhooks the failed and unroutable deliveries kept; integrations by status; connected tokens expiring '
  'within 7 days; the age of the oldest unprocessed webhook delivery; the last 10 errors.';
revoke execute on function public.instagram_ops_snapshot_v1() from public, anon, authenticated;
grant execute on function public.instagram_ops_snapshot_v1() to service_role;

/** --- Section: the RPC catalogue --- */

create or replace function public.instagram_rpc_catalogue_v1()
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'name', p.proname,
    'signature', p.oid::regprocedure::text,
    'arguments', (
      select coalesce(jsonb_agg(jsonb_build_object(
        'name', p.proargnames[a.n],
        'type', pg_catalog.format_type(p.proargtypes[a.n - 1], null),
        'default', pg_catalog.pg_get_function_arg_default(p.oid, a.n)) order by a.n), '[]'::jsonb)
      from generate_series(1, p.pronargs) as a(n)),
    'returns', pg_catalog.pg_get_function_result(p.oid),
    'security', case when p.prosecdef then 'definer' else 'invoker' end,
    'volatility', case p.provolatile when 'i' then 'immutable' when 's' then 'stable' else 'volatile' end,
    'granted_to', (
      select coalesce(jsonb_agg(r.role order by r.role), '[]'::jsonb)
      from unnest(array['anon', 'authenticated', 'service_role']) as r(role)
      where pg_catalog.has_function_privilege(r.role, p.oid, 'execute')),
    'comment', pg_catalog.obj_description(p.oid, 'pg_proc')
  ) order by p.proname, p.oid::regprocedure::text), '[]'::jsonb)
  from pg_catalog.pg_proc p
  join pg_catalog.pg_namespace n on n.oid = p.pronamespace
  where n.nspname = 'public'
    and pg_catalog.has_function_privilege('authenticated', p.oid, 'execute')
    and not exists (select 1 from pg_catalog.pg_depend d where d.objid = p.oid and d.deptype = 'e')
$$;
comment on function public.instagram_rpc_catalogue_v1() is
  'Every public function authenticated may execute, with its arguments, result, security, grants and comment '
  '(service_role only): what `instagram-dm rpc-docs` renders into docs/rpc.md.';
revoke execute on function public.instagram_rpc_catalogue_v1() from public, anon, authenticated;
grant execute on function public.instagram_rpc_catalogue_v1() to service_role;

/** --- Section: the app-facing RPCs' comments, in the catalogue's form --- */

comment on function public.instagram_integration_status(uuid) is
$c$The IMO's Instagram integrations with safe fields only (never a token). Security invoker: RLS decides, so a non-member gets [].
Caller: members of the IMO (authenticated)
Returns: array of {id, imo_id, status, instagram_business_account_id, instagram_username, instagram_profile_picture_url, facebook_page_id, facebook_page_name, token_expires_at, data_access_expires_at, last_refreshed_at, last_error_code, last_error_message, last_error_at, webhook_subscribed, granted_scopes, connected_at, updated_at}
Refuses: none ([] for anyone who is not a member)$c$;

comment on function public.instagram_disconnect(uuid) is
$c$Disconnects an integration: its tokens are wiped, its status becomes disconnected and the Page's webhook unsubscribe is queued.
Caller: owners and admins of the integration's IMO
Returns: {id, status: disconnected, unsubscribe_queued}
Refuses: integration_not_found: no such integration, or the caller is not an owner or admin of its IMO$c$;

comment on function public.instagram_list_conversations(uuid, integer, timestamp with time zone, uuid, boolean) is
$c$The IMO's conversations, newest activity first, keyset-paged on last_message_at (pass the last row's last_message_at as p_before). Security invoker: RLS decides.
Caller: members of the IMO
Returns: array of {id, integration_id, participant: {igsid, username, name, profile_picture_url}, last_message_preview, last_message_at, last_inbound_at, unread_count, window_closes_at, human_agent_until, recruiting_lead_id}
Refuses: none ([] for anyone who is not a member)$c$;

comment on function public.instagram_list_messages(uuid, integer, timestamp with time zone) is
$c$A conversation's messages, newest first, keyset-paged on sent_at; an unsent message has text null. Security invoker: RLS decides.
Caller: members of the conversation's IMO
Returns: array of {id, meta_message_id, direction, message_type, text, attachments, status, reactions, reply_to, sent_by_user_id, error_code, error_message, sent_at, delivered_at, read_at, deleted, edit_count}
Refuses: none ([] for anyone who is not a member)$c$;

comment on function public.instagram_mark_conversation_read(uuid) is
$c$Sets a conversation's unread count to 0 (an older message arriving later does not raise it again).
Caller: members of the conversation's IMO
Returns: {id, unread_count}
Refuses: not_found: no such conversation, or the caller is not a member of its IMO$c$;

comment on function public.instagram_send_message(uuid, text, jsonb, uuid) is
$c$Queues one outbound message in the conversation as the calling member; the worker sends it. The same p_client_message_id twice returns the first message, never a second send.
Caller: members of the conversation's IMO; the integration connected; the plan has instagram_messaging
Returns: the message object of instagram_list_messages (status queued) plus client_message_id
Refuses: not_found: no such conversation, or the caller is not a member; integration_not_connected: the account needs reconnecting; feature_not_in_plan: the IMO's plan lacks instagram_messaging; empty_message: no text and no attachment; invalid_attachment: not {type: image|video|audio|file, url: https://...}, or sent with text; message_too_long: over 1,000 UTF-8 bytes; outside_messaging_window: more than 24 hours (7 days with HUMAN_AGENT) since the contact's last message; monthly_limit_reached: the plan's monthly send limit is used up$c$;

comment on function public.instagram_retry_message(uuid) is
$c$Queues a failed outbound message again, the sending rules checked anew.
Caller: members of the message's IMO
Returns: the message object of instagram_list_messages (status queued)
Refuses: not_found: no such message, or the caller is not a member; not_retryable: the message is not a failed outbound one; integration_not_connected, feature_not_in_plan, message_too_long, outside_messaging_window, monthly_limit_reached: as for instagram_send_message$c$;

comment on function public.instagram_usage_summary(uuid, date) is
$c$An IMO's usage in a month (default: the current one).
Caller: members of the IMO
Returns: {month, messages_sent, messages_received, api_calls, sends_pending, monthly_limit, remaining}
Refuses: not_found: no such IMO for this user$c$;

comment on function public.instagram_upsert_template(uuid, text, text, text, uuid) is
$c$Creates a message template, or updates the one p_id names; its variables are derived from the body (a trigger keeps them so however the row is written).
Caller: owners and admins of the IMO
Returns: {id, imo_id, name, body, variables, category, is_active, created_by, created_at, updated_at}
Refuses: not_found: no such IMO or template for this user; forbidden: the caller is a member but not an admin; invalid_name: empty or too long; invalid_body: empty or over 1,000 bytes; invalid_category: not one of the template categories; name_taken: the IMO has a template of that name$c$;

comment on function public.instagram_delete_template(uuid) is
$c$Deletes a message template.
Caller: owners and admins of the template's IMO
Returns: {id, deleted}
Refuses: not_found: no such template, or the caller is not in its IMO; forbidden: the caller is a member but not an admin$c$;

comment on function public.instagram_render_template(uuid, uuid, jsonb) is
$c$Exactly what the template would send in the conversation: {{first_name}}, {{last_name}}, {{full_name}}, {{username}}, {{agent_name}}, {{agency_name}} and the caller's p_variables on top; {{name|default}} falls back to its default; one pass, so a value is never expanded again.
Caller: members of the IMO of the template and the conversation
Returns: {text, variables}
Refuses: not_found: no such template or conversation for this user; invalid_variables: p_variables is not an object of strings; missing_variables: names each variable without a value; message_too_long: the text is over 1,000 UTF-8 bytes$c$;
