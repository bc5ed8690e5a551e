/**
 * Baseline: stands in for the CRM's own tables that the Instagram migrations reference — IMOs,
 * user <-> IMO membership with a role, subscription plans with features, an IMO's subscription,
 * recruiting leads and in-app notifications — plus our private schema of RLS helpers.
 *
 * Each CRM table is created, and given RLS, grants and policies, only when it does not exist yet:
 * where the CRM already has them, this migration changes nothing of theirs (no revokes, no RLS
 * switched on, no policies added); it only adds the private helper functions our policies call.
 */

create schema if not exists instagram_private;
revoke all on schema instagram_private from public;
grant usage on schema instagram_private to authenticated, service_role;

/** --- Section: updated_at --- */

create or replace function instagram_private.set_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;
comment on function instagram_private.set_updated_at() is 'Trigger: keeps updated_at current on every update.';

/** --- Section: CRM tables (only where missing) --- */

-- Which CRM tables this migration creates; only those get our RLS, grants and policies below.
create temporary table baseline_created (table_name text primary key) on commit drop;

do $baseline$
begin
  if to_regclass('public.imos') is null then
    insert into baseline_created values ('imos');
    create table public.imos (
      id uuid primary key default gen_random_uuid(),
      name text not null check (length(btrim(name)) > 0),
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create trigger imos_set_updated_at before update on public.imos
      for each row execute function instagram_private.set_updated_at();
  end if;

  if to_regclass('public.imo_members') is null then
    insert into baseline_created values ('imo_members');
    create table public.imo_members (
      imo_id uuid not null references public.imos (id) on delete cascade,
      user_id uuid not null references auth.users (id) on delete cascade,
      role text not null default 'member' check (role in ('owner', 'admin', 'member')),
      created_at timestamptz not null default now(),
      primary key (imo_id, user_id)
    );
    create index imo_members_user_id_idx on public.imo_members (user_id);
  end if;

  if to_regclass('public.subscription_plans') is null then
    insert into baseline_created values ('subscription_plans');
    create table public.subscription_plans (
      id uuid primary key default gen_random_uuid(),
      name text not null unique,
      price_cents integer not null default 0 check (price_cents >= 0),
      features text[] not null default '{}',
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create trigger subscription_plans_set_updated_at before update on public.subscription_plans
      for each row execute function instagram_private.set_updated_at();
    insert into public.subscription_plans (name, price_cents, features) values
      ('Starter', 0, array['messages', 'recruiting']),
      ('Team', 5000, array['messages', 'recruiting', 'team_inbox']);
  end if;

  if to_regclass('public.imo_subscriptions') is null then
    insert into baseline_created values ('imo_subscriptions');
    create table public.imo_subscriptions (
      imo_id uuid primary key references public.imos (id) on delete cascade,
      plan_id uuid not null references public.subscription_plans (id),
      status text not null default 'active' check (status in ('trialing', 'active', 'past_due', 'canceled')),
      current_period_end timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create index imo_subscriptions_plan_id_idx on public.imo_subscriptions (plan_id);
    create trigger imo_subscriptions_set_updated_at before update on public.imo_subscriptions
      for each row execute function instagram_private.set_updated_at();
  end if;

  if to_regclass('public.recruiting_leads') is null then
    insert into baseline_created values ('recruiting_leads');
    create table public.recruiting_leads (
      id uuid primary key default gen_random_uuid(),
      imo_id uuid not null references public.imos (id) on delete cascade,
      first_name text,
      last_name text,
      email text,
      phone text,
      status text not null default 'new',
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create index recruiting_leads_imo_id_idx on public.recruiting_leads (imo_id);
    create trigger recruiting_leads_set_updated_at before update on public.recruiting_leads
      for each row execute function instagram_private.set_updated_at();
  end if;

  if to_regclass('public.notifications') is null then
    insert into baseline_created values ('notifications');
    create table public.notifications (
      id uuid primary key default gen_random_uuid(),
      imo_id uuid not null references public.imos (id) on delete cascade,
      user_id uuid references auth.users (id) on delete cascade,
      kind text not null,
      title text not null,
      body text,
      data jsonb not null default '{}',
      read_at timestamptz,
      created_at timestamptz not null default now()
    );
    create index notifications_imo_id_created_at_idx on public.notifications (imo_id, created_at desc);
  end if;
end
$baseline$;

/** --- Section: RLS helpers (private schema, security definer so policies do not recurse) --- */

create or replace function instagram_private.user_imo_ids()
returns setof uuid
language sql stable
security definer
set search_path = ''
as $$
  select m.imo_id from public.imo_members m where m.user_id = (select auth.uid())
$$;
comment on function instagram_private.user_imo_ids() is 'IMOs the calling user belongs to (for RLS policies).';

create or replace function instagram_private.user_is_imo_admin(p_user_id uuid, p_imo_id uuid)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (
    select 1 from public.imo_members m
    where m.imo_id = p_imo_id and m.user_id = p_user_id and m.role in ('owner', 'admin')
  )
$$;
comment on function instagram_private.user_is_imo_admin(uuid, uuid) is
  'Is the user an owner or admin of the IMO? (service side: the caller vouches for the user id)';

create or replace function instagram_private.is_imo_admin(p_imo_id uuid)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select instagram_private.user_is_imo_admin((select auth.uid()), p_imo_id)
$$;
comment on function instagram_private.is_imo_admin(uuid) is 'Is the calling user an owner or admin of the IMO?';

create or replace function instagram_private.imo_has_feature(p_imo_id uuid, p_feature text)
returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (
    select 1
    from public.imo_subscriptions s
    join public.subscription_plans p on p.id = s.plan_id
    where s.imo_id = p_imo_id and s.status in ('trialing', 'active') and p_feature = any (p.features)
  )
$$;
comment on function instagram_private.imo_has_feature(uuid, text) is 'Does the IMO''s current plan include the feature?';

revoke all on function instagram_private.user_imo_ids() from public, anon;
revoke all on function instagram_private.user_is_imo_admin(uuid, uuid) from public, anon, authenticated;
revoke all on function instagram_private.is_imo_admin(uuid) from public, anon;
revoke all on function instagram_private.imo_has_feature(uuid, text) from public, anon;
grant execute on function instagram_private.user_imo_ids() to authenticated, service_role;
grant execute on function instagram_private.user_is_imo_admin(uuid, uuid) to service_role;
grant execute on function instagram_private.is_imo_admin(uuid) to authenticated, service_role;
grant execute on function instagram_private.imo_has_feature(uuid, text) to authenticated, service_role;

/** --- Section: RLS, grants and policies on the CRM tables this migration created --- */

do $security$
declare
  v_table text;
begin
  for v_table in select table_name from baseline_created loop
    execute format('alter table public.%I enable row level security', v_table);
    execute format('revoke all on public.%I from anon, authenticated', v_table);
    execute format('grant select on public.%I to authenticated', v_table);
    execute format('grant all on public.%I to service_role', v_table);
  end loop;

  if exists (select 1 from baseline_created where table_name = 'imos') then
    create policy imos_select_member on public.imos for select to authenticated
      using (id in (select instagram_private.user_imo_ids()));
  end if;
  if exists (select 1 from baseline_created where table_name = 'imo_members') then
    create policy imo_members_select_member on public.imo_members for select to authenticated
      using (imo_id in (select instagram_private.user_imo_ids()));
  end if;
  if exists (select 1 from baseline_created where table_name = 'subscription_plans') then
    create policy subscription_plans_select_all on public.subscription_plans for select to authenticated
      using (true);
  end if;
  if exists (select 1 from baseline_created where table_name = 'imo_subscriptions') then
    create policy imo_subscriptions_select_member on public.imo_subscriptions for select to authenticated
      using (imo_id in (select instagram_private.user_imo_ids()));
  end if;
  if exists (select 1 from baseline_created where table_name = 'recruiting_leads') then
    create policy recruiting_leads_select_member on public.recruiting_leads for select to authenticated
      using (imo_id in (select instagram_private.user_imo_ids()));
  end if;
  if exists (select 1 from baseline_created where table_name = 'notifications') then
    -- Recipients may mark a notification read, and change nothing else.
    grant update (read_at) on public.notifications to authenticated;
    create policy notifications_select_recipient on public.notifications for select to authenticated
      using (imo_id in (select instagram_private.user_imo_ids()) and (user_id is null or user_id = (select auth.uid())));
    create policy notifications_update_recipient on public.notifications for update to authenticated
      using (imo_id in (select instagram_private.user_imo_ids()) and (user_id is null or user_id = (select auth.uid())))
      with check (imo_id in (select instagram_private.user_imo_ids()) and (user_id is null or user_id = (select auth.uid())));
  end if;
end
$security$;
