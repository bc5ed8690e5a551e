/**
 * A lease that expires is not a handler failure. A worker killed while it held a job used to be charged an
 * attempt each time, so a crash loop spent a job's attempts without the handler ever deciding anything, and
 * the job then sat `running` (unclaimable) until a daily prune discarded it.
 *
 * Now every queue counts the two apart. `attempt` counts the claims whose handler reported back (and the one
 * running now); `lease_expiries` counts the claims that ended with the lease running out, capped by
 * `max_lease_expiries` (default 3). A claim that takes a job whose lease expired re-uses the attempt the dead
 * claim was charged. The claim that would pass the cap buries the job instead, wherever it is met (every claim
 * of its kind, and the prunes): the job ends with `lease_expired` and never blocks the next job of its
 * integration or conversation (their live-job keys cover only available, running and retryable).
 *
 * What a buried job leaves behind, by kind:
 *   refresh       the reason on the integration and a notification for the IMO (refresh_bury_dead)
 *   unsubscribe   the reason on the job, the Page token wiped (its integration is gone: disconnect deleted it)
 *   webhook       the delivery `discarded` with the reason: `webhooks replay --failed` takes it again
 *   profile       the reason on the job; the conversation's next inbound message queues a new fetch
 */

/** --- Section: the columns, on all four queues --- */

alter table public.instagram_refresh_jobs
  add column lease_expiries integer not null default 0 check (lease_expiries >= 0),
  add column max_lease_expiries integer not null default 3 check (max_lease_expiries between 1 and 100);
alter table public.instagram_page_unsubscriptions
  add column lease_expiries integer not null default 0 check (lease_expiries >= 0),
  add column max_lease_expiries integer not null default 3 check (max_lease_expiries between 1 and 100);
alter table public.instagram_webhook_events
  add column lease_expiries integer not null default 0 check (lease_expiries >= 0),
  add column max_lease_expiries integer not null default 3 check (max_lease_expiries between 1 and 100);
alter table public.instagram_profile_fetches
  add column lease_expiries integer not null default 0 check (lease_expiries >= 0),
  add column max_lease_expiries integer not null default 3 check (max_lease_expiries between 1 and 100);

comment on column public.instagram_refresh_jobs.lease_expiries is
  'Claims of this job that ended with the lease running out (the worker died); not attempts.';
comment on column public.instagram_page_unsubscriptions.lease_expiries is
  'Claims of this job that ended with the lease running out (the worker died); not attempts.';
comment on column public.instagram_webhook_events.lease_expiries is
  'Claims of this delivery that ended with the lease running out (the worker died); not attempts.';
comment on column public.instagram_profile_fetches.lease_expiries is
  'Claims of this fetch that ended with the lease running out (the worker died); not attempts.';

/** --- Section: burying, the same for every queue --- */

create or replace function instagram_private.queue_bury_dead(p_queue regclass)
returns setof bigint
language plpgsql
set search_path = ''
as $$
begin
  -- SKIP LOCKED: two claims meeting the same dead job do not wait for each other.
  return query execute format(
    'with dead as (
       select q.id from %1$s q
       where q.state = ''running'' and q.lease_expires_at < now() and q.lease_expiries + 1 >= q.max_lease_expiries
       for update skip locked
     )
     update %1$s q set state = ''discarded'', finalized_at = now(), lease_owner = null, lease_expires_at = null,
       lease_expiries = q.lease_expiries + 1, last_error_code = ''lease_expired'',
       last_error_message = ''The worker stopped while running this job, every time it was claimed.''
     from dead where q.id = dead.id
     returning q.id', p_queue);
end
$$;
comment on function instagram_private.queue_bury_dead(regclass) is
  'Discards the running jobs of the queue table p_queue (one with bigint ids) whose lease expired for the '
  'max_lease_expiries-th time, with lease_expired; returns their ids.';
revoke all on function instagram_private.queue_bury_dead(regclass) from public, anon, authenticated;
grant execute on function instagram_private.queue_bury_dead(regclass) to service_role;

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
  perform instagram_private.queue_bury_dead(p_queue);
  -- A job whose lease expired keeps its attempt (the dead claim's is re-used) and counts one lease expiry.
  return query execute format(
    'with picked as (
       select q.id from %1$s q
       where (q.state in (''available'', ''retryable'') and q.run_at <= now())
          or (q.state = ''running'' and q.lease_expires_at < now() and q.lease_expiries + 1 < q.max_lease_expiries)
       order by q.run_at, q.id
       limit $2
       for update skip locked
     )
     update %1$s q set state = ''running'',
       attempt = case when q.state = ''running'' then q.attempt else q.attempt + 1 end,
       lease_expiries = q.lease_expiries + (q.state = ''running'')::integer,
       lease_owner = $1, lease_expires_at = now() + make_interval(secs => $3)
     from picked where q.id = picked.id
     returning q.id, q.attempt, q.max_attempts', p_queue)
    using p_worker, p_limit, p_lease_seconds;
end
$$;
comment on function instagram_private.queue_claim(regclass, text, integer, integer) is
  'Claims up to p_limit due jobs of the queue table p_queue (and running ones whose lease expired, re-using '
  'their attempt) for p_worker with a lease (FOR UPDATE SKIP LOCKED), after burying the dead ones; returns '
  'their id, attempt and max_attempts.';
revoke all on function instagram_private.queue_claim(regclass, text, integer, integer) from public, anon, authenticated;
grant execute on function instagram_private.queue_claim(regclass, text, integer, integer) to service_role;

/** --- Section: refresh --- */

create or replace function instagram_private.refresh_bury_dead(p_integration_id uuid default null)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_dead record;
  v_imo_id uuid;
  v_username text;
  v_count integer := 0;
begin
  for v_dead in
    with dead as (
      select j.id from public.instagram_refresh_jobs j
      where j.state = 'running' and j.lease_expires_at < now() and j.lease_expiries + 1 >= j.max_lease_expiries
        and (p_integration_id is null or j.integration_id = p_integration_id)
      for update skip locked
    )
    update public.instagram_refresh_jobs j set
      state = 'discarded', finalized_at = now(), lease_owner = null, lease_expires_at = null,
      lease_expiries = j.lease_expiries + 1, last_error_code = 'lease_expired',
      last_error_message = 'The worker stopped while running this job, every time it was claimed.'
    from dead where j.id = dead.id
    returning j.integration_id
  loop
    v_count := v_count + 1;
    update public.instagram_integrations i set
      last_error_code = 'lease_expired',
      last_error_message = 'Refreshing this connection stopped the worker on every attempt.',
      last_error_at = now()
    where i.id = v_dead.integration_id
    returning i.imo_id, i.instagram_username into v_imo_id, v_username;
    if v_imo_id is not null then
      perform instagram_private.refresh_notify(v_imo_id, 'instagram_refresh_failed',
        'Instagram connection needs attention',
        'Refreshing the Instagram connection' || coalesce(' for @' || v_username, '') ||
          ' kept stopping the worker. It will be tried again; if this repeats, ask your administrator.',
        jsonb_build_object('integration_id', v_dead.integration_id, 'code', 'lease_expired',
          'instagram_username', v_username));
    end if;
  end loop;
  return v_count;
end
$$;
comment on function instagram_private.refresh_bury_dead(uuid) is
  'Discards running refresh jobs (of one integration, or all) whose lease expired for the max_lease_expiries-th '
  'time, records lease_expired on each integration and tells its IMO; returns how many.';
revoke all on function instagram_private.refresh_bury_dead(uuid) from public, anon, authenticated;
grant execute on function instagram_private.refresh_bury_dead(uuid) to service_role;

create or replace function public.instagram_refresh_claim_v1(
  p_worker text, p_limit integer, p_lease_seconds integer default 300
)
returns jsonb
language plpgsql
security definer
set search_path = ''
-- The plan must not depend on statistics: a queue filled in one burst (or analysed while empty) looks
-- tiny to the planner, which may then read another partial index and sort. Without sorts and seq
-- scans the only plans left are the ordered index scans below. The penalty those settings add to
-- the one small sort that remains (16 ids) must not make a 10-row claim worth JIT-compiling (200 ms).
set enable_sort = off
set enable_seqscan = off
set jit = off
as $$
declare
  v_result jsonb;
begin
  if p_worker is null or length(p_worker) = 0 or p_limit is null or p_limit < 1 or p_limit > 1000
     or p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'invalid_claim' using errcode = '22023',
      detail = 'Claim needs a worker id, a limit of 1 to 1000 and a positive lease.';
  end if;
  perform instagram_private.refresh_bury_dead();
  -- Two ordered index scans (due jobs; running jobs whose lease expired), each LIMITed and
  -- SKIP LOCKED, then one UPDATE; the plan is the same with or without fresh statistics.
  with due as (
    select j.id from public.instagram_refresh_jobs j
    where j.state in ('available', 'retryable') and j.run_at <= now()
    order by j.run_at, j.id
    limit p_limit
    for update skip locked
  ), expired as (
    select j.id from public.instagram_refresh_jobs j
    where j.state = 'running' and j.lease_expires_at < now() and j.lease_expiries + 1 < j.max_lease_expiries
    order by j.lease_expires_at
    limit p_limit
    for update skip locked
  ), picked as (
    select id from (select id, 0 as o from expired union all select id, 1 as o from due) s
    order by o
    limit p_limit
  ), claimed as (
    -- An expired lease keeps its attempt (the dead claim's is re-used) and counts one lease expiry.
    update public.instagram_refresh_jobs j set
      state = 'running',
      attempt = case when j.state = 'running' then j.attempt else j.attempt + 1 end,
      lease_expiries = j.lease_expiries + (j.state = 'running')::integer,
      attempted_at = now(),
      lease_owner = p_worker,
      lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    from picked
    where j.id = picked.id
    returning j.id, j.integration_id, j.imo_id, j.attempt, j.max_attempts, j.run_at
  )
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', c.id,
    'kind', 'refresh_token',
    'integration_id', c.integration_id,
    'imo_id', c.imo_id,
    'attempt', c.attempt,
    'max_attempts', c.max_attempts,
    'token_expires_at', i.token_expires_at,
    'data_access_expires_at', i.data_access_expires_at
  ) order by c.run_at, c.id), '[]'::jsonb) into v_result
  from claimed c
  join public.instagram_integrations i on i.id = c.integration_id;
  return v_result;
end
$$;
comment on function public.instagram_refresh_claim_v1(text, integer, integer) is
  'Claims up to p_limit due jobs (and running jobs whose lease expired, re-using their attempt) for p_worker '
  'with a lease, after burying dead ones; returns them with the integration''s current expiries.';
revoke execute on function public.instagram_refresh_claim_v1(text, integer, integer) from public, anon, authenticated;
grant execute on function public.instagram_refresh_claim_v1(text, integer, integer) to service_role;

/** --- Section: unsubscribe (uuid ids: its own SQL) --- */

create or replace function instagram_private.unsubscribe_bury_dead()
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  with dead as (
    select u.id from public.instagram_page_unsubscriptions u
    where u.state = 'running' and u.lease_expires_at < now() and u.lease_expiries + 1 >= u.max_lease_expiries
    for update skip locked
  )
  update public.instagram_page_unsubscriptions u set
    state = 'discarded', finalized_at = now(), lease_owner = null, lease_expires_at = null,
    lease_expiries = u.lease_expiries + 1, page_access_token_encrypted = null, token_key_fingerprint = null,
    last_error_code = 'lease_expired',
    last_error_message = 'The worker stopped while running this job, every time it was claimed.'
  from dead where u.id = dead.id;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;
comment on function instagram_private.unsubscribe_bury_dead() is
  'Discards running Page unsubscriptions whose lease expired for the max_lease_expiries-th time (token wiped, '
  'lease_expired); returns how many.';
revoke all on function instagram_private.unsubscribe_bury_dead() from public, anon, authenticated;
grant execute on function instagram_private.unsubscribe_bury_dead() to service_role;

create or replace function public.instagram_unsubscribe_claim_v1(
  p_worker text, p_limit integer, p_lease_seconds integer default 300
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  if p_worker is null or length(p_worker) = 0 or p_limit is null or p_limit < 1 or p_limit > 1000
     or p_lease_seconds is null or p_lease_seconds < 1 then
    raise exception 'invalid_claim' using errcode = '22023',
      detail = 'Claim needs a worker id, a limit of 1 to 1000 and a positive lease.';
  end if;
  perform instagram_private.unsubscribe_bury_dead();
  with picked as (
    select u.id from public.instagram_page_unsubscriptions u
    where (u.state in ('available', 'retryable') and u.run_at <= now())
       or (u.state = 'running' and u.lease_expires_at < now() and u.lease_expiries + 1 < u.max_lease_expiries)
    order by u.run_at, u.id
    limit p_limit
    for update skip locked
  ), claimed as (
    update public.instagram_page_unsubscriptions u set
      state = 'running',
      attempt = case when u.state = 'running' then u.attempt else u.attempt + 1 end,
      lease_expiries = u.lease_expiries + (u.state = 'running')::integer,
      lease_owner = p_worker,
      lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    from picked where u.id = picked.id
    returning u.*
  )
  -- No tokens here: a token one key cannot open must fail its own job, not the claim.
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', c.id,
    'integration_id', c.integration_id,
    'facebook_page_id', c.facebook_page_id,
    'attempt', c.attempt,
    'max_attempts', c.max_attempts,
    -- another live integration still needs this Page's webhooks: do not unsubscribe it
    'still_in_use', exists (
      select 1 from public.instagram_integrations i
      where i.facebook_page_id = c.facebook_page_id and i.status = 'connected')
  ) order by c.run_at, c.id), '[]'::jsonb) into v_result
  from claimed c;
  return v_result;
end
$$;
comment on function public.instagram_unsubscribe_claim_v1(text, integer, integer) is
  'Claims up to p_limit due Page unsubscriptions (and running ones whose lease expired, re-using their attempt) '
  'for p_worker with a lease, after burying dead ones.';
revoke execute on function public.instagram_unsubscribe_claim_v1(text, integer, integer) from public, anon, authenticated;
grant execute on function public.instagram_unsubscribe_claim_v1(text, integer, integer) to service_role;

create or replace function public.instagram_unsubscribe_prune_v1(p_keep_days integer default 7)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_deleted integer;
begin
  delete from public.instagram_page_unsubscriptions
  where state in ('completed', 'discarded') and finalized_at < now() - make_interval(days => p_keep_days);
  get diagnostics v_deleted = row_count;
  return jsonb_build_object('deleted', v_deleted, 'discarded', instagram_private.unsubscribe_bury_dead());
end
$$;
comment on function public.instagram_unsubscribe_prune_v1(integer) is
  'Deletes finished unsubscriptions older than p_keep_days and buries running ones that lost their lease too often.';
revoke execute on function public.instagram_unsubscribe_prune_v1(integer) from public, anon, authenticated;
grant execute on function public.instagram_unsubscribe_prune_v1(integer) to service_role;

/** --- Section: webhook deliveries and profile fetches (queue_claim buries; the prune too) --- */

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
  delete from public.instagram_profile_fetches
  where state in ('completed', 'discarded') and finalized_at < now() - interval '7 days';
  get diagnostics v_profiles = row_count;
  return jsonb_build_object('deleted', v_deleted,
    'discarded', (select count(*) from instagram_private.queue_bury_dead('public.instagram_webhook_events')),
    'profile_fetches_deleted', v_profiles,
    'profile_fetches_discarded',
      (select count(*) from instagram_private.queue_bury_dead('public.instagram_profile_fetches')));
end
$$;
comment on function public.instagram_webhook_prune_v1(integer) is
  'Deletes processed deliveries older than the retention (argument, else instagram_dm.webhook_retention_days, '
  'else 30 days) and finished profile fetches older than 7 days; buries deliveries and fetches that lost their '
  'lease too often.';
revoke execute on function public.instagram_webhook_prune_v1(integer) from public, anon, authenticated;
grant execute on function public.instagram_webhook_prune_v1(integer) to service_role;

/** --- Section: a replayed delivery starts with fresh counts --- */

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
    state = 'available', run_at = now(), attempt = 0, lease_expiries = 0, finalized_at = null,
    lease_owner = null, lease_expires_at = null
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
  'received since p_since) with fresh attempts and lease expiries; processing is idempotent, so a replay changes only what was missing.';
revoke execute on function public.instagram_webhook_replay_v1(boolean, timestamptz) from public, anon, authenticated;
grant execute on function public.instagram_webhook_replay_v1(boolean, timestamptz) to service_role;

