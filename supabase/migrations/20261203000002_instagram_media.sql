/**
 * Media that does not rot: every inbound attachment copied from Meta's CDN into our storage as soon as it
 * arrives, and served to the IMO's members only through short-lived signed URLs (docs/media.md).
 *
 *   instagram_messages insert (webhook processing) --trigger--> instagram_media: one row per attachment with a
 *     URL (and a story reply's story), which is also the queue of worker kind `media` (copy): the worker streams
 *     the bytes (capped per type), sniffs the type, hashes them, stores them once per IMO and SHA-256
 *     (instagram_media_objects) and completes; failures retry with backoff, then the attachment is
 *     `media_unavailable` (the message itself was stored long before)
 *   instagram_media_url (app-facing): {url, expires_at, content_type, size}, a URL of the API signed with HMAC-SHA256
 *     (key in instagram_media_settings, never leaves the database); instagram_media_open_v1 checks it for the API
 *   deleting a conversation (or a message, an IMO, or the retention prune) deletes the media rows; an object
 *     no row uses any more is deleted and its bytes are queued in instagram_media_deletions for worker kind
 *     `media_purge`, which deletes them from storage
 *   instagram_usage.media_bytes: the bytes an IMO has stored, kept by triggers on the objects
 *   Supabase: a private Storage bucket `instagram-media` whose objects members of the IMO may read (the first
 *     folder of an object's name is its IMO), created only where the storage schema exists
 */

/** --- Section: settings of the signed URLs (the API publishes its public URL at start-up) --- */

create table public.instagram_media_settings (
  id boolean primary key default true check (id),
  url_base text not null default 'http://127.0.0.1:54330/functions/v1/instagram-media'
    check (url_base ~ '^https?://[^/?#]+(/[^?#]*)?$'),
  url_ttl_seconds integer not null default 300 check (url_ttl_seconds between 10 and 86400),
  signing_key bytea not null default extensions.gen_random_bytes(32) check (length(signing_key) >= 32),
  updated_at timestamptz not null default now()
);
comment on table public.instagram_media_settings is
  'One row: where the API serves media (INSTAGRAM_MEDIA_BASE_URL), how long a signed URL lasts '
  '(INSTAGRAM_MEDIA_URL_TTL_SECONDS), published by the API at start-up; and the random HMAC key the URLs are '
  'signed with, made here and never returned by any function.';
insert into public.instagram_media_settings default values;
alter table public.instagram_media_settings enable row level security;
revoke all on public.instagram_media_settings from anon, authenticated;
grant all on public.instagram_media_settings to service_role;

create or replace function public.instagram_media_settings_apply_v1(p_settings jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_media_settings;
begin
  if jsonb_typeof(p_settings) is distinct from 'object' then
    raise exception 'invalid_settings' using errcode = '22023', detail = 'Settings must be a JSON object.';
  end if;
  update public.instagram_media_settings s set
    url_base = coalesce(rtrim(p_settings ->> 'url_base', '/'), s.url_base),
    url_ttl_seconds = coalesce((p_settings ->> 'url_ttl_seconds')::integer, s.url_ttl_seconds),
    updated_at = now()
  returning * into v_row;
  return jsonb_build_object('url_base', v_row.url_base, 'url_ttl_seconds', v_row.url_ttl_seconds);
end
$$;
comment on function public.instagram_media_settings_apply_v1(jsonb) is
  'Stores where the API serves media and how long a signed URL lasts ({url_base, url_ttl_seconds}); returns them '
  '(never the signing key).';
revoke execute on function public.instagram_media_settings_apply_v1(jsonb) from public, anon, authenticated;
grant execute on function public.instagram_media_settings_apply_v1(jsonb) to service_role;

/** --- Section: stored objects, one per IMO and SHA-256 --- */

create table public.instagram_media_objects (
  id uuid primary key default gen_random_uuid(),
  imo_id uuid not null references public.imos (id) on delete cascade,
  sha256 bytea not null check (length(sha256) = 32),
  size bigint not null check (size >= 0),
  content_type text not null check (length(content_type) between 1 and 100),
  storage_key text not null check (storage_key ~ '^[0-9a-f-]{36}/[0-9a-f]{64}-[0-9a-f]{8,32}$'),
  created_at timestamptz not null default now(),
  constraint instagram_media_objects_sha256_key unique (imo_id, sha256),
  constraint instagram_media_objects_storage_key_key unique (storage_key)
);
comment on table public.instagram_media_objects is
  'The bytes we stored, once per IMO and SHA-256: where (storage_key = <imo_id>/<sha256>-<nonce>, in the bucket or '
  'the media folder), how many and of which sniffed type. Deleted when no attachment uses it any more.';

alter table public.instagram_media_objects enable row level security;
revoke all on public.instagram_media_objects from anon, authenticated;
grant all on public.instagram_media_objects to service_role;

/** --- Section: attachments to copy (the queue of kind `media`) --- */

create table public.instagram_media (
  id bigint generated always as identity primary key,
  message_id uuid not null references public.instagram_messages (id) on delete cascade,
  imo_id uuid not null,
  attachment_index integer not null check (attachment_index >= 0),
  attachment_type text not null check (length(attachment_type) between 1 and 40),
  source_url text not null check (length(source_url) between 1 and 4096),
  object_id uuid references public.instagram_media_objects (id),
  state text not null default 'available'
    check (state in ('available', 'running', 'retryable', 'completed', 'discarded')),
  attempt integer not null default 0 check (attempt >= 0),
  max_attempts integer not null default 6 check (max_attempts between 1 and 100),
  run_at timestamptz not null default now(),
  lease_owner text,
  lease_expires_at timestamptz,
  lease_expiries integer not null default 0 check (lease_expiries >= 0),
  max_lease_expiries integer not null default 3 check (max_lease_expiries between 1 and 100),
  finalized_at timestamptz,
  last_error_code text,
  last_error_message text,
  created_at timestamptz not null default now(),
  constraint instagram_media_message_index_key unique (message_id, attachment_index),
  constraint instagram_media_lease_when_running check (
    (state = 'running') = (lease_owner is not null and lease_expires_at is not null)),
  constraint instagram_media_finalized_iff_terminal check (
    (state in ('completed', 'discarded')) = (finalized_at is not null)),
  constraint instagram_media_completed_has_object check ((state = 'completed') = (object_id is not null))
);
comment on table public.instagram_media is
  'One inbound attachment (message_id, attachment_index; a story reply''s story comes after the attachments) and '
  'the job that copies it: completed with its object, or discarded with the reason (media_unavailable).';

create index instagram_media_object_idx on public.instagram_media (object_id) where object_id is not null;
create index instagram_media_imo_idx on public.instagram_media (imo_id, created_at);
create index instagram_media_due_idx on public.instagram_media (run_at, id) where state in ('available', 'retryable');
create index instagram_media_lease_idx on public.instagram_media (lease_expires_at) where state = 'running';

alter table public.instagram_media enable row level security;
revoke all on public.instagram_media from anon, authenticated;
grant all on public.instagram_media to service_role;
revoke all on sequence public.instagram_media_id_seq from anon, authenticated;

create or replace function instagram_private.media_notify()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform pg_notify(tg_table_name, '');
  return null;
end
$$;
comment on function instagram_private.media_notify() is
  'Wakes the workers (one NOTIFY per statement, on the table''s name) when media copies or deletions are queued.';
revoke all on function instagram_private.media_notify() from public, anon, authenticated;
grant execute on function instagram_private.media_notify() to service_role;
create trigger instagram_media_notify after insert on public.instagram_media
  for each statement execute function instagram_private.media_notify();

create or replace function instagram_private.messages_queue_media()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- Inbound messages only (ours were uploaded by us); any attachment with an http(s) URL, and the story a
  -- reply answers, after the attachments.
  insert into public.instagram_media (message_id, imo_id, attachment_index, attachment_type, source_url)
  select x.message_id, x.imo_id, x.idx, x.kind, x.url
  from (
    select m.id as message_id, m.imo_id, (a.ord - 1)::integer as idx, left(coalesce(a.value ->> 'type', 'file'), 40) as kind,
      a.value -> 'payload' ->> 'url' as url
    from inserted m
    cross join lateral jsonb_array_elements(m.attachments) with ordinality a(value, ord)
    where m.direction = 'inbound' and jsonb_typeof(a.value) = 'object'
      and jsonb_typeof(a.value -> 'payload') = 'object' and jsonb_typeof(a.value -> 'payload' -> 'url') = 'string'
    union all
    select m.id, m.imo_id, jsonb_array_length(m.attachments), 'story_reply', m.reply_to -> 'story' ->> 'url'
    from inserted m
    where m.direction = 'inbound' and jsonb_typeof(m.reply_to -> 'story') = 'object'
      and jsonb_typeof(m.reply_to -> 'story' -> 'url') = 'string'
  ) x
  where x.url ~* '^https?://' and length(x.url) <= 4096
  order by x.message_id, x.idx
  on conflict (message_id, attachment_index) do nothing;
  return null;
end
$$;
comment on function instagram_private.messages_queue_media() is
  'Per statement: queues a copy of each inbound message''s attachments that have a URL (and of a replied story).';
revoke all on function instagram_private.messages_queue_media() from public, anon, authenticated;
grant execute on function instagram_private.messages_queue_media() to service_role;
create trigger instagram_messages_queue_media after insert on public.instagram_messages
  referencing new table as inserted
  for each statement execute function instagram_private.messages_queue_media();

/** --- Section: deletions of stored bytes (the queue of kind `media_purge`) --- */

create table public.instagram_media_deletions (
  id bigint generated always as identity primary key,
  imo_id uuid not null,  -- no foreign key: the IMO may be what was deleted
  storage_key text not null,
  state text not null default 'available'
    check (state in ('available', 'running', 'retryable', 'completed', 'discarded')),
  attempt integer not null default 0 check (attempt >= 0),
  max_attempts integer not null default 10 check (max_attempts between 1 and 100),
  run_at timestamptz not null default now(),
  lease_owner text,
  lease_expires_at timestamptz,
  lease_expiries integer not null default 0 check (lease_expiries >= 0),
  max_lease_expiries integer not null default 3 check (max_lease_expiries between 1 and 100),
  finalized_at timestamptz,
  last_error_code text,
  last_error_message text,
  created_at timestamptz not null default now(),
  constraint instagram_media_deletions_lease_when_running check (
    (state = 'running') = (lease_owner is not null and lease_expires_at is not null)),
  constraint instagram_media_deletions_finalized_iff_terminal check (
    (state in ('completed', 'discarded')) = (finalized_at is not null))
);
comment on table public.instagram_media_deletions is
  'Stored bytes to delete (an object no attachment uses any more, or an upload that lost a race): the queue of '
  'worker kind media_purge.';
create index instagram_media_deletions_due_idx on public.instagram_media_deletions (run_at, id)
  where state in ('available', 'retryable');
create index instagram_media_deletions_lease_idx on public.instagram_media_deletions (lease_expires_at)
  where state = 'running';
create index instagram_media_deletions_finalized_idx on public.instagram_media_deletions (finalized_at)
  where state in ('completed', 'discarded');

alter table public.instagram_media_deletions enable row level security;
revoke all on public.instagram_media_deletions from anon, authenticated;
grant all on public.instagram_media_deletions to service_role;
revoke all on sequence public.instagram_media_deletions_id_seq from anon, authenticated;
create trigger instagram_media_deletions_notify after insert on public.instagram_media_deletions
  for each statement execute function instagram_private.media_notify();

/** --- Section: usage (bytes stored per IMO) and the deletion cascade --- */

alter table public.instagram_usage
  add column media_bytes bigint not null default 0 check (media_bytes >= 0);
comment on column public.instagram_usage.media_bytes is
  'Bytes of media the IMO has stored (each distinct file once), as of the last change in this month.';

create or replace function instagram_private.media_usage_refresh(p_imo_ids uuid[])
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.instagram_usage (imo_id, month, media_bytes)
  select i.id, instagram_private.usage_month(now()),
    coalesce((select sum(o.size) from public.instagram_media_objects o where o.imo_id = i.id), 0)
  from public.imos i
  where i.id = any (p_imo_ids)
  order by i.id
  on conflict (imo_id, month) do update set media_bytes = excluded.media_bytes;
end
$$;
comment on function instagram_private.media_usage_refresh(uuid[]) is
  'Sets this month''s media_bytes of each IMO to the bytes of its stored objects.';
revoke all on function instagram_private.media_usage_refresh(uuid[]) from public, anon, authenticated;
grant execute on function instagram_private.media_usage_refresh(uuid[]) to service_role;

create or replace function instagram_private.media_objects_after_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform instagram_private.media_usage_refresh(array(select distinct n.imo_id from inserted n));
  return null;
end
$$;
comment on function instagram_private.media_objects_after_insert() is
  'Per statement: the IMOs of new objects get their stored bytes counted again.';
revoke all on function instagram_private.media_objects_after_insert() from public, anon, authenticated;
grant execute on function instagram_private.media_objects_after_insert() to service_role;
create trigger instagram_media_objects_after_insert after insert on public.instagram_media_objects
  referencing new table as inserted
  for each statement execute function instagram_private.media_objects_after_insert();

create or replace function instagram_private.media_objects_after_delete()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.instagram_media_deletions (imo_id, storage_key)
  select o.imo_id, o.storage_key from removed o order by o.storage_key;
  perform instagram_private.media_usage_refresh(array(select distinct o.imo_id from removed o));
  return null;
end
$$;
comment on function instagram_private.media_objects_after_delete() is
  'Per statement: the bytes of deleted objects are queued for deletion from storage, and their IMOs'' stored '
  'bytes counted again.';
revoke all on function instagram_private.media_objects_after_delete() from public, anon, authenticated;
grant execute on function instagram_private.media_objects_after_delete() to service_role;
create trigger instagram_media_objects_after_delete after delete on public.instagram_media_objects
  referencing old table as removed
  for each statement execute function instagram_private.media_objects_after_delete();

create or replace function instagram_private.media_after_delete()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_objects uuid[];
begin
  select coalesce(array_agg(distinct r.object_id), '{}') into v_objects from removed r where r.object_id is not null;
  if cardinality(v_objects) = 0 then
    return null;
  end if;
  -- Lock first, then look in a new statement (a fresh snapshot): a copy that completed meanwhile and now uses
  -- one of these objects is seen, and its object stays.
  perform 1 from public.instagram_media_objects o where o.id = any (v_objects) order by o.id for update;
  delete from public.instagram_media_objects o
  where o.id = any (v_objects)
    and not exists (select 1 from public.instagram_media m where m.object_id = o.id);
  return null;
end
$$;
comment on function instagram_private.media_after_delete() is
  'Per statement: objects no attachment uses any more after a delete (a conversation, a message, the retention '
  'prune) are deleted, which queues their bytes for deletion.';
revoke all on function instagram_private.media_after_delete() from public, anon, authenticated;
grant execute on function instagram_private.media_after_delete() to service_role;
create trigger instagram_media_after_delete after delete on public.instagram_media
  referencing old table as removed
  for each statement execute function instagram_private.media_after_delete();

/** --- Section: what the message shows --- */

create or replace function instagram_private.media_mark_message(p_media_id bigint)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_media public.instagram_media;
  v_info jsonb;
begin
  select * into v_media from public.instagram_media m where m.id = p_media_id;
  if not found then
    return;
  end if;
  select case
      when v_media.state = 'completed' then
        jsonb_build_object('status', 'stored', 'content_type', o.content_type, 'size', o.size)
      when v_media.state = 'discarded' then
        jsonb_build_object('status', 'unavailable', 'error_code', coalesce(v_media.last_error_code, 'media_unavailable'))
      else jsonb_build_object('status', 'pending') end
    into v_info
  from (select 1) one left join public.instagram_media_objects o on o.id = v_media.object_id;
  -- The attachment itself (a replied story has no element: it is told under reply_to.story).
  update public.instagram_messages m set
    attachments = case when v_media.attachment_index < jsonb_array_length(m.attachments)
      then jsonb_set(m.attachments, array[v_media.attachment_index::text, 'media'], v_info) else m.attachments end,
    reply_to = case when v_media.attachment_type = 'story_reply' and jsonb_typeof(m.reply_to -> 'story') = 'object'
      then jsonb_set(m.reply_to, '{story,media}', v_info) else m.reply_to end
  where m.id = v_media.message_id;
end
$$;
comment on function instagram_private.media_mark_message(bigint) is
  'Writes an attachment''s copy status on its message (attachments[i].media = {status: stored|unavailable, ...}).';
revoke all on function instagram_private.media_mark_message(bigint) from public, anon, authenticated;
grant execute on function instagram_private.media_mark_message(bigint) to service_role;

/** --- Section: kind `media` (copy) --- */

create or replace function public.instagram_media_claim_v1(
  p_worker text, p_limit integer, p_lease_seconds integer default 300
)
returns jsonb
language sql
security definer
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', c.id, 'attempt', c.attempt, 'max_attempts', c.max_attempts, 'imo_id', m.imo_id,
    'message_id', m.message_id, 'attachment_index', m.attachment_index, 'attachment_type', m.attachment_type,
    'source_url', m.source_url
  ) order by c.id), '[]'::jsonb)
  from instagram_private.queue_claim('public.instagram_media', p_worker, p_limit, p_lease_seconds) c
  join public.instagram_media m on m.id = c.id
$$;
comment on function public.instagram_media_claim_v1(text, integer, integer) is
  'Claims up to p_limit due media copies (and running ones whose lease expired) for p_worker with a lease.';
revoke execute on function public.instagram_media_claim_v1(text, integer, integer) from public, anon, authenticated;
grant execute on function public.instagram_media_claim_v1(text, integer, integer) to service_role;

create or replace function public.instagram_media_lookup_v1(p_job_id bigint, p_worker text, p_sha256 text)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_imo_id uuid;
  v_object public.instagram_media_objects;
begin
  select m.imo_id into v_imo_id from public.instagram_media m
  where m.id = p_job_id and m.state = 'running' and m.lease_owner = p_worker;
  if not found then
    raise exception 'job_not_held' using errcode = 'P0002', detail = 'This worker does not hold that job.';
  end if;
  select * into v_object from public.instagram_media_objects o
  where o.imo_id = v_imo_id and o.sha256 = decode(p_sha256, 'hex');
  if not found then
    return jsonb_build_object('found', false);
  end if;
  return jsonb_build_object('found', true, 'storage_key', v_object.storage_key, 'size', v_object.size,
    'content_type', v_object.content_type);
end
$$;
comment on function public.instagram_media_lookup_v1(bigint, text, text) is
  'For a media copy p_worker holds: whether its IMO already stored bytes with SHA-256 p_sha256 (hex), and where.';
revoke execute on function public.instagram_media_lookup_v1(bigint, text, text) from public, anon, authenticated;
grant execute on function public.instagram_media_lookup_v1(bigint, text, text) to service_role;

create or replace function public.instagram_media_complete_v1(p_worker text, p_results jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_result record;
  v_media public.instagram_media;
  v_object public.instagram_media_objects;
  v_completed integer := 0;
begin
  if jsonb_typeof(p_results) is distinct from 'array' then
    raise exception 'invalid_results' using errcode = '22023', detail = 'Results must be a JSON array.';
  end if;
  -- outcome: stored (sha256 hex, size, content_type, storage_key) or refused (error_code, error_message: too
  -- large, a host we do not fetch from, ...; no retry can help, so the attachment is unavailable at once)
  for v_result in
    select * from jsonb_to_recordset(p_results) as r(job_id bigint, outcome text, sha256 text, size bigint,
      content_type text, storage_key text, error_code text, error_message text)
    order by r.job_id
  loop
    select * into v_media from public.instagram_media m
    where m.id = v_result.job_id and m.state = 'running' and m.lease_owner = p_worker
    for update;
    if not found then
      -- Stale (the lease passed, or the conversation was deleted meanwhile): bytes it uploaded that no object
      -- uses are deleted again.
      if v_result.outcome = 'stored' and v_result.storage_key is not null and not exists (
          select 1 from public.instagram_media_objects o where o.storage_key = v_result.storage_key) then
        insert into public.instagram_media_deletions (imo_id, storage_key)
        values (split_part(v_result.storage_key, '/', 1)::uuid, v_result.storage_key);
      end if;
      continue;
    end if;
    if v_result.outcome = 'stored' and exists (
        select 1 from public.instagram_media_deletions d where d.storage_key = v_result.storage_key) then
      -- The stored bytes it re-used were deleted meanwhile (their last attachment went): copy again.
      update public.instagram_media m set
        state = 'retryable', run_at = now(), lease_owner = null, lease_expires_at = null,
        last_error_code = 'object_deleted_meanwhile',
        last_error_message = 'The stored copy it matched was being deleted; copying again.'
      where m.id = v_media.id;
      continue;
    elsif v_result.outcome = 'stored' then
      insert into public.instagram_media_objects (imo_id, sha256, size, content_type, storage_key)
      values (v_media.imo_id, decode(v_result.sha256, 'hex'), v_result.size, v_result.content_type,
        v_result.storage_key)
      on conflict (imo_id, sha256) do update set size = public.instagram_media_objects.size
      returning * into v_object;
      if v_object.storage_key <> v_result.storage_key then
        -- The same bytes were stored meanwhile by another copy: ours go again.
        insert into public.instagram_media_deletions (imo_id, storage_key)
        values (v_media.imo_id, v_result.storage_key);
      end if;
      update public.instagram_media m set
        state = 'completed', object_id = v_object.id, finalized_at = now(), lease_owner = null,
        lease_expires_at = null, last_error_code = null, last_error_message = null
      where m.id = v_media.id;
    else
      update public.instagram_media m set
        state = 'discarded', finalized_at = now(), lease_owner = null, lease_expires_at = null,
        last_error_code = coalesce(left(v_result.error_code, 100), 'media_unavailable'),
        last_error_message = left(v_result.error_message, 500)
      where m.id = v_media.id;
    end if;
    perform instagram_private.media_mark_message(v_media.id);
    v_completed := v_completed + 1;
  end loop;
  return jsonb_build_object('completed', v_completed, 'stale', jsonb_array_length(p_results) - v_completed);
end
$$;
comment on function public.instagram_media_complete_v1(text, jsonb) is
  'Finishes media copies held by p_worker: stored ones get their object (one per IMO and SHA-256; a duplicate '
  'upload is queued for deletion), refused ones are discarded with the reason; the message shows either.';
revoke execute on function public.instagram_media_complete_v1(text, jsonb) from public, anon, authenticated;
grant execute on function public.instagram_media_complete_v1(text, jsonb) to service_role;

create or replace function public.instagram_media_fail_v1(
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
  v_state := instagram_private.queue_fail('public.instagram_media', p_job_id, p_worker, p_action,
    p_run_at, p_error_code, p_error_message);
  if v_state = 'discarded' then
    perform instagram_private.media_mark_message(p_job_id);
  end if;
  return jsonb_build_object('state', v_state, 'stale', v_state is null);
end
$$;
comment on function public.instagram_media_fail_v1(bigint, text, text, timestamptz, text, text) is
  'Records a failed media copy: retry at p_run_at while attempts remain, else discard it (the message shows '
  'the attachment as unavailable).';
revoke execute on function public.instagram_media_fail_v1(bigint, text, text, timestamptz, text, text)
  from public, anon, authenticated;
grant execute on function public.instagram_media_fail_v1(bigint, text, text, timestamptz, text, text)
  to service_role;

create or replace function public.instagram_media_release_v1(p_worker text, p_job_ids bigint[])
returns integer
language sql
security definer
set search_path = ''
as $$
  select instagram_private.queue_release('public.instagram_media', 'instagram_media', p_worker, p_job_ids)
$$;
comment on function public.instagram_media_release_v1(text, bigint[]) is
  'Hands p_worker''s unfinished media copies back as available without charging an attempt (shutdown).';
revoke execute on function public.instagram_media_release_v1(text, bigint[]) from public, anon, authenticated;
grant execute on function public.instagram_media_release_v1(text, bigint[]) to service_role;

/** --- Section: kind `media_purge` (deleting stored bytes) --- */

create or replace function public.instagram_media_purge_claim_v1(
  p_worker text, p_limit integer, p_lease_seconds integer default 300
)
returns jsonb
language sql
security definer
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', c.id, 'attempt', c.attempt, 'max_attempts', c.max_attempts, 'imo_id', d.imo_id,
    'storage_key', d.storage_key
  ) order by c.id), '[]'::jsonb)
  from instagram_private.queue_claim('public.instagram_media_deletions', p_worker, p_limit, p_lease_seconds) c
  join public.instagram_media_deletions d on d.id = c.id
$$;
comment on function public.instagram_media_purge_claim_v1(text, integer, integer) is
  'Claims up to p_limit due deletions of stored bytes for p_worker with a lease.';
revoke execute on function public.instagram_media_purge_claim_v1(text, integer, integer) from public, anon, authenticated;
grant execute on function public.instagram_media_purge_claim_v1(text, integer, integer) to service_role;

create or replace function public.instagram_media_purge_complete_v1(p_worker text, p_results jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_completed integer;
begin
  if jsonb_typeof(p_results) is distinct from 'array' then
    raise exception 'invalid_results' using errcode = '22023', detail = 'Results must be a JSON array.';
  end if;
  update public.instagram_media_deletions d set
    state = 'completed', finalized_at = now(), lease_owner = null, lease_expires_at = null
  from jsonb_to_recordset(p_results) as r(job_id bigint)
  where d.id = r.job_id and d.state = 'running' and d.lease_owner = p_worker;
  get diagnostics v_completed = row_count;
  return jsonb_build_object('completed', v_completed, 'stale', jsonb_array_length(p_results) - v_completed);
end
$$;
comment on function public.instagram_media_purge_complete_v1(text, jsonb) is
  'Finishes deletions of stored bytes held by p_worker.';
revoke execute on function public.instagram_media_purge_complete_v1(text, jsonb) from public, anon, authenticated;
grant execute on function public.instagram_media_purge_complete_v1(text, jsonb) to service_role;

create or replace function public.instagram_media_purge_fail_v1(
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
  v_state := instagram_private.queue_fail('public.instagram_media_deletions', p_job_id, p_worker, p_action,
    p_run_at, p_error_code, p_error_message);
  return jsonb_build_object('state', v_state, 'stale', v_state is null);
end
$$;
comment on function public.instagram_media_purge_fail_v1(bigint, text, text, timestamptz, text, text) is
  'Records a failed deletion of stored bytes: retry at p_run_at while attempts remain, else discard it (kept '
  'with the reason for an operator).';
revoke execute on function public.instagram_media_purge_fail_v1(bigint, text, text, timestamptz, text, text)
  from public, anon, authenticated;
grant execute on function public.instagram_media_purge_fail_v1(bigint, text, text, timestamptz, text, text)
  to service_role;

create or replace function public.instagram_media_purge_release_v1(p_worker text, p_job_ids bigint[])
returns integer
language sql
security definer
set search_path = ''
as $$
  select instagram_private.queue_release('public.instagram_media_deletions', 'instagram_media_deletions',
    p_worker, p_job_ids)
$$;
comment on function public.instagram_media_purge_release_v1(text, bigint[]) is
  'Hands p_worker''s unfinished deletions back as available without charging an attempt (shutdown).';
revoke execute on function public.instagram_media_purge_release_v1(text, bigint[]) from public, anon, authenticated;
grant execute on function public.instagram_media_purge_release_v1(text, bigint[]) to service_role;

/** --- Section: signed URLs --- */

create or replace function instagram_private.media_signature(p_media_id bigint, p_expires bigint, p_key bytea)
returns text
language sql
immutable
set search_path = ''
as $$
  select encode(extensions.hmac(convert_to(p_media_id::text || '.' || p_expires::text, 'UTF8'), p_key, 'sha256'), 'hex')
$$;
comment on function instagram_private.media_signature(bigint, bigint, bytea) is
  'The HMAC-SHA256 (hex) a media URL carries: over "<media id>.<expiry in epoch seconds>" with the signing key.';
revoke all on function instagram_private.media_signature(bigint, bigint, bytea) from public, anon, authenticated;
grant execute on function instagram_private.media_signature(bigint, bigint, bytea) to service_role;

create or replace function public.instagram_media_url(p_message_id uuid, p_index integer default 0)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_message public.instagram_messages;
  v_media public.instagram_media;
  v_object public.instagram_media_objects;
  v_settings public.instagram_media_settings;
  v_expires bigint;
begin
  select * into v_message from public.instagram_messages m
  where m.id = p_message_id and m.imo_id in (select instagram_private.user_imo_ids());
  if not found or p_index is null or p_index < 0 then
    raise exception 'not_found' using errcode = 'P0002', detail = 'No such message or attachment for this user.';
  end if;
  select * into v_media from public.instagram_media m where m.message_id = v_message.id and m.attachment_index = p_index;
  if not found then
    if p_index < jsonb_array_length(v_message.attachments)
       or (p_index = jsonb_array_length(v_message.attachments) and v_message.reply_to -> 'story' ? 'url') then
      -- Nothing to copy (no URL), or removed by the retention.
      raise exception 'media_unavailable' using errcode = '22023', detail = 'We hold no copy of this attachment.';
    end if;
    raise exception 'not_found' using errcode = 'P0002', detail = 'No such message or attachment for this user.';
  end if;
  if v_media.state = 'discarded' then
    raise exception 'media_unavailable' using errcode = '22023',
      detail = 'Meta''s copy could not be fetched (' || coalesce(v_media.last_error_code, 'media_unavailable') || ').';
  end if;
  if v_media.state <> 'completed' then
    raise exception 'media_pending' using errcode = '22023', detail = 'The attachment is still being copied; ask again shortly.';
  end if;
  select * into v_object from public.instagram_media_objects o where o.id = v_media.object_id;
  select * into v_settings from public.instagram_media_settings;
  v_expires := extract(epoch from now())::bigint + v_settings.url_ttl_seconds;
  return jsonb_build_object(
    'url', v_settings.url_base || '/' || v_media.id::text || '?expires=' || v_expires::text || '&signature='
      || instagram_private.media_signature(v_media.id, v_expires, v_settings.signing_key),
    'expires_at', to_timestamp(v_expires),
    'content_type', v_object.content_type,
    'size', v_object.size);
end
$$;
comment on function public.instagram_media_url(uuid, integer) is
$c$A short-lived signed URL of our stored copy of attachment p_index of the message (the API serves it; on Supabase it redirects to Storage).
Caller: members of the message's IMO
Returns: {url, expires_at, content_type, size}
Refuses: not_found: not a member, or no such message or attachment; media_pending: the copy is being made; media_unavailable: Meta's copy was gone before we got it, too large, or not kept$c$;
revoke execute on function public.instagram_media_url(uuid, integer) from public, anon;
grant execute on function public.instagram_media_url(uuid, integer) to authenticated, service_role;

create or replace function public.instagram_media_open_v1(p_media_id bigint, p_expires bigint, p_signature text)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_key bytea;
  v_expected text;
  v_row record;
begin
  select s.signing_key into v_key from public.instagram_media_settings s;
  v_expected := instagram_private.media_signature(p_media_id, p_expires, v_key);
  -- Compared as HMACs of both (with the same key), so the time taken says nothing about the expected value.
  if p_signature is null or p_media_id is null or p_expires is null
     or extensions.hmac(convert_to(lower(p_signature), 'UTF8'), v_key, 'sha256')
        <> extensions.hmac(convert_to(v_expected, 'UTF8'), v_key, 'sha256') then
    raise exception 'invalid_signature' using errcode = '42501', detail = 'The media link is not valid.';
  end if;
  if p_expires < extract(epoch from now()) then
    raise exception 'url_expired' using errcode = '42501', detail = 'The media link has expired; ask for a new one.';
  end if;
  select m.attachment_type, o.storage_key, o.content_type, o.size into v_row
  from public.instagram_media m join public.instagram_media_objects o on o.id = m.object_id
  where m.id = p_media_id and m.state = 'completed';
  if not found then
    raise exception 'not_found' using errcode = 'P0002', detail = 'This media is no longer kept.';
  end if;
  return jsonb_build_object('media_id', p_media_id, 'attachment_type', v_row.attachment_type,
    'storage_key', v_row.storage_key, 'content_type', v_row.content_type, 'size', v_row.size);
end
$$;
comment on function public.instagram_media_open_v1(bigint, bigint, text) is
  'For the API serving a signed media URL: checks the signature and expiry (invalid_signature, url_expired) and '
  'returns where the bytes are {media_id, attachment_type, storage_key, content_type, size}; not_found once deleted.';
revoke execute on function public.instagram_media_open_v1(bigint, bigint, text) from public, anon, authenticated;
grant execute on function public.instagram_media_open_v1(bigint, bigint, text) to service_role;

/** --- Section: retention --- */

create or replace function public.instagram_media_prune_v1(p_keep_days integer default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_keep integer;
  v_expired integer := 0;
  v_deletions integer;
begin
  -- Retention: the argument, else the database setting instagram_dm.media_retention_days, else keep for ever.
  v_keep := coalesce(p_keep_days, nullif(current_setting('instagram_dm.media_retention_days', true), '')::integer);
  if v_keep is not null and v_keep < 1 then
    raise exception 'invalid_retention' using errcode = '22023', detail = 'Keep media at least a day.';
  end if;
  if v_keep is not null then
    -- The messages say so; deleting the rows deletes the objects no one uses, which queues their bytes.
    update public.instagram_messages msg set
      attachments = (select coalesce(jsonb_agg(case when jsonb_typeof(a.value) = 'object'
          then a.value || '{"media": {"status": "expired"}}'::jsonb else a.value end order by a.ord), '[]'::jsonb)
        from jsonb_array_elements(msg.attachments) with ordinality a(value, ord))
    where msg.id in (
      select m.message_id from public.instagram_media m
      where m.created_at < now() - make_interval(days => v_keep) and m.state in ('completed', 'discarded'));
    delete from public.instagram_media m
    where m.created_at < now() - make_interval(days => v_keep) and m.state in ('completed', 'discarded');
    get diagnostics v_expired = row_count;
  end if;
  delete from public.instagram_media_deletions d
  where d.state = 'completed' and d.finalized_at < now() - interval '7 days';
  get diagnostics v_deletions = row_count;
  return jsonb_build_object('media_deleted', v_expired, 'deletions_pruned', v_deletions);
end
$$;
comment on function public.instagram_media_prune_v1(integer) is
  'Deletes copies of attachments older than the retention (argument, else instagram_dm.media_retention_days, else '
  'none: media are kept) and finished byte deletions older than 7 days.';
revoke execute on function public.instagram_media_prune_v1(integer) from public, anon, authenticated;
grant execute on function public.instagram_media_prune_v1(integer) to service_role;

select cron.schedule('instagram-media-prune', '5 4 * * *', $$select public.instagram_media_prune_v1()$$);

/** --- Section: Supabase Storage (where the storage schema exists; the embedded database has none) --- */

do $$
begin
  if to_regclass('storage.buckets') is null then
    return;  -- plain PostgreSQL: the API serves media from INSTAGRAM_MEDIA_DIR instead
  end if;
  execute $sql$
    insert into storage.buckets (id, name, public, file_size_limit)
    values ('instagram-media', 'instagram-media', false, 26214400)
    on conflict (id) do nothing
  $sql$;
  -- Members of the IMO read its objects (the first folder of the name is the IMO); only service_role writes.
  execute $sql$
    drop policy if exists instagram_media_select_member on storage.objects
  $sql$;
  execute $sql$
    create policy instagram_media_select_member on storage.objects for select to authenticated
    using (bucket_id = 'instagram-media'
      and (storage.foldername(name))[1] in (select instagram_private.user_imo_ids()::text))
  $sql$;
end
$$;
