/**
 * Milestone 1 — instagram_integrations: one row per (IMO, Instagram business account), holding the
 * Page it is reached through and the encrypted tokens. Tokens are pgcrypto ciphertext (bytea) written
 * only by service-role functions; the key never enters the database, only its fingerprint.
 */

create table public.instagram_integrations (
  id uuid primary key default gen_random_uuid(),
  imo_id uuid not null references public.imos (id) on delete cascade,
  connected_by uuid references auth.users (id) on delete set null,
  facebook_page_id text not null check (facebook_page_id ~ '^[0-9]+$'),
  facebook_page_name text,
  instagram_business_account_id text not null check (instagram_business_account_id ~ '^[0-9]+$'),
  instagram_username text,
  instagram_profile_picture_url text,
  user_access_token_encrypted bytea,
  page_access_token_encrypted bytea,
  token_key_fingerprint text,
  token_expires_at timestamptz,
  data_access_expires_at timestamptz,
  granted_scopes text[] not null default '{}',
  status public.instagram_connection_status not null default 'pending',
  webhook_subscribed boolean not null default false,
  webhook_subscribed_at timestamptz,
  last_refreshed_at timestamptz,
  last_error_code text,
  last_error_message text,
  last_error_at timestamptz,
  failure_count integer not null default 0 check (failure_count >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint instagram_integrations_imo_account_key unique (imo_id, instagram_business_account_id),
  -- lets child tables carry imo_id for RLS and prove it matches their integration's
  constraint instagram_integrations_id_imo_key unique (id, imo_id),
  constraint instagram_integrations_tokens_when_connected check (
    status <> 'connected'
    or (user_access_token_encrypted is not null and page_access_token_encrypted is not null
        and token_key_fingerprint is not null)
  ),
  constraint instagram_integrations_fingerprint_with_tokens check (
    (user_access_token_encrypted is null and page_access_token_encrypted is null) or token_key_fingerprint is not null
  )
);
comment on table public.instagram_integrations is
  'Connected Instagram business accounts per IMO. Token columns are ciphertext, readable by service_role only.';

create index instagram_integrations_ig_account_idx on public.instagram_integrations (instagram_business_account_id);
create index instagram_integrations_page_idx on public.instagram_integrations (facebook_page_id);
create index instagram_integrations_token_expiry_idx on public.instagram_integrations (token_expires_at)
  where status = 'connected';

create trigger instagram_integrations_set_updated_at before update on public.instagram_integrations
  for each row execute function instagram_private.set_updated_at();

alter table public.instagram_integrations enable row level security;

revoke all on public.instagram_integrations from anon, authenticated;
-- Members read safe columns only; nobody but service_role reads token columns or writes.
grant select (
  id, imo_id, connected_by, facebook_page_id, facebook_page_name, instagram_business_account_id,
  instagram_username, instagram_profile_picture_url, token_expires_at, data_access_expires_at, granted_scopes,
  status, webhook_subscribed, webhook_subscribed_at, last_refreshed_at, last_error_code, last_error_message,
  last_error_at, failure_count, created_at, updated_at
) on public.instagram_integrations to authenticated;
grant all on public.instagram_integrations to service_role;

create policy instagram_integrations_select_member on public.instagram_integrations
  for select to authenticated
  using (imo_id in (select instagram_private.user_imo_ids()));
