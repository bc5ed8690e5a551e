/**
 * Milestone 1 — scheduled messages, message templates and monthly usage per IMO.
 */

create table public.instagram_scheduled_messages (
  id uuid primary key default gen_random_uuid(),
  imo_id uuid not null,
  conversation_id uuid not null,
  created_by uuid references auth.users (id) on delete set null,
  body text not null check (length(body) > 0),
  attachments jsonb not null default '[]' check (jsonb_typeof(attachments) = 'array'),
  scheduled_for timestamptz not null,
  status public.instagram_scheduled_status not null default 'scheduled',
  attempts integer not null default 0 check (attempts >= 0),
  sent_message_id uuid references public.instagram_messages (id) on delete set null,
  last_error_code text,
  last_error_message text,
  sent_at timestamptz,
  cancelled_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint instagram_scheduled_messages_conversation_fkey foreign key (conversation_id, imo_id)
    references public.instagram_conversations (id, imo_id) on delete cascade
);
create index instagram_scheduled_messages_due_idx on public.instagram_scheduled_messages (scheduled_for)
  where status = 'scheduled';
create index instagram_scheduled_messages_conversation_idx on public.instagram_scheduled_messages (conversation_id);
create trigger instagram_scheduled_messages_set_updated_at before update on public.instagram_scheduled_messages
  for each row execute function instagram_private.set_updated_at();

create table public.instagram_message_templates (
  id uuid primary key default gen_random_uuid(),
  imo_id uuid not null references public.imos (id) on delete cascade,
  name text not null check (length(btrim(name)) > 0),
  body text not null check (length(body) > 0),
  variables text[] not null default '{}',
  category public.instagram_template_category not null default 'other',
  is_active boolean not null default true,
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint instagram_message_templates_imo_name_key unique (imo_id, name)
);
create trigger instagram_message_templates_set_updated_at before update on public.instagram_message_templates
  for each row execute function instagram_private.set_updated_at();

create table public.instagram_usage (
  imo_id uuid not null references public.imos (id) on delete cascade,
  month date not null check (month = date_trunc('month', month)::date),
  messages_sent integer not null default 0 check (messages_sent >= 0),
  messages_received integer not null default 0 check (messages_received >= 0),
  api_calls integer not null default 0 check (api_calls >= 0),
  updated_at timestamptz not null default now(),
  primary key (imo_id, month)
);
create trigger instagram_usage_set_updated_at before update on public.instagram_usage
  for each row execute function instagram_private.set_updated_at();

alter table public.instagram_scheduled_messages enable row level security;
alter table public.instagram_message_templates enable row level security;
alter table public.instagram_usage enable row level security;

revoke all on public.instagram_scheduled_messages, public.instagram_message_templates, public.instagram_usage
  from anon, authenticated;
grant select on public.instagram_scheduled_messages, public.instagram_message_templates, public.instagram_usage
  to authenticated;
grant insert, update, delete on public.instagram_message_templates to authenticated;
grant all on public.instagram_scheduled_messages, public.instagram_message_templates, public.instagram_usage
  to service_role;

create policy instagram_scheduled_messages_select_member on public.instagram_scheduled_messages
  for select to authenticated using (imo_id in (select instagram_private.user_imo_ids()));
create policy instagram_usage_select_member on public.instagram_usage
  for select to authenticated using (imo_id in (select instagram_private.user_imo_ids()));
create policy instagram_message_templates_select_member on public.instagram_message_templates
  for select to authenticated using (imo_id in (select instagram_private.user_imo_ids()));
create policy instagram_message_templates_write_admin on public.instagram_message_templates
  for all to authenticated
  using (instagram_private.is_imo_admin(imo_id))
  with check (instagram_private.is_imo_admin(imo_id));
