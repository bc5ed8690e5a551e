/**
 * Milestone 2 — connect: OAuth states, encrypted token storage, status and disconnect.
 *
 * Tokens are encrypted here with pgcrypto; the key arrives as a bound parameter of each call
 * (INSTAGRAM_TOKEN_ENCRYPTION_KEY, never stored) and only its fingerprint is kept beside the
 * ciphertext, so a wrong key is detected before any decryption is attempted.
 *
 * Service-only functions (revoked from public, anon, authenticated; granted to service_role):
 *   instagram_oauth_state_create, instagram_oauth_state_consume, instagram_store_integrations,
 *   instagram_integration_tokens, instagram_integration_status_for_user, instagram_disconnect_for_user,
 *   instagram_rotate_key_batch, instagram_unsubscribe_claim, instagram_unsubscribe_finish
 * App-facing (authenticated): instagram_integration_status, instagram_disconnect.
 */

/** --- Section: OAuth states --- */

create table public.instagram_oauth_states (
  id uuid primary key default gen_random_uuid(),
  state_hash text not null,
  user_id uuid not null references auth.users (id) on delete cascade,
  imo_id uuid not null references public.imos (id) on delete cascade,
  return_to text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  consumed_at timestamptz,
  -- SHA-256 of a second nonce kept in an HttpOnly cookie of the browser that called init: the
  -- callback must come back to that browser (null when the deployment switches binding off).
  browser_binding_hash text check (browser_binding_hash ~ '^[0-9a-f]{64}$'),
  constraint instagram_oauth_states_state_hash_key unique (state_hash),
  constraint instagram_oauth_states_hash_format check (state_hash ~ '^[0-9a-f]{64}$'),
  constraint instagram_oauth_states_expiry_after_creation check (expires_at > created_at)
);
comment on table public.instagram_oauth_states is
  'Pending OAuth connects: the SHA-256 of the state nonce (never the nonce), who started it, where to return. Single use.';
create index instagram_oauth_states_expires_idx on public.instagram_oauth_states (expires_at);

alter table public.instagram_oauth_states enable row level security;
revoke all on public.instagram_oauth_states from anon, authenticated;
grant all on public.instagram_oauth_states to service_role;

/** --- Section: page unsubscriptions left behind by disconnect --- */

create table public.instagram_page_unsubscriptions (
  id uuid primary key default gen_random_uuid(),
  integration_id uuid references public.instagram_integrations (id) on delete set null,
  facebook_page_id text not null,
  page_access_token_encrypted bytea,
  token_key_fingerprint text,
  state text not null default 'pending' check (state in ('pending', 'running', 'done', 'skipped', 'failed')),
  attempts integer not null default 0,
  run_at timestamptz not null default now(),
  lease_expires_at timestamptz,
  last_error_code text,
  last_error_message text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint instagram_page_unsubscriptions_token_gone_when_finished check (
    state in ('pending', 'running') or page_access_token_encrypted is null
  )
);
comment on table public.instagram_page_unsubscriptions is
  'Pages to unsubscribe at Meta after a disconnect; holds the encrypted page token until done, then wipes it.';
create index instagram_page_unsubscriptions_due_idx on public.instagram_page_unsubscriptions (run_at)
  where state in ('pending', 'running');
create trigger instagram_page_unsubscriptions_set_updated_at before update on public.instagram_page_unsubscriptions
  for each row execute function instagram_private.set_updated_at();

alter table public.instagram_page_unsubscriptions enable row level security;
revoke all on public.instagram_page_unsubscriptions from anon, authenticated;
grant all on public.instagram_page_unsubscriptions to service_role;

/** --- Section: encryption helpers (private) --- */

create or replace function instagram_private.key_fingerprint(p_key text)
returns text
language sql immutable strict
set search_path = ''
as $$
  select left(encode(extensions.hmac('instagram-dm token key fingerprint', p_key, 'sha256'), 'hex'), 16)
$$;
comment on function instagram_private.key_fingerprint(text) is
  'A short keyed hash that identifies the encryption key without revealing it.';

create or replace function instagram_private.check_key(p_key text)
returns text
language plpgsql immutable
set search_path = ''
as $$
begin
  if p_key is null or length(p_key) < 32 then
    raise exception 'invalid_encryption_key' using errcode = '22023',
      detail = 'The token encryption key must be at least 32 characters.';
  end if;
  return instagram_private.key_fingerprint(p_key);
end
$$;

create or replace function instagram_private.encrypt_token(p_token text, p_key text)
returns bytea
language sql immutable
set search_path = ''
as $$
  select case when p_token is null then null
         else extensions.pgp_sym_encrypt(p_token, p_key, 'cipher-algo=aes256, compress-algo=0') end
$$;

create or replace function instagram_private.decrypt_token(p_ciphertext bytea, p_fingerprint text, p_key text)
returns text
language plpgsql stable
set search_path = ''
as $$
begin
  if p_ciphertext is null then
    return null;
  end if;
  if p_fingerprint is distinct from instagram_private.key_fingerprint(p_key) then
    raise exception 'encryption_key_mismatch' using errcode = 'P0001',
      detail = 'The stored tokens were encrypted with a different INSTAGRAM_TOKEN_ENCRYPTION_KEY.';
  end if;
  return extensions.pgp_sym_decrypt(p_ciphertext, p_key);
end
$$;

revoke all on function instagram_private.key_fingerprint(text) from public, anon, authenticated;
revoke all on function instagram_private.check_key(text) from public, anon, authenticated;
revoke all on function instagram_private.encrypt_token(text, text) from public, anon, authenticated;
revoke all on function instagram_private.decrypt_token(bytea, text, text) from public, anon, authenticated;
grant execute on function instagram_private.key_fingerprint(text) to service_role;
grant execute on function instagram_private.check_key(text) to service_role;
grant execute on function instagram_private.encrypt_token(text, text) to service_role;
grant execute on function instagram_private.decrypt_token(bytea, text, text) to service_role;

/** --- Section: OAuth state RPCs --- */

create or replace function instagram_private.assert_can_connect(p_user_id uuid, p_imo_id uuid)
returns void
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  if not instagram_private.user_is_imo_admin(p_user_id, p_imo_id) then
    raise exception 'not_imo_admin' using errcode = '42501',
      detail = 'Only an owner or admin of the IMO can connect Instagram.';
  end if;
  if not instagram_private.imo_has_feature(p_imo_id, 'instagram_messaging') then
    raise exception 'feature_not_in_plan' using errcode = '42501',
      detail = 'Instagram messaging is part of the Team plan; upgrade to connect Instagram.';
  end if;
end
$$;
comment on function instagram_private.assert_can_connect(uuid, uuid) is
  'Raises not_imo_admin or feature_not_in_plan unless the user may connect Instagram for the IMO.';
revoke all on function instagram_private.assert_can_connect(uuid, uuid) from public, anon, authenticated;
grant execute on function instagram_private.assert_can_connect(uuid, uuid) to service_role;

create or replace function public.instagram_oauth_state_create(
  p_state_hash text,
  p_user_id uuid,
  p_imo_id uuid,
  p_return_to text,
  p_ttl_seconds integer default 600,
  p_browser_binding_hash text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_oauth_states;
begin
  perform instagram_private.assert_can_connect(p_user_id, p_imo_id);
  if p_ttl_seconds not between 60 and 3600 then
    raise exception 'invalid_ttl' using errcode = '22023', detail = 'State lifetime must be 1 to 60 minutes.';
  end if;

  -- Expired states are useless; sweep a few on the way (the table stays tiny without a cron job).
  delete from public.instagram_oauth_states
  where id in (select id from public.instagram_oauth_states where expires_at < now() - interval '1 day' limit 100);

  insert into public.instagram_oauth_states (state_hash, user_id, imo_id, return_to, expires_at, browser_binding_hash)
  values (p_state_hash, p_user_id, p_imo_id, p_return_to, now() + make_interval(secs => p_ttl_seconds),
          p_browser_binding_hash)
  returning * into v_row;

  return jsonb_build_object('id', v_row.id, 'expires_at', v_row.expires_at);
end
$$;
comment on function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text) is
  'Checks the user is an admin of an IMO whose plan has instagram_messaging, then stores a hashed OAuth state.';

create or replace function public.instagram_oauth_state_consume(
  p_state_hash text, p_browser_binding_hash text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_oauth_states;
begin
  -- Atomic single use: of two concurrent callbacks only one update matches consumed_at is null.
  -- A state is spent by its first use even when that use is refused below.
  update public.instagram_oauth_states
  set consumed_at = now()
  where state_hash = p_state_hash and consumed_at is null and expires_at > now()
  returning * into v_row;

  if found then
    if v_row.browser_binding_hash is not null
       and v_row.browser_binding_hash is distinct from p_browser_binding_hash then
      -- Brought back by a browser that did not start it (a forwarded consent link).
      return jsonb_build_object('status', 'foreign_browser', 'return_to', v_row.return_to);
    end if;
    if not instagram_private.user_is_imo_admin(v_row.user_id, v_row.imo_id)
       or not instagram_private.imo_has_feature(v_row.imo_id, 'instagram_messaging') then
      -- Checked again before anything happens at Meta: the role or the plan may be gone since init.
      return jsonb_build_object('status', 'not_allowed', 'return_to', v_row.return_to);
    end if;
    return jsonb_build_object(
      'status', 'ok', 'user_id', v_row.user_id, 'imo_id', v_row.imo_id, 'return_to', v_row.return_to);
  end if;

  select * into v_row from public.instagram_oauth_states where state_hash = p_state_hash;
  if not found then
    return jsonb_build_object('status', 'unknown');
  end if;
  return jsonb_build_object(
    'status', case when v_row.consumed_at is not null then 'used' else 'expired' end,
    'return_to', v_row.return_to);
end
$$;
comment on function public.instagram_oauth_state_consume(text, text) is
  'Consumes a state exactly once; status ok | used | expired | unknown | foreign_browser | not_allowed '
  '(return_to when known).';

/** --- Section: storing integrations --- */

create or replace function public.instagram_store_integrations(
  p_imo_id uuid,
  p_user_id uuid,
  p_key text,
  p_user_token text,
  p_token_expires_at timestamptz,
  p_data_access_expires_at timestamptz,
  p_scopes text[],
  p_accounts jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_fingerprint text := instagram_private.check_key(p_key);
  v_user_cipher bytea;
  v_account jsonb;
  v_result jsonb := '[]'::jsonb;
  v_id uuid;
begin
  -- Re-checked at the end of the flow: the user may have lost the role or the plan since init.
  perform instagram_private.assert_can_connect(p_user_id, p_imo_id);
  if p_user_token is null or length(p_user_token) = 0 then
    raise exception 'missing_token' using errcode = '22023', detail = 'A user access token is required.';
  end if;
  if jsonb_typeof(p_accounts) <> 'array' or jsonb_array_length(p_accounts) = 0 then
    raise exception 'no_accounts' using errcode = '22023', detail = 'At least one Instagram account is required.';
  end if;
  v_user_cipher := instagram_private.encrypt_token(p_user_token, p_key);

  for v_account in select value from jsonb_array_elements(p_accounts) loop
    if coalesce(v_account ->> 'page_token', '') = '' then
      raise exception 'missing_token' using errcode = '22023', detail = 'Each account needs a page access token.';
    end if;
    insert into public.instagram_integrations as i (
      imo_id, connected_by, facebook_page_id, facebook_page_name, instagram_business_account_id,
      instagram_username, instagram_profile_picture_url, user_access_token_encrypted, page_access_token_encrypted,
      token_key_fingerprint, token_expires_at, data_access_expires_at, granted_scopes, status,
      webhook_subscribed, webhook_subscribed_at, last_refreshed_at, last_error_code, last_error_message,
      last_error_at, failure_count
    ) values (
      p_imo_id, p_user_id, v_account ->> 'page_id', v_account ->> 'page_name', v_account ->> 'ig_account_id',
      v_account ->> 'ig_username', v_account ->> 'ig_profile_picture_url', v_user_cipher,
      instagram_private.encrypt_token(v_account ->> 'page_token', p_key), v_fingerprint, p_token_expires_at,
      p_data_access_expires_at, coalesce(p_scopes, '{}'), 'connected',
      coalesce((v_account ->> 'webhook_subscribed')::boolean, false),
      case when (v_account ->> 'webhook_subscribed')::boolean then now() end,
      now(), v_account ->> 'webhook_error_code', v_account ->> 'webhook_error_message',
      case when v_account ->> 'webhook_error_code' is not null then now() end, 0
    )
    on conflict on constraint instagram_integrations_imo_account_key do update set
      connected_by = excluded.connected_by,
      facebook_page_id = excluded.facebook_page_id,
      facebook_page_name = excluded.facebook_page_name,
      instagram_username = excluded.instagram_username,
      instagram_profile_picture_url = excluded.instagram_profile_picture_url,
      user_access_token_encrypted = excluded.user_access_token_encrypted,
      page_access_token_encrypted = excluded.page_access_token_encrypted,
      token_key_fingerprint = excluded.token_key_fingerprint,
      token_expires_at = excluded.token_expires_at,
      data_access_expires_at = excluded.data_access_expires_at,
      granted_scopes = excluded.granted_scopes,
      status = 'connected',
      webhook_subscribed = excluded.webhook_subscribed,
      webhook_subscribed_at = excluded.webhook_subscribed_at,
      last_refreshed_at = excluded.last_refreshed_at,
      last_error_code = excluded.last_error_code,
      last_error_message = excluded.last_error_message,
      last_error_at = excluded.last_error_at,
      failure_count = 0
    returning i.id into v_id;

    v_result := v_result || jsonb_build_object(
      'id', v_id,
      'instagram_business_account_id', v_account ->> 'ig_account_id',
      'facebook_page_id', v_account ->> 'page_id',
      'webhook_subscribed', coalesce((v_account ->> 'webhook_subscribed')::boolean, false));
  end loop;

  return v_result;
end
$$;
comment on function public.instagram_store_integrations(uuid, uuid, text, text, timestamptz, timestamptz, text[], jsonb) is
  'Creates or updates (reconnect) one integration per linked Instagram account, tokens encrypted, in one transaction.';

create or replace function public.instagram_integration_tokens(p_integration_id uuid, p_key text)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_integrations;
begin
  select * into v_row from public.instagram_integrations where id = p_integration_id;
  if not found then
    raise exception 'integration_not_found' using errcode = 'P0002', detail = 'No such Instagram integration.';
  end if;
  return jsonb_build_object(
    'integration_id', v_row.id,
    'imo_id', v_row.imo_id,
    'status', v_row.status,
    'facebook_page_id', v_row.facebook_page_id,
    'instagram_business_account_id', v_row.instagram_business_account_id,
    'token_expires_at', v_row.token_expires_at,
    'data_access_expires_at', v_row.data_access_expires_at,
    -- Changes whenever new tokens are stored (reconnect, refresh): lets a refresh notice it raced one.
    'token_version', encode(sha256(v_row.user_access_token_encrypted), 'hex'),
    'user_token', instagram_private.decrypt_token(v_row.user_access_token_encrypted, v_row.token_key_fingerprint, p_key),
    'page_token', instagram_private.decrypt_token(v_row.page_access_token_encrypted, v_row.token_key_fingerprint, p_key));
end
$$;
comment on function public.instagram_integration_tokens(uuid, text) is
  'Decrypted tokens of one integration, for the service layer and worker only.';

/** --- Section: status --- */

create or replace function instagram_private.integration_status_json(p_imo_id uuid)
returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', i.id,
    'imo_id', i.imo_id,
    'status', i.status,
    'instagram_business_account_id', i.instagram_business_account_id,
    'instagram_username', i.instagram_username,
    'instagram_profile_picture_url', i.instagram_profile_picture_url,
    'facebook_page_id', i.facebook_page_id,
    'facebook_page_name', i.facebook_page_name,
    'token_expires_at', i.token_expires_at,
    'data_access_expires_at', i.data_access_expires_at,
    'last_refreshed_at', i.last_refreshed_at,
    'last_error_code', i.last_error_code,
    'last_error_message', i.last_error_message,
    'last_error_at', i.last_error_at,
    'webhook_subscribed', i.webhook_subscribed,
    'granted_scopes', i.granted_scopes,
    'connected_at', i.created_at,
    'updated_at', i.updated_at
  ) order by i.created_at, i.id), '[]'::jsonb)
  from public.instagram_integrations i
  where i.imo_id = p_imo_id
$$;

create or replace function public.instagram_integration_status(p_imo_id uuid)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  -- Invoker rights: RLS on instagram_integrations limits an authenticated caller to their IMOs,
  -- and the column grants keep token columns out of reach. Non-members simply get [].
  return instagram_private.integration_status_json(p_imo_id);
end
$$;
comment on function public.instagram_integration_status(uuid) is
  'App-facing: the IMO''s Instagram integrations with safe fields only ([] for non-members).';

create or replace function public.instagram_integration_status_for_user(p_user_id uuid, p_imo_id uuid)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if not exists (select 1 from public.imo_members m where m.imo_id = p_imo_id and m.user_id = p_user_id) then
    return '[]'::jsonb;
  end if;
  return instagram_private.integration_status_json(p_imo_id);
end
$$;
comment on function public.instagram_integration_status_for_user(uuid, uuid) is
  'Service-only twin of instagram_integration_status for a user the API has already authenticated.';

/** --- Section: disconnect --- */

create or replace function instagram_private.disconnect_integration(p_integration_id uuid, p_actor uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_integrations;
  v_queued boolean := false;
begin
  select * into v_row from public.instagram_integrations where id = p_integration_id for update;
  if not found then
    raise exception 'integration_not_found' using errcode = 'P0002', detail = 'No such Instagram integration.';
  end if;
  if not instagram_private.user_is_imo_admin(p_actor, v_row.imo_id) then
    -- Same answer whether the row exists in another IMO or not at all: no probing across tenants.
    raise exception 'integration_not_found' using errcode = 'P0002', detail = 'No such Instagram integration.';
  end if;

  if v_row.page_access_token_encrypted is not null and v_row.webhook_subscribed then
    insert into public.instagram_page_unsubscriptions
      (integration_id, facebook_page_id, page_access_token_encrypted, token_key_fingerprint)
    values (v_row.id, v_row.facebook_page_id, v_row.page_access_token_encrypted, v_row.token_key_fingerprint);
    v_queued := true;
  end if;

  update public.instagram_integrations set
    status = 'disconnected',
    user_access_token_encrypted = null,
    page_access_token_encrypted = null,
    token_key_fingerprint = null,
    webhook_subscribed = false,
    webhook_subscribed_at = null
  where id = p_integration_id;

  return jsonb_build_object('id', p_integration_id, 'status', 'disconnected', 'unsubscribe_queued', v_queued);
end
$$;
revoke all on function instagram_private.disconnect_integration(uuid, uuid) from public, anon, authenticated;
grant execute on function instagram_private.disconnect_integration(uuid, uuid) to service_role;

create or replace function public.instagram_disconnect(p_integration_id uuid)
returns jsonb
language sql
security definer
set search_path = ''
as $$
  select instagram_private.disconnect_integration(p_integration_id, (select auth.uid()))
$$;
comment on function public.instagram_disconnect(uuid) is
  'App-facing: an IMO admin disconnects an integration; tokens are wiped and the Page unsubscribe is queued.';

create or replace function public.instagram_disconnect_for_user(p_user_id uuid, p_integration_id uuid)
returns jsonb
language sql
security definer
set search_path = ''
as $$
  select instagram_private.disconnect_integration(p_integration_id, p_user_id)
$$;
comment on function public.instagram_disconnect_for_user(uuid, uuid) is
  'Service-only twin of instagram_disconnect for a user the API has already authenticated.';

/** --- Section: page unsubscription queue --- */

create or replace function public.instagram_unsubscribe_claim(p_key text, p_limit integer default 10)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  with next as (
    select u.id from public.instagram_page_unsubscriptions u
    where (u.state = 'pending' and u.run_at <= now())
       or (u.state = 'running' and u.lease_expires_at < now())
    order by u.run_at, u.id
    limit p_limit
    for update skip locked
  ), claimed as (
    update public.instagram_page_unsubscriptions u
    set state = 'running', attempts = u.attempts + 1, lease_expires_at = now() + interval '5 minutes'
    from next where u.id = next.id
    returning u.*
  )
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', c.id,
    'facebook_page_id', c.facebook_page_id,
    'attempts', c.attempts,
    -- another live integration still needs this Page's webhooks: do not unsubscribe it
    'still_in_use', exists (
      select 1 from public.instagram_integrations i
      where i.facebook_page_id = c.facebook_page_id and i.status = 'connected'),
    'page_token', instagram_private.decrypt_token(c.page_access_token_encrypted, c.token_key_fingerprint, p_key)
  )), '[]'::jsonb) into v_result
  from claimed c;
  return v_result;
end
$$;

create or replace function public.instagram_unsubscribe_finish(
  p_id uuid, p_outcome text, p_error_code text default null, p_error_message text default null
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_outcome not in ('done', 'skipped', 'failed', 'retry') then
    raise exception 'invalid_outcome' using errcode = '22023', detail = 'Outcome must be done, skipped, failed or retry.';
  end if;
  update public.instagram_page_unsubscriptions set
    state = case when p_outcome = 'retry' then 'pending' else p_outcome end,
    run_at = case when p_outcome = 'retry' then now() + make_interval(mins => least(60, 2 ^ attempts)::int) else run_at end,
    page_access_token_encrypted = case when p_outcome = 'retry' then page_access_token_encrypted end,
    token_key_fingerprint = case when p_outcome = 'retry' then token_key_fingerprint end,
    lease_expires_at = null,
    last_error_code = p_error_code,
    last_error_message = p_error_message
  where id = p_id;
end
$$;

/** --- Section: key rotation --- */

create or replace function public.instagram_rotate_key_batch(p_old_key text, p_new_key text, p_batch integer default 500)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_old text := instagram_private.check_key(p_old_key);
  v_new text := instagram_private.check_key(p_new_key);
  v_integrations integer;
  v_unsubscriptions integer;
  v_remaining bigint;
begin
  if v_old = v_new then
    raise exception 'same_key' using errcode = '22023', detail = 'The new key must differ from the old one.';
  end if;

  with batch as (
    select id from public.instagram_integrations
    where token_key_fingerprint = v_old
    order by id limit p_batch
    for update skip locked
  )
  update public.instagram_integrations i set
    user_access_token_encrypted = instagram_private.encrypt_token(
      instagram_private.decrypt_token(i.user_access_token_encrypted, v_old, p_old_key), p_new_key),
    page_access_token_encrypted = instagram_private.encrypt_token(
      instagram_private.decrypt_token(i.page_access_token_encrypted, v_old, p_old_key), p_new_key),
    token_key_fingerprint = v_new
  from batch where i.id = batch.id;
  get diagnostics v_integrations = row_count;

  with batch as (
    select id from public.instagram_page_unsubscriptions
    where token_key_fingerprint = v_old
    order by id limit greatest(p_batch - v_integrations, 0)
    for update skip locked
  )
  update public.instagram_page_unsubscriptions u set
    page_access_token_encrypted = instagram_private.encrypt_token(
      instagram_private.decrypt_token(u.page_access_token_encrypted, v_old, p_old_key), p_new_key),
    token_key_fingerprint = v_new
  from batch where u.id = batch.id;
  get diagnostics v_unsubscriptions = row_count;

  select (select count(*) from public.instagram_integrations where token_key_fingerprint = v_old)
       + (select count(*) from public.instagram_page_unsubscriptions where token_key_fingerprint = v_old)
  into v_remaining;

  return jsonb_build_object('rotated', v_integrations + v_unsubscriptions, 'remaining', v_remaining,
    'foreign', (select count(*) from public.instagram_integrations
                where token_key_fingerprint is not null and token_key_fingerprint not in (v_old, v_new)));
end
$$;
comment on function public.instagram_rotate_key_batch(text, text, integer) is
  'Re-encrypts up to p_batch rows from the old key to the new one; call until remaining = 0 (resumable).';

/** --- Section: grants --- */

revoke execute on function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text) from public, anon, authenticated;
revoke execute on function public.instagram_oauth_state_consume(text, text) from public, anon, authenticated;
revoke execute on function public.instagram_store_integrations(uuid, uuid, text, text, timestamptz, timestamptz, text[], jsonb) from public, anon, authenticated;
revoke execute on function public.instagram_integration_tokens(uuid, text) from public, anon, authenticated;
revoke execute on function public.instagram_integration_status_for_user(uuid, uuid) from public, anon, authenticated;
revoke execute on function public.instagram_disconnect_for_user(uuid, uuid) from public, anon, authenticated;
revoke execute on function public.instagram_unsubscribe_claim(text, integer) from public, anon, authenticated;
revoke execute on function public.instagram_unsubscribe_finish(uuid, text, text, text) from public, anon, authenticated;
revoke execute on function public.instagram_rotate_key_batch(text, text, integer) from public, anon, authenticated;
revoke execute on function instagram_private.integration_status_json(uuid) from public, anon;
revoke execute on function public.instagram_integration_status(uuid) from public, anon;
revoke execute on function public.instagram_disconnect(uuid) from public, anon;

grant execute on function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text) to service_role;
grant execute on function public.instagram_oauth_state_consume(text, text) to service_role;
grant execute on function public.instagram_store_integrations(uuid, uuid, text, text, timestamptz, timestamptz, text[], jsonb) to service_role;
grant execute on function public.instagram_integration_tokens(uuid, text) to service_role;
grant execute on function public.instagram_integration_status_for_user(uuid, uuid) to service_role;
grant execute on function public.instagram_disconnect_for_user(uuid, uuid) to service_role;
grant execute on function public.instagram_unsubscribe_claim(text, integer) to service_role;
grant execute on function public.instagram_unsubscribe_finish(uuid, text, text, text) to service_role;
grant execute on function public.instagram_rotate_key_batch(text, text, integer) to service_role;
grant execute on function instagram_private.integration_status_json(uuid) to authenticated, service_role;
grant execute on function public.instagram_integration_status(uuid) to authenticated, service_role;
grant execute on function public.instagram_disconnect(uuid) to authenticated, service_role;
