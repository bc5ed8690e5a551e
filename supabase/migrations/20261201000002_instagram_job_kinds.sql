/**
 * The reshape — one job machinery for every kind of background work (worker/queue.py).
 *
 * Every queue table speaks the same states and columns, and every kind has the same five calls, so the
 * Python loop knows no kind by name:
 *
 *   available -> running -> completed | retryable (-> running ...) | discarded
 *   <kind>_claim_v1(p_worker, p_limit, p_lease_seconds)            FOR UPDATE SKIP LOCKED, with a lease
 *   <kind>_complete_vN(p_worker, p_results jsonb, ...)             only the lease holder finishes a job
 *   <kind>_fail_v1(p_job_id, p_worker, p_action, p_run_at, p_error_code, p_error_message)
 *   <kind>_release_v1(p_worker, p_job_ids)                         shutdown: back, no attempt charged
 *   NOTIFY on the kind's channel when work arrives (the table's name)
 *
 * Kinds here: refresh (instagram_refresh_jobs, since 20260120000001) and unsubscribe
 * (instagram_page_unsubscriptions, reshaped below from its own pending/done/skipped/failed words).
 *
 * Keys: tokens are read with the current key or, during a rotation, with the previous one (the stored
 * fingerprint picks it) and always written with the current key, so `instagram-dm rotate-key` runs while
 * the API and workers are up. A row that neither key opens, or whose ciphertext is damaged, fails only its
 * own job (encryption_key_mismatch / token_corrupt); `instagram_key_check_v1` lets a worker refuse to start
 * when no stored row matches its keys at all.
 *
 * Deploy note: the worker that speaks these calls ships with this migration; the old
 * instagram_unsubscribe_claim / _finish and instagram_refresh_complete_v1 are dropped.
 */

/** --- Section: reading tokens with the current or the previous key --- */

create or replace function instagram_private.decrypt_token_any(
  p_ciphertext bytea, p_fingerprint text, p_key text, p_previous_key text default null
)
returns text
language plpgsql stable
set search_path = ''
as $$
declare
  v_key text;
begin
  if p_ciphertext is null then
    return null;
  end if;
  if p_fingerprint is not distinct from instagram_private.key_fingerprint(p_key) then
    v_key := p_key;
  elsif p_previous_key is not null
        and p_fingerprint is not distinct from instagram_private.key_fingerprint(p_previous_key) then
    v_key := p_previous_key;
  else
    raise exception 'encryption_key_mismatch' using errcode = 'P0001',
      detail = 'The stored tokens were encrypted with a different INSTAGRAM_TOKEN_ENCRYPTION_KEY (neither the current nor the previous one).';
  end if;
  -- Damaged ciphertext under the right fingerprint: pgcrypto raises SQLSTATE 39000 ("Wrong key or corrupt
  -- data"), which the clients map to token_corrupt. No exception block here: it would open a
  -- subtransaction per call, and a batch complete decrypts twice per result.
  return extensions.pgp_sym_decrypt(p_ciphertext, v_key);
end
$$;
comment on function instagram_private.decrypt_token_any(bytea, text, text, text) is
  'Decrypts with whichever of the current and previous key the fingerprint names; encryption_key_mismatch '
  'when neither; damaged ciphertext raises pgcrypto''s 39000 (token_corrupt at the clients).';
revoke all on function instagram_private.decrypt_token_any(bytea, text, text, text) from public, anon, authenticated;
grant execute on function instagram_private.decrypt_token_any(bytea, text, text, text) to service_role;

create or replace function instagram_private.token_digest(p_token text)
returns text
language sql immutable
set search_path = ''
as $$
  select encode(sha256(convert_to(p_token, 'UTF8')), 'hex')
$$;
comment on function instagram_private.token_digest(text) is
  'Identifies a token without revealing it; unchanged by re-encryption, so a rotation is not taken for a reconnect.';
revoke all on function instagram_private.token_digest(text) from public, anon, authenticated;
grant execute on function instagram_private.token_digest(text) to service_role;

drop function public.instagram_integration_tokens(uuid, text);
create function public.instagram_integration_tokens(
  p_integration_id uuid, p_key text, p_previous_key text default null
)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_integrations;
  v_user text;
begin
  select * into v_row from public.instagram_integrations where id = p_integration_id;
  if not found then
    raise exception 'integration_not_found' using errcode = 'P0002', detail = 'No such Instagram integration.';
  end if;
  v_user := instagram_private.decrypt_token_any(
    v_row.user_access_token_encrypted, v_row.token_key_fingerprint, p_key, p_previous_key);
  return jsonb_build_object(
    'integration_id', v_row.id,
    'imo_id', v_row.imo_id,
    'status', v_row.status,
    'facebook_page_id', v_row.facebook_page_id,
    'instagram_business_account_id', v_row.instagram_business_account_id,
    'token_expires_at', v_row.token_expires_at,
    'data_access_expires_at', v_row.data_access_expires_at,
    -- Both change whenever new tokens are stored (reconnect, refresh); only the version changes when a
    -- rotation re-encrypts the same token (complete compares the digest then).
    'token_version', encode(sha256(v_row.user_access_token_encrypted), 'hex'),
    'token_digest', instagram_private.token_digest(v_user),
    'user_token', v_user,
    'page_token', instagram_private.decrypt_token_any(
      v_row.page_access_token_encrypted, v_row.token_key_fingerprint, p_key, p_previous_key));
end
$$;
comment on function public.instagram_integration_tokens(uuid, text, text) is
  'Decrypted tokens of one integration (current key, or the previous one during a rotation), for the worker only.';
revoke execute on function public.instagram_integration_tokens(uuid, text, text) from public, anon, authenticated;
grant execute on function public.instagram_integration_tokens(uuid, text, text) to service_role;

create or replace function public.instagram_key_check_v1(p_key text, p_previous_key text default null)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_current text := instagram_private.check_key(p_key);
  v_previous text := case when p_previous_key is null then null else instagram_private.check_key(p_previous_key) end;
begin
  return (
    select jsonb_build_object(
      'current', count(*) filter (where f = v_current),
      'previous', count(*) filter (where f = v_previous),
      'foreign', count(*) filter (where f <> v_current and f is distinct from v_previous))
    from (
      select token_key_fingerprint as f from public.instagram_integrations where token_key_fingerprint is not null
      union all
      select token_key_fingerprint from public.instagram_page_unsubscriptions where token_key_fingerprint is not null
    ) stored);
end
$$;
comment on function public.instagram_key_check_v1(text, text) is
  'How many stored token rows each key opens (current, previous) and how many neither (foreign); a worker '
  'whose keys open none of them refuses to start.';
revoke execute on function public.instagram_key_check_v1(text, text) from public, anon, authenticated;
grant execute on function public.instagram_key_check_v1(text, text) to service_role;

/** --- Section: refresh — complete, reading the previous key during a rotation --- */

drop function public.instagram_refresh_complete_v1(text, text, jsonb);
create function public.instagram_refresh_complete_v2(
  p_worker text, p_results jsonb, p_key text, p_previous_key text default null
)
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
  v_page_token text;
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
    -- Same ciphertext as we read: nothing happened meanwhile (the cheap, usual case). Other ciphertext:
    -- a reconnect stored new tokens (keep the newer grant), or a rotation re-encrypted the same token
    -- (the digest of the plaintext says which; decrypting only then keeps the usual case cheap).
    if v_result ? 'token_version'
       and v_result ->> 'token_version' is distinct from encode(sha256(v_int.user_access_token_encrypted), 'hex')
       and v_result ->> 'token_digest' is distinct from instagram_private.token_digest(
         instagram_private.decrypt_token_any(
           v_int.user_access_token_encrypted, v_int.token_key_fingerprint, p_key, p_previous_key)) then
      continue;
    end if;
    -- Everything ends under the current key: a Page token kept as it was is re-encrypted only when it
    -- is still under the previous one.
    v_page_token := nullif(v_result ->> 'page_token', '');
    if v_page_token is null and v_int.token_key_fingerprint is distinct from v_fingerprint then
      v_page_token := instagram_private.decrypt_token_any(
        v_int.page_access_token_encrypted, v_int.token_key_fingerprint, p_key, p_previous_key);
    end if;

    v_warning := nullif(v_result ->> 'warning_code', '');
    update public.instagram_integrations set
      user_access_token_encrypted = instagram_private.encrypt_token(v_result ->> 'user_token', p_key),
      page_access_token_encrypted = coalesce(instagram_private.encrypt_token(v_page_token, p_key),
                                             page_access_token_encrypted),
      token_key_fingerprint = v_fingerprint,
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
comment on function public.instagram_refresh_complete_v2(text, jsonb, text, text) is
  'Finishes refresh jobs held by p_worker; for each result with tokens stores them encrypted with the current key, '
  'new expiries, failures reset and an early warning (with one notification) - one transaction.';
revoke execute on function public.instagram_refresh_complete_v2(text, jsonb, text, text) from public, anon, authenticated;
grant execute on function public.instagram_refresh_complete_v2(text, jsonb, text, text) to service_role;

/** --- Section: refresh — fail, with the action for a token no key opens --- */

-- `poison`: the stored token cannot be read (another key's fingerprint, damaged ciphertext). No retry of
-- this job can fix it, but an operator can (the right key, a finished rollout) and an admin can
-- (reconnect): the job is discarded, the integration keeps its status with the reason as its last error,
-- the IMO is told once per reason, and tomorrow's sweep tries again.
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
  if p_action not in ('retry', 'discard', 'error', 'reauth', 'poison') then
    raise exception 'invalid_action' using errcode = '22023',
      detail = 'Action must be retry, discard, error, reauth or poison.';
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
    elsif v_action = 'poison' and v_int.last_error_code is distinct from p_error_code then
      perform instagram_private.refresh_notify(v_int.imo_id, 'instagram_token_unreadable',
        'Instagram connection cannot be refreshed',
        'The stored Instagram tokens' || coalesce(' for @' || v_int.instagram_username, '') ||
          ' cannot be read with the configured encryption key. Ask your administrator to check the key, '
          'or reconnect the account.',
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
  'discard and mark the integration error / reauth_required (with a notification), or poison: discard, keep '
  'the status, record the reason and tell the IMO once.';

/** --- Section: unsubscribe — the same states and columns as every queue --- */

alter table public.instagram_page_unsubscriptions
  drop constraint instagram_page_unsubscriptions_state_check,
  drop constraint instagram_page_unsubscriptions_token_gone_when_finished;
alter table public.instagram_page_unsubscriptions rename column attempts to attempt;
alter table public.instagram_page_unsubscriptions
  add column max_attempts integer not null default 8 check (max_attempts between 1 and 100),
  add column lease_owner text,
  add column finalized_at timestamptz;
update public.instagram_page_unsubscriptions set
  state = case state
    when 'pending' then case when attempt > 0 then 'retryable' else 'available' end
    when 'running' then 'retryable'  -- its old lease had no owner: any worker takes it again
    when 'failed' then 'discarded'
    else 'completed' end,
  run_at = case when state = 'running' then now() else run_at end,
  lease_expires_at = null,
  finalized_at = case when state in ('done', 'skipped', 'failed') then updated_at end;
alter table public.instagram_page_unsubscriptions
  alter column state set default 'available',
  add constraint instagram_page_unsubscriptions_state_check
    check (state in ('available', 'running', 'retryable', 'completed', 'discarded')),
  add constraint instagram_page_unsubscriptions_attempt_check check (attempt >= 0),
  add constraint instagram_page_unsubscriptions_lease_when_running check (
    (state = 'running') = (lease_owner is not null and lease_expires_at is not null)),
  add constraint instagram_page_unsubscriptions_finalized_iff_terminal check (
    (state in ('completed', 'discarded')) = (finalized_at is not null)),
  add constraint instagram_page_unsubscriptions_token_gone_when_finished check (
    state in ('available', 'running', 'retryable') or page_access_token_encrypted is null);

drop index public.instagram_page_unsubscriptions_due_idx;
create index instagram_page_unsubscriptions_due_idx on public.instagram_page_unsubscriptions (run_at, id)
  where state in ('available', 'retryable');
create index instagram_page_unsubscriptions_lease_idx on public.instagram_page_unsubscriptions (lease_expires_at)
  where state = 'running';
create index instagram_page_unsubscriptions_finalized_idx on public.instagram_page_unsubscriptions (finalized_at)
  where state in ('completed', 'discarded');

create or replace function instagram_private.unsubscriptions_notify()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform pg_notify('instagram_page_unsubscriptions', '1');
  return null;
end
$$;
comment on function instagram_private.unsubscriptions_notify() is
  'Wakes the workers (one NOTIFY per statement) when disconnect queues a Page unsubscribe.';
revoke all on function instagram_private.unsubscriptions_notify() from public, anon, authenticated;
grant execute on function instagram_private.unsubscriptions_notify() to service_role;
create trigger instagram_page_unsubscriptions_notify after insert on public.instagram_page_unsubscriptions
  for each statement execute function instagram_private.unsubscriptions_notify();

drop function public.instagram_unsubscribe_claim(text, integer);
drop function public.instagram_unsubscribe_finish(uuid, text, text, text);

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
  with picked as (
    select u.id from public.instagram_page_unsubscriptions u
    where (u.state in ('available', 'retryable') and u.run_at <= now())
       or (u.state = 'running' and u.lease_expires_at < now() and u.attempt < u.max_attempts)
    order by u.run_at, u.id
    limit p_limit
    for update skip locked
  ), claimed as (
    update public.instagram_page_unsubscriptions u set
      state = 'running', attempt = u.attempt + 1, lease_owner = p_worker,
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
  'Claims up to p_limit due Page unsubscriptions (and running ones whose lease expired) for p_worker with a lease.';
revoke execute on function public.instagram_unsubscribe_claim_v1(text, integer, integer) from public, anon, authenticated;
grant execute on function public.instagram_unsubscribe_claim_v1(text, integer, integer) to service_role;

create or replace function public.instagram_unsubscribe_token_v1(
  p_job_id uuid, p_worker text, p_key text, p_previous_key text default null
)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_page_unsubscriptions;
begin
  select * into v_row from public.instagram_page_unsubscriptions
  where id = p_job_id and state = 'running' and lease_owner = p_worker;
  if not found then
    raise exception 'job_not_held' using errcode = 'P0002', detail = 'This worker does not hold that job.';
  end if;
  -- Checked again right before the Meta call: a reconnect of the same Page since the claim keeps it.
  if exists (select 1 from public.instagram_integrations i
             where i.facebook_page_id = v_row.facebook_page_id and i.status = 'connected') then
    return jsonb_build_object('still_in_use', true, 'page_token', null);
  end if;
  return jsonb_build_object('still_in_use', false, 'page_token', instagram_private.decrypt_token_any(
    v_row.page_access_token_encrypted, v_row.token_key_fingerprint, p_key, p_previous_key));
end
$$;
comment on function public.instagram_unsubscribe_token_v1(uuid, text, text, text) is
  'For an unsubscription p_worker holds: whether a connected integration uses the Page now, else its '
  'decrypted Page token (null when none was stored).';
revoke execute on function public.instagram_unsubscribe_token_v1(uuid, text, text, text) from public, anon, authenticated;
grant execute on function public.instagram_unsubscribe_token_v1(uuid, text, text, text) to service_role;

create or replace function public.instagram_unsubscribe_complete_v1(p_worker text, p_results jsonb)
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
  -- outcome: done (unsubscribed at Meta) or skipped (still in use, or Meta had already dropped our access).
  update public.instagram_page_unsubscriptions u set
    state = 'completed', finalized_at = now(), lease_owner = null, lease_expires_at = null,
    page_access_token_encrypted = null, token_key_fingerprint = null,
    last_error_code = r.error_code, last_error_message = left(r.error_message, 500)
  from jsonb_to_recordset(p_results) as r(job_id uuid, outcome text, error_code text, error_message text)
  where u.id = r.job_id and u.state = 'running' and u.lease_owner = p_worker;
  get diagnostics v_completed = row_count;
  return jsonb_build_object('completed', v_completed, 'stale', jsonb_array_length(p_results) - v_completed);
end
$$;
comment on function public.instagram_unsubscribe_complete_v1(text, jsonb) is
  'Finishes unsubscriptions held by p_worker and wipes their Page tokens; returns completed and stale counts.';
revoke execute on function public.instagram_unsubscribe_complete_v1(text, jsonb) from public, anon, authenticated;
grant execute on function public.instagram_unsubscribe_complete_v1(text, jsonb) to service_role;

create or replace function public.instagram_unsubscribe_fail_v1(
  p_job_id uuid,
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
  v_row public.instagram_page_unsubscriptions;
  v_retry boolean;
begin
  if p_action not in ('retry', 'discard', 'error', 'reauth', 'poison') then
    raise exception 'invalid_action' using errcode = '22023',
      detail = 'Action must be retry, discard, error, reauth or poison.';
  end if;
  select * into v_row from public.instagram_page_unsubscriptions
  where id = p_job_id and state = 'running' and lease_owner = p_worker
  for update;
  if not found then
    return jsonb_build_object('state', null, 'stale', true);
  end if;
  -- There is no integration to mark: error, reauth and poison end the job like discard.
  v_retry := p_action = 'retry' and p_run_at is not null and v_row.attempt < v_row.max_attempts;
  update public.instagram_page_unsubscriptions set
    state = case when v_retry then 'retryable' else 'discarded' end,
    run_at = case when v_retry then p_run_at else run_at end,
    finalized_at = case when v_retry then null else now() end,
    lease_owner = null,
    lease_expires_at = null,
    page_access_token_encrypted = case when v_retry then page_access_token_encrypted end,
    token_key_fingerprint = case when v_retry then token_key_fingerprint end,
    last_error_code = p_error_code,
    last_error_message = left(p_error_message, 500)
  where id = p_job_id;
  return jsonb_build_object('state', case when v_retry then 'retryable' else 'discarded' end, 'stale', false);
end
$$;
comment on function public.instagram_unsubscribe_fail_v1(uuid, text, text, timestamptz, text, text) is
  'Records a failed attempt of p_worker''s unsubscription: retry at p_run_at while attempts remain, else discard '
  '(the Page token is wiped).';
revoke execute on function public.instagram_unsubscribe_fail_v1(uuid, text, text, timestamptz, text, text)
  from public, anon, authenticated;
grant execute on function public.instagram_unsubscribe_fail_v1(uuid, text, text, timestamptz, text, text) to service_role;

create or replace function public.instagram_unsubscribe_release_v1(p_worker text, p_job_ids uuid[])
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  update public.instagram_page_unsubscriptions set
    state = 'available', attempt = greatest(attempt - 1, 0), lease_owner = null, lease_expires_at = null
  where id = any (p_job_ids) and state = 'running' and lease_owner = p_worker;
  get diagnostics v_count = row_count;
  if v_count > 0 then
    perform pg_notify('instagram_page_unsubscriptions', v_count::text);
  end if;
  return v_count;
end
$$;
comment on function public.instagram_unsubscribe_release_v1(text, uuid[]) is
  'Hands p_worker''s unfinished unsubscriptions back as available without charging an attempt (graceful shutdown).';
revoke execute on function public.instagram_unsubscribe_release_v1(text, uuid[]) from public, anon, authenticated;
grant execute on function public.instagram_unsubscribe_release_v1(text, uuid[]) to service_role;

create or replace function public.instagram_unsubscribe_prune_v1(p_keep_days integer default 7)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_deleted integer;
  v_dead integer;
begin
  delete from public.instagram_page_unsubscriptions
  where state in ('completed', 'discarded') and finalized_at < now() - make_interval(days => p_keep_days);
  get diagnostics v_deleted = row_count;
  update public.instagram_page_unsubscriptions set
    state = 'discarded', finalized_at = now(), lease_owner = null, lease_expires_at = null,
    page_access_token_encrypted = null, token_key_fingerprint = null,
    last_error_code = 'lease_expired', last_error_message = 'The worker stopped while running the last attempt.'
  where state = 'running' and lease_expires_at < now() and attempt >= max_attempts;
  get diagnostics v_dead = row_count;
  return jsonb_build_object('deleted', v_deleted, 'discarded', v_dead);
end
$$;
comment on function public.instagram_unsubscribe_prune_v1(integer) is
  'Deletes finished unsubscriptions older than p_keep_days and discards running ones whose last attempt lost its lease.';
revoke execute on function public.instagram_unsubscribe_prune_v1(integer) from public, anon, authenticated;
grant execute on function public.instagram_unsubscribe_prune_v1(integer) to service_role;

select cron.schedule('instagram-unsubscribe-prune', '50 3 * * *', $$select public.instagram_unsubscribe_prune_v1()$$);

/** --- Section: the refresh jobs' identity sequence kept Supabase's default grants (anon could advance it) --- */

revoke all on sequence public.instagram_refresh_jobs_id_seq from anon, authenticated;
