/**
 * instagram_private.imo_has_feature is security definer and executable by `authenticated` (the web app
 * may ask what its plan includes), but it answered for any IMO: a member of A could read B's plan
 * features. A signed-in caller now gets an answer only about IMOs they belong to (false otherwise);
 * service-side callers (no JWT claims: the connect RPCs, which check the user themselves) are unchanged.
 */

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
  and ((select auth.uid()) is null or p_imo_id in (select instagram_private.user_imo_ids()))
$$;
comment on function instagram_private.imo_has_feature(uuid, text) is
  'Does the IMO''s current plan include the feature? A signed-in caller learns it only for their own IMOs.';
revoke all on function instagram_private.imo_has_feature(uuid, text) from public, anon;
grant execute on function instagram_private.imo_has_feature(uuid, text) to authenticated, service_role;
