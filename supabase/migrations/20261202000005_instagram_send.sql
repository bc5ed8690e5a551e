/**
 * Sending: an outbound message is queued by the app (`instagram_send_message`, as the user), sent by the
 * worker's `send` kind exactly once, paced per Instagram account in the database, and metered per IMO.
 *
 * Exactly once. Meta has no idempotency key, so a request whose outcome we do not know (a timeout after it
 * left, a 5xx, `1/1357046`, a worker killed mid-request) is never simply sent again: the message becomes
 * `unknown` and waits `echo_wait_seconds` for Meta's echo, which the echo trigger below matches to it (same
 * conversation, same text or kind, still unconfirmed). Only when no echo came is it sent again. The remaining
 * risk: Meta accepted a message whose echo does not reach us within the wait (webhooks off or late) — that
 * message can then go out twice. Nothing else can send it twice: each send is a leased job, and every path
 * that does not know whether the request left (lease expiry, release at shutdown, a failure while sending)
 * goes through `unknown`.
 *
 * Statuses: queued -> sending -> sent -> read, or failed (error_code + error_message), or unknown -> sent
 * (echo) | sending (no echo; sent again) | failed (attempts used up).
 */

alter type public.instagram_message_status add value if not exists 'unknown';

/** --- Section: settings the worker publishes (the app's RPCs read them; PostgREST has no environment) --- */

create table public.instagram_settings (
  id boolean primary key default true check (id),
  human_agent_enabled boolean not null default false,
  send_rate_per_second numeric not null default 100 check (send_rate_per_second > 0 and send_rate_per_second <= 1000),
  echo_wait_seconds numeric not null default 20 check (echo_wait_seconds >= 0 and echo_wait_seconds <= 3600),
  updated_at timestamptz not null default now()
);
comment on table public.instagram_settings is
  'One row: the sending settings of the workers (INSTAGRAM_HUMAN_AGENT_ENABLED, INSTAGRAM_SEND_RATE_PER_SECOND, '
  'INSTAGRAM_SEND_ECHO_WAIT_SECONDS), published by each worker at start-up; the defaults until then.';
insert into public.instagram_settings default values;
alter table public.instagram_settings enable row level security;
revoke all on public.instagram_settings from anon, authenticated;
grant all on public.instagram_settings to service_role;

create or replace function public.instagram_settings_apply_v1(p_settings jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_settings;
begin
  if jsonb_typeof(p_settings) is distinct from 'object' then
    raise exception 'invalid_settings' using errcode = '22023', detail = 'Settings must be a JSON object.';
  end if;
  update public.instagram_settings s set
    human_agent_enabled = coalesce((p_settings ->> 'human_agent_enabled')::boolean, s.human_agent_enabled),
    send_rate_per_second = coalesce((p_settings ->> 'send_rate_per_second')::numeric, s.send_rate_per_second),
    echo_wait_seconds = coalesce((p_settings ->> 'echo_wait_seconds')::numeric, s.echo_wait_seconds),
    updated_at = now()
  returning * into v_row;
  return to_jsonb(v_row) - 'id';
end
$$;
comment on function public.instagram_settings_apply_v1(jsonb) is
  'Stores the sending settings a worker runs with ({human_agent_enabled, send_rate_per_second, echo_wait_seconds}); '
  'returns them.';
revoke execute on function public.instagram_settings_apply_v1(jsonb) from public, anon, authenticated;
grant execute on function public.instagram_settings_apply_v1(jsonb) to service_role;

/** --- Section: the plan's monthly send limit and the usage counters --- */

alter table public.subscription_plans add column if not exists feature_limits jsonb not null default '{}';
comment on column public.subscription_plans.feature_limits is
  'Limits per feature, e.g. {"instagram_messaging": {"monthly_sends": 10000}}; absent means the default.';
update public.subscription_plans
set feature_limits = jsonb_set(feature_limits, '{instagram_messaging}', '{"monthly_sends": 10000}')
where 'instagram_messaging' = any (features) and not feature_limits ? 'instagram_messaging';

alter table public.instagram_usage
  add column sends_pending integer not null default 0 check (sends_pending >= 0);
comment on column public.instagram_usage.sends_pending is
  'Outbound messages queued in this month and not yet sent or failed: they count against the monthly limit.';

create or replace function instagram_private.monthly_send_limit(p_imo_id uuid)
returns integer
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce((
    select (p.feature_limits -> 'instagram_messaging' ->> 'monthly_sends')::integer
    from public.imo_subscriptions s join public.subscription_plans p on p.id = s.plan_id
    where s.imo_id = p_imo_id), 10000)
$$;
comment on function instagram_private.monthly_send_limit(uuid) is
  'The IMO''s monthly send limit from its plan''s feature_limits (10,000 when the plan names none).';
revoke all on function instagram_private.monthly_send_limit(uuid) from public, anon, authenticated;
grant execute on function instagram_private.monthly_send_limit(uuid) to service_role;

create or replace function instagram_private.usage_month(p_at timestamptz)
returns date
language sql
immutable
set search_path = ''
as $$
  select date_trunc('month', p_at at time zone 'UTC')::date
$$;
comment on function instagram_private.usage_month(timestamptz) is 'The usage month (UTC) of a time.';
revoke all on function instagram_private.usage_month(timestamptz) from public, anon, authenticated;
grant execute on function instagram_private.usage_month(timestamptz) to service_role;

create or replace function instagram_private.messages_count_sends_on_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.instagram_usage as u (imo_id, month, sends_pending)
  select n.imo_id, instagram_private.usage_month(n.created_at), count(*)
  from inserted n where n.direction = 'outbound' and n.status = 'queued'
  group by 1, 2
  order by 1, 2
  on conflict (imo_id, month) do update set sends_pending = u.sends_pending + excluded.sends_pending;
  return null;
end
$$;
comment on function instagram_private.messages_count_sends_on_insert() is
  'Per statement: queued outbound messages count as pending sends of their IMO''s month.';
revoke all on function instagram_private.messages_count_sends_on_insert() from public, anon, authenticated;
grant execute on function instagram_private.messages_count_sends_on_insert() to service_role;
create trigger instagram_messages_count_sends_on_insert after insert on public.instagram_messages
  referencing new table as inserted
  for each statement execute function instagram_private.messages_count_sends_on_insert();

create or replace function instagram_private.messages_count_sends_on_update()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- pending: queued, sending, unknown. Leaving pending for sent counts a send (this month); for failed, none;
  -- a retry of a failed message is pending again. Pending is kept on the month the message was queued in.
  with moves as (
    select n.imo_id, instagram_private.usage_month(n.created_at) as queued_month,
      o.status::text in ('queued', 'sending', 'unknown') as was_pending,
      n.status::text in ('queued', 'sending', 'unknown') as is_pending,
      o.status::text in ('queued', 'sending', 'unknown') and n.status::text in ('sent', 'delivered', 'read') as sent
    from updated n join previous o on o.id = n.id
    where n.direction = 'outbound' and n.status is distinct from o.status
  ), deltas as (
    select imo_id, queued_month as month,
      sum(case when is_pending and not was_pending then 1 when was_pending and not is_pending then -1 else 0 end)
        as pending, 0 as sent
    from moves group by 1, 2
    union all
    select imo_id, instagram_private.usage_month(now()), 0, count(*) from moves where sent group by 1, 2
  ), summed as (
    select imo_id, month, sum(pending)::integer as pending, sum(sent)::integer as sent
    from deltas group by 1, 2 having sum(pending) <> 0 or sum(sent) <> 0
  )
  insert into public.instagram_usage as u (imo_id, month, sends_pending, messages_sent)
  select imo_id, month, greatest(pending, 0), sent from summed
  order by 1, 2
  on conflict (imo_id, month) do update set
    sends_pending = greatest(0, u.sends_pending + (select s.pending from summed s
                                                   where s.imo_id = excluded.imo_id and s.month = excluded.month)),
    messages_sent = u.messages_sent + excluded.messages_sent;
  return null;
end
$$;
comment on function instagram_private.messages_count_sends_on_update() is
  'Per statement: outbound messages that became sent count as sent this month; pending sends follow status moves.';
revoke all on function instagram_private.messages_count_sends_on_update() from public, anon, authenticated;
grant execute on function instagram_private.messages_count_sends_on_update() to service_role;
create trigger instagram_messages_count_sends_on_update after update on public.instagram_messages
  referencing old table as previous new table as updated
  for each statement execute function instagram_private.messages_count_sends_on_update();

create or replace function instagram_private.messages_count_sends_on_delete()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.instagram_usage u set sends_pending = greatest(0, u.sends_pending - d.n)
  from (
    select o.imo_id, instagram_private.usage_month(o.created_at) as month, count(*)::integer as n
    from removed o
    where o.direction = 'outbound' and o.status::text in ('queued', 'sending', 'unknown')
    group by 1, 2
  ) d
  where u.imo_id = d.imo_id and u.month = d.month;
  return null;
end
$$;
comment on function instagram_private.messages_count_sends_on_delete() is
  'Per statement: deleted outbound messages that were still pending (a disconnect, a conversation deleted) no '
  'longer count against the monthly limit.';
revoke all on function instagram_private.messages_count_sends_on_delete() from public, anon, authenticated;
grant execute on function instagram_private.messages_count_sends_on_delete() to service_role;
create trigger instagram_messages_count_sends_on_delete after delete on public.instagram_messages
  referencing old table as removed
  for each statement execute function instagram_private.messages_count_sends_on_delete();

create or replace function public.instagram_usage_add_calls_v1(p_counts jsonb)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  if jsonb_typeof(p_counts) is distinct from 'array' then
    raise exception 'invalid_counts' using errcode = '22023', detail = 'Counts must be a JSON array.';
  end if;
  insert into public.instagram_usage as u (imo_id, month, api_calls)
  select c.imo_id, instagram_private.usage_month(now()), sum(c.calls)::integer
  from jsonb_to_recordset(p_counts) as c(imo_id uuid, calls integer)
  where c.calls > 0 and exists (select 1 from public.imos i where i.id = c.imo_id)
  group by 1, 2
  order by 1, 2
  on conflict (imo_id, month) do update set api_calls = u.api_calls + excluded.api_calls;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function public.instagram_usage_add_calls_v1(jsonb) is
  'Adds the Meta API calls a worker made since its last report ([{imo_id, calls}]) to this month''s usage.';
revoke execute on function public.instagram_usage_add_calls_v1(jsonb) from public, anon, authenticated;
grant execute on function public.instagram_usage_add_calls_v1(jsonb) to service_role;

create or replace function public.instagram_usage_summary(p_imo_id uuid, p_month date default null)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_month date := instagram_private.usage_month(coalesce(p_month::timestamptz, now()));
  v_usage public.instagram_usage;
  v_limit integer;
begin
  if p_imo_id is null or p_imo_id not in (select instagram_private.user_imo_ids()) then
    raise exception 'not_found' using errcode = 'P0002', detail = 'No such IMO for this user.';
  end if;
  select * into v_usage from public.instagram_usage where imo_id = p_imo_id and month = v_month;
  v_limit := instagram_private.monthly_send_limit(p_imo_id);
  return jsonb_build_object(
    'month', v_month,
    'messages_sent', coalesce(v_usage.messages_sent, 0),
    'messages_received', coalesce(v_usage.messages_received, 0),
    'api_calls', coalesce(v_usage.api_calls, 0),
    'sends_pending', coalesce(v_usage.sends_pending, 0),
    'monthly_limit', v_limit,
    'remaining', greatest(0, v_limit - coalesce(v_usage.messages_sent, 0) - coalesce(v_usage.sends_pending, 0)));
end
$$;
comment on function public.instagram_usage_summary(uuid, date) is
  'An IMO''s usage in a month (default: this one): sent, received, API calls, pending, the plan''s monthly limit '
  'and what is left; members only.';
revoke execute on function public.instagram_usage_summary(uuid, date) from public, anon;
grant execute on function public.instagram_usage_summary(uuid, date) to authenticated, service_role;

/** --- Section: outbound messages and their send jobs --- */

alter table public.instagram_messages add column client_message_id uuid;
comment on column public.instagram_messages.client_message_id is
  'The app''s id for an outbound message: sending it twice returns the first message.';
create unique index instagram_messages_client_message_key on public.instagram_messages (imo_id, client_message_id)
  where client_message_id is not null;

create table public.instagram_send_jobs (
  id bigint generated always as identity primary key,
  message_id uuid not null references public.instagram_messages (id) on delete cascade,
  imo_id uuid not null,
  integration_id uuid not null references public.instagram_integrations (id) on delete cascade,
  state text not null default 'available'
    check (state in ('available', 'running', 'retryable', 'completed', 'discarded')),
  attempt integer not null default 0 check (attempt >= 0),
  max_attempts integer not null default 8 check (max_attempts between 1 and 100),
  lease_expiries integer not null default 0 check (lease_expiries >= 0),
  max_lease_expiries integer not null default 3 check (max_lease_expiries between 1 and 100),
  run_at timestamptz not null default now(),
  lease_owner text,
  lease_expires_at timestamptz,
  finalized_at timestamptz,
  sending_since timestamptz,
  messaging_type text,
  tag text,
  last_error_code text,
  last_error_message text,
  created_at timestamptz not null default now(),
  constraint instagram_send_jobs_lease_when_running check (
    (state = 'running') = (lease_owner is not null and lease_expires_at is not null)),
  constraint instagram_send_jobs_finalized_iff_terminal check (
    (state in ('completed', 'discarded')) = (finalized_at is not null))
);
comment on table public.instagram_send_jobs is
  'Queue of outbound sends (kind `send`): one live job per message; sending_since is when the last request '
  'that may have reached Meta left.';
comment on column public.instagram_send_jobs.sending_since is
  'When the last request that may have reached Meta was due to leave; an unknown outcome waits for the echo from here.';
create unique index instagram_send_jobs_live_key on public.instagram_send_jobs (message_id)
  where state in ('available', 'running', 'retryable');
create index instagram_send_jobs_message_idx on public.instagram_send_jobs (message_id);
create index instagram_send_jobs_integration_idx on public.instagram_send_jobs (integration_id);
create index instagram_send_jobs_due_idx on public.instagram_send_jobs (run_at, id)
  where state in ('available', 'retryable');
create index instagram_send_jobs_lease_idx on public.instagram_send_jobs (lease_expires_at)
  where state = 'running';
create index instagram_send_jobs_finalized_idx on public.instagram_send_jobs (finalized_at)
  where state in ('completed', 'discarded');
alter table public.instagram_send_jobs enable row level security;
revoke all on public.instagram_send_jobs from anon, authenticated;
grant all on public.instagram_send_jobs to service_role;
revoke all on sequence public.instagram_send_jobs_id_seq from anon, authenticated;

create table public.instagram_send_pacing (
  integration_id uuid primary key references public.instagram_integrations (id) on delete cascade,
  next_slot_at timestamptz not null default now(),
  paused_until timestamptz,
  slowdown real not null default 1 check (slowdown > 0 and slowdown <= 1),
  slowdown_until timestamptz,
  updated_at timestamptz not null default now()
);
comment on table public.instagram_send_pacing is
  'Per Instagram account: the next free send slot (slots are 1 / rate apart, shared by every worker), a pause '
  'after Meta throttled it, and a slowdown while Meta''s usage headers say it is busy.';
alter table public.instagram_send_pacing enable row level security;
revoke all on public.instagram_send_pacing from anon, authenticated;
grant all on public.instagram_send_pacing to service_role;

create or replace function instagram_private.send_jobs_notify()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform pg_notify('instagram_send_jobs', '1');
  return null;
end
$$;
comment on function instagram_private.send_jobs_notify() is 'Wakes the workers (one NOTIFY per statement) for new sends.';
revoke all on function instagram_private.send_jobs_notify() from public, anon, authenticated;
grant execute on function instagram_private.send_jobs_notify() to service_role;
create trigger instagram_send_jobs_notify after insert on public.instagram_send_jobs
  for each statement execute function instagram_private.send_jobs_notify();

/** --- Section: the rules checked before queueing (and again at send time) --- */

create or replace function instagram_private.send_mode(p_last_inbound_at timestamptz, p_human boolean)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  -- RESPONSE inside 24 hours of the contact's last message; a human's reply up to 7 days after it with the
  -- HUMAN_AGENT tag when the app has that feature; otherwise null: Meta would refuse it.
  select case
    when p_last_inbound_at is null then null
    when now() - p_last_inbound_at <= interval '24 hours' then 'RESPONSE'
    when p_human and now() - p_last_inbound_at <= interval '7 days'
      and (select s.human_agent_enabled from public.instagram_settings s) then 'HUMAN_AGENT'
  end
$$;
comment on function instagram_private.send_mode(timestamptz, boolean) is
  'How a message may be sent now: RESPONSE (24-hour window), HUMAN_AGENT (a human, within 7 days, when enabled) '
  'or null (outside the window).';
revoke all on function instagram_private.send_mode(timestamptz, boolean) from public, anon, authenticated;
grant execute on function instagram_private.send_mode(timestamptz, boolean) to service_role;

create or replace function instagram_private.message_json(p_message public.instagram_messages)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'id', p_message.id,
    'meta_message_id', p_message.meta_message_id,
    'client_message_id', p_message.client_message_id,
    'direction', p_message.direction,
    'message_type', p_message.message_type,
    'text', p_message.text,
    'attachments', p_message.attachments,
    'status', p_message.status,
    'reactions', '[]'::jsonb,
    'reply_to', p_message.reply_to,
    'sent_by_user_id', p_message.sent_by_user_id,
    'error_code', p_message.error_code,
    'error_message', p_message.error_message,
    'sent_at', p_message.sent_at,
    'delivered_at', p_message.delivered_at,
    'read_at', p_message.read_at,
    'deleted', p_message.deleted_at is not null,
    'edit_count', p_message.edit_count)
$$;
comment on function instagram_private.message_json(public.instagram_messages) is
  'An outbound message as the send RPCs return it (the shape of instagram_list_messages).';
revoke all on function instagram_private.message_json(public.instagram_messages) from public, anon, authenticated;
grant execute on function instagram_private.message_json(public.instagram_messages) to service_role;

create or replace function instagram_private.send_refusal(
  p_conversation public.instagram_conversations, p_text text, p_attachment jsonb
)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_status public.instagram_connection_status;
  v_usage public.instagram_usage;
begin
  select i.status into v_status from public.instagram_integrations i where i.id = p_conversation.integration_id;
  if v_status is distinct from 'connected' then
    return 'integration_not_connected';
  end if;
  if not instagram_private.imo_has_feature(p_conversation.imo_id, 'instagram_messaging') then
    return 'feature_not_in_plan';
  end if;
  if p_attachment is null and (p_text is null or length(btrim(p_text)) = 0) then
    return 'empty_message';
  end if;
  if p_attachment is not null and p_text is not null and length(btrim(p_text)) > 0 then
    return 'invalid_attachment';  -- Meta sends text and an attachment as two messages
  end if;
  if octet_length(p_text) > 1000 then
    return 'message_too_long';
  end if;
  if p_attachment is not null and (
       jsonb_typeof(p_attachment) <> 'object'
       or coalesce(p_attachment ->> 'type', '') not in ('image', 'video', 'audio', 'file')
       or coalesce(p_attachment ->> 'url', '') !~ '^https://[^/?#@\s]+(/\S*)?$'
       or length(p_attachment ->> 'url') > 2000) then
    return 'invalid_attachment';
  end if;
  if instagram_private.send_mode(p_conversation.last_inbound_at, true) is null then
    return 'outside_messaging_window';
  end if;
  select * into v_usage from public.instagram_usage u
  where u.imo_id = p_conversation.imo_id and u.month = instagram_private.usage_month(now());
  if coalesce(v_usage.messages_sent, 0) + coalesce(v_usage.sends_pending, 0)
       >= instagram_private.monthly_send_limit(p_conversation.imo_id) then
    return 'monthly_limit_reached';
  end if;
  return null;
end
$$;
comment on function instagram_private.send_refusal(public.instagram_conversations, text, jsonb) is
  'Why a human''s message may not be queued in the conversation now (the first rule it breaks), or null.';
revoke all on function instagram_private.send_refusal(public.instagram_conversations, text, jsonb)
  from public, anon, authenticated;
grant execute on function instagram_private.send_refusal(public.instagram_conversations, text, jsonb) to service_role;

create or replace function instagram_private.raise_refusal(p_code text)
returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception '%', p_code using errcode = case p_code
      when 'not_found' then 'P0002'
      when 'feature_not_in_plan' then '42501'
      else '22023' end,
    detail = case p_code
      when 'not_found' then 'No such conversation or message for this user.'
      when 'integration_not_connected' then 'The Instagram account is not connected; reconnect it first.'
      when 'feature_not_in_plan' then 'Instagram messaging is part of the Team plan.'
      when 'empty_message' then 'Write a message or attach a file.'
      when 'invalid_attachment' then
        'An attachment is {"type": image|video|audio|file, "url": "https://..."}, sent without text.'
      when 'message_too_long' then 'Instagram messages are at most 1,000 bytes (UTF-8).'
      when 'outside_messaging_window' then
        'Instagram allows replies for 24 hours after the contact''s last message.'
      when 'monthly_limit_reached' then 'This month''s Instagram message limit of your plan is reached.'
      when 'not_retryable' then 'Only a failed outbound message can be sent again.'
      else p_code end;
end
$$;
comment on function instagram_private.raise_refusal(text) is 'Raises a send refusal with its code, SQLSTATE and a readable detail.';
revoke all on function instagram_private.raise_refusal(text) from public, anon, authenticated;
grant execute on function instagram_private.raise_refusal(text) to service_role;

/** --- Section: the app-facing RPCs --- */

create or replace function public.instagram_send_message(
  p_conversation_id uuid, p_text text default null, p_attachment jsonb default null,
  p_client_message_id uuid default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_conv public.instagram_conversations;
  v_message public.instagram_messages;
  v_refusal text;
begin
  select * into v_conv from public.instagram_conversations c
  where c.id = p_conversation_id and c.imo_id in (select instagram_private.user_imo_ids());
  if not found then
    perform instagram_private.raise_refusal('not_found');
  end if;
  if p_client_message_id is not null then
    select * into v_message from public.instagram_messages m
    where m.imo_id = v_conv.imo_id and m.client_message_id = p_client_message_id;
    if found then
      if v_message.conversation_id <> v_conv.id then
        perform instagram_private.raise_refusal('not_found');
      end if;
      return instagram_private.message_json(v_message);
    end if;
  end if;
  -- One sender at a time per IMO: the monthly limit check and the insert see each other.
  perform pg_advisory_xact_lock(hashtext('instagram_send:' || v_conv.imo_id::text));
  v_refusal := instagram_private.send_refusal(v_conv, p_text, p_attachment);
  if v_refusal is not null then
    perform instagram_private.raise_refusal(v_refusal);
  end if;
  insert into public.instagram_messages (conversation_id, imo_id, direction, message_type, text, attachments,
    status, sent_by_user_id, client_message_id, sent_at)
  values (v_conv.id, v_conv.imo_id, 'outbound',
    coalesce(p_attachment ->> 'type', 'text')::public.instagram_message_type,
    case when p_attachment is null then p_text end,
    case when p_attachment is null then '[]'::jsonb
      else jsonb_build_array(jsonb_build_object('type', p_attachment ->> 'type',
        'payload', jsonb_build_object('url', p_attachment ->> 'url'))) end,
    'queued', (select auth.uid()), p_client_message_id, now())
  on conflict (imo_id, client_message_id) where client_message_id is not null do nothing
  returning * into v_message;
  if v_message.id is null then  -- the same client id won a race
    select * into v_message from public.instagram_messages m
    where m.imo_id = v_conv.imo_id and m.client_message_id = p_client_message_id;
    return instagram_private.message_json(v_message);
  end if;
  insert into public.instagram_send_jobs (message_id, imo_id, integration_id)
  values (v_message.id, v_message.imo_id, v_conv.integration_id);
  return instagram_private.message_json(v_message);
end
$$;
comment on function public.instagram_send_message(uuid, text, jsonb, uuid) is
  'Queues one outbound message in the conversation as the calling member and returns it (status queued); the '
  'same p_client_message_id returns the first message. Refuses: not_found, integration_not_connected, '
  'feature_not_in_plan, empty_message, invalid_attachment, message_too_long, outside_messaging_window, '
  'monthly_limit_reached.';
revoke execute on function public.instagram_send_message(uuid, text, jsonb, uuid) from public, anon;
grant execute on function public.instagram_send_message(uuid, text, jsonb, uuid) to authenticated, service_role;

create or replace function public.instagram_retry_message(p_message_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_message public.instagram_messages;
  v_conv public.instagram_conversations;
  v_refusal text;
begin
  select * into v_message from public.instagram_messages m
  where m.id = p_message_id and m.imo_id in (select instagram_private.user_imo_ids())
  for update;
  if not found then
    perform instagram_private.raise_refusal('not_found');
  end if;
  if v_message.direction <> 'outbound' or v_message.status::text <> 'failed' then
    perform instagram_private.raise_refusal('not_retryable');
  end if;
  select * into v_conv from public.instagram_conversations c where c.id = v_message.conversation_id;
  perform pg_advisory_xact_lock(hashtext('instagram_send:' || v_conv.imo_id::text));
  v_refusal := instagram_private.send_refusal(v_conv, v_message.text,
    case when v_message.message_type::text <> 'text' then jsonb_build_object(
      'type', v_message.attachments -> 0 ->> 'type', 'url', v_message.attachments -> 0 -> 'payload' ->> 'url') end);
  if v_refusal is not null then
    perform instagram_private.raise_refusal(v_refusal);
  end if;
  update public.instagram_messages set status = 'queued', error_code = null, error_message = null
  where id = v_message.id
  returning * into v_message;
  insert into public.instagram_send_jobs (message_id, imo_id, integration_id)
  values (v_message.id, v_message.imo_id, v_conv.integration_id);
  return instagram_private.message_json(v_message);
end
$$;
comment on function public.instagram_retry_message(uuid) is
  'Queues a failed outbound message again (the sending rules re-checked) and returns it; members only.';
revoke execute on function public.instagram_retry_message(uuid) from public, anon;
grant execute on function public.instagram_retry_message(uuid) to authenticated, service_role;

/** --- Section: the echo of our own send confirms it --- */

create or replace function instagram_private.send_complete_waiting(p_message_id uuid)
returns void
language sql
security definer
set search_path = ''
as $$
  -- A job held by a worker is finished by that worker (its answer or its echo wait); never wait for it here.
  update public.instagram_send_jobs j set state = 'completed', finalized_at = now(), last_error_code = null,
    last_error_message = null
  where j.id in (select w.id from public.instagram_send_jobs w
                 where w.message_id = p_message_id and w.state in ('available', 'retryable') for update skip locked)
$$;
comment on function instagram_private.send_complete_waiting(uuid) is
  'Completes the jobs still waiting to send a message Meta is known to have (not the ones a worker holds).';
revoke all on function instagram_private.send_complete_waiting(uuid) from public, anon, authenticated;
grant execute on function instagram_private.send_complete_waiting(uuid) to service_role;

create or replace function instagram_private.messages_match_echo()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_id uuid;
begin
  if exists (select 1 from public.instagram_messages m where m.meta_message_id = new.meta_message_id) then
    return new;  -- known already (its send's answer came first): the insert does nothing
  end if;
  -- An echo Meta sent for a message we sent whose answer we did not get (or have not got yet): the same
  -- conversation, the same text (or, for an attachment, the same kind), still unconfirmed. The oldest wins.
  select m.id into v_id from public.instagram_messages m
  where m.conversation_id = new.conversation_id and m.direction = 'outbound' and m.meta_message_id is null
    and m.status::text in ('sending', 'unknown') and m.message_type = new.message_type
    and coalesce(btrim(m.text), '') = coalesce(btrim(new.text), '')
    and m.created_at > now() - interval '1 day'
  order by m.created_at, m.id
  limit 1
  for update;  -- waits for a send being recorded, then re-checks: a message that just got its mid is skipped
  if v_id is null then
    return new;  -- an echo of a reply from another client (the phone app): stored as it is
  end if;
  begin
    update public.instagram_messages set meta_message_id = new.meta_message_id, status = 'sent',
      error_code = null, error_message = null
    where id = v_id;
  exception when unique_violation then
    return new;  -- the mid was stored meanwhile by its send's answer: the insert does nothing
  end;
  perform instagram_private.send_complete_waiting(v_id);
  return null;  -- the echo is the message we already have
end
$$;
comment on function instagram_private.messages_match_echo() is
  'Before an echo row is stored: if it is the echo of one of our unconfirmed sends, that message gets the mid and '
  'becomes sent (its waiting job completes) and the echo row is not stored.';
revoke all on function instagram_private.messages_match_echo() from public, anon, authenticated;
grant execute on function instagram_private.messages_match_echo() to service_role;
create trigger instagram_messages_match_echo before insert on public.instagram_messages
  for each row when (new.direction = 'outbound' and new.sent_by_user_id is null and new.meta_message_id is not null)
  execute function instagram_private.messages_match_echo();

/** --- Section: the send kind's queue functions --- */

create or replace function instagram_private.send_settle(
  p_job public.instagram_send_jobs, p_job_state text, p_message_status text, p_run_at timestamptz,
  p_error_code text, p_error_message text
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.instagram_send_jobs set
    state = p_job_state,
    run_at = coalesce(p_run_at, run_at),
    finalized_at = case when p_job_state in ('completed', 'discarded') then now() end,
    lease_owner = case when p_job_state = 'running' then lease_owner end,
    lease_expires_at = case when p_job_state = 'running' then lease_expires_at end,
    last_error_code = p_error_code,
    last_error_message = left(p_error_message, 500)
  where id = p_job.id;
  if p_message_status is not null then
    update public.instagram_messages set
      status = p_message_status::public.instagram_message_status,
      error_code = case when p_message_status = 'failed' then p_error_code end,
      error_message = case when p_message_status = 'failed' then left(p_error_message, 500) end
    where id = p_job.message_id and status::text in ('queued', 'sending', 'unknown');
  end if;
end
$$;
comment on function instagram_private.send_settle(public.instagram_send_jobs, text, text, timestamptz, text, text) is
  'Moves a send job to a state and its message (while still unconfirmed) to a status, with the reason.';
revoke all on function instagram_private.send_settle(public.instagram_send_jobs, text, text, timestamptz, text, text)
  from public, anon, authenticated;
grant execute on function instagram_private.send_settle(public.instagram_send_jobs, text, text, timestamptz, text, text)
  to service_role;

create or replace function instagram_private.send_echo_wait()
returns interval
language sql
stable
security definer
set search_path = ''
as $$
  select make_interval(secs => coalesce((select s.echo_wait_seconds from public.instagram_settings s), 20)::double precision)
$$;
comment on function instagram_private.send_echo_wait() is 'How long a send of unknown outcome waits for its echo.';
revoke all on function instagram_private.send_echo_wait() from public, anon, authenticated;
grant execute on function instagram_private.send_echo_wait() to service_role;

create or replace function instagram_private.send_unknown(p_job public.instagram_send_jobs, p_code text, p_message text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- Out of attempts, the message fails with the reason (Meta may still have it: the echo would then show it).
  if p_job.attempt >= p_job.max_attempts then
    perform instagram_private.send_settle(p_job, 'discarded', 'failed', null, 'send_unconfirmed',
      'Meta did not confirm this message and no echo came (' || coalesce(p_code, 'unknown') || ').');
  else
    -- The echo wait, or a backoff capped at 5 minutes once repeated failures make that longer.
    perform instagram_private.send_settle(p_job, 'retryable', 'unknown',
      greatest(now(), coalesce(p_job.sending_since, now())) + greatest(instagram_private.send_echo_wait(),
        make_interval(secs => least(power(2, greatest(p_job.attempt - 1, 0)), 300))), p_code, p_message);
  end if;
end
$$;
comment on function instagram_private.send_unknown(public.instagram_send_jobs, text, text) is
  'A send whose outcome is unknown: the message waits for its echo (retried after the echo wait if none came).';
revoke all on function instagram_private.send_unknown(public.instagram_send_jobs, text, text) from public, anon, authenticated;
grant execute on function instagram_private.send_unknown(public.instagram_send_jobs, text, text) to service_role;

create or replace function instagram_private.send_bury_dead()
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  -- The common burial (discarded, lease_expired); the message it was sending fails with what the app shows.
  update public.instagram_messages m set status = 'failed', error_code = 'send_interrupted',
    error_message = 'The worker stopped while sending this message, every time; Meta may have it. Check before retrying.'
  from public.instagram_send_jobs j
  where j.id in (select instagram_private.queue_bury_dead('public.instagram_send_jobs'))
    and m.id = j.message_id and m.status::text in ('queued', 'sending', 'unknown');
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function instagram_private.send_bury_dead() is
  'Buries the sends whose lease expired max_lease_expiries times (queue_bury_dead) and fails their messages '
  '(send_interrupted); returns how many.';
revoke all on function instagram_private.send_bury_dead() from public, anon, authenticated;
grant execute on function instagram_private.send_bury_dead() to service_role;

create or replace function instagram_private.send_max_lateness()
returns numeric
language sql
immutable
set search_path = ''
as $$
  select 0.04::numeric
$$;
comment on function instagram_private.send_max_lateness() is
  'Seconds a send may leave after its pacing slot; a worker that wakes later asks for a new slot.';
revoke all on function instagram_private.send_max_lateness() from public, anon, authenticated;
grant execute on function instagram_private.send_max_lateness() to service_role;

create or replace function instagram_private.send_take_slot(p_integration_id uuid, p_horizon interval)
returns timestamptz
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_pacing public.instagram_send_pacing;
  v_rate numeric;
  v_slot timestamptz;
begin
  insert into public.instagram_send_pacing (integration_id) values (p_integration_id)
  on conflict (integration_id) do nothing;
  select * into v_pacing from public.instagram_send_pacing where integration_id = p_integration_id for update;
  v_slot := greatest(v_pacing.next_slot_at, now(), coalesce(v_pacing.paused_until, now()));
  if v_slot > now() + p_horizon then
    return null;
  end if;
  select coalesce(max(s.send_rate_per_second), 100) into v_rate from public.instagram_settings s;
  if v_pacing.slowdown_until > now() then
    v_rate := v_rate * v_pacing.slowdown;
  end if;
  -- Slots (1 + lateness) / rate apart: a send leaves at most `lateness` after its slot (a worker that wakes
  -- later takes a new one), so any one-second window meets the slots of 1 + lateness seconds: at most
  -- ceil((1 + lateness) / spacing) = rate of them, however many workers share the account.
  update public.instagram_send_pacing set
    next_slot_at = v_slot + make_interval(secs => ((1 + instagram_private.send_max_lateness()) / v_rate)::double precision),
    updated_at = now()
  where integration_id = p_integration_id;
  return v_slot;
end
$$;
comment on function instagram_private.send_take_slot(uuid, interval) is
  'Takes the Instagram account''s next send slot (shared by every worker), or null when it is further than '
  'p_horizon ahead.';
revoke all on function instagram_private.send_take_slot(uuid, interval) from public, anon, authenticated;
grant execute on function instagram_private.send_take_slot(uuid, interval) to service_role;

create or replace function public.instagram_send_reslot_v1(p_job_id bigint, p_worker text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.instagram_send_jobs;
  v_slot timestamptz;
begin
  -- The job row, then the pacing row: the order the claim and the complete call take them in.
  select * into v_job from public.instagram_send_jobs
  where id = p_job_id and state = 'running' and lease_owner = p_worker for update;
  if not found then
    raise exception 'job_not_held' using errcode = 'P0002', detail = 'This worker does not hold that send.';
  end if;
  -- Null when the account has no slot within the claim's horizon: the worker hands the send back unsent.
  v_slot := instagram_private.send_take_slot(v_job.integration_id, interval '2 seconds');
  update public.instagram_send_jobs set sending_since = v_slot where id = v_job.id;
  return jsonb_build_object('slot_at', extract(epoch from v_slot), 'clock_at', extract(epoch from clock_timestamp()),
    'max_lateness_seconds', instagram_private.send_max_lateness());
end
$$;
comment on function public.instagram_send_reslot_v1(bigint, text) is
  'A new pacing slot for a send p_worker holds but woke too late for (nothing was sent); returns slot_at and '
  'the database clock_at.';
revoke execute on function public.instagram_send_reslot_v1(bigint, text) from public, anon, authenticated;
grant execute on function public.instagram_send_reslot_v1(bigint, text) to service_role;

create or replace function public.instagram_send_claim_v1(
  p_worker text, p_limit integer, p_lease_seconds integer default 300
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_horizon constant interval := interval '2 seconds';  -- slots further ahead are left for a later claim
  v_job public.instagram_send_jobs;
  v_message public.instagram_messages;
  v_conv public.instagram_conversations;
  v_integration public.instagram_integrations;
  v_slot timestamptz;
  v_mode text;
  v_out jsonb := '[]'::jsonb;
begin
  if p_worker is null or length(p_worker) = 0 or p_limit is null or p_limit < 1 or p_limit > 1000
     or p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'invalid_claim' using errcode = '22023',
      detail = 'Claim needs a worker id, a limit of 1 to 1000 and a positive lease.';
  end if;
  perform instagram_private.send_bury_dead();
  for v_job in
    select * from public.instagram_send_jobs j
    where (j.state in ('available', 'retryable') and j.run_at <= now())
       or (j.state = 'running' and j.lease_expires_at < now() and j.lease_expiries + 1 < j.max_lease_expiries)
    order by j.run_at, j.id
    limit p_limit
    for update skip locked
  loop
    -- Never wait for the message row (an echo being matched holds it): leave the job due for a later claim.
    select * into v_message from public.instagram_messages where id = v_job.message_id for update skip locked;
    continue when not found;
    if v_job.state = 'running' then
      -- Its worker died holding it: the request may have left. Never sent blindly: wait for the echo.
      update public.instagram_send_jobs set lease_expiries = lease_expiries + 1 where id = v_job.id;
      if v_message.status::text = 'sending' then
        perform instagram_private.send_unknown(v_job, 'lease_expired', 'The worker stopped while sending.');
        continue;
      end if;
    end if;
    if v_message.status::text in ('sent', 'delivered', 'read') then  -- confirmed by its echo meanwhile
      perform instagram_private.send_settle(v_job, 'completed', null, null, null, null);
      continue;
    end if;
    if v_message.status::text not in ('queued', 'unknown') then
      perform instagram_private.send_settle(v_job, 'discarded', null, null, 'not_pending', 'The message is not waiting to be sent.');
      continue;
    end if;
    select * into v_conv from public.instagram_conversations where id = v_message.conversation_id;
    select * into v_integration from public.instagram_integrations where id = v_job.integration_id;
    if v_integration.status is distinct from 'connected' then
      perform instagram_private.send_settle(v_job, 'discarded', 'failed', null, 'integration_not_connected',
        'The Instagram account was not connected when this message was due to go out.');
      continue;
    end if;
    -- The window, again at send time: a message that would now break Meta's rules is never sent.
    v_mode := instagram_private.send_mode(v_conv.last_inbound_at, v_message.sent_by_user_id is not null);
    if v_mode is null then
      perform instagram_private.send_settle(v_job, 'discarded', 'failed', null, 'outside_messaging_window',
        'The 24-hour window closed before the message could be sent.');
      continue;
    end if;
    v_slot := instagram_private.send_take_slot(v_job.integration_id, v_horizon);
    if v_slot is null then
      -- The account's next slot is beyond the horizon (busy or paused): behind the others, not in their way.
      update public.instagram_send_jobs set run_at = now() + v_horizon where id = v_job.id;
      continue;
    end if;
    update public.instagram_send_jobs set
      state = 'running',
      attempt = case when v_job.state = 'running' then attempt else attempt + 1 end,
      lease_owner = p_worker,
      lease_expires_at = now() + make_interval(secs => p_lease_seconds),
      sending_since = v_slot,
      messaging_type = case v_mode when 'HUMAN_AGENT' then 'MESSAGE_TAG' else 'RESPONSE' end,
      tag = case v_mode when 'HUMAN_AGENT' then 'HUMAN_AGENT' end
    where id = v_job.id
    returning * into v_job;
    update public.instagram_messages set status = 'sending' where id = v_message.id;
    v_out := v_out || jsonb_build_object(
      'id', v_job.id, 'attempt', v_job.attempt, 'max_attempts', v_job.max_attempts,
      'message_id', v_message.id, 'imo_id', v_job.imo_id, 'integration_id', v_job.integration_id,
      'page_id', v_integration.facebook_page_id, 'recipient_id', v_conv.participant_igsid,
      'text', v_message.text, 'attachment', v_message.attachments -> 0,
      'messaging_type', v_job.messaging_type, 'tag', v_job.tag,
      'slot_at', extract(epoch from v_slot),
      'max_lateness_seconds', instagram_private.send_max_lateness(),
      'token_version', encode(extensions.digest(coalesce(v_integration.page_access_token_encrypted, ''::bytea),
        'sha256'), 'hex'));
  end loop;
  -- The database's clock as the claim ends: the worker times each slot from it (its own clock may differ).
  return (select coalesce(jsonb_agg(j || jsonb_build_object('clock_at', extract(epoch from clock_timestamp()))),
    '[]'::jsonb) from jsonb_array_elements(v_out) j);
end
$$;
comment on function public.instagram_send_claim_v1(text, integer, integer) is
  'Claims up to p_limit due sends for p_worker with a lease and a pacing slot each (slot_at, on the clock_at '
  'clock); settles what '
  'needs no request (confirmed by echo, window closed, account disconnected) and parks a dead worker''s send as '
  'unknown to wait for its echo.';
revoke execute on function public.instagram_send_claim_v1(text, integer, integer) from public, anon, authenticated;
grant execute on function public.instagram_send_claim_v1(text, integer, integer) to service_role;

create or replace function public.instagram_send_token_v1(
  p_integration_id uuid, p_worker text, p_key text, p_previous_key text default null
)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_integration public.instagram_integrations;
begin
  -- Only a worker that holds a send of this integration reads its token.
  select i.* into v_integration from public.instagram_integrations i
  where i.id = p_integration_id and exists (
    select 1 from public.instagram_send_jobs j
    where j.integration_id = i.id and j.state = 'running' and j.lease_owner = p_worker);
  if not found then
    raise exception 'job_not_held' using errcode = 'P0002', detail = 'This worker holds no send of that account.';
  end if;
  return jsonb_build_object(
    'page_token', instagram_private.decrypt_token_any(
      v_integration.page_access_token_encrypted, v_integration.token_key_fingerprint, p_key, p_previous_key),
    'token_version', encode(extensions.digest(coalesce(v_integration.page_access_token_encrypted, ''::bytea),
      'sha256'), 'hex'));
end
$$;
comment on function public.instagram_send_token_v1(uuid, text, text, text) is
  'The decrypted Page token of an integration p_worker holds a send for, and its version (cache key).';
revoke execute on function public.instagram_send_token_v1(uuid, text, text, text) from public, anon, authenticated;
grant execute on function public.instagram_send_token_v1(uuid, text, text, text) to service_role;

create or replace function instagram_private.integration_reauth(p_integration_id uuid, p_code text, p_message text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_int public.instagram_integrations;
begin
  update public.instagram_integrations set status = 'reauth_required', last_error_code = p_code,
    last_error_message = left(p_message, 500), last_error_at = now(), failure_count = failure_count + 1
  where id = p_integration_id and status = 'connected'
  returning * into v_int;
  if v_int.id is not null then
    perform instagram_private.refresh_notify(v_int.imo_id, 'instagram_reauth_required', 'Reconnect Instagram',
      'Meta no longer accepts the Instagram connection' || coalesce(' for @' || v_int.instagram_username, '') ||
        '. An admin needs to reconnect it.',
      jsonb_build_object('integration_id', v_int.id, 'code', p_code, 'instagram_username', v_int.instagram_username));
  end if;
end
$$;
comment on function instagram_private.integration_reauth(uuid, text, text) is
  'A connected integration Meta no longer accepts: reauth_required with the reason, and one notification.';
revoke all on function instagram_private.integration_reauth(uuid, text, text) from public, anon, authenticated;
grant execute on function instagram_private.integration_reauth(uuid, text, text) to service_role;

create or replace function instagram_private.send_confirm(p_message_id uuid, p_mid text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- An echo that matched nothing (its text differed) was stored apart: this message is it.
  delete from public.instagram_messages m
  where m.meta_message_id = p_mid and m.id <> p_message_id and m.sent_by_user_id is null and m.direction = 'outbound';
  begin
    update public.instagram_messages set meta_message_id = coalesce(meta_message_id, p_mid),
      status = case when status::text in ('queued', 'sending', 'unknown', 'failed') then 'sent' else status end,
      error_code = null, error_message = null
    where id = p_message_id;
  exception when unique_violation then
    -- An echo gave this mid to a twin message of the same text: both went out; this one is sent too.
    update public.instagram_messages set status = 'sent', error_code = null, error_message = null
    where id = p_message_id and status::text in ('queued', 'sending', 'unknown', 'failed');
  end;
  perform instagram_private.send_complete_waiting(p_message_id);
end
$$;
comment on function instagram_private.send_confirm(uuid, text) is
  'Meta accepted the message with this mid: it is sent (a separately stored echo of it removed) and any job '
  'still waiting to send it completes.';
revoke all on function instagram_private.send_confirm(uuid, text) from public, anon, authenticated;
grant execute on function instagram_private.send_confirm(uuid, text) to service_role;

create or replace function public.instagram_send_complete_v1(p_worker text, p_results jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  r record;
  v_job public.instagram_send_jobs;
  v_message public.instagram_messages;
  v_completed integer := 0;
  v_retry boolean;
begin
  if jsonb_typeof(p_results) is distinct from 'array' then
    raise exception 'invalid_results' using errcode = '22023', detail = 'Results must be a JSON array.';
  end if;
  -- outcome: sent (meta_message_id) | unknown (no answer we can trust) | retry (did not reach Meta; run_at)
  --        | throttled (Meta refused for rate; run_at: the account pauses until then) | failed | reauth
  for r in
    select * from jsonb_to_recordset(p_results) as x(job_id bigint, outcome text, meta_message_id text,
      run_at timestamptz, error_code text, error_message text, usage_percent numeric, regain_seconds numeric)
    order by x.job_id
  loop
    select * into v_job from public.instagram_send_jobs
    where id = r.job_id and state = 'running' and lease_owner = p_worker for update;
    if not found then
      -- Stale (the lease passed meanwhile), but Meta's answer is definite: the message has that mid.
      if r.outcome = 'sent' and r.meta_message_id is not null then
        perform instagram_private.send_confirm(
          (select j.message_id from public.instagram_send_jobs j where j.id = r.job_id), r.meta_message_id);
      end if;
      continue;
    end if;
    v_completed := v_completed + 1;
    select * into v_message from public.instagram_messages where id = v_job.message_id for update;
    if r.outcome = 'sent' and r.meta_message_id is not null then
      perform instagram_private.send_confirm(v_message.id, r.meta_message_id);
      perform instagram_private.send_settle(v_job, 'completed', null, null, null, null);
    elsif v_message.status::text in ('sent', 'delivered', 'read') then
      perform instagram_private.send_settle(v_job, 'completed', null, null, null, null);  -- its echo confirmed it

    elsif r.outcome = 'unknown' then
      perform instagram_private.send_unknown(v_job, r.error_code, r.error_message);
    elsif r.outcome in ('retry', 'throttled') then
      v_retry := v_job.attempt < v_job.max_attempts;
      perform instagram_private.send_settle(v_job, case when v_retry then 'retryable' else 'discarded' end,
        case when v_retry then 'queued' else 'failed' end, coalesce(r.run_at, now()), r.error_code, r.error_message);
    elsif r.outcome = 'reauth' then
      perform instagram_private.integration_reauth(v_job.integration_id, r.error_code, r.error_message);
      perform instagram_private.send_settle(v_job, 'discarded', 'failed', null, 'reauth_required',
        'Meta no longer accepts this Instagram connection; reconnect it, then retry.');
    else
      perform instagram_private.send_settle(v_job, 'discarded', 'failed', null,
        coalesce(r.error_code, 'send_failed'), coalesce(r.error_message, 'Meta refused the message.'));
    end if;
    -- Meta's usage headers and throttling slow the account for every worker.
    if r.outcome = 'throttled' and r.run_at is not null then
      update public.instagram_send_pacing set paused_until = greatest(paused_until, r.run_at), updated_at = now()
      where integration_id = v_job.integration_id;
    elsif r.usage_percent >= 95 then
      update public.instagram_send_pacing set
        paused_until = greatest(paused_until, now() + make_interval(secs => greatest(coalesce(r.regain_seconds, 0), 60))),
        updated_at = now()
      where integration_id = v_job.integration_id;
    elsif r.usage_percent >= 80 then
      update public.instagram_send_pacing set slowdown = 0.5, slowdown_until = now() + interval '1 minute',
        updated_at = now()
      where integration_id = v_job.integration_id;
    end if;
  end loop;
  return jsonb_build_object('completed', v_completed, 'stale', jsonb_array_length(p_results) - v_completed);
end
$$;
comment on function public.instagram_send_complete_v1(text, jsonb) is
  'Records the outcomes of p_worker''s sends ([{job_id, outcome: sent|unknown|retry|throttled|failed|reauth, '
  'meta_message_id, run_at, error_code, error_message, usage_percent, regain_seconds}]); returns completed and stale.';
revoke execute on function public.instagram_send_complete_v1(text, jsonb) from public, anon, authenticated;
grant execute on function public.instagram_send_complete_v1(text, jsonb) to service_role;

create or replace function public.instagram_send_fail_v1(
  p_job_id bigint,
  p_worker text,
  p_action text,
  p_run_at timestamptz default null,
  p_error_code text default null,
  p_error_message text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.instagram_send_jobs;
  v_status text;
begin
  if p_action is null or p_action not in ('retry', 'discard', 'error', 'reauth', 'poison') then
    raise exception 'invalid_action' using errcode = '22023',
      detail = 'Action must be retry, discard, error, reauth or poison.';
  end if;
  select * into v_job from public.instagram_send_jobs
  where id = p_job_id and state = 'running' and lease_owner = p_worker for update;
  if not found then
    return jsonb_build_object('state', null, 'stale', true);
  end if;
  select m.status::text into v_status from public.instagram_messages m where m.id = v_job.message_id;
  if v_status = 'sending' then
    -- The run failed while the request may have been out (a timeout of the job, say): wait for the echo.
    perform instagram_private.send_unknown(v_job, p_error_code, p_error_message);
  elsif p_action = 'retry' and p_run_at is not null and v_job.attempt < v_job.max_attempts then
    perform instagram_private.send_settle(v_job, 'retryable', 'queued', p_run_at, p_error_code, p_error_message);
  else
    perform instagram_private.send_settle(v_job, 'discarded', 'failed', null, p_error_code, p_error_message);
  end if;
  select state into v_status from public.instagram_send_jobs where id = p_job_id;
  return jsonb_build_object('state', v_status, 'stale', false);
end
$$;
comment on function public.instagram_send_fail_v1(bigint, text, text, timestamptz, text, text) is
  'A send whose run failed: while its request may have been out, the message waits for its echo; otherwise retry '
  'at p_run_at while attempts remain, else the message fails with the reason.';
revoke execute on function public.instagram_send_fail_v1(bigint, text, text, timestamptz, text, text)
  from public, anon, authenticated;
grant execute on function public.instagram_send_fail_v1(bigint, text, text, timestamptz, text, text) to service_role;

create or replace function public.instagram_send_release_v1(p_worker text, p_job_ids bigint[])
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.instagram_send_jobs;
  v_count integer := 0;
begin
  for v_job in
    select * from public.instagram_send_jobs
    where id = any (p_job_ids) and state = 'running' and lease_owner = p_worker
    for update
  loop
    v_count := v_count + 1;
    -- Cut off at shutdown: it may have been mid-request, so it waits for its echo (no attempt charged).
    update public.instagram_send_jobs set attempt = greatest(attempt - 1, 0) where id = v_job.id
    returning * into v_job;
    perform instagram_private.send_unknown(v_job, 'released', 'The worker stopped while sending.');
  end loop;
  if v_count > 0 then
    perform pg_notify('instagram_send_jobs', v_count::text);
  end if;
  return v_count;
end
$$;
comment on function public.instagram_send_release_v1(text, bigint[]) is
  'Hands p_worker''s unfinished sends back at shutdown without charging an attempt; each waits for its echo first.';
revoke execute on function public.instagram_send_release_v1(text, bigint[]) from public, anon, authenticated;
grant execute on function public.instagram_send_release_v1(text, bigint[]) to service_role;

create or replace function public.instagram_send_prune_v1(p_keep_days integer default 7)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_deleted integer;
begin
  delete from public.instagram_send_jobs
  where state in ('completed', 'discarded') and finalized_at < now() - make_interval(days => p_keep_days);
  get diagnostics v_deleted = row_count;
  return jsonb_build_object('deleted', v_deleted, 'discarded', instagram_private.send_bury_dead());
end
$$;
comment on function public.instagram_send_prune_v1(integer) is
  'Deletes finished send jobs older than p_keep_days and fails sends whose worker kept dying.';
revoke execute on function public.instagram_send_prune_v1(integer) from public, anon, authenticated;
grant execute on function public.instagram_send_prune_v1(integer) to service_role;

select cron.schedule('instagram-send-prune', '45 3 * * *', $$select public.instagram_send_prune_v1()$$);

do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime')
     and not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                     and schemaname = 'public' and tablename = 'instagram_usage') then
    alter publication supabase_realtime add table public.instagram_usage;
  end if;
end
$$;
