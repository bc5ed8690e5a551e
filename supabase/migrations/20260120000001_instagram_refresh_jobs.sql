/**
 * Milestone 3 — token refresh: a job table fed daily by pg_cron and drained by the Python worker
 * (`instagram-dm worker`, see docs/worker.md).
 *
 *   pg_cron 03:15 UTC -> instagram_refresh_enqueue_v1()  one row per connected integration whose token
 *                                                        expires within the window; one NOTIFY per call
 *   worker             -> instagram_refresh_claim_v1     FOR UPDATE SKIP LOCKED, sets a lease
 *                      -> instagram_refresh_complete_v1  stores the new tokens and finishes, one transaction
 *                      -> instagram_refresh_fail_v1      retry at a time, discard, error or reauth
 *                      -> instagram_refresh_release_v1   hands unfinished jobs back on shutdown (no attempt)
 *   pg_cron 03:45 UTC -> instagram_refresh_prune_v1()    drops finished jobs after 7 days
 *
 * Job states: available -> running -> completed | retryable (-> running ...) | discarded. A running job
 * whose lease expired (its worker died) is claimable again. At most one live job per integration.
 * Service-only functions (revoked from public, anon, authenticated; granted to service_role).
 */

/** --- Section: table --- */

create table public.instagram_refresh_jobs (
  id bigint generated always as identity primary key,
  integration_id uuid not null,
  imo_id uuid not null,
  state text not null default 'available'
    check (state in ('available', 'running', 'retryable', 'completed', 'discarded')),
  run_at timestamptz not null default now(),
  attempt integer not null default 0 check (attempt >= 0),
  max_attempts integer not null default 10 check (max_attempts between 1 and 100),
  lease_owner text,
  lease_expires_at timestamptz,
  last_error_code text,
  last_error_message text,
  created_at timestamptz not null default now(),
  attempted_at timestamptz,
  finalized_at timestamptz,
  constraint instagram_refresh_jobs_integration_fkey foreign key (integration_id, imo_id)
    references public.instagram_integrations (id, imo_id) on delete cascade,
  constraint instagram_refresh_jobs_lease_when_running check (
    (state = 'running') = (lease_owner is not null and lease_expires_at is not null)
  ),
  constraint instagram_refresh_jobs_finalized_iff_terminal check (
    (state in ('completed', 'discarded')) = (finalized_at is not null)
  )
)
-- A hot, update-heavy queue: leave room for HOT updates and vacuum early (oban-py's settings).
with (
  fillfactor = 85,
  autovacuum_vacuum_scale_factor = 0.02,
  autovacuum_vacuum_threshold = 50,
  autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_insert_scale_factor = 0.02,
  autovacuum_vacuum_cost_limit = 2000,
  autovacuum_vacuum_cost_delay = 1
);
comment on table public.instagram_refresh_jobs is
  'Token refresh jobs: enqueued by pg_cron, claimed and run by the Python worker. Holds ids only, never tokens.';

-- At most one live job per integration: the enqueue's `on conflict do nothing` relies on it.
create unique index instagram_refresh_jobs_live_key on public.instagram_refresh_jobs (integration_id)
  where state in ('available', 'running', 'retryable');
-- The claim: a partial index in claim order, so the plan is an ordered index scan whatever the statistics.
create index instagram_refresh_jobs_due_idx on public.instagram_refresh_jobs (run_at, id)
  with (fillfactor = 90) where state in ('available', 'retryable');
-- Lease rescue: running jobs by lease expiry.
create index instagram_refresh_jobs_lease_idx on public.instagram_refresh_jobs (lease_expires_at)
  where state = 'running';
-- Pruning finished jobs.
create index instagram_refresh_jobs_finalized_idx on public.instagram_refresh_jobs (finalized_at)
  where state in ('completed', 'discarded');
-- The foreign key: deleting an integration (or an IMO, by cascade) finds its jobs here; without it each
-- cascade scans the jobs table (quadratic on a big delete). Also serves "jobs of one integration".
create index instagram_refresh_jobs_integration_idx on public.instagram_refresh_jobs (integration_id, created_at desc);

alter table public.instagram_refresh_jobs enable row level security;
revoke all on public.instagram_refresh_jobs from anon, authenticated;
grant select on public.instagram_refresh_jobs to authenticated;
grant all on public.instagram_refresh_jobs to service_role;

create policy instagram_refresh_jobs_select_member on public.instagram_refresh_jobs
  for select to authenticated
  using (imo_id in (select instagram_private.user_imo_ids()));

/** --- Section: private helpers --- */

create or replace function instagram_private.refresh_notify(p_imo_id uuid, p_kind text, p_title text, p_body text,
  p_data jsonb)
returns void
language sql
security definer
set search_path = ''
as $$
  insert into public.notifications (imo_id, user_id, kind, title, body, data)
  values (p_imo_id, null, p_kind, p_title, p_body, coalesce(p_data, '{}'::jsonb))
$$;
comment on function instagram_private.refresh_notify(uuid, text, text, text, jsonb) is
  'A notification to the whole IMO (user_id null) about its Instagram connection.';
revoke all on function instagram_private.refresh_notify(uuid, text, text, text, jsonb) from public, anon, authenticated;
grant execute on function instagram_private.refresh_notify(uuid, text, text, text, jsonb) to service_role;

/** --- Section: enqueue --- */

create or replace function public.instagram_refresh_enqueue_v1(p_window_seconds integer default 604800)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  if p_window_seconds is null or p_window_seconds < 0 then
    raise exception 'invalid_window' using errcode = '22023', detail = 'The window must be zero or more seconds.';
  end if;
  insert into public.instagram_refresh_jobs (integration_id, imo_id)
  select i.id, i.imo_id
  from public.instagram_integrations i
  where i.status = 'connected'
    and i.token_expires_at < now() + make_interval(secs => p_window_seconds)
  -- No `not exists` pre-check: the unique live-job index decides, one probe per row. An anti-join
  -- here is planned from statistics, and on a freshly vacuumed empty table it becomes a nested loop
  -- of sequential scans (550 ms instead of 130 ms for 10k due rows).
  on conflict (integration_id) where state in ('available', 'running', 'retryable') do nothing;
  get diagnostics v_count = row_count;
  if v_count > 0 then
    -- One NOTIFY per call, not per row: listeners wake once and claim in batches.
    perform pg_notify('instagram_refresh_jobs', v_count::text);
  end if;
  return v_count;
end
$$;
comment on function public.instagram_refresh_enqueue_v1(integer) is
  'Enqueues a refresh job for every connected integration whose token expires within the window (default 7 days) '
  'and has no live job; idempotent; returns how many were enqueued and sends one NOTIFY.';

create or replace function public.instagram_refresh_enqueue_one_v1(p_integration_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_integrations;
  v_job_id bigint;
begin
  select * into v_row from public.instagram_integrations where id = p_integration_id;
  if not found then
    raise exception 'integration_not_found' using errcode = 'P0002', detail = 'No such Instagram integration.';
  end if;
  if v_row.status <> 'connected' then
    raise exception 'integration_not_connected' using errcode = '22023',
      detail = 'Only a connected integration can be refreshed; reconnect it first.';
  end if;
  insert into public.instagram_refresh_jobs (integration_id, imo_id)
  values (v_row.id, v_row.imo_id)
  on conflict (integration_id) where state in ('available', 'running', 'retryable') do nothing
  returning id into v_job_id;
  if v_job_id is not null then
    perform pg_notify('instagram_refresh_jobs', '1');
    return jsonb_build_object('enqueued', true, 'job_id', v_job_id);
  end if;
  select j.id into v_job_id from public.instagram_refresh_jobs j
  where j.integration_id = p_integration_id and j.state in ('available', 'running', 'retryable');
  return jsonb_build_object('enqueued', false, 'job_id', v_job_id);
end
$$;
comment on function public.instagram_refresh_enqueue_one_v1(uuid) is
  'Enqueues a refresh of one connected integration now, whatever its expiry (operators, demos); '
  'enqueued false with the live job id when one is already queued.';

/** --- Section: claim --- */

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
    where j.state = 'running' and j.lease_expires_at < now() and j.attempt < j.max_attempts
    order by j.lease_expires_at
    limit p_limit
    for update skip locked
  ), picked as (
    select id from (select id, 0 as o from expired union all select id, 1 as o from due) s
    order by o
    limit p_limit
  ), claimed as (
    update public.instagram_refresh_jobs j set
      state = 'running',
      attempt = j.attempt + 1,
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
  'Claims up to p_limit due jobs (and running jobs whose lease expired) for p_worker with a lease; '
  'returns them with the integration''s current expiries.';

/** --- Section: complete --- */

create or replace function public.instagram_refresh_complete_v1(p_worker text, p_key text, p_results jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_fingerprint text := instagram_private.check_key(p_key);
  v_result jsonb;
  v_job public.instagram_refresh_jobs;
  v_int public.instagram_integrations;
  v_completed integer := 0;
  v_stale integer := 0;
  v_warning text;
begin
  if jsonb_typeof(p_results) is distinct from 'array' then
    raise exception 'invalid_results' using errcode = '22023', detail = 'Results must be a JSON array.';
  end if;
  for v_result in select value from jsonb_array_elements(p_results) loop
    -- Only the lease holder finishes a job; a job whose lease was lost and re-claimed is left alone.
    update public.instagram_refresh_jobs j set
      state = 'completed', finalized_at = now(), lease_owner = null, lease_expires_at = null,
      last_error_code = null, last_error_message = null
    where j.id = (v_result ->> 'job_id')::bigint and j.state = 'running' and j.lease_owner = p_worker
    returning * into v_job;
    if not found then
      v_stale := v_stale + 1;
      continue;
    end if;
    v_completed := v_completed + 1;
    if coalesce(v_result ->> 'user_token', '') = '' then
      continue;  -- nothing to store (the integration was no longer connected, or a no-op run)
    end if;

    select * into v_int from public.instagram_integrations where id = v_job.integration_id for update;
    if not found or v_int.status <> 'connected' then
      continue;  -- disconnected while we refreshed: never resurrect its tokens
    end if;
    if v_result ? 'token_version' and v_result ->> 'token_version'
       is distinct from encode(sha256(v_int.user_access_token_encrypted), 'hex') then
      continue;  -- reconnected (new tokens stored) while we refreshed the old ones: keep the newer grant
    end if;
    if v_int.token_key_fingerprint is distinct from v_fingerprint then
      raise exception 'encryption_key_mismatch' using errcode = 'P0001',
        detail = 'The stored tokens were encrypted with a different INSTAGRAM_TOKEN_ENCRYPTION_KEY.';
    end if;

    v_warning := nullif(v_result ->> 'warning_code', '');
    update public.instagram_integrations set
      user_access_token_encrypted = instagram_private.encrypt_token(v_result ->> 'user_token', p_key),
      page_access_token_encrypted = coalesce(
        instagram_private.encrypt_token(nullif(v_result ->> 'page_token', ''), p_key), page_access_token_encrypted),
      token_expires_at = (v_result ->> 'token_expires_at')::timestamptz,
      data_access_expires_at = coalesce((v_result ->> 'data_access_expires_at')::timestamptz, data_access_expires_at),
      last_refreshed_at = now(),
      failure_count = 0,
      last_error_code = v_warning,
      last_error_message = case when v_warning is null then null else v_result ->> 'warning_message' end,
      last_error_at = case when v_warning is null then null else now() end
    where id = v_int.id;

    -- Tell the IMO once per new warning, days before the connection stops working.
    if v_warning is not null and v_int.last_error_code is distinct from v_warning then
      perform instagram_private.refresh_notify(v_int.imo_id, 'instagram_reconnect_soon',
        'Reconnect Instagram soon',
        coalesce(v_result ->> 'warning_message', 'The Instagram connection will stop working soon.'),
        jsonb_build_object('integration_id', v_int.id, 'code', v_warning,
          'instagram_username', v_int.instagram_username,
          'deadline', v_result ->> 'warning_deadline'));
    end if;
  end loop;
  return jsonb_build_object('completed', v_completed, 'stale', v_stale);
end
$$;
comment on function public.instagram_refresh_complete_v1(text, text, jsonb) is
  'Finishes jobs held by p_worker; for each result with tokens stores them encrypted with the new expiries, '
  'resets failures and records an early warning (with one notification) - one transaction.';

/** --- Section: fail --- */

create or replace function public.instagram_refresh_fail_v1(
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
  v_job public.instagram_refresh_jobs;
  v_int public.instagram_integrations;
  v_action text := p_action;
begin
  if p_action not in ('retry', 'discard', 'error', 'reauth') then
    raise exception 'invalid_action' using errcode = '22023',
      detail = 'Action must be retry, discard, error or reauth.';
  end if;
  select * into v_job from public.instagram_refresh_jobs
  where id = p_job_id and state = 'running' and lease_owner = p_worker
  for update;
  if not found then
    return jsonb_build_object('state', null, 'stale', true);
  end if;
  if v_action = 'retry' and (v_job.attempt >= v_job.max_attempts or p_run_at is null) then
    v_action := 'discard';
  end if;

  update public.instagram_refresh_jobs set
    state = case when v_action = 'retry' then 'retryable' else 'discarded' end,
    run_at = case when v_action = 'retry' then p_run_at else run_at end,
    finalized_at = case when v_action = 'retry' then null else now() end,
    lease_owner = null,
    lease_expires_at = null,
    last_error_code = p_error_code,
    last_error_message = left(p_error_message, 500)
  where id = p_job_id;

  select * into v_int from public.instagram_integrations where id = v_job.integration_id for update;
  if found and v_int.status = 'connected' then
    update public.instagram_integrations set
      status = case v_action when 'reauth' then 'reauth_required'::public.instagram_connection_status
                             when 'error' then 'error'::public.instagram_connection_status
                             else status end,
      last_error_code = p_error_code,
      last_error_message = left(p_error_message, 500),
      last_error_at = now(),
      failure_count = failure_count + 1
    where id = v_int.id;
    if v_action = 'reauth' then
      perform instagram_private.refresh_notify(v_int.imo_id, 'instagram_reauth_required',
        'Reconnect Instagram',
        'Meta no longer accepts the Instagram connection' ||
          coalesce(' for @' || v_int.instagram_username, '') || '. An admin needs to reconnect it.',
        jsonb_build_object('integration_id', v_int.id, 'code', p_error_code,
          'instagram_username', v_int.instagram_username));
    elsif v_action = 'error' then
      perform instagram_private.refresh_notify(v_int.imo_id, 'instagram_refresh_failed',
        'Instagram connection needs attention',
        'Refreshing the Instagram connection' || coalesce(' for @' || v_int.instagram_username, '') ||
          ' keeps failing. Try reconnecting it.',
        jsonb_build_object('integration_id', v_int.id, 'code', p_error_code,
          'instagram_username', v_int.instagram_username));
    end if;
  end if;
  return jsonb_build_object('state', case when v_action = 'retry' then 'retryable' else 'discarded' end,
    'action', v_action, 'stale', false);
end
$$;
comment on function public.instagram_refresh_fail_v1(bigint, text, text, timestamptz, text, text) is
  'Records a failed attempt of p_worker''s job: retry at p_run_at (discard when attempts are used up), discard, '
  'or discard and mark the integration error / reauth_required (with a notification).';

/** --- Section: release (graceful shutdown) --- */

create or replace function public.instagram_refresh_release_v1(p_worker text, p_job_ids bigint[])
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  update public.instagram_refresh_jobs set
    state = 'available', attempt = greatest(attempt - 1, 0), lease_owner = null, lease_expires_at = null
  where id = any (p_job_ids) and state = 'running' and lease_owner = p_worker;
  get diagnostics v_count = row_count;
  if v_count > 0 then
    perform pg_notify('instagram_refresh_jobs', v_count::text);
  end if;
  return v_count;
end
$$;
comment on function public.instagram_refresh_release_v1(text, bigint[]) is
  'Hands p_worker''s unfinished jobs back as available without charging an attempt (graceful shutdown).';

/** --- Section: prune --- */

create or replace function public.instagram_refresh_prune_v1(p_keep_days integer default 7)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_deleted integer;
  v_dead integer;
begin
  delete from public.instagram_refresh_jobs
  where state in ('completed', 'discarded') and finalized_at < now() - make_interval(days => p_keep_days);
  get diagnostics v_deleted = row_count;
  -- Running jobs whose lease expired with no attempt left (a job that kills its worker every time).
  update public.instagram_refresh_jobs set
    state = 'discarded', finalized_at = now(), lease_owner = null, lease_expires_at = null,
    last_error_code = 'lease_expired', last_error_message = 'The worker stopped while running the last attempt.'
  where state = 'running' and lease_expires_at < now() and attempt >= max_attempts;
  get diagnostics v_dead = row_count;
  return jsonb_build_object('deleted', v_deleted, 'discarded', v_dead);
end
$$;
comment on function public.instagram_refresh_prune_v1(integer) is
  'Deletes finished jobs older than p_keep_days and discards running jobs whose last attempt lost its lease.';

/** --- Section: grants --- */

revoke execute on function public.instagram_refresh_enqueue_v1(integer) from public, anon, authenticated;
revoke execute on function public.instagram_refresh_enqueue_one_v1(uuid) from public, anon, authenticated;
revoke execute on function public.instagram_refresh_claim_v1(text, integer, integer) from public, anon, authenticated;
revoke execute on function public.instagram_refresh_complete_v1(text, text, jsonb) from public, anon, authenticated;
revoke execute on function public.instagram_refresh_fail_v1(bigint, text, text, timestamptz, text, text)
  from public, anon, authenticated;
revoke execute on function public.instagram_refresh_release_v1(text, bigint[]) from public, anon, authenticated;
revoke execute on function public.instagram_refresh_prune_v1(integer) from public, anon, authenticated;

grant execute on function public.instagram_refresh_enqueue_v1(integer) to service_role;
grant execute on function public.instagram_refresh_enqueue_one_v1(uuid) to service_role;
grant execute on function public.instagram_refresh_claim_v1(text, integer, integer) to service_role;
grant execute on function public.instagram_refresh_complete_v1(text, text, jsonb) to service_role;
grant execute on function public.instagram_refresh_fail_v1(bigint, text, text, timestamptz, text, text) to service_role;
grant execute on function public.instagram_refresh_release_v1(text, bigint[]) to service_role;
grant execute on function public.instagram_refresh_prune_v1(integer) to service_role;

/** --- Section: schedules (pg_cron, by name: re-applying updates the same jobs) --- */

select cron.schedule('instagram-refresh-enqueue', '15 3 * * *', $$select public.instagram_refresh_enqueue_v1()$$);
select cron.schedule('instagram-refresh-prune', '45 3 * * *', $$select public.instagram_refresh_prune_v1()$$);
