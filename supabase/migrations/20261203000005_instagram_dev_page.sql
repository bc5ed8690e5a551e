/**
 * Two reads the Messages page needs and had no RPC for (the CRM could read its own tables, but every
 * client of ours goes through RPCs): what the signed-in user may do in an IMO (role, plan, whether the plan
 * has instagram_messaging), and the IMO's templates to insert.
 */

/** --- Section: the caller's access to Instagram messaging in an IMO --- */

create or replace function public.instagram_messaging_access(p_imo_id uuid)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_access jsonb;
begin
  select jsonb_build_object(
    'imo_id', i.id,
    'imo_name', i.name,
    'role', m.role,
    'is_admin', m.role in ('owner', 'admin'),
    'plan', p.name,
    'instagram_messaging', instagram_private.imo_has_feature(i.id, 'instagram_messaging'))
  into v_access
  from public.imo_members m
  join public.imos i on i.id = m.imo_id
  left join public.imo_subscriptions s on s.imo_id = m.imo_id and s.status in ('trialing', 'active')
  left join public.subscription_plans p on p.id = s.plan_id
  where m.imo_id = p_imo_id and m.user_id = (select auth.uid());
  if v_access is null then
    raise exception 'not_found' using errcode = 'P0002', detail = 'No such IMO for this user.';
  end if;
  return v_access;
end
$$;
comment on function public.instagram_messaging_access(uuid) is
$c$What the caller may do with Instagram messaging in the IMO: what the Messages page shows (the inbox; connect and disconnect for admins; or the upgrade message).
Caller: members of the IMO
Returns: {imo_id, imo_name, role, is_admin, plan, instagram_messaging}
Refuses: not_found: the caller is not a member of the IMO$c$;
revoke execute on function public.instagram_messaging_access(uuid) from public, anon;
grant execute on function public.instagram_messaging_access(uuid) to authenticated, service_role;

/** --- Section: the IMO's templates --- */

create or replace function public.instagram_list_templates(p_imo_id uuid)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object('id', t.id, 'imo_id', t.imo_id, 'name', t.name, 'body', t.body,
      'variables', to_jsonb(t.variables), 'category', t.category, 'is_active', t.is_active,
      'created_by', t.created_by, 'created_at', t.created_at, 'updated_at', t.updated_at)
    order by t.name, t.id), '[]'::jsonb)
  from public.instagram_message_templates t
  where t.imo_id = p_imo_id and t.is_active
$$;
comment on function public.instagram_list_templates(uuid) is
$c$The IMO's active templates by name.
Caller: members of the IMO (security invoker: RLS decides)
Returns: array of the template objects of instagram_upsert_template
Refuses: none (anyone else gets an empty array)$c$;
revoke execute on function public.instagram_list_templates(uuid) from public, anon;
grant execute on function public.instagram_list_templates(uuid) to authenticated, service_role;
