/**
 * Message templates: admins keep them (per IMO, names unique), members read them and preview a rendering.
 *
 * A variable is `{{name}}` or `{{name|default}}`, `name` in lower case letters, digits and underscores
 * (starting with a letter or underscore), the default any text without braces or a pipe. Anything else
 * between braces (`{{ first_name }}`, `{{#each}}`, `{{a.b}}`) is not a variable and stays as it is.
 * Rendering is one pass over the body: each variable is replaced by its value as text, and a value is never
 * looked at again, so a value holding `{{...}}` is not expanded (no nested templates, no code, no lookups).
 */

create or replace function instagram_private.template_variables(p_body text)
returns text[]
language sql
immutable
set search_path = ''
as $$
  select coalesce(array_agg(distinct m[1] order by m[1]), '{}')
  from regexp_matches(coalesce(p_body, ''), '\{\{([a-z_][a-z0-9_]*)(?:\|([^{}|]*))?\}\}', 'g') as m
$$;
comment on function instagram_private.template_variables(text) is
  'The variable names a template body uses ({{name}} and {{name|default}}), sorted, each once.';
revoke all on function instagram_private.template_variables(text) from public, anon, authenticated;
grant execute on function instagram_private.template_variables(text) to service_role;

create or replace function instagram_private.templates_derive_variables()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  new.variables := instagram_private.template_variables(new.body);
  return new;
end
$$;
comment on function instagram_private.templates_derive_variables() is
  'Keeps instagram_message_templates.variables equal to the variables its body uses, however it is written.';
revoke all on function instagram_private.templates_derive_variables() from public, anon, authenticated;
grant execute on function instagram_private.templates_derive_variables() to service_role;
create trigger instagram_message_templates_derive_variables
  before insert or update of body, variables on public.instagram_message_templates
  for each row execute function instagram_private.templates_derive_variables();
update public.instagram_message_templates set body = body;

create or replace function instagram_private.template_render(p_body text, p_values jsonb)
returns jsonb
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_pattern constant text := '\{\{([a-z_][a-z0-9_]*)(?:\|([^{}|]*))?\}\}';
  v_parts text[] := regexp_split_to_array(p_body, v_pattern);
  v_text text := v_parts[1];
  v_missing text[] := '{}'::text[];
  v_value text;
  v_match text[];
  v_index integer := 1;
begin
  for v_match in select m from regexp_matches(p_body, v_pattern, 'g') as m loop
    v_index := v_index + 1;
    v_value := nullif(btrim(coalesce(p_values ->> v_match[1], '')), '');
    if v_value is null then
      v_value := v_match[2];  -- the template's default, when it gives one
    end if;
    if v_value is null and not v_match[1] = any (v_missing) then
      v_missing := v_missing || v_match[1];
    end if;
    v_text := v_text || coalesce(v_value, '') || v_parts[v_index];
  end loop;
  return jsonb_build_object('text', v_text, 'missing', to_jsonb(v_missing));
end
$$;
comment on function instagram_private.template_render(text, jsonb) is
  'One pass over a template body: each {{name}} becomes p_values->>name (else its default); returns the text and '
  'the names with neither. Values are never expanded again.';
revoke all on function instagram_private.template_render(text, jsonb) from public, anon, authenticated;
grant execute on function instagram_private.template_render(text, jsonb) to service_role;

create or replace function instagram_private.template_json(p_template public.instagram_message_templates)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object('id', p_template.id, 'imo_id', p_template.imo_id, 'name', p_template.name,
    'body', p_template.body, 'variables', to_jsonb(p_template.variables), 'category', p_template.category,
    'is_active', p_template.is_active, 'created_by', p_template.created_by, 'created_at', p_template.created_at,
    'updated_at', p_template.updated_at)
$$;
comment on function instagram_private.template_json(public.instagram_message_templates) is
  'A template as the template RPCs return it.';
revoke all on function instagram_private.template_json(public.instagram_message_templates)
  from public, anon, authenticated;
grant execute on function instagram_private.template_json(public.instagram_message_templates) to service_role;

create or replace function public.instagram_upsert_template(
  p_imo_id uuid, p_name text, p_body text, p_category text default 'other', p_id uuid default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_row public.instagram_message_templates;
begin
  if p_imo_id is null or p_imo_id not in (select instagram_private.user_imo_ids()) then
    raise exception 'not_found' using errcode = 'P0002', detail = 'No such IMO for this user.';
  end if;
  if not instagram_private.is_imo_admin(p_imo_id) then
    raise exception 'forbidden' using errcode = '42501', detail = 'Only the IMO''s admins manage templates.';
  end if;
  if p_name is null or length(btrim(p_name)) = 0 or length(p_name) > 100 then
    raise exception 'invalid_name' using errcode = '22023', detail = 'A template needs a name of 1 to 100 characters.';
  end if;
  if p_body is null or length(btrim(p_body)) = 0 or octet_length(p_body) > 1000 then
    raise exception 'invalid_body' using errcode = '22023',
      detail = 'A template body is 1 to 1,000 bytes (UTF-8), as an Instagram message.';
  end if;
  if p_category is null or p_category not in (select unnest(enum_range(null::public.instagram_template_category))::text) then
    raise exception 'invalid_category' using errcode = '22023',
      detail = 'Category is one of greeting, follow_up, recruiting, scheduling, other.';
  end if;
  begin
    if p_id is null then
      insert into public.instagram_message_templates (imo_id, name, body, category, created_by)
      values (p_imo_id, btrim(p_name), p_body, p_category::public.instagram_template_category, (select auth.uid()))
      returning * into v_row;
    else
      update public.instagram_message_templates set name = btrim(p_name), body = p_body,
        category = p_category::public.instagram_template_category
      where id = p_id and imo_id = p_imo_id
      returning * into v_row;
      if v_row.id is null then
        raise exception 'not_found' using errcode = 'P0002', detail = 'No such template in this IMO.';
      end if;
    end if;
  exception when unique_violation then
    raise exception 'name_taken' using errcode = '23505', detail = 'This IMO already has a template of that name.';
  end;
  return instagram_private.template_json(v_row);
end
$$;
comment on function public.instagram_upsert_template(uuid, text, text, text, uuid) is
  'IMO admins: creates a template (or updates p_id) with its variables derived from the body; refuses not_found, '
  'forbidden, invalid_name, invalid_body, invalid_category, name_taken.';
revoke execute on function public.instagram_upsert_template(uuid, text, text, text, uuid) from public, anon;
grant execute on function public.instagram_upsert_template(uuid, text, text, text, uuid) to authenticated, service_role;

create or replace function public.instagram_delete_template(p_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_imo uuid;
begin
  select t.imo_id into v_imo from public.instagram_message_templates t
  where t.id = p_id and t.imo_id in (select instagram_private.user_imo_ids());
  if v_imo is null then
    raise exception 'not_found' using errcode = 'P0002', detail = 'No such template for this user.';
  end if;
  if not instagram_private.is_imo_admin(v_imo) then
    raise exception 'forbidden' using errcode = '42501', detail = 'Only the IMO''s admins manage templates.';
  end if;
  delete from public.instagram_message_templates where id = p_id;
  return jsonb_build_object('id', p_id, 'deleted', true);
end
$$;
comment on function public.instagram_delete_template(uuid) is
  'IMO admins: deletes a template; not_found for anyone outside the IMO, forbidden for members.';
revoke execute on function public.instagram_delete_template(uuid) from public, anon;
grant execute on function public.instagram_delete_template(uuid) to authenticated, service_role;

create or replace function instagram_private.template_values(p_conversation_id uuid, p_variables jsonb)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  -- The caller's own values win over the contact's profile and lead data.
  select jsonb_strip_nulls(jsonb_build_object(
      'first_name', coalesce(l.first_name, split_part(c.participant_name, ' ', 1)),
      'last_name', coalesce(l.last_name, nullif(substr(c.participant_name, length(split_part(c.participant_name, ' ', 1)) + 2), '')),
      'full_name', coalesce(nullif(btrim(concat_ws(' ', l.first_name, l.last_name)), ''), c.participant_name),
      'username', c.participant_username,
      'agent_name', coalesce(u.raw_user_meta_data ->> 'full_name', u.raw_user_meta_data ->> 'name', split_part(u.email, '@', 1)),
      'agency_name', i.name))
    || coalesce(case when jsonb_typeof(p_variables) = 'object' then p_variables end, '{}'::jsonb)
  from public.instagram_conversations c
  join public.imos i on i.id = c.imo_id
  left join public.recruiting_leads l on l.id = c.recruiting_lead_id
  left join auth.users u on u.id = (select auth.uid())
  where c.id = p_conversation_id
$$;
comment on function instagram_private.template_values(uuid, jsonb) is
  'The values a template renders with in a conversation: the lead''s and profile''s names, the username, the '
  'calling agent''s and the agency''s names, then the caller''s p_variables on top.';
revoke all on function instagram_private.template_values(uuid, jsonb) from public, anon, authenticated;
grant execute on function instagram_private.template_values(uuid, jsonb) to service_role;

create or replace function public.instagram_render_template(
  p_template_id uuid, p_conversation_id uuid, p_variables jsonb default '{}'
)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_template public.instagram_message_templates;
  v_rendered jsonb;
begin
  select * into v_template from public.instagram_message_templates t
  where t.id = p_template_id and t.imo_id in (select instagram_private.user_imo_ids());
  if not found or not exists (select 1 from public.instagram_conversations c
                              where c.id = p_conversation_id and c.imo_id = v_template.imo_id) then
    raise exception 'not_found' using errcode = 'P0002', detail = 'No such template or conversation for this user.';
  end if;
  if p_variables is not null and jsonb_typeof(p_variables) <> 'object' then
    raise exception 'invalid_variables' using errcode = '22023', detail = 'Variables are a JSON object of names to text.';
  end if;
  v_rendered := instagram_private.template_render(v_template.body,
    instagram_private.template_values(p_conversation_id, p_variables));
  if jsonb_array_length(v_rendered -> 'missing') > 0 then
    raise exception 'missing_variables' using errcode = '22023',
      detail = 'No value for: ' || (select string_agg(x, ', ') from jsonb_array_elements_text(v_rendered -> 'missing') x) || '.';
  end if;
  if octet_length(v_rendered ->> 'text') > 1000 then
    raise exception 'message_too_long' using errcode = '22023', detail = 'The rendered message is over 1,000 bytes (UTF-8).';
  end if;
  return jsonb_build_object('text', v_rendered ->> 'text', 'variables', to_jsonb(v_template.variables));
end
$$;
comment on function public.instagram_render_template(uuid, uuid, jsonb) is
  'Members: exactly what the template would send in the conversation ({text, variables}); refuses not_found, '
  'invalid_variables, missing_variables (naming each), message_too_long.';
revoke execute on function public.instagram_render_template(uuid, uuid, jsonb) from public, anon;
grant execute on function public.instagram_render_template(uuid, uuid, jsonb) to authenticated, service_role;
