/**
 * PKCE (RFC 7636, S256) on the connect flow.
 *
 * The hole it closes: a victim's unused authorization code, pasted into an attacker's own callback
 * (the attacker's state and binding cookie), was redeemed by our server and connected the victim's
 * Instagram account to the attacker's IMO. Now init makes a code_verifier per state, sends only its
 * S256 challenge to Meta's dialog and keeps the verifier here, encrypted like the tokens (pgcrypto, the
 * key a bound parameter of the call, never stored; only its fingerprint beside the ciphertext). The
 * callback's consume hands the verifier back with the state, and the code exchange sends it: a code
 * issued for another flow's challenge is refused by Meta.
 *
 * Rows made before this migration (or with INSTAGRAM_OAUTH_PKCE=false) have no verifier: consume returns
 * code_verifier null and the exchange goes without one, as before.
 *
 * Both RPCs gain optional trailing parameters, so they are dropped and created again (a second overload
 * would make named calls ambiguous); their comment, revoke and grant sit beside them as before. An API
 * of the previous release still calls them correctly (the new parameters default to null): migrate first.
 *
 * A state whose verifier was encrypted with a key the callback does not pass (the key was changed and
 * the previous one dropped within the state's ten minutes) is spent and refused with status
 * key_mismatch; `rotate-key` leaves these short-lived rows alone.
 */

/** --- Section: the verifier on the state row --- */

alter table public.instagram_oauth_states
  add column code_verifier_encrypted bytea,
  add column code_verifier_key_fingerprint text,
  add constraint instagram_oauth_states_verifier_with_fingerprint check (
    (code_verifier_encrypted is null) = (code_verifier_key_fingerprint is null)
  );
comment on column public.instagram_oauth_states.code_verifier_encrypted is
  'The PKCE code_verifier of this connect, pgp_sym_encrypt-ed with INSTAGRAM_TOKEN_ENCRYPTION_KEY; only its '
  'S256 challenge ever leaves the server before the code exchange. Null: no PKCE (setting off, or an older row).';
comment on column public.instagram_oauth_states.code_verifier_key_fingerprint is
  'instagram_private.key_fingerprint of the key code_verifier_encrypted was written with.';

/** --- Section: create a state (with its verifier) --- */

drop function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text);
create function public.instagram_oauth_state_create(
  p_state_hash text,
  p_user_id uuid,
  p_imo_id uuid,
  p_return_to text,
  p_ttl_seconds integer default 600,
  p_browser_binding_hash text default null,
  p_code_verifier text default null,
  p_key text default null
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
    code_verifier_encrypted, code_verifier_key_fingerprint)
  values (p_state_hash, p_user_id, p_imo_id, p_return_to, now() + make_interval(secs => p_ttl_seconds),
          p_browser_binding_hash, instagram_private.encrypt_token(p_code_verifier, p_key), v_fingerprint)
  returning * into v_row;

  return jsonb_build_object('id', v_row.id, 'expires_at', v_row.expires_at);
end
$$;
comment on function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text, text, text) is
  'Checks the user is an admin of an IMO whose plan has instagram_messaging, then stores a hashed OAuth state '
  'and, when given, its PKCE code_verifier encrypted with p_key.';
revoke execute on function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text, text, text)
  from public, anon, authenticated;
grant execute on function public.instagram_oauth_state_create(text, uuid, uuid, text, integer, text, text, text)
  to service_role;

/** --- Section: consume a state (and hand back its verifier) --- */

drop function public.instagram_oauth_state_consume(text, text);
create function public.instagram_oauth_state_consume(
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
      'code_verifier', v_verifier);
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
  'key_mismatch (return_to when known); an ok state also carries its decrypted PKCE code_verifier (null without).';
revoke execute on function public.instagram_oauth_state_consume(text, text, text, text)
  from public, anon, authenticated;
grant execute on function public.instagram_oauth_state_consume(text, text, text, text) to service_role;
