/**
 * Scheduled messages: members schedule a text or a template for later; at its time one transaction
 * turns a due row into one outbound message and its send job (the send path of
 * 20261202000005_instagram_send.sql does the rest), after rendering the template and checking the
 * sending rules again at that moment. The message's outcome flows back onto the scheduled row.
 *
 * Status: scheduled -> sending (handed to the send path) -> sent | failed; scheduled -> cancelled.
 * A failed one may be rescheduled; a cancelled, sending or sent one may not.
 */

/** --- Section: the table grows a template and its values --- */

alter table public.instagram_scheduled_messages alter column body drop not null;
alter table public.instagram_scheduled_messages drop constraint instagram_scheduled_messages_body_check;
alter table public.instagram_scheduled_messages
  add constraint instagram_scheduled_messages_body_check check (body is null or length(btrim(body)) > 0),
  add column template_id uuid references public.instagram_message_templates (id) on delete set null,
  add column variables jsonb not null default '{}' check (jsonb_typeof(variables) = 'object'),
  add column dispatched_at timestamptz;
comment on column public.instagram_scheduled_messages.body is
  'The text to send; null when the message is a template (rendered when it goes out).';
comment on column public.instagram_scheduled_messages.template_id is
  'The template rendered when the message goes out (null for a plain text, or once the template is deleted).';
comment on column public.instagram_scheduled_messages.variables is 'The caller''s values for the template.';
comment on column public.instagram_scheduled_messages.attempts is 'How many times the row was handed to the send path.';
-- Operations (instagram_ops_snapshot_v1): the rows going out, and those failed lately.
create index instagram_scheduled_messages_open_idx on public.instagram_scheduled_messages (updated_at)
  where status in ('sending', 'failed');
create index instagram_scheduled_messages_template_idx on public.instagram_scheduled_messages (template_id)
  where template_id is not null;

/** --- Section: shapes and checks shared by the RPCs and the dispatch --- */

create or replace function instagram_private.scheduled_json(p_row public.instagram_scheduled_messages)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'id', p_row.id,
    'conversation_id', p_row.conversation_id,
    'text', p_row.body,
    'template_id', p_row.template_id,
    'variables', p_row.variables,
    'send_at', p_row.scheduled_for,
    'status', p_row.status,
    'attempts', p_row.attempts,
    'sent_message_id', p_row.sent_message_id,
    'error_code', p_row.last_error_code,
    'error_message', p_row.last_error_message,
    'created_by', p_row.created_by,
    'created_at', p_row.created_at,
    'dispatched_at', p_row.dispatched_at,
    'sent_at', p_row.sent_at,
    'cancelled_at', p_row.cancelled_at)
$$;
comment on function instagram_private.scheduled_json(public.instagram_scheduled_messages) is
  'A scheduled message as the scheduling RPCs return it.';
revoke all on function instagram_private.scheduled_json(public.instagram_scheduled_messages) from public, anon, authenticated;
grant execute on function instagram_private.scheduled_json(public.instagram_scheduled_messages) to service_role;

create or replace function instagram_private.schedule_refuse(p_code text, p_detail text)
returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception '%', p_code using errcode = case p_code when 'not_found' then 'P0002' else '22023' end,
    detail = p_detail;
end
$$;
comment on function instagram_private.schedule_refuse(text, text) is
  'Raises a scheduling refusal (not_found: P0002, the others 22023) with a readable detail.';
revoke all on function instagram_private.schedule_refuse(text, text) from public, anon, authenticated;
grant execute on function instagram_private.schedule_refuse(text, text) to service_role;

create or replace function instagram_private.schedule_check_send_at(p_send_at timestamptz)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if p_send_at is null or p_send_at < now() + interval '5 seconds' or p_send_at > now() + interval '30 days' then
    perform instagram_private.schedule_refuse('invalid_send_at',
      'A message is scheduled at least 5 seconds and at most 30 days ahead.');
  end if;
end
$$;
comment on function instagram_private.schedule_check_send_at(timestamptz) is
  'Refuses invalid_send_at unless the time is 5 seconds to 30 days ahead.';
revoke all on function instagram_private.schedule_check_send_at(timestamptz) from public, anon, authenticated;
grant execute on function instagram_private.schedule_check_send_at(timestamptz) to service_role;

create or replace function instagram_private.template_values(
  p_conversation_id uuid, p_variables jsonb, p_agent_id uuid
)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  -- The caller's own values win over the contact's profile and lead data.
  select jsonb_strip_nulls(jsonb_build_object(
      'first_name', coalesce(l.first_name, split_part(c.participant_name, ' ', 1)),
      'last_name', coalesce(l.last_name, nullif(substr(c.participant_name, length(split_part(c.participant_name, ' ', 1)) + 2), '')),
      'full_name', coalesce(nullif(btrim(concat_ws(' ', l.first_name, l.last_name)), ''), c.participant_name),
      'username', c.participant_username,
      'agent_name', coalesce(u.raw_user_meta_data ->> 'full_name', u.raw_user_meta_data ->> 'name', split_part(u.email, '@', 1)),
      'agency_name', i.name))
    || coalesce(case when jsonb_typeof(p_variables) = 'object' then p_variables end, '{}'::jsonb)
  from public.instagram_conversations c
  join public.imos i on i.id = c.imo_id
  left join public.recruiting_leads l on l.id = c.recruiting_lead_id
  left join auth.users u on u.id = p_agent_id
  where c.id = p_conversation_id
$$;
comment on function instagram_private.template_values(uuid, jsonb, uuid) is
  'The values a template renders with in a conversation for an agent: the lead''s and profile''s names, the '
  'username, the agent''s and the agency''s names, then p_variables on top.';
revoke all on function instagram_private.template_values(uuid, jsonb, uuid) from public, anon, authenticated;
grant execute on function instagram_private.template_values(uuid, jsonb, uuid) to service_role;

-- The preview keeps its two-argument form: the agent is the caller.
create or replace function instagram_private.template_values(p_conversation_id uuid, p_variables jsonb)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select instagram_private.template_values(p_conversation_id, p_variables, (select auth.uid()))
$$;

create or replace function instagram_private.scheduled_text(p_row public.instagram_scheduled_messages)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_body text;
  v_rendered jsonb;
begin
  -- {text} to send, or {error_code, error_message}: the template rendered for the row's author, now.
  if p_row.body is not null then
    return jsonb_build_object('text', p_row.body);
  end if;
  select t.body into v_body from public.instagram_message_templates t
  where t.id = p_row.template_id and t.imo_id = p_row.imo_id;
  if v_body is null then
    return jsonb_build_object('error_code', 'template_deleted',
      'error_message', 'The template of this message was deleted.');
  end if;
  v_rendered := instagram_private.template_render(v_body,
    instagram_private.template_values(p_row.conversation_id, p_row.variables, p_row.created_by));
  if jsonb_array_length(v_rendered -> 'missing') > 0 then
    return jsonb_build_object('error_code', 'missing_variables', 'error_message',
      'No value for: ' || (select string_agg(x, ', ') from jsonb_array_elements_text(v_rendered -> 'missing') x) || '.');
  end if;
  if octet_length(v_rendered ->> 'text') > 1000 then
    return jsonb_build_object('error_code', 'message_too_long',
      'error_message', 'The rendered message is over 1,000 bytes (UTF-8).');
  end if;
  return jsonb_build_object('text', v_rendered ->> 'text');
end
$$;
comment on function instagram_private.scheduled_text(public.instagram_scheduled_messages) is
  'The text a scheduled message sends now ({text}; a template rendered for its author), or why it cannot '
  '({error_code: template_deleted | missing_variables | message_too_long, error_message}).';
revoke all on function instagram_private.scheduled_text(public.instagram_scheduled_messages) from public, anon, authenticated;
grant execute on function instagram_private.scheduled_text(public.instagram_scheduled_messages) to service_role;

create or replace function instagram_private.refusal_detail(p_code text)
returns text
language plpgsql
set search_path = ''
as $$
declare
  v_detail text;
begin
  perform instagram_private.raise_refusal(p_code);
  return p_code;
exception when others then
  get stacked diagnostics v_detail = pg_exception_detail;
  return v_detail;
end
$$;
comment on function instagram_private.refusal_detail(text) is
  'The readable sentence raise_refusal gives a send refusal code (stored on a scheduled message that failed).';
revoke all on function instagram_private.refusal_detail(text) from public, anon, authenticated;
grant execute on function instagram_private.refusal_detail(text) to service_role;

/** --- Section: the app-facing RPCs --- */

create or replace function public.instagram_schedule_message(
  p_conversation_id uuid, p_send_at timestamptz, p_text text default null, p_template_id uuid default null,
  p_variables jsonb default '{}'
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_conv public.instagram_conversations;
  v_row public.instagram_scheduled_messages;
  v_text jsonb;
  v_refusal text;
begin
  select * into v_conv from public.instagram_conversations c
  where c.id = p_conversation_id and c.imo_id in (select instagram_private.user_imo_ids());
  if not found then
    perform instagram_private.raise_refusal('not_found');
  end if;
  if p_text is not null and p_template_id is not null then
    perform instagram_private.schedule_refuse('text_or_template', 'Schedule a text or a template, not both.');
  end if;
  if p_variables is not null and jsonb_typeof(p_variables) <> 'object' then
    perform instagram_private.schedule_refuse('invalid_variables', 'Variables are a JSON object of names to text.');
  end if;
  if p_template_id is not null and not exists (
       select 1 from public.instagram_message_templates t where t.id = p_template_id and t.imo_id = v_conv.imo_id) then
    perform instagram_private.schedule_refuse('not_found', 'No such template in this agency.');
  end if;
  if p_template_id is null and coalesce(btrim(p_text), '') = '' then
    perform instagram_private.raise_refusal('empty_message');
  end if;
  perform instagram_private.schedule_check_send_at(p_send_at);
  v_row.imo_id := v_conv.imo_id;
  v_row.conversation_id := v_conv.id;
  v_row.created_by := (select auth.uid());
  v_row.body := p_text;
  v_row.scheduled_for := p_send_at;
  v_row.template_id := p_template_id;
  v_row.variables := coalesce(p_variables, '{}'::jsonb);
  v_text := instagram_private.scheduled_text(v_row);
  if v_text ? 'error_code' then
    perform instagram_private.schedule_refuse(v_text ->> 'error_code', v_text ->> 'error_message');
  end if;
  -- The same rules as a reply now, except the window: that is checked when the message goes out.
  v_conv.last_inbound_at := now();
  v_refusal := instagram_private.send_refusal(v_conv, v_text ->> 'text', null);
  if v_refusal is not null then
    perform instagram_private.raise_refusal(v_refusal);
  end if;
  insert into public.instagram_scheduled_messages (imo_id, conversation_id, created_by, body, scheduled_for,
    template_id, variables)
  values (v_row.imo_id, v_row.conversation_id, v_row.created_by, v_row.body, v_row.scheduled_for,
    v_row.template_id, v_row.variables)
  returning * into v_row;
  return instagram_private.scheduled_json(v_row);
end
$$;
comment on function public.instagram_schedule_message(uuid, timestamptz, text, uuid, jsonb) is
$c$Schedules a text (p_text) or a template (p_template_id with p_variables, rendered when it goes out) for p_send_at, 5 seconds to 30 days ahead. The 24-hour window is checked when it goes out; the send's outcome flows back onto the row.
Caller: members of the conversation's IMO; the integration connected; the plan has instagram_messaging
Returns: the scheduled message {id, conversation_id, text, template_id, variables, send_at, status: scheduled, attempts, sent_message_id, error_code, error_message, created_by, created_at, dispatched_at, sent_at, cancelled_at}
Refuses: not_found: no such conversation, or no such template in this agency, or the caller is not a member; text_or_template: both a text and a template; invalid_variables: p_variables is not an object of names to text; invalid_send_at: not 5 seconds to 30 days ahead; missing_variables: names each variable without a value; message_too_long: over 1,000 UTF-8 bytes; empty_message: neither a text nor a template; integration_not_connected, feature_not_in_plan, monthly_limit_reached: as for instagram_send_message$c$;
revoke execute on function public.instagram_schedule_message(uuid, timestamptz, text, uuid, jsonb) from public, anon;
grant execute on function public.instagram_schedule_message(uuid, timestamptz, text, uuid, jsonb)
  to authenticated, service_role;

create or replace function instagram_private.scheduled_for_member(p_id uuid)
returns public.instagram_scheduled_messages
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_scheduled_messages;
begin
  -- Locked: a dispatch holding the row finishes first, so the status read here is the one that stays.
  select * into v_row from public.instagram_scheduled_messages s
  where s.id = p_id and s.imo_id in (select instagram_private.user_imo_ids())
  for update;
  if not found then
    perform instagram_private.schedule_refuse('not_found', 'No such scheduled message for this user.');
  end if;
  return v_row;
end
$$;
comment on function instagram_private.scheduled_for_member(uuid) is
  'The scheduled message, locked, when the caller is a member of its IMO; not_found otherwise.';
revoke all on function instagram_private.scheduled_for_member(uuid) from public, anon, authenticated;
grant execute on function instagram_private.scheduled_for_member(uuid) to service_role;

create or replace function public.instagram_cancel_scheduled_message(p_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_scheduled_messages;
begin
  v_row := instagram_private.scheduled_for_member(p_id);
  if v_row.status <> 'scheduled' then
    perform instagram_private.schedule_refuse('not_cancellable',
      'Only a message still waiting for its time can be cancelled (this one is ' || v_row.status || ').');
  end if;
  update public.instagram_scheduled_messages set status = 'cancelled', cancelled_at = now()
  where id = v_row.id
  returning * into v_row;
  return instagram_private.scheduled_json(v_row);
end
$$;
comment on function public.instagram_cancel_scheduled_message(uuid) is
$c$Cancels a scheduled message that has not gone out yet.
Caller: members of the scheduled message's IMO
Returns: the scheduled message of instagram_schedule_message (status cancelled)
Refuses: not_found: no such scheduled message for this user; not_cancellable: it is no longer waiting for its time (sending, sent, failed or cancelled)$c$;
revoke execute on function public.instagram_cancel_scheduled_message(uuid) from public, anon;
grant execute on function public.instagram_cancel_scheduled_message(uuid) to authenticated, service_role;

create or replace function public.instagram_reschedule_message(p_id uuid, p_send_at timestamptz)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_scheduled_messages;
begin
  v_row := instagram_private.scheduled_for_member(p_id);
  if v_row.status not in ('scheduled', 'failed') then
    perform instagram_private.schedule_refuse('not_reschedulable',
      'A ' || v_row.status || ' message cannot be rescheduled; schedule a new one.');
  end if;
  perform instagram_private.schedule_check_send_at(p_send_at);
  update public.instagram_scheduled_messages
  set scheduled_for = p_send_at, status = 'scheduled', last_error_code = null, last_error_message = null
  where id = v_row.id
  returning * into v_row;
  return instagram_private.scheduled_json(v_row);
end
$$;
comment on function public.instagram_reschedule_message(uuid, timestamptz) is
$c$Moves a scheduled (or failed) message to p_send_at, 5 seconds to 30 days ahead; a failed one is scheduled again.
Caller: members of the scheduled message's IMO
Returns: the scheduled message of instagram_schedule_message (status scheduled)
Refuses: not_found: no such scheduled message for this user; not_reschedulable: it is cancelled, sending or sent (schedule a new one); invalid_send_at: not 5 seconds to 30 days ahead$c$;
revoke execute on function public.instagram_reschedule_message(uuid, timestamptz) from public, anon;
grant execute on function public.instagram_reschedule_message(uuid, timestamptz) to authenticated, service_role;

create or replace function public.instagram_list_scheduled_messages(
  p_conversation_id uuid, p_include_finished boolean default false
)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if not exists (select 1 from public.instagram_conversations c
                 where c.id = p_conversation_id and c.imo_id in (select instagram_private.user_imo_ids())) then
    perform instagram_private.raise_refusal('not_found');
  end if;
  return coalesce((
    select jsonb_agg(instagram_private.scheduled_json(s) order by s.scheduled_for, s.id)
    from public.instagram_scheduled_messages s
    where s.conversation_id = p_conversation_id
      and (p_include_finished or s.status in ('scheduled', 'sending', 'failed'))), '[]'::jsonb);
end
$$;
comment on function public.instagram_list_scheduled_messages(uuid, boolean) is
$c$The conversation's scheduled messages, soonest first: those waiting, going out and failed (every one with p_include_finished).
Caller: members of the conversation's IMO
Returns: array of the scheduled message objects of instagram_schedule_message
Refuses: not_found: no such conversation for this user$c$;
revoke execute on function public.instagram_list_scheduled_messages(uuid, boolean) from public, anon;
grant execute on function public.instagram_list_scheduled_messages(uuid, boolean) to authenticated, service_role;

/** --- Section: due rows become sends --- */

create or replace function public.instagram_scheduled_dispatch_v1(p_limit integer default 200)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_ids uuid[];
  v_row public.instagram_scheduled_messages;
  v_conv public.instagram_conversations;
  v_text jsonb;
  v_code text;
  v_detail text;
  v_message_id uuid;
  v_dispatched integer := 0;
  v_failed integer := 0;
begin
  -- Due rows no other dispatch holds; a killed dispatch rolls back whole, so each row goes out once.
  select array_agg(s.id) into v_ids from (
    select s.id from public.instagram_scheduled_messages s
    where s.status = 'scheduled' and s.scheduled_for <= now()
    order by s.scheduled_for
    limit greatest(p_limit, 1)
    for update skip locked) s;
  -- By IMO: the per-IMO lock of the sending rules is always taken in the same order (no deadlock).
  for v_row in select * from public.instagram_scheduled_messages s where s.id = any(coalesce(v_ids, '{}'::uuid[]))
               order by s.imo_id, s.scheduled_for, s.id loop
    perform pg_advisory_xact_lock(hashtext('instagram_send:' || v_row.imo_id::text));
    select * into v_conv from public.instagram_conversations c where c.id = v_row.conversation_id;
    v_code := null;
    v_text := instagram_private.scheduled_text(v_row);
    if v_text ? 'error_code' then
      v_code := v_text ->> 'error_code';
      v_detail := v_text ->> 'error_message';
    else
      v_code := instagram_private.send_refusal(v_conv, v_text ->> 'text', null);
      -- HUMAN_AGENT is for a person's words only: a row whose author is gone gets the 24-hour window.
      if v_code is null and instagram_private.send_mode(v_conv.last_inbound_at, v_row.created_by is not null) is null then
        v_code := 'outside_messaging_window';
      end if;
      v_detail := instagram_private.refusal_detail(v_code);
    end if;
    if v_code is not null then
      update public.instagram_scheduled_messages
      set status = 'failed', last_error_code = v_code, last_error_message = v_detail, dispatched_at = now()
      where id = v_row.id;
      v_failed := v_failed + 1;
      continue;
    end if;
    insert into public.instagram_messages (conversation_id, imo_id, direction, message_type, text, attachments,
      status, sent_by_user_id, client_message_id, sent_at)
    values (v_conv.id, v_conv.imo_id, 'outbound', 'text', v_text ->> 'text', '[]'::jsonb, 'queued', v_row.created_by,
      md5(v_row.id::text || ':' || v_row.attempts)::uuid, now())
    returning id into v_message_id;
    insert into public.instagram_send_jobs (message_id, imo_id, integration_id)
    values (v_message_id, v_conv.imo_id, v_conv.integration_id);
    update public.instagram_scheduled_messages
    set status = 'sending', sent_message_id = v_message_id, attempts = attempts + 1, dispatched_at = now(),
        last_error_code = null, last_error_message = null
    where id = v_row.id;
    v_dispatched := v_dispatched + 1;
  end loop;
  return jsonb_build_object('dispatched', v_dispatched, 'failed', v_failed,
    'next_due_at', (select min(s.scheduled_for) from public.instagram_scheduled_messages s where s.status = 'scheduled'));
end
$$;
comment on function public.instagram_scheduled_dispatch_v1(integer) is
  'Worker: turns up to p_limit due scheduled messages into outbound messages and send jobs (one transaction, '
  'SKIP LOCKED), the template rendered and the sending rules (the window included) checked now; a row that '
  'breaks one fails with its code. Returns {dispatched, failed, next_due_at}.';
revoke all on function public.instagram_scheduled_dispatch_v1(integer) from public, anon, authenticated;
grant execute on function public.instagram_scheduled_dispatch_v1(integer) to service_role;

/** --- Section: the message's outcome flows back; new times wake the workers --- */

create or replace function instagram_private.scheduled_follow_message()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.instagram_scheduled_messages s
  set status = case when new.status::text = 'failed' then 'failed'
                    when new.status::text in ('sent', 'delivered', 'read') then 'sent'
                    else 'sending' end::public.instagram_scheduled_status,
      sent_at = case when new.status::text in ('sent', 'delivered', 'read') then coalesce(s.sent_at, now()) end,
      last_error_code = case when new.status::text = 'failed' then new.error_code end,
      last_error_message = case when new.status::text = 'failed' then new.error_message end
  where s.sent_message_id = new.id and s.status in ('sending', 'sent', 'failed');
  return null;
end
$$;
comment on function instagram_private.scheduled_follow_message() is
  'Trigger: a scheduled message takes the outcome of the message it became (sent, failed, or sending again '
  'after a retry).';
revoke all on function instagram_private.scheduled_follow_message() from public, anon, authenticated;
grant execute on function instagram_private.scheduled_follow_message() to service_role;
create trigger instagram_messages_scheduled_follow after update of status on public.instagram_messages
  for each row when (new.direction = 'outbound' and old.status is distinct from new.status)
  execute function instagram_private.scheduled_follow_message();

create or replace function instagram_private.scheduled_notify()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform pg_notify('instagram_scheduled_messages', '1');
  return null;
end
$$;
comment on function instagram_private.scheduled_notify() is
  'Wakes the workers'' dispatch (one NOTIFY per statement) when a message is scheduled or rescheduled.';
revoke all on function instagram_private.scheduled_notify() from public, anon, authenticated;
grant execute on function instagram_private.scheduled_notify() to service_role;
create trigger instagram_scheduled_messages_notify_insert after insert on public.instagram_scheduled_messages
  for each statement execute function instagram_private.scheduled_notify();
create trigger instagram_scheduled_messages_notify_update after update of scheduled_for on public.instagram_scheduled_messages
  for each statement execute function instagram_private.scheduled_notify();

do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime')
     and not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                     and schemaname = 'public' and tablename = 'instagram_scheduled_messages') then
    alter publication supabase_realtime add table public.instagram_scheduled_messages;
  end if;
end
$$;
