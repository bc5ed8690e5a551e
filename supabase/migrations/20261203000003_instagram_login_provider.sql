/**
 * A second way to connect: the Instagram API with Instagram Login (no Facebook Page needed).
 *
 * Each integration records the provider it was connected through (`facebook_login`, the default and
 * every row before this migration, or `instagram_login`), and everything after the connect reads it from
 * the row: webhook routing, sending, profile fetches, refresh, status. Configuration never decides.
 *
 *   instagram_integrations.provider      facebook_login rows still need their Page (a CHECK); instagram_login
 *                                        rows have none (facebook_page_id / _name null). The messaging
 *                                        token of an instagram_login row is its Instagram User token: it
 *                                        is stored in both token columns, so every reader of the
 *                                        "page" (messaging) token works unchanged, and a refresh renews both.
 *   instagram_oauth_states.provider      chosen at init, handed back by the single-use consume.
 *   instagram_webhook_events.provider    which app's secret signed the delivery; processing routes it
 *                                        only to integrations of that provider.
 *
 * The unique key stays (IMO, Instagram account): the same account connected through the other provider
 * in the same IMO is refused (`connected_through_other_provider`) unless that row is disconnected, in
 * which case the reconnect takes it over.
 *
 * Functions whose argument lists grow are dropped and created again (a second overload would make
 * named calls ambiguous); the rest are replaced with the same signature. New parameters default to the
 * old behaviour, so the previous API and worker still call them correctly: migrate first.
 */

/** --- Section: the provider type and columns --- */

create type public.instagram_provider as enum ('facebook_login', 'instagram_login');
comment on type public.instagram_provider is
  'How an integration was connected: facebook_login (Instagram API with Facebook Login, through a Page) or '
  'instagram_login (Instagram API with Instagram Login, no Page).';

alter table public.instagram_integrations
  add column provider public.instagram_provider not null default 'facebook_login',
  alter column facebook_page_id drop not null,
  add constraint instagram_integrations_page_for_facebook_login check (
    provider <> 'facebook_login' or facebook_page_id is not null);
comment on column public.instagram_integrations.provider is
  'The login flavour this account was connected through; webhook routing, sending, refresh and status read it.';
grant select (provider) on public.instagram_integrations to authenticated;

alter table public.instagram_oauth_states
  add column provider public.instagram_provider not null default 'facebook_login';
comment on column public.instagram_oauth_states.provider is
  'The provider the connect was started with; the callback exchanges the code with that provider.';

alter table public.instagram_webhook_events
  add column provider public.instagram_provider not null default 'facebook_login';
comment on column public.instagram_webhook_events.provider is
  'Which app''s secret signed this delivery (facebook_login: the Meta app; instagram_login: the Instagram app).';

/** --- Section: create a state (with its provider) --- */

drop function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text, text, text);
create function public.instagram_oauth_state_create(
  p_state_hash text,
  p_user_id uuid,
  p_imo_id uuid,
  p_return_to text,
  p_ttl_seconds integer default 600,
  p_browser_binding_hash text default null,
  p_code_verifier text default null,
  p_key text default null,
  p_provider public.instagram_provider default 'facebook_login'
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_oauth_states;
  v_fingerprint text;
begin
  perform instagram_private.assert_can_connect(p_user_id, p_imo_id);
  if p_ttl_seconds not between 60 and 3600 then
    raise exception 'invalid_ttl' using errcode = '22023', detail = 'State lifetime must be 1 to 60 minutes.';
  end if;
  if p_code_verifier is not null then
    if p_code_verifier !~ '^[A-Za-z0-9._~-]{43,128}$' then
      raise exception 'invalid_code_verifier' using errcode = '22023',
        detail = 'A PKCE code_verifier is 43 to 128 characters of A-Z, a-z, 0-9, "-", ".", "_" and "~".';
    end if;
    v_fingerprint := instagram_private.check_key(p_key);
  end if;

  -- Expired states are useless; sweep a few on the way (the table stays tiny without a cron job).
  delete from public.instagram_oauth_states
  where id in (select id from public.instagram_oauth_states where expires_at < now() - interval '1 day' limit 100);

  insert into public.instagram_oauth_states (
    state_hash, user_id, imo_id, return_to, expires_at, browser_binding_hash,
    code_verifier_encrypted, code_verifier_key_fingerprint, provider)
  values (p_state_hash, p_user_id, p_imo_id, p_return_to, now() + make_interval(secs => p_ttl_seconds),
          p_browser_binding_hash, instagram_private.encrypt_token(p_code_verifier, p_key), v_fingerprint,
          coalesce(p_provider, 'facebook_login'))
  returning * into v_row;

  return jsonb_build_object('id', v_row.id, 'expires_at', v_row.expires_at);
end
$$;
comment on function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text, text, text, public.instagram_provider) is
  'Checks the user is an admin of an IMO whose plan has instagram_messaging, then stores a hashed OAuth state '
  'for p_provider and, when given, its PKCE code_verifier encrypted with p_key.';
revoke execute on function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text, text, text, public.instagram_provider)
  from public, anon, authenticated;
grant execute on function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text, text, text, public.instagram_provider)
  to service_role;

/** --- Section: consume a state (and hand back its provider) --- */

create or replace function public.instagram_oauth_state_consume(
  p_state_hash text,
  p_browser_binding_hash text default null,
  p_key text default null,
  p_previous_key text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_oauth_states;
  v_verifier text;
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
    if v_row.code_verifier_encrypted is not null then
      if p_key is null
         or (v_row.code_verifier_key_fingerprint is distinct from instagram_private.key_fingerprint(p_key)
             and (p_previous_key is null
                  or v_row.code_verifier_key_fingerprint is distinct from instagram_private.key_fingerprint(p_previous_key))) then
        -- The dialog got a challenge whose verifier no key at hand opens: the exchange could not succeed.
        return jsonb_build_object('status', 'key_mismatch', 'return_to', v_row.return_to);
      end if;
      v_verifier := instagram_private.decrypt_token_any(
        v_row.code_verifier_encrypted, v_row.code_verifier_key_fingerprint, p_key, p_previous_key);
    end if;
    return jsonb_build_object(
      'status', 'ok', 'user_id', v_row.user_id, 'imo_id', v_row.imo_id, 'return_to', v_row.return_to,
      'code_verifier', v_verifier, 'provider', v_row.provider);
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
comment on function public.instagram_oauth_state_consume(text, text, text, text) is
  'Consumes a state exactly once; status ok | used | expired | unknown | foreign_browser | not_allowed | '
  'key_mismatch (return_to when known); an ok state also carries its provider and decrypted PKCE '
  'code_verifier (null without).';

/** --- Section: storing integrations (with their provider) --- */

drop function public.instagram_store_integrations(uuid, uuid, text, text, timestamptz, timestamptz, text[], jsonb);
create function public.instagram_store_integrations(
  p_imo_id uuid,
  p_user_id uuid,
  p_key text,
  p_user_token text,
  p_token_expires_at timestamptz,
  p_data_access_expires_at timestamptz,
  p_scopes text[],
  p_accounts jsonb,
  p_provider public.instagram_provider default 'facebook_login'
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_fingerprint text := instagram_private.check_key(p_key);
  v_provider public.instagram_provider := coalesce(p_provider, 'facebook_login');
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
      raise exception 'missing_token' using errcode = '22023', detail = 'Each account needs a messaging access token.';
    end if;
    if v_provider = 'facebook_login' and coalesce(v_account ->> 'page_id', '') = '' then
      raise exception 'missing_page' using errcode = '22023', detail = 'A Facebook Login account needs its Page.';
    end if;
    -- One Instagram account, one way in per IMO: a live row of the other provider is never taken over
    -- (its webhooks, tokens and sends belong to the other app); a disconnected one may be.
    perform 1 from public.instagram_integrations i
    where i.imo_id = p_imo_id and i.instagram_business_account_id = v_account ->> 'ig_account_id'
      and i.provider <> v_provider and i.status <> 'disconnected'
    for update;
    if found then
      raise exception 'connected_through_other_provider' using errcode = '23505',
        detail = 'This Instagram account is already connected to this agency through the other login; '
                 'disconnect it first.';
    end if;
    insert into public.instagram_integrations as i (
      imo_id, connected_by, provider, facebook_page_id, facebook_page_name, instagram_business_account_id,
      instagram_username, instagram_profile_picture_url, user_access_token_encrypted, page_access_token_encrypted,
      token_key_fingerprint, token_expires_at, data_access_expires_at, granted_scopes, status,
      webhook_subscribed, webhook_subscribed_at, last_refreshed_at, last_error_code, last_error_message,
      last_error_at, failure_count
    ) values (
      p_imo_id, p_user_id, v_provider, nullif(v_account ->> 'page_id', ''), v_account ->> 'page_name',
      v_account ->> 'ig_account_id',
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
      provider = excluded.provider,
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
      'provider', v_provider,
      'instagram_business_account_id', v_account ->> 'ig_account_id',
      'facebook_page_id', nullif(v_account ->> 'page_id', ''),
      'webhook_subscribed', coalesce((v_account ->> 'webhook_subscribed')::boolean, false));
  end loop;

  return v_result;
end
$$;
comment on function public.instagram_store_integrations(uuid, uuid, text, text, timestamptz, timestamptz, text[], jsonb, public.instagram_provider) is
  'Creates or updates (reconnect) one integration per linked Instagram account of p_provider, tokens encrypted, '
  'in one transaction; refuses connected_through_other_provider for an account live through the other one.';
revoke execute on function public.instagram_store_integrations(uuid, uuid, text, text, timestamptz, timestamptz, text[], jsonb, public.instagram_provider)
  from public, anon, authenticated;
grant execute on function public.instagram_store_integrations(uuid, uuid, text, text, timestamptz, timestamptz, text[], jsonb, public.instagram_provider)
  to service_role;

/** --- Section: tokens and status carry the provider --- */

create or replace function public.instagram_integration_tokens(
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
    'provider', v_row.provider,
    'facebook_page_id', v_row.facebook_page_id,
    'instagram_business_account_id', v_row.instagram_business_account_id,
    'token_expires_at', v_row.token_expires_at,
    'data_access_expires_at', v_row.data_access_expires_at,
    -- when the stored token was last issued (connect or refresh): Instagram Login refreshes only after 24 h
    'token_issued_at', v_row.last_refreshed_at,
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
  'Decrypted tokens of one integration (current key, or the previous one during a rotation) with its provider, '
  'for the worker only.';

create or replace function instagram_private.integration_status_json(p_imo_id uuid)
returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
    'id', i.id,
    'imo_id', i.imo_id,
    'status', i.status,
    'provider', i.provider,
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
comment on function instagram_private.integration_status_json(uuid) is
  'The IMO''s integrations as the status RPC shows them: safe fields only, with the provider.';

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
    'provider', v_integration.provider,
    'account_id', v_integration.instagram_business_account_id,
    'page_token', instagram_private.decrypt_token_any(
      v_integration.page_access_token_encrypted, v_integration.token_key_fingerprint, p_key, p_previous_key),
    'token_version', encode(extensions.digest(coalesce(v_integration.page_access_token_encrypted, ''::bytea),
      'sha256'), 'hex'));
end
$$;
comment on function public.instagram_send_token_v1(uuid, text, text, text) is
  'The decrypted messaging token of an integration p_worker holds a send for, its provider and Instagram '
  'account, and its version (cache key).';

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
  return jsonb_build_object('provider', v_integration.provider, 'page_token', instagram_private.decrypt_token_any(
    v_integration.page_access_token_encrypted, v_integration.token_key_fingerprint, p_key, p_previous_key));
end
$$;
comment on function public.instagram_profile_token_v1(bigint, text, text, text) is
  'For a profile fetch p_worker holds: its integration''s provider and decrypted messaging token (null when none).';

/** --- Section: disconnect (a Page unsubscribe only for Facebook Login) --- */

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

  -- An Instagram Login account has no Page to unsubscribe; with its token wiped, its deliveries become
  -- unroutable (kept, and routed again should it reconnect).
  if v_row.provider = 'facebook_login' and v_row.page_access_token_encrypted is not null
     and v_row.webhook_subscribed then
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
comment on function instagram_private.disconnect_integration(uuid, uuid) is
  'What instagram_disconnect runs: wipes the tokens, marks disconnected, queues the Page unsubscribe '
  '(Facebook Login only).';

/** --- Section: deliveries remember which app signed them --- */

create function public.instagram_webhook_ingest_v2(
  p_bodies text[], p_provider public.instagram_provider default 'facebook_login'
)
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
  insert into public.instagram_webhook_events (body, body_sha256, provider)
  select b.body, extensions.digest(b.body, 'sha256'), coalesce(p_provider, 'facebook_login')
  from (select decode(t, 'base64') as body from unnest(p_bodies) as t) b
  on conflict (body_sha256) do nothing;
  get diagnostics v_stored = row_count;
  return jsonb_build_object('stored', v_stored, 'duplicates', cardinality(p_bodies) - v_stored);
end
$$;
comment on function public.instagram_webhook_ingest_v2(text[], public.instagram_provider) is
  'Stores deliveries signed by p_provider''s app (base64 of the exact bytes), one row per distinct body, in one '
  'statement; returns stored and duplicates counts. instagram_webhook_ingest_v1 stays (facebook_login).';
revoke execute on function public.instagram_webhook_ingest_v2(text[], public.instagram_provider)
  from public, anon, authenticated;
grant execute on function public.instagram_webhook_ingest_v2(text[], public.instagram_provider) to service_role;

/** --- Section: processing routes a delivery to integrations of its own provider --- */

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
    -- The app whose secret signed the delivery (stored with it) picks the integrations it may reach.
    select (d ->> 'id')::bigint as event_id, d -> 'doc' as doc,
      coalesce((select e.provider from public.instagram_webhook_events e where e.id = (d ->> 'id')::bigint),
               'facebook_login') as provider
    from jsonb_array_elements(p_docs) d
  ), entries as (
    select docs.event_id, docs.provider, e.ord as entry_ord, e.value as entry,
      -- An account id is 1 to 128 characters (Meta's are 17 digits): anything else makes its items invalid,
      -- never an unroutable row whose account could not even be indexed.
      case when jsonb_typeof(e.value -> 'id') in ('string', 'number') and length(e.value ->> 'id') between 1 and 128
        then e.value ->> 'id' end as account_id
    from docs
    cross join lateral jsonb_array_elements(docs.doc -> 'entry') with ordinality e(value, ord)
  ), raw_items as (
    select en.event_id, en.provider, en.entry_ord, en.account_id, en.entry, x.src, x.ord, x.item, x.field
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
    select distinct on (i.instagram_business_account_id, i.provider)
      i.instagram_business_account_id as account_id, i.provider, i.id as integration_id, i.imo_id
    from public.instagram_integrations i
    where i.instagram_business_account_id in (select r.account_id from raw_items r)
      and i.status in ('connected', 'reauth_required', 'error')
    order by i.instagram_business_account_id, i.provider, (i.status = 'connected') desc, i.updated_at desc
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
    from raw_items r left join routes rt on rt.account_id = r.account_id and rt.provider = r.provider
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
