/**
 * Receive Instagram DMs — signed webhook deliveries stored durably, then processed off the HTTP path
 * into conversations, messages and leads.
 *
 *   POST /functions/v1/instagram-webhook (api/)  --instagram_webhook_ingest_v1-->  instagram_webhook_events
 *   worker kind `webhooks`: claim_v1 (SKIP LOCKED, lease) -> complete_v1 processes the claimed deliveries in
 *     one transaction of set-based statements (a crash before the commit loses nothing and does nothing)
 *   statement-level triggers on instagram_messages keep each conversation's last_message_at, preview,
 *     last_inbound_at and unread_count, and count received messages in instagram_usage
 *   worker kind `profiles`: a new conversation (and one not checked for a day) queues a profile fetch;
 *     its completion names the participant and creates or links the recruiting lead
 *   inbox RPCs for the app (members only, RLS decides): list conversations, list messages, mark read
 *
 * Processing is idempotent: Meta's mid is unique, every update is guarded by what it would change, and a
 * delivery stored twice (same bytes) is stored once. Routing: entry[].id is the Instagram account; a
 * delivery for an account no live integration has is kept `unroutable` and queued again when one connects.
 * Actions on a message we have not seen yet (a reaction, unsend or edit that overtook its message) put the
 * delivery back for a later attempt; after the last one they are recorded as ignored.
 */

/** --- Section: message kinds and the columns the webhook fills --- */

-- Used only inside plpgsql bodies (an enum value added in a transaction cannot be used by it).
alter type public.instagram_message_type add value if not exists 'reel';
alter type public.instagram_message_type add value if not exists 'postback';

-- lz4 compresses message text several times faster than pglz where the server has it (PostgreSQL 14+
-- built with lz4, as Debian's and Supabase's are); elsewhere the default stays.
do $$
begin
  alter table public.instagram_messages alter column text set compression lz4;
exception when feature_not_supported or invalid_parameter_value then
  null;
end
$$;

alter table public.instagram_messages
  add column reactions jsonb not null default '[]' check (jsonb_typeof(reactions) = 'array'),
  add column reply_to jsonb,
  add column metadata jsonb not null default '{}' check (jsonb_typeof(metadata) = 'object'),
  add column deleted_at timestamptz,
  add column edit_count integer not null default 0 check (edit_count >= 0),
  add column edited_at timestamptz;
comment on column public.instagram_messages.reactions is
  'One entry per person: {igsid, reaction, emoji, action: react|unreact, at}; the newest action wins.';
comment on column public.instagram_messages.deleted_at is
  'The sender unsent it (Meta''s is_deleted): kept out of previews and of the app''s message text.';
comment on column public.instagram_messages.metadata is
  'What Meta sent besides text and attachments: quick_reply, referral, postback, is_unsupported, origin.';

alter table public.instagram_conversations
  add column participant_checked_at timestamptz,
  add column last_read_at timestamptz,
  add column last_referral jsonb;
comment on column public.instagram_conversations.participant_checked_at is
  'When the participant''s profile was last fetched (or given up on); refetched when older than a day.';

-- No (integration_id, last_message_at) index: an IMO has a few integrations, so the inbox's integration filter
-- reads the IMO's index, and every new message would update one more index entry.

alter table public.recruiting_leads add column if not exists instagram_username text;
create index if not exists recruiting_leads_instagram_username_idx
  on public.recruiting_leads (imo_id, lower(instagram_username)) where instagram_username is not null;

/** --- Section: raw deliveries --- */

create table public.instagram_webhook_events (
  id bigint generated always as identity primary key,
  body bytea not null,
  body_sha256 bytea not null,
  received_at timestamptz not null default now(),
  state text not null default 'available'
    check (state in ('available', 'running', 'retryable', 'completed', 'failed', 'unroutable', 'discarded')),
  attempt integer not null default 0 check (attempt >= 0),
  max_attempts integer not null default 5 check (max_attempts between 1 and 100),
  run_at timestamptz not null default now(),
  lease_owner text,
  lease_expires_at timestamptz,
  finalized_at timestamptz,
  unroutable_accounts text[],
  outcome jsonb,
  last_error_code text,
  last_error_message text,
  constraint instagram_webhook_events_body_sha256_key unique (body_sha256),
  constraint instagram_webhook_events_lease_when_running check (
    (state = 'running') = (lease_owner is not null and lease_expires_at is not null)),
  constraint instagram_webhook_events_finalized_iff_terminal check (
    (state in ('completed', 'failed', 'unroutable', 'discarded')) = (finalized_at is not null))
);
comment on table public.instagram_webhook_events is
  'Each signed webhook delivery exactly as received (deduplicated by the SHA-256 of its bytes) and its '
  'processing state: completed, failed (not JSON or not a shape we know: kept with the reason), unroutable '
  '(no live integration for the account yet), discarded (processing kept failing).';

create index instagram_webhook_events_due_idx on public.instagram_webhook_events (run_at, id)
  where state in ('available', 'retryable');
create index instagram_webhook_events_lease_idx on public.instagram_webhook_events (lease_expires_at)
  where state = 'running';
create index instagram_webhook_events_finalized_idx on public.instagram_webhook_events (finalized_at)
  where state = 'completed';
-- No index on received_at: each one costs three inserts per delivery (ingest, claim, end); replay --since scans.
create index instagram_webhook_events_unroutable_idx on public.instagram_webhook_events
  using gin (unroutable_accounts) where state = 'unroutable';

alter table public.instagram_webhook_events enable row level security;
revoke all on public.instagram_webhook_events from anon, authenticated;
grant all on public.instagram_webhook_events to service_role;
revoke all on sequence public.instagram_webhook_events_id_seq from anon, authenticated;

create or replace function instagram_private.webhook_events_notify()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform pg_notify('instagram_webhook_events', '');
  return null;
end
$$;
comment on function instagram_private.webhook_events_notify() is
  'Wakes the workers (one NOTIFY per statement) when deliveries are stored or queued again.';
revoke all on function instagram_private.webhook_events_notify() from public, anon, authenticated;
grant execute on function instagram_private.webhook_events_notify() to service_role;
create trigger instagram_webhook_events_notify after insert on public.instagram_webhook_events
  for each statement execute function instagram_private.webhook_events_notify();

create or replace function instagram_private.try_jsonb(p_body bytea)
returns jsonb
language plpgsql
immutable
set search_path = ''
as $$
begin
  return convert_from(p_body, 'UTF8')::jsonb;
exception when others then
  -- not UTF-8, not JSON, or JSON Postgres cannot hold (\u0000): the delivery is marked failed
  return null;
end
$$;
comment on function instagram_private.try_jsonb(bytea) is
  'The body as jsonb, or null when it is not UTF-8 JSON (no exception escapes: one bad delivery fails alone).';
revoke all on function instagram_private.try_jsonb(bytea) from public, anon, authenticated;
grant execute on function instagram_private.try_jsonb(bytea) to service_role;

create or replace function public.instagram_webhook_ingest_v1(p_bodies text[])
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_stored integer;
begin
  if p_bodies is null or cardinality(p_bodies) = 0 then
    return jsonb_build_object('stored', 0, 'duplicates', 0);
  end if;
  -- No parsing here: the receiver answers Meta as soon as this commits.
  insert into public.instagram_webhook_events (body, body_sha256)
  select b.body, extensions.digest(b.body, 'sha256')
  from (select decode(t, 'base64') as body from unnest(p_bodies) as t) b
  on conflict (body_sha256) do nothing;
  get diagnostics v_stored = row_count;
  return jsonb_build_object('stored', v_stored, 'duplicates', cardinality(p_bodies) - v_stored);
end
$$;
comment on function public.instagram_webhook_ingest_v1(text[]) is
  'Stores signed deliveries (base64 of the exact bytes), one row per distinct body, in one statement; '
  'returns stored and duplicates counts. Verification happens before, in the receiver.';
revoke execute on function public.instagram_webhook_ingest_v1(text[]) from public, anon, authenticated;
grant execute on function public.instagram_webhook_ingest_v1(text[]) to service_role;

/** --- Section: conversation bookkeeping on instagram_messages (statement-level, transition tables) --- */

create or replace function instagram_private.message_preview(
  p_type public.instagram_message_type, p_text text, p_attachments jsonb
)
returns text
language sql
immutable
set search_path = ''
as $$
  select case
    when p_text is not null and length(btrim(p_text)) > 0 then left(p_text, 200)
    when p_type::text = 'story_mention' then 'Mentioned you in their story'
    when p_type::text = 'text' and jsonb_array_length(coalesce(p_attachments, '[]')) = 0 then ''
    else '[' || replace(p_type::text, '_', ' ') || ']'
  end
$$;
comment on function instagram_private.message_preview(public.instagram_message_type, text, jsonb) is
  'The conversation-list preview of a message: its text (200 characters), else a label for its kind.';
revoke all on function instagram_private.message_preview(public.instagram_message_type, text, jsonb)
  from public, anon, authenticated;
grant execute on function instagram_private.message_preview(public.instagram_message_type, text, jsonb)
  to service_role;

create or replace function instagram_private.messages_after_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- Conversations locked in id order first, so concurrent batches touching the same ones cannot deadlock.
  with locked as materialized (
    select cv.id, cv.last_read_at from public.instagram_conversations cv
    where cv.id in (select n.conversation_id from inserted n)
    order by cv.id
    for update
  ), newest as (  -- the preview of each conversation's newest visible new message, computed once
    select distinct on (n.conversation_id) n.conversation_id,
      instagram_private.message_preview(n.message_type, n.text, n.attachments) as preview
    from inserted n where n.deleted_at is null
    order by n.conversation_id, n.sent_at desc, n.id desc
  ), s as (
    select n.conversation_id,
      max(n.sent_at) as newest_at,
      max(n.sent_at) filter (where n.deleted_at is null) as newest_visible_at,
      max(n.sent_at) filter (where n.direction = 'inbound') as newest_inbound_at,
      count(*) filter (where n.direction = 'inbound' and n.deleted_at is null
        and n.sent_at > coalesce(l.last_read_at, '-infinity'::timestamptz))::integer as unread
    from inserted n join locked l on l.id = n.conversation_id
    group by n.conversation_id
  )
  update public.instagram_conversations c set
    last_message_at = greatest(c.last_message_at, s.newest_at),
    last_message_preview = case
      when nw.preview is not null and (c.last_message_at is null or s.newest_visible_at >= c.last_message_at)
        then nw.preview
      else c.last_message_preview end,
    last_inbound_at = greatest(c.last_inbound_at, s.newest_inbound_at),
    unread_count = c.unread_count + s.unread
  from s left join newest nw on nw.conversation_id = s.conversation_id
  where c.id = s.conversation_id;

  insert into public.instagram_usage as u (imo_id, month, messages_received)
  select n.imo_id, date_trunc('month', n.sent_at at time zone 'UTC')::date, count(*)
  from inserted n where n.direction = 'inbound'
  group by 1, 2
  order by 1, 2
  on conflict (imo_id, month) do update set messages_received = u.messages_received + excluded.messages_received;
  return null;
end
$$;
comment on function instagram_private.messages_after_insert() is
  'Per statement: moves each touched conversation''s last_message_at / preview / last_inbound_at forward '
  '(never back: Meta''s timestamps decide), adds unread inbound messages, counts received messages per month.';
revoke all on function instagram_private.messages_after_insert() from public, anon, authenticated;
grant execute on function instagram_private.messages_after_insert() to service_role;
create trigger instagram_messages_conversation_on_insert after insert on public.instagram_messages
  referencing new table as inserted
  for each statement execute function instagram_private.messages_after_insert();

create or replace function instagram_private.messages_after_update()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- Only unsends and edits change what the conversation list shows.
  perform 1 from public.instagram_conversations c
  where c.id in (
    select n.conversation_id from updated n join previous o on o.id = n.id
    where n.deleted_at is distinct from o.deleted_at or n.text is distinct from o.text)
  order by c.id for update;

  update public.instagram_conversations c set
    last_message_preview = (
      select instagram_private.message_preview(m.message_type, m.text, m.attachments)
      from public.instagram_messages m
      where m.conversation_id = c.id and m.deleted_at is null
      order by m.sent_at desc, m.id desc limit 1),
    unread_count = greatest(0, c.unread_count - s.unsent_unread)
  from (
    select n.conversation_id,
      count(*) filter (where o.deleted_at is null and n.deleted_at is not null and n.direction = 'inbound'
        and n.sent_at > coalesce(cv.last_read_at, '-infinity'::timestamptz))::integer as unsent_unread
    from updated n
    join previous o on o.id = n.id
    join public.instagram_conversations cv on cv.id = n.conversation_id
    where n.deleted_at is distinct from o.deleted_at or n.text is distinct from o.text
    group by n.conversation_id
  ) s
  where c.id = s.conversation_id;
  return null;
end
$$;
comment on function instagram_private.messages_after_update() is
  'Per statement: after unsends and edits, the preview is the newest visible message again, and unsent unread '
  'messages leave the unread count.';
revoke all on function instagram_private.messages_after_update() from public, anon, authenticated;
grant execute on function instagram_private.messages_after_update() to service_role;
create trigger instagram_messages_conversation_on_update after update on public.instagram_messages
  referencing old table as previous new table as updated
  for each statement execute function instagram_private.messages_after_update();

/** --- Section: participant profiles (kind `profiles`) --- */

create table public.instagram_profile_fetches (
  id bigint generated always as identity primary key,
  conversation_id uuid not null,
  imo_id uuid not null,
  integration_id uuid not null,
  igsid text not null,
  state text not null default 'available'
    check (state in ('available', 'running', 'retryable', 'completed', 'discarded')),
  attempt integer not null default 0 check (attempt >= 0),
  max_attempts integer not null default 5 check (max_attempts between 1 and 100),
  run_at timestamptz not null default now(),
  lease_owner text,
  lease_expires_at timestamptz,
  finalized_at timestamptz,
  last_error_code text,
  last_error_message text,
  created_at timestamptz not null default now(),
  constraint instagram_profile_fetches_conversation_fkey foreign key (conversation_id, imo_id)
    references public.instagram_conversations (id, imo_id) on delete cascade,
  constraint instagram_profile_fetches_integration_fkey foreign key (integration_id, imo_id)
    references public.instagram_integrations (id, imo_id) on delete cascade,
  constraint instagram_profile_fetches_lease_when_running check (
    (state = 'running') = (lease_owner is not null and lease_expires_at is not null)),
  constraint instagram_profile_fetches_finalized_iff_terminal check (
    (state in ('completed', 'discarded')) = (finalized_at is not null))
);
comment on table public.instagram_profile_fetches is
  'Queue of participant profile fetches (GET /{igsid}?fields=name,username,profile_pic with the Page token).';

create unique index instagram_profile_fetches_active_key on public.instagram_profile_fetches (conversation_id)
  where state in ('available', 'running', 'retryable');
create index instagram_profile_fetches_conversation_idx on public.instagram_profile_fetches (conversation_id, imo_id);
create index instagram_profile_fetches_integration_idx on public.instagram_profile_fetches (integration_id, imo_id);
create index instagram_profile_fetches_due_idx on public.instagram_profile_fetches (run_at, id)
  where state in ('available', 'retryable');
create index instagram_profile_fetches_lease_idx on public.instagram_profile_fetches (lease_expires_at)
  where state = 'running';
create index instagram_profile_fetches_finalized_idx on public.instagram_profile_fetches (finalized_at)
  where state in ('completed', 'discarded');

alter table public.instagram_profile_fetches enable row level security;
revoke all on public.instagram_profile_fetches from anon, authenticated;
grant all on public.instagram_profile_fetches to service_role;
revoke all on sequence public.instagram_profile_fetches_id_seq from anon, authenticated;

create or replace function instagram_private.profile_fetches_notify()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform pg_notify('instagram_profile_fetches', '');
  return null;
end
$$;
comment on function instagram_private.profile_fetches_notify() is
  'Wakes the workers (one NOTIFY per statement) when profile fetches are queued.';
revoke all on function instagram_private.profile_fetches_notify() from public, anon, authenticated;
grant execute on function instagram_private.profile_fetches_notify() to service_role;
create trigger instagram_profile_fetches_notify after insert on public.instagram_profile_fetches
  for each statement execute function instagram_private.profile_fetches_notify();

create or replace function instagram_private.ensure_leads(p_conversation_ids uuid[])
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_conv record;
  v_lead uuid;
  v_first text;
  v_last text;
  v_created integer := 0;
begin
  for v_conv in
    select c.id, c.imo_id, c.participant_username, c.participant_name
    from public.instagram_conversations c
    where c.id = any (p_conversation_ids) and c.recruiting_lead_id is null
    order by c.id
    for update
  loop
    v_lead := null;
    -- A lead this conversation already made (linked one way only), else the IMO's lead with the username.
    select l.id into v_lead from public.recruiting_leads l
    where l.instagram_conversation_id = v_conv.id;
    if v_lead is null and v_conv.participant_username is not null then
      select l.id into v_lead from public.recruiting_leads l
      where l.imo_id = v_conv.imo_id and l.instagram_username is not null
        and lower(l.instagram_username) = lower(v_conv.participant_username)
      order by l.created_at, l.id
      limit 1;
    end if;
    if v_lead is null then
      v_first := coalesce(nullif(split_part(btrim(v_conv.participant_name), ' ', 1), ''),
        '@' || v_conv.participant_username, 'Instagram contact');
      v_last := nullif(btrim(substr(btrim(v_conv.participant_name),
        length(split_part(btrim(v_conv.participant_name), ' ', 1)) + 1)), '');
      insert into public.recruiting_leads (imo_id, first_name, last_name, lead_source, instagram_username,
        instagram_conversation_id)
      values (v_conv.imo_id, v_first, v_last, 'instagram', v_conv.participant_username, v_conv.id)
      returning id into v_lead;
      v_created := v_created + 1;
    else
      update public.recruiting_leads set
        instagram_conversation_id = coalesce(instagram_conversation_id, v_conv.id),
        instagram_username = coalesce(instagram_username, v_conv.participant_username)
      where id = v_lead and (instagram_conversation_id is null or instagram_username is null);
    end if;
    update public.instagram_conversations set recruiting_lead_id = v_lead where id = v_conv.id;
  end loop;
  return v_created;
end
$$;
comment on function instagram_private.ensure_leads(uuid[]) is
  'Gives each conversation without a lead one: the lead it already made, the IMO''s lead with the same '
  'Instagram username, or a new lead_source = instagram lead named from the profile; linked both ways.';
revoke all on function instagram_private.ensure_leads(uuid[]) from public, anon, authenticated;
grant execute on function instagram_private.ensure_leads(uuid[]) to service_role;

/** --- Section: the claim, fail and release steps of the two queues below (the same for both) --- */

create type instagram_private.claimed_job as (id bigint, attempt integer, max_attempts integer);
comment on type instagram_private.claimed_job is 'A job queue_claim leased: its id and attempt count.';

create or replace function instagram_private.queue_claim(
  p_queue regclass, p_worker text, p_limit integer, p_lease_seconds integer
)
returns setof instagram_private.claimed_job
language plpgsql
set search_path = ''
as $$
begin
  if p_worker is null or length(p_worker) = 0 or p_limit is null or p_limit < 1 or p_limit > 1000
     or p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'invalid_claim' using errcode = '22023',
      detail = 'Claim needs a worker id, a limit of 1 to 1000 and a positive lease.';
  end if;
  return query execute format(
    'with picked as (
       select q.id from %1$s q
       where (q.state in (''available'', ''retryable'') and q.run_at <= now())
          or (q.state = ''running'' and q.lease_expires_at < now() and q.attempt < q.max_attempts)
       order by q.run_at, q.id
       limit $2
       for update skip locked
     )
     update %1$s q set state = ''running'', attempt = q.attempt + 1, lease_owner = $1,
       lease_expires_at = now() + make_interval(secs => $3)
     from picked where q.id = picked.id
     returning q.id, q.attempt, q.max_attempts', p_queue)
    using p_worker, p_limit, p_lease_seconds;
end
$$;
comment on function instagram_private.queue_claim(regclass, text, integer, integer) is
  'Claims up to p_limit due jobs of the queue table p_queue (and running ones whose lease expired) for p_worker '
  'with a lease (FOR UPDATE SKIP LOCKED); returns their id, attempt and max_attempts.';
revoke all on function instagram_private.queue_claim(regclass, text, integer, integer) from public, anon, authenticated;
grant execute on function instagram_private.queue_claim(regclass, text, integer, integer) to service_role;

create or replace function instagram_private.queue_fail(
  p_queue regclass, p_job_id bigint, p_worker text, p_action text, p_run_at timestamptz,
  p_error_code text, p_error_message text
)
returns text
language plpgsql
set search_path = ''
as $$
declare
  v_attempt integer;
  v_max_attempts integer;
  v_retry boolean;
begin
  if p_action is null or p_action not in ('retry', 'discard', 'error', 'reauth', 'poison') then
    raise exception 'invalid_action' using errcode = '22023',
      detail = 'Action must be retry, discard, error, reauth or poison.';
  end if;
  execute format('select attempt, max_attempts from %s where id = $1 and state = ''running'' and lease_owner = $2
                  for update', p_queue)
    into v_attempt, v_max_attempts using p_job_id, p_worker;
  if v_attempt is null then
    return null;  -- not held (any more) by this worker
  end if;
  -- There is no integration to mark here: error, reauth and poison end the job like discard.
  v_retry := p_action = 'retry' and p_run_at is not null and v_attempt < v_max_attempts;
  execute format('update %s set state = $2, run_at = coalesce($3, run_at),
                    finalized_at = case when $2 = ''retryable'' then null else now() end,
                    lease_owner = null, lease_expires_at = null, last_error_code = $4, last_error_message = $5
                  where id = $1', p_queue)
    using p_job_id, case when v_retry then 'retryable' else 'discarded' end,
      case when v_retry then p_run_at end, p_error_code, left(p_error_message, 500);
  return case when v_retry then 'retryable' else 'discarded' end;
end
$$;
comment on function instagram_private.queue_fail(regclass, bigint, text, text, timestamptz, text, text) is
  'A failed attempt of p_worker''s job in the queue table p_queue: retryable at p_run_at while attempts remain, '
  'else discarded; returns the new state, or null when the worker does not hold the job.';
revoke all on function instagram_private.queue_fail(regclass, bigint, text, text, timestamptz, text, text)
  from public, anon, authenticated;
grant execute on function instagram_private.queue_fail(regclass, bigint, text, text, timestamptz, text, text)
  to service_role;

create or replace function instagram_private.queue_release(
  p_queue regclass, p_channel text, p_worker text, p_job_ids bigint[]
)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_count integer;
begin
  execute format('update %s set state = ''available'', attempt = greatest(attempt - 1, 0), lease_owner = null,
                    lease_expires_at = null
                  where id = any ($1) and state = ''running'' and lease_owner = $2', p_queue)
    using p_job_ids, p_worker;
  get diagnostics v_count = row_count;
  if v_count > 0 then
    perform pg_notify(p_channel, v_count::text);
  end if;
  return v_count;
end
$$;
comment on function instagram_private.queue_release(regclass, text, text, bigint[]) is
  'Hands p_worker''s unfinished jobs in p_queue back as available without charging an attempt (shutdown), and '
  'wakes the workers on p_channel.';
revoke all on function instagram_private.queue_release(regclass, text, text, bigint[]) from public, anon, authenticated;
grant execute on function instagram_private.queue_release(regclass, text, text, bigint[]) to service_role;

create or replace function public.instagram_profile_claim_v1(
  p_worker text, p_limit integer, p_lease_seconds integer default 300
)
returns jsonb
language sql
security definer
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', c.id, 'attempt', c.attempt, 'max_attempts', c.max_attempts,
    'conversation_id', f.conversation_id, 'integration_id', f.integration_id, 'igsid', f.igsid
  ) order by c.id), '[]'::jsonb)
  from instagram_private.queue_claim('public.instagram_profile_fetches', p_worker, p_limit, p_lease_seconds) c
  join public.instagram_profile_fetches f on f.id = c.id
$$;
comment on function public.instagram_profile_claim_v1(text, integer, integer) is
  'Claims up to p_limit due profile fetches (and running ones whose lease expired) for p_worker with a lease.';
revoke execute on function public.instagram_profile_claim_v1(text, integer, integer) from public, anon, authenticated;
grant execute on function public.instagram_profile_claim_v1(text, integer, integer) to service_role;

create or replace function public.instagram_profile_token_v1(
  p_job_id bigint, p_worker text, p_key text, p_previous_key text default null
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
  select i.* into v_integration
  from public.instagram_profile_fetches f join public.instagram_integrations i on i.id = f.integration_id
  where f.id = p_job_id and f.state = 'running' and f.lease_owner = p_worker;
  if not found then
    raise exception 'job_not_held' using errcode = 'P0002', detail = 'This worker does not hold that job.';
  end if;
  return jsonb_build_object('page_token', instagram_private.decrypt_token_any(
    v_integration.page_access_token_encrypted, v_integration.token_key_fingerprint, p_key, p_previous_key));
end
$$;
comment on function public.instagram_profile_token_v1(bigint, text, text, text) is
  'For a profile fetch p_worker holds: its integration''s decrypted Page token (null when none).';
revoke execute on function public.instagram_profile_token_v1(bigint, text, text, text) from public, anon, authenticated;
grant execute on function public.instagram_profile_token_v1(bigint, text, text, text) to service_role;

create or replace function public.instagram_profile_complete_v1(p_worker text, p_results jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_completed integer;
  v_conversations uuid[];
begin
  if jsonb_typeof(p_results) is distinct from 'array' then
    raise exception 'invalid_results' using errcode = '22023', detail = 'Results must be a JSON array.';
  end if;
  -- outcome: fetched (name, username, profile_pic) or unavailable (Meta would not say; the lead is still made)
  with done as (
    update public.instagram_profile_fetches f set
      state = 'completed', finalized_at = now(), lease_owner = null, lease_expires_at = null,
      last_error_code = r.error_code, last_error_message = left(r.error_message, 500)
    from jsonb_to_recordset(p_results) as r(job_id bigint, error_code text, error_message text)
    where f.id = r.job_id and f.state = 'running' and f.lease_owner = p_worker
    returning f.id, f.conversation_id
  ), named as (
    update public.instagram_conversations c set
      participant_username = coalesce(nullif(left(r.username, 100), ''), c.participant_username),
      participant_name = coalesce(nullif(left(r.name, 200), ''), c.participant_name),
      participant_profile_picture_url = coalesce(nullif(r.profile_pic, ''), c.participant_profile_picture_url),
      participant_checked_at = now()
    from done d
    join jsonb_to_recordset(p_results) as r(job_id bigint, name text, username text, profile_pic text)
      on r.job_id = d.id
    where c.id = d.conversation_id
    returning c.id
  )
  select coalesce(array_agg(id), '{}') into v_conversations from named;
  v_completed := cardinality(v_conversations);
  perform instagram_private.ensure_leads(v_conversations);
  return jsonb_build_object('completed', v_completed, 'stale', jsonb_array_length(p_results) - v_completed);
end
$$;
comment on function public.instagram_profile_complete_v1(text, jsonb) is
  'Finishes profile fetches held by p_worker: names the participants, then creates or links their leads.';
revoke execute on function public.instagram_profile_complete_v1(text, jsonb) from public, anon, authenticated;
grant execute on function public.instagram_profile_complete_v1(text, jsonb) to service_role;

create or replace function public.instagram_profile_fail_v1(
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
  v_state text;
begin
  -- A profile fetch never changes the integration's status (the refresh kind owns it).
  v_state := instagram_private.queue_fail('public.instagram_profile_fetches', p_job_id, p_worker, p_action,
    p_run_at, p_error_code, p_error_message);
  if v_state = 'discarded' then
    -- Given up: the person still becomes a lead, named when a later fetch succeeds.
    update public.instagram_conversations c set participant_checked_at = now()
    from public.instagram_profile_fetches f where f.id = p_job_id and c.id = f.conversation_id;
    perform instagram_private.ensure_leads(array(
      select f.conversation_id from public.instagram_profile_fetches f where f.id = p_job_id));
  end if;
  return jsonb_build_object('state', v_state, 'stale', v_state is null);
end
$$;
comment on function public.instagram_profile_fail_v1(bigint, text, text, timestamptz, text, text) is
  'Records a failed profile fetch: retry at p_run_at while attempts remain, else discard and still give the '
  'conversation its lead.';
revoke execute on function public.instagram_profile_fail_v1(bigint, text, text, timestamptz, text, text)
  from public, anon, authenticated;
grant execute on function public.instagram_profile_fail_v1(bigint, text, text, timestamptz, text, text)
  to service_role;

create or replace function public.instagram_profile_release_v1(p_worker text, p_job_ids bigint[])
returns integer
language sql
security definer
set search_path = ''
as $$
  select instagram_private.queue_release('public.instagram_profile_fetches', 'instagram_profile_fetches',
    p_worker, p_job_ids)
$$;
comment on function public.instagram_profile_release_v1(text, bigint[]) is
  'Hands p_worker''s unfinished profile fetches back as available without charging an attempt (shutdown).';
revoke execute on function public.instagram_profile_release_v1(text, bigint[]) from public, anon, authenticated;
grant execute on function public.instagram_profile_release_v1(text, bigint[]) to service_role;

/** --- Section: processing deliveries (kind `webhooks`) --- */

create type instagram_private.webhook_item as (
  event_id bigint,
  position text,           -- entry.container.index, for the reasons in a delivery's outcome
  seq bigint,              -- the item's order in the batch
  account_id text,
  integration_id uuid,     -- null: no live integration has the account (unroutable)
  imo_id uuid,
  kind text,               -- message | echo | unsend | reaction | read | postback | edit | referral | unknown | invalid
  reason text,
  igsid text,              -- the participant: whichever of sender and recipient is not the account
  direction text,
  mid text,
  sent_at timestamptz,     -- Meta's timestamp (else the entry's time)
  text text,
  attachments jsonb,
  reply_to jsonb,
  metadata jsonb,
  message_type text,
  action text,
  reaction text,
  emoji text,
  num_edit integer,
  referral jsonb
);
comment on type instagram_private.webhook_item is
  'One messaging / standby / changes item of a delivery, typed and routed (see webhook_items).';

create or replace function instagram_private.webhook_items(p_docs jsonb)
returns instagram_private.webhook_item[]
language sql
stable
set search_path = ''
set jit = off  -- jsonb set functions look costly to the planner; compiling them takes seconds
as $$
  -- Every messaging / standby / changes item of the deliveries, flattened and typed, routed to an
  -- integration. Defensive throughout: a field of the wrong JSON type reads as null, never raises.
  with docs as (
    select (d ->> 'id')::bigint as event_id, d -> 'doc' as doc
    from jsonb_array_elements(p_docs) d
  ), entries as (
    select docs.event_id, e.ord as entry_ord, e.value as entry,
      -- An account id is 1 to 128 characters (Meta's are 17 digits): anything else makes its items invalid,
      -- never an unroutable row whose account could not even be indexed.
      case when jsonb_typeof(e.value -> 'id') in ('string', 'number') and length(e.value ->> 'id') between 1 and 128
        then e.value ->> 'id' end as account_id
    from docs
    cross join lateral jsonb_array_elements(docs.doc -> 'entry') with ordinality e(value, ord)
  ), raw_items as (
    select en.event_id, en.entry_ord, en.account_id, en.entry, x.src, x.ord, x.item, x.field
    from entries en
    cross join lateral (
      select 'messaging' as src, m.ord, m.value as item, null::text as field
      from jsonb_array_elements(case when jsonb_typeof(en.entry -> 'messaging') = 'array'
        then en.entry -> 'messaging' else '[]'::jsonb end) with ordinality m(value, ord)
      union all
      select 'standby', m.ord, m.value, null
      from jsonb_array_elements(case when jsonb_typeof(en.entry -> 'standby') = 'array'
        then en.entry -> 'standby' else '[]'::jsonb end) with ordinality m(value, ord)
      union all
      select 'changes', m.ord, m.value -> 'value', coalesce(m.value ->> 'field', '')
      from jsonb_array_elements(case when jsonb_typeof(en.entry -> 'changes') = 'array'
        then en.entry -> 'changes' else '[]'::jsonb end) with ordinality m(value, ord)
    ) x
  ), routes as (
    select distinct on (i.instagram_business_account_id)
      i.instagram_business_account_id as account_id, i.id as integration_id, i.imo_id
    from public.instagram_integrations i
    where i.instagram_business_account_id in (select r.account_id from raw_items r)
      and i.status in ('connected', 'reauth_required', 'error')
    order by i.instagram_business_account_id, (i.status = 'connected') desc, i.updated_at desc
  ), typed as (
    select r.*, rt.integration_id, rt.imo_id,
      row_number() over (order by r.event_id, r.entry_ord, r.src, r.ord) as seq,
      case when jsonb_typeof(r.item -> 'sender') = 'object' then r.item -> 'sender' ->> 'id' end as sender,
      case when jsonb_typeof(r.item -> 'recipient') = 'object' then r.item -> 'recipient' ->> 'id' end as recipient,
      case
        when r.field is not null and r.field <> 'messages' then 'unknown'
        when jsonb_typeof(r.item) <> 'object' then 'invalid'
        when jsonb_typeof(r.item -> 'message') = 'object' then case
          when r.item -> 'message' -> 'is_deleted' = 'true'::jsonb then 'unsend'
          when r.item -> 'message' -> 'is_echo' = 'true'::jsonb then 'echo'
          else 'message' end
        when jsonb_typeof(r.item -> 'reaction') = 'object' then 'reaction'
        when jsonb_typeof(r.item -> 'read') = 'object' then 'read'
        when jsonb_typeof(r.item -> 'postback') = 'object' then 'postback'
        when jsonb_typeof(r.item -> 'message_edit') = 'object' then 'edit'
        when jsonb_typeof(r.item -> 'referral') = 'object' then 'referral'
        else 'unknown' end as kind,
      coalesce(
        -- Meta's milliseconds; the dashboard's test sample sends seconds (as a string): 11+ digits are ms
        case when r.item ->> 'timestamp' ~ '^[0-9]{1,15}$' then to_timestamp((r.item ->> 'timestamp')::bigint
          / case when length(r.item ->> 'timestamp') >= 11 then 1000.0 else 1 end) end,
        case when r.entry ->> 'time' ~ '^[0-9]{1,15}$' then to_timestamp((r.entry ->> 'time')::bigint
          / case when length(r.entry ->> 'time') >= 11 then 1000.0 else 1 end) end,
        now()) as sent_at,
      coalesce(r.item -> 'message', r.item -> 'reaction', r.item -> 'read', r.item -> 'postback',
        r.item -> 'message_edit', '{}'::jsonb) as body
    from raw_items r left join routes rt on rt.account_id = r.account_id
  )
  select coalesce(array_agg(row(
    t.event_id,
    t.entry_ord::text || '.' || t.src || '.' || t.ord::text,
    t.seq,
    t.account_id,
    t.integration_id,
    t.imo_id,
    case
      when t.kind in ('unknown', 'invalid') then t.kind
      when t.account_id is null or t.sender is null or t.recipient is null or t.sender = t.recipient
        or length(t.sender) not between 1 and 128 or length(t.recipient) not between 1 and 128 then 'invalid'
      when t.kind in ('message', 'echo', 'unsend', 'reaction', 'edit')
        and (jsonb_typeof(t.body -> 'mid') is distinct from 'string' or length(t.body ->> 'mid') not between 1 and 512)
        then 'invalid'
      -- A postback may have no mid (it is then keyed by its position), but one it has must fit the unique index.
      when t.kind = 'postback' and jsonb_typeof(t.body -> 'mid') = 'string'
        and length(t.body ->> 'mid') not between 1 and 512 then 'invalid'
      else t.kind end,
    case
      when t.kind = 'unknown' and t.field is not null then 'unknown_field:' || left(t.field, 40)
      when t.kind = 'unknown' then 'unknown_kind'
      end,
    case when t.sender = t.account_id then t.recipient else t.sender end,
    case when t.sender = t.account_id or t.kind = 'echo' then 'outbound' else 'inbound' end,
    case when jsonb_typeof(t.body -> 'mid') = 'string' and length(t.body ->> 'mid') <= 512 then t.body ->> 'mid' end,
    t.sent_at,
    case when jsonb_typeof(t.body -> 'text') = 'string' then t.body ->> 'text'
         when t.kind = 'postback' and jsonb_typeof(t.body -> 'title') = 'string' then t.body ->> 'title' end,
    case when jsonb_typeof(t.body -> 'attachments') = 'array' then t.body -> 'attachments' else '[]'::jsonb end,
    case when jsonb_typeof(t.body -> 'reply_to') = 'object' then t.body -> 'reply_to' end,
    case when t.kind in ('message', 'echo', 'postback') then jsonb_strip_nulls(jsonb_build_object(
      'quick_reply', case when jsonb_typeof(t.body -> 'quick_reply') = 'object' then t.body -> 'quick_reply' end,
      'referral', coalesce(case when jsonb_typeof(t.body -> 'referral') = 'object' then t.body -> 'referral' end,
                           case when jsonb_typeof(t.item -> 'referral') = 'object' then t.item -> 'referral' end),
      'postback', case when t.kind = 'postback' then t.body end,
      'is_unsupported', case when t.body -> 'is_unsupported' = 'true'::jsonb then true end,
      'origin', case when t.kind = 'echo' then 'echo' end,
      'standby', case when t.src = 'standby' then true end)) end,
    -- the message type: unsupported, postback, the first attachment's type, a story reply, or text
    case
      when t.body -> 'is_unsupported' = 'true'::jsonb then 'unsupported'
      when t.kind = 'postback' then 'postback'
      when jsonb_typeof(t.body -> 'attachments') = 'array' and jsonb_array_length(t.body -> 'attachments') > 0 then
        case t.body -> 'attachments' -> 0 ->> 'type'
          when 'image' then 'image' when 'video' then 'video' when 'audio' then 'audio' when 'file' then 'file'
          when 'share' then 'share' when 'story_mention' then 'story_mention'
          when 'ig_reel' then 'reel' when 'reel' then 'reel'
          else 'unsupported' end
      when jsonb_typeof(t.body -> 'reply_to') = 'object' and t.body -> 'reply_to' ? 'story' then 'story_reply'
      else 'text' end,
    case when t.body ->> 'action' = 'unreact' then 'unreact' else 'react' end,
    case when jsonb_typeof(t.body -> 'reaction') = 'string' then left(t.body ->> 'reaction', 40) end,
    case when jsonb_typeof(t.body -> 'emoji') = 'string' then left(t.body ->> 'emoji', 40) end,
    case when t.body ->> 'num_edit' ~ '^[0-9]{1,6}$' then (t.body ->> 'num_edit')::integer end,
    case when jsonb_typeof(t.item -> 'referral') = 'object' then t.item -> 'referral' end
  )::instagram_private.webhook_item order by t.seq), '{}')
  from typed t
$$;
comment on function instagram_private.webhook_items(jsonb) is
  'Flattens parsed deliveries ([{id, doc}]) into typed items (message, echo, unsend, reaction, read, postback, '
  'edit, referral, unknown, invalid) with their participant, direction, Meta timestamp and route.';
revoke all on function instagram_private.webhook_items(jsonb) from public, anon, authenticated;
grant execute on function instagram_private.webhook_items(jsonb) to service_role;

create or replace function instagram_private.webhook_process(p_worker text, p_event_ids bigint[])
returns integer
language plpgsql
security definer
set search_path = ''
set jit = off  -- jsonb set functions look costly to the planner; compiling them takes seconds
as $$
declare
  v_docs jsonb;
  v_items instagram_private.webhook_item[];
  v_new uuid[];
  v_held integer;
begin
  -- The deliveries p_worker holds, parsed once and sorted in one statement: bodies that are not JSON or not a
  -- shape we know are marked failed (alone), the rest go on to be processed.
  with held as (
    select e.id, e.attempt, e.max_attempts, instagram_private.try_jsonb(e.body) as doc
    from public.instagram_webhook_events e
    where e.id = any (p_event_ids) and e.state = 'running' and e.lease_owner = p_worker
    order by e.id
    for update
  ), sorted as (
    select h.*, case
      when h.doc is null or h.doc = 'null'::jsonb then 'invalid_json'
      when jsonb_typeof(h.doc) <> 'object' or h.doc ->> 'object' is distinct from 'instagram' then 'unsupported_object'
      when jsonb_typeof(h.doc -> 'entry') is distinct from 'array' then 'unknown_shape'
      end as failure
    from held h
  ), failed as (
    update public.instagram_webhook_events e set
      state = 'failed', finalized_at = now(), lease_owner = null, lease_expires_at = null,
      last_error_code = f.failure,
      last_error_message = case f.failure
        when 'invalid_json' then 'The body is not UTF-8 JSON.'
        when 'unsupported_object' then 'The delivery is not for the instagram object.'
        else 'The delivery has no entry array.' end
    from sorted f
    where e.id = f.id and f.failure is not null
  )
  select count(*)::integer,
    coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'doc', s.doc, 'attempt', s.attempt,
      'max_attempts', s.max_attempts)) filter (where s.failure is null), '[]'::jsonb)
    into v_held, v_docs
  from sorted s;

  v_items := instagram_private.webhook_items(v_docs);

  -- Conversations: one per (integration, participant); new ones queue a profile fetch.
  with wanted as (
    select distinct i.integration_id, i.imo_id, i.igsid
    from unnest(v_items) as i
    where i.integration_id is not null and i.kind in ('message', 'echo', 'postback', 'referral')
    order by i.integration_id, i.igsid
  ), created as (
    insert into public.instagram_conversations (integration_id, imo_id, participant_igsid)
    select w.integration_id, w.imo_id, w.igsid from wanted w
    on conflict (integration_id, participant_igsid) do nothing
    returning id
  )
  select coalesce(array_agg(id), '{}') into v_new from created;

  -- Messages (inbound, echoes of any client, postbacks); Meta's mid makes a repeat a no-op. An echo of our
  -- own send finds the row the send stored under the same mid.
  insert into public.instagram_messages (conversation_id, imo_id, meta_message_id, direction, message_type,
    text, attachments, status, reply_to, metadata, sent_at)
  select distinct on (i.mid)
    c.id, c.imo_id, i.mid, i.direction::public.instagram_message_direction,
    i.message_type::public.instagram_message_type, i.text, i.attachments,
    'sent'::public.instagram_message_status, i.reply_to, i.metadata, i.sent_at
  from unnest(v_items) as i
  join public.instagram_conversations c on c.integration_id = i.integration_id and c.participant_igsid = i.igsid
  where i.kind in ('message', 'echo', 'postback') and i.mid is not null
  order by i.mid, i.sent_at
  on conflict (meta_message_id) do nothing;

  -- Postbacks without a mid are kept as messages keyed by their position in the delivery.
  insert into public.instagram_messages (conversation_id, imo_id, meta_message_id, direction, message_type,
    text, status, metadata, sent_at)
  select distinct on (i.event_id, i.position)
    c.id, c.imo_id, 'postback:' || i.event_id::text || ':' || i.position, 'inbound', 'postback'::text::public.instagram_message_type,
    i.text, 'sent', i.metadata, i.sent_at
  from unnest(v_items) as i
  join public.instagram_conversations c on c.integration_id = i.integration_id and c.participant_igsid = i.igsid
  where i.kind = 'postback' and i.mid is null
  order by i.event_id, i.position
  on conflict (meta_message_id) do nothing;

  -- Unsends: only the participant's own message in that conversation.
  update public.instagram_messages m set deleted_at = x.sent_at
  from (
    select distinct on (i.mid) i.mid, i.integration_id, i.igsid, i.sent_at
    from unnest(v_items) as i
    where i.kind = 'unsend' order by i.mid, i.sent_at
  ) x
  join public.instagram_conversations c on c.integration_id = x.integration_id and c.participant_igsid = x.igsid
  where m.meta_message_id = x.mid and m.conversation_id = c.id and m.deleted_at is null;

  -- Edits: the newest edit wins (num_edit, else the timestamp).
  update public.instagram_messages m set
    text = x.text, edit_count = greatest(m.edit_count, coalesce(x.num_edit, m.edit_count + 1)), edited_at = x.sent_at
  from (
    select distinct on (i.mid) i.mid, i.integration_id, i.igsid, i.text, i.num_edit, i.sent_at
    from unnest(v_items) as i
    where i.kind = 'edit' order by i.mid, i.num_edit desc nulls last, i.sent_at desc
  ) x
  join public.instagram_conversations c on c.integration_id = x.integration_id and c.participant_igsid = x.igsid
  where m.meta_message_id = x.mid and m.conversation_id = c.id
    and (x.num_edit > m.edit_count or (x.num_edit is null and (m.edited_at is null or m.edited_at < x.sent_at)));

  -- Reactions: per message, one entry per person, the newest action wins.
  with latest as (
    select distinct on (i.mid, i.igsid) i.mid, i.integration_id, i.igsid,
      jsonb_build_object('igsid', i.igsid, 'reaction', i.reaction, 'emoji', i.emoji, 'action', i.action,
        'at', i.sent_at) as entry
    from unnest(v_items) as i
    where i.kind = 'reaction' order by i.mid, i.igsid, i.sent_at desc
  ), targets as (
    select m.id, m.reactions, array_agg(l.entry) as entries
    from latest l
    join public.instagram_conversations c on c.integration_id = l.integration_id and c.participant_igsid = l.igsid
    join public.instagram_messages m on m.meta_message_id = l.mid and m.conversation_id = c.id
    group by m.id, m.reactions
  ), merged as (
    select t.id, (
      select coalesce(jsonb_agg(z.e order by z.e ->> 'igsid'), '[]'::jsonb) from (
        select distinct on (u.e ->> 'igsid') u.e
        from (select r as e from jsonb_array_elements(t.reactions) r
              union all select unnest(t.entries)) u
        order by u.e ->> 'igsid', (u.e ->> 'at')::timestamptz desc
      ) z) as reactions
    from targets t
  )
  update public.instagram_messages m set reactions = merged.reactions
  from merged where m.id = merged.id and m.reactions is distinct from merged.reactions;

  -- Reads: our messages in the conversation up to the one read (or up to the read's time) become read.
  update public.instagram_messages m set status = 'read', read_at = coalesce(m.read_at, x.read_at)
  from (
    select c.id as conversation_id, max(coalesce(t.sent_at, i.sent_at)) as up_to, max(i.sent_at) as read_at
    from unnest(v_items) as i
    join public.instagram_conversations c on c.integration_id = i.integration_id and c.participant_igsid = i.igsid
    left join public.instagram_messages t on t.meta_message_id = i.mid and t.conversation_id = c.id
    where i.kind = 'read'
    group by c.id
  ) x
  where m.conversation_id = x.conversation_id and m.direction = 'outbound' and m.sent_at <= x.up_to
    and m.status in ('sent', 'delivered');

  -- Referrals (an ad or link that opened the conversation): the newest is kept on the conversation.
  update public.instagram_conversations c set last_referral = x.referral
  from (
    select distinct on (i.integration_id, i.igsid) i.integration_id, i.igsid, i.referral
    from unnest(v_items) as i
    where i.kind = 'referral' and i.referral is not null
    order by i.integration_id, i.igsid, i.sent_at desc
  ) x
  where c.integration_id = x.integration_id and c.participant_igsid = x.igsid
    and c.last_referral is distinct from x.referral;

  -- Profiles: new conversations, and those not checked for a day that have news.
  insert into public.instagram_profile_fetches (conversation_id, imo_id, integration_id, igsid)
  select c.id, c.imo_id, c.integration_id, c.participant_igsid
  from public.instagram_conversations c
  where c.id = any (v_new)
     or (c.id in (
          select c2.id from unnest(v_items) as i
          join public.instagram_conversations c2
            on c2.integration_id = i.integration_id and c2.participant_igsid = i.igsid
          where i.kind in ('message', 'postback'))
        and c.participant_checked_at < now() - interval '1 day')
  order by c.id
  on conflict (conversation_id) where state in ('available', 'running', 'retryable') do nothing;

  -- Each delivery's end: failed above; back for another attempt while an action's message is missing;
  -- unroutable while an account has no live integration; else completed with what was ignored and why.
  with items as (
    select i.*,
      i.kind in ('unsend', 'edit', 'reaction') and i.integration_id is not null and not exists (
        select 1 from public.instagram_conversations c
        join public.instagram_messages m on m.conversation_id = c.id and m.meta_message_id = i.mid
        where c.integration_id = i.integration_id and c.participant_igsid = i.igsid) as target_missing
    from unnest(v_items) as i
  ), docs as (
    select (d ->> 'id')::bigint as id, (d ->> 'attempt')::integer as attempt,
      (d ->> 'max_attempts')::integer as max_attempts
    from jsonb_array_elements(v_docs) d
  ), kinds as (
    select k.event_id, jsonb_object_agg(k.kind, k.n) as kinds
    from (select x.event_id, x.kind, count(*) as n from items x group by x.event_id, x.kind) k
    group by k.event_id
  ), flags as (
    select x.event_id, bool_or(x.target_missing) as waiting,
      array_agg(distinct x.account_id) filter (
        where x.integration_id is null and x.kind not in ('unknown', 'invalid') and x.account_id is not null)
        as unroutable,
      jsonb_agg(jsonb_build_object('position', x.position, 'kind', x.kind,
        'reason', coalesce(x.reason, case when x.target_missing then 'target_not_found' else 'invalid_item' end))
        order by x.seq) filter (where x.kind in ('unknown', 'invalid') or x.target_missing) as ignored
    from items x
    group by x.event_id
  ), summary as (
    select d.id, d.attempt, d.attempt < d.max_attempts and coalesce(f.waiting, false) as waiting,
      coalesce(f.unroutable, '{}') as unroutable, coalesce(k.kinds, '{}'::jsonb) as kinds,
      jsonb_path_query_array(coalesce(f.ignored, '[]'::jsonb), '$[0 to 49]') as ignored
    from docs d left join kinds k on k.event_id = d.id left join flags f on f.event_id = d.id
  )
  update public.instagram_webhook_events e set
    state = case when s.waiting then 'retryable' when cardinality(s.unroutable) > 0 then 'unroutable'
                 else 'completed' end,
    run_at = case when s.waiting then now() + make_interval(secs => 10 * s.attempt) else e.run_at end,
    finalized_at = case when s.waiting then null else now() end,
    lease_owner = null, lease_expires_at = null,
    unroutable_accounts = nullif(s.unroutable, '{}'),
    outcome = jsonb_build_object('kinds', s.kinds, 'ignored', s.ignored),
    last_error_code = null, last_error_message = null
  from summary s
  where e.id = s.id;
  return v_held;
end
$$;
comment on function instagram_private.webhook_process(text, bigint[]) is
  'Processes the deliveries p_worker holds, set-based: conversations, messages, unsends, edits, reactions, '
  'reads, referrals, profile fetches; then each delivery''s state. Idempotent.';
revoke all on function instagram_private.webhook_process(text, bigint[]) from public, anon, authenticated;
grant execute on function instagram_private.webhook_process(text, bigint[]) to service_role;

create or replace function public.instagram_webhook_claim_v1(
  p_worker text, p_limit integer, p_lease_seconds integer default 300
)
returns jsonb
language sql
security definer
set search_path = ''
as $$
  -- No bodies: the processing reads them in the database.
  select coalesce(jsonb_agg(jsonb_build_object('id', c.id, 'attempt', c.attempt, 'max_attempts', c.max_attempts)
    order by c.id), '[]'::jsonb)
  from instagram_private.queue_claim('public.instagram_webhook_events', p_worker, p_limit, p_lease_seconds) c
$$;
comment on function public.instagram_webhook_claim_v1(text, integer, integer) is
  'Claims up to p_limit due deliveries (and running ones whose lease expired) for p_worker with a lease.';
revoke execute on function public.instagram_webhook_claim_v1(text, integer, integer) from public, anon, authenticated;
grant execute on function public.instagram_webhook_claim_v1(text, integer, integer) to service_role;

create or replace function public.instagram_webhook_complete_v1(p_worker text, p_results jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_ids bigint[];
  v_done integer;
begin
  if jsonb_typeof(p_results) is distinct from 'array' then
    raise exception 'invalid_results' using errcode = '22023', detail = 'Results must be a JSON array.';
  end if;
  select coalesce(array_agg((r ->> 'job_id')::bigint), '{}') into v_ids from jsonb_array_elements(p_results) r;
  -- The work of this kind happens here, in one transaction: all of the batch or none of it.
  v_done := instagram_private.webhook_process(p_worker, v_ids);
  return jsonb_build_object('completed', v_done, 'stale', cardinality(v_ids) - v_done);
end
$$;
comment on function public.instagram_webhook_complete_v1(text, jsonb) is
  'Processes the deliveries p_worker holds ([{job_id}]) in one transaction; returns completed and stale counts.';
revoke execute on function public.instagram_webhook_complete_v1(text, jsonb) from public, anon, authenticated;
grant execute on function public.instagram_webhook_complete_v1(text, jsonb) to service_role;

create or replace function public.instagram_webhook_fail_v1(
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
  v_state text;
begin
  v_state := instagram_private.queue_fail('public.instagram_webhook_events', p_job_id, p_worker, p_action,
    p_run_at, p_error_code, p_error_message);
  return jsonb_build_object('state', v_state, 'stale', v_state is null);
end
$$;
comment on function public.instagram_webhook_fail_v1(bigint, text, text, timestamptz, text, text) is
  'Records a failed processing of a delivery: retry at p_run_at while attempts remain, else discarded (kept, '
  'replayable).';
revoke execute on function public.instagram_webhook_fail_v1(bigint, text, text, timestamptz, text, text)
  from public, anon, authenticated;
grant execute on function public.instagram_webhook_fail_v1(bigint, text, text, timestamptz, text, text)
  to service_role;

create or replace function public.instagram_webhook_release_v1(p_worker text, p_job_ids bigint[])
returns integer
language sql
security definer
set search_path = ''
as $$
  select instagram_private.queue_release('public.instagram_webhook_events', 'instagram_webhook_events',
    p_worker, p_job_ids)
$$;
comment on function public.instagram_webhook_release_v1(text, bigint[]) is
  'Hands p_worker''s unprocessed deliveries back as available without charging an attempt (shutdown).';
revoke execute on function public.instagram_webhook_release_v1(text, bigint[]) from public, anon, authenticated;
grant execute on function public.instagram_webhook_release_v1(text, bigint[]) to service_role;

create or replace function public.instagram_webhook_replay_v1(
  p_failed_only boolean default false, p_since timestamptz default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  update public.instagram_webhook_events set
    state = 'available', run_at = now(), attempt = 0, finalized_at = null, lease_owner = null,
    lease_expires_at = null
  where received_at >= coalesce(p_since, '-infinity'::timestamptz)
    and state in ('failed', 'discarded', 'unroutable', 'completed')
    and (not p_failed_only or state in ('failed', 'discarded'));
  get diagnostics v_count = row_count;
  if v_count > 0 then
    perform pg_notify('instagram_webhook_events', v_count::text);
  end if;
  return jsonb_build_object('queued', v_count);
end
$$;
comment on function public.instagram_webhook_replay_v1(boolean, timestamptz) is
  'Queues stored deliveries for processing again (all finished ones, or only failed and discarded ones, '
  'received since p_since); processing is idempotent, so a replay changes only what was missing.';
revoke execute on function public.instagram_webhook_replay_v1(boolean, timestamptz) from public, anon, authenticated;
grant execute on function public.instagram_webhook_replay_v1(boolean, timestamptz) to service_role;

create or replace function public.instagram_webhook_prune_v1(p_keep_days integer default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_keep integer;
  v_deleted integer;
  v_profiles integer;
  v_dead integer;
begin
  -- Retention: the argument, else the database setting instagram_dm.webhook_retention_days, else 30 days.
  v_keep := coalesce(p_keep_days,
    nullif(current_setting('instagram_dm.webhook_retention_days', true), '')::integer, 30);
  if v_keep < 1 then
    raise exception 'invalid_retention' using errcode = '22023', detail = 'Keep processed deliveries at least a day.';
  end if;
  -- Only processed deliveries go; failed, discarded and unroutable ones stay for a replay.
  delete from public.instagram_webhook_events
  where state = 'completed' and finalized_at < now() - make_interval(days => v_keep);
  get diagnostics v_deleted = row_count;
  update public.instagram_webhook_events set
    state = 'discarded', finalized_at = now(), lease_owner = null, lease_expires_at = null,
    last_error_code = 'lease_expired', last_error_message = 'The worker stopped while running the last attempt.'
  where state = 'running' and lease_expires_at < now() and attempt >= max_attempts;
  get diagnostics v_dead = row_count;
  delete from public.instagram_profile_fetches
  where state in ('completed', 'discarded') and finalized_at < now() - interval '7 days';
  get diagnostics v_profiles = row_count;
  return jsonb_build_object('deleted', v_deleted, 'discarded', v_dead, 'profile_fetches_deleted', v_profiles);
end
$$;
comment on function public.instagram_webhook_prune_v1(integer) is
  'Deletes processed deliveries older than the retention (argument, else instagram_dm.webhook_retention_days, '
  'else 30 days) and finished profile fetches older than 7 days; discards deliveries whose last lease expired.';
revoke execute on function public.instagram_webhook_prune_v1(integer) from public, anon, authenticated;
grant execute on function public.instagram_webhook_prune_v1(integer) to service_role;

select cron.schedule('instagram-webhook-prune', '55 3 * * *', $$select public.instagram_webhook_prune_v1()$$);

/** --- Section: an account that connects later gets its waiting deliveries --- */

create or replace function instagram_private.integrations_route_waiting()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status in ('connected', 'reauth_required', 'error')
     and (tg_op = 'INSERT' or old.status is distinct from new.status
          or old.instagram_business_account_id is distinct from new.instagram_business_account_id) then
    update public.instagram_webhook_events set
      state = 'available', run_at = now(), attempt = 0, finalized_at = null
    where state = 'unroutable' and unroutable_accounts @> array[new.instagram_business_account_id];
    if found then
      perform pg_notify('instagram_webhook_events', '');
    end if;
  end if;
  return null;
end
$$;
comment on function instagram_private.integrations_route_waiting() is
  'When an integration becomes live, its account''s unroutable deliveries are queued again.';
revoke all on function instagram_private.integrations_route_waiting() from public, anon, authenticated;
grant execute on function instagram_private.integrations_route_waiting() to service_role;
create trigger instagram_integrations_route_waiting after insert or update of status, instagram_business_account_id
  on public.instagram_integrations
  for each row execute function instagram_private.integrations_route_waiting();

/** --- Section: the inbox for the app (members of the IMO; RLS decides) --- */

create or replace function public.instagram_list_conversations(
  p_imo_id uuid,
  p_limit integer default 50,
  p_before timestamptz default null,
  p_integration_id uuid default null,
  p_unread_only boolean default false
)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', c.id,
    'integration_id', c.integration_id,
    'participant', jsonb_build_object('igsid', c.participant_igsid, 'username', c.participant_username,
      'name', c.participant_name, 'profile_picture_url', c.participant_profile_picture_url),
    'last_message_preview', c.last_message_preview,
    'last_message_at', c.last_message_at,
    'last_inbound_at', c.last_inbound_at,
    'unread_count', c.unread_count,
    'window_closes_at', c.last_inbound_at + interval '24 hours',
    'human_agent_until', c.last_inbound_at + interval '7 days',
    'recruiting_lead_id', c.recruiting_lead_id
  ) order by c.last_message_at desc), '[]'::jsonb)
  from (
    select * from public.instagram_conversations c
    where c.imo_id = p_imo_id
      -- a scalar subquery, not coalesce(): RLS keeps a qual with coalesce() out of the index condition
      -- (not provably leakproof), and a deep page then filters every newer row
      and c.last_message_at < (select coalesce(p_before, 'infinity'::timestamptz))
      and (p_integration_id is null or c.integration_id = p_integration_id)
      and (not coalesce(p_unread_only, false) or c.unread_count > 0)
    order by c.last_message_at desc
    limit least(greatest(coalesce(p_limit, 50), 1), 200)
  ) c
$$;
comment on function public.instagram_list_conversations(uuid, integer, timestamptz, uuid, boolean) is
  'The IMO''s conversations, newest activity first, keyset-paged on last_message_at (pass the last one''s as '
  'p_before); members only (RLS: others get an empty array).';
revoke execute on function public.instagram_list_conversations(uuid, integer, timestamptz, uuid, boolean)
  from public, anon;
grant execute on function public.instagram_list_conversations(uuid, integer, timestamptz, uuid, boolean)
  to authenticated, service_role;

create or replace function public.instagram_list_messages(
  p_conversation_id uuid, p_limit integer default 50, p_before timestamptz default null
)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', m.id,
    'meta_message_id', m.meta_message_id,
    'direction', m.direction,
    'message_type', m.message_type,
    'text', case when m.deleted_at is null then m.text end,
    'attachments', case when m.deleted_at is null then m.attachments else '[]'::jsonb end,
    'status', m.status,
    'reactions', (select coalesce(jsonb_agg(r - 'action'), '[]'::jsonb) from jsonb_array_elements(m.reactions) r
                  where r ->> 'action' = 'react'),
    'reply_to', m.reply_to,
    'sent_by_user_id', m.sent_by_user_id,
    'error_code', m.error_code,
    'error_message', m.error_message,
    'sent_at', m.sent_at,
    'delivered_at', m.delivered_at,
    'read_at', m.read_at,
    'deleted', m.deleted_at is not null,
    'edit_count', m.edit_count
  ) order by m.sent_at desc, m.id desc), '[]'::jsonb)
  from (
    select * from public.instagram_messages m
    where m.conversation_id = p_conversation_id
      and m.sent_at < (select coalesce(p_before, 'infinity'::timestamptz))  -- an index condition under RLS
    order by m.sent_at desc, m.id desc
    limit least(greatest(coalesce(p_limit, 50), 1), 200)
  ) m
$$;
comment on function public.instagram_list_messages(uuid, integer, timestamptz) is
  'A conversation''s messages, newest first, keyset-paged on sent_at; unsent ones have no text; members only '
  '(RLS: others get an empty array).';
revoke execute on function public.instagram_list_messages(uuid, integer, timestamptz) from public, anon;
grant execute on function public.instagram_list_messages(uuid, integer, timestamptz) to authenticated, service_role;

create or replace function public.instagram_mark_conversation_read(p_conversation_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_id uuid;
begin
  update public.instagram_conversations c set unread_count = 0, last_read_at = now()
  where c.id = p_conversation_id and c.imo_id in (select instagram_private.user_imo_ids())
  returning c.id into v_id;
  if v_id is null then
    raise exception 'not_found' using errcode = 'P0002', detail = 'No such conversation for this user.';
  end if;
  return jsonb_build_object('id', v_id, 'unread_count', 0);
end
$$;
comment on function public.instagram_mark_conversation_read(uuid) is
  'Sets a conversation''s unread count to 0 for a member of its IMO (not_found for anyone else).';
revoke execute on function public.instagram_mark_conversation_read(uuid) from public, anon;
grant execute on function public.instagram_mark_conversation_read(uuid) to authenticated, service_role;

/** --- Section: live changes for the app --- */

do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                   and schemaname = 'public' and tablename = 'instagram_conversations') then
      alter publication supabase_realtime add table public.instagram_conversations;
    end if;
    if not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                   and schemaname = 'public' and tablename = 'instagram_messages') then
      alter publication supabase_realtime add table public.instagram_messages;
    end if;
  end if;
end
$$;
