/**
 * A refresh job that kept killing its worker (its last attempt's lease expired) used to sit `running` until the
 * daily prune: unclaimable, blocking the next enqueue of its integration (the sweep skipped it,
 * `refresh-now --integration` said enqueued: false), then discarded with no word on the integration.
 *
 * Now such a job is buried wherever it is met — by the sweep, by enqueue-one and by the prune: discarded
 * with `lease_expired`, the reason recorded on the integration (its status unchanged: a crashing worker says
 * nothing about Meta's grant) and one notification for the IMO, and the new job is enqueued at once.
 */

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
    update public.instagram_refresh_jobs j set
      state = 'discarded', finalized_at = now(), lease_owner = null, lease_expires_at = null,
      last_error_code = 'lease_expired', last_error_message = 'The worker stopped while running the last attempt.'
    where j.state = 'running' and j.lease_expires_at < now() and j.attempt >= j.max_attempts
      and (p_integration_id is null or j.integration_id = p_integration_id)
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
  'Discards running refresh jobs (of one integration, or all) whose last attempt lost its lease, records '
  'lease_expired on each integration and tells its IMO; returns how many.';
revoke all on function instagram_private.refresh_bury_dead(uuid) from public, anon, authenticated;
grant execute on function instagram_private.refresh_bury_dead(uuid) to service_role;

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
  -- A dead job must not keep its integration from the sweep.
  perform instagram_private.refresh_bury_dead();
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
  'and has no live job (a dead one is buried first); idempotent; returns how many were enqueued and sends one '
  'NOTIFY.';
revoke execute on function public.instagram_refresh_enqueue_v1(integer) from public, anon, authenticated;
grant execute on function public.instagram_refresh_enqueue_v1(integer) to service_role;

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
  perform instagram_private.refresh_bury_dead(p_integration_id);
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
  'Enqueues a refresh of one connected integration now, whatever its expiry (operators, demos); a dead job is '
  'buried first; enqueued false with the live job id when one is already queued.';
revoke execute on function public.instagram_refresh_enqueue_one_v1(uuid) from public, anon, authenticated;
grant execute on function public.instagram_refresh_enqueue_one_v1(uuid) to service_role;

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
  v_dead := instagram_private.refresh_bury_dead();
  return jsonb_build_object('deleted', v_deleted, 'discarded', v_dead);
end
$$;
comment on function public.instagram_refresh_prune_v1(integer) is
  'Deletes finished jobs older than p_keep_days and buries running jobs whose last attempt lost its lease.';
revoke execute on function public.instagram_refresh_prune_v1(integer) from public, anon, authenticated;
grant execute on function public.instagram_refresh_prune_v1(integer) to service_role;
