/**
 * Milestone 1 — conversations (one per integration and customer IGSID) and their messages.
 * imo_id is carried on each row for RLS; composite foreign keys prove it matches the parent's.
 */

create table public.instagram_conversations (
  id uuid primary key default gen_random_uuid(),
  integration_id uuid not null,
  imo_id uuid not null,
  participant_igsid text not null check (length(participant_igsid) > 0),
  participant_username text,
  participant_name text,
  participant_profile_picture_url text,
  last_message_at timestamptz,
  last_message_preview text,
  last_inbound_at timestamptz,
  unread_count integer not null default 0 check (unread_count >= 0),
  recruiting_lead_id uuid references public.recruiting_leads (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint instagram_conversations_integration_fkey foreign key (integration_id, imo_id)
    references public.instagram_integrations (id, imo_id) on delete cascade,
  constraint instagram_conversations_participant_key unique (integration_id, participant_igsid),
  constraint instagram_conversations_id_imo_key unique (id, imo_id)
);
comment on column public.instagram_conversations.last_inbound_at is
  'The customer''s last message; Meta allows replies for 24 hours after it.';

create index instagram_conversations_imo_recent_idx on public.instagram_conversations (imo_id, last_message_at desc);
create index instagram_conversations_lead_idx on public.instagram_conversations (recruiting_lead_id)
  where recruiting_lead_id is not null;

create trigger instagram_conversations_set_updated_at before update on public.instagram_conversations
  for each row execute function instagram_private.set_updated_at();

create table public.instagram_messages (
  id uuid primary key default gen_random_uuid(),
  conversation_id uuid not null,
  imo_id uuid not null,
  meta_message_id text,
  direction public.instagram_message_direction not null,
  message_type public.instagram_message_type not null default 'text',
  text text,
  attachments jsonb not null default '[]' check (jsonb_typeof(attachments) = 'array'),
  status public.instagram_message_status not null default 'sent',
  sent_by_user_id uuid references auth.users (id) on delete set null,
  error_code text,
  error_message text,
  sent_at timestamptz not null default now(),
  delivered_at timestamptz,
  read_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint instagram_messages_conversation_fkey foreign key (conversation_id, imo_id)
    references public.instagram_conversations (id, imo_id) on delete cascade,
  constraint instagram_messages_meta_message_id_key unique (meta_message_id),
  constraint instagram_messages_inbound_has_mid check (direction = 'outbound' or meta_message_id is not null),
  constraint instagram_messages_sender_is_outbound check (sent_by_user_id is null or direction = 'outbound')
);
comment on column public.instagram_messages.meta_message_id is
  'Meta''s mid; unique, so webhook retries and echoes never duplicate a message.';

create index instagram_messages_conversation_time_idx on public.instagram_messages (conversation_id, sent_at desc);

create trigger instagram_messages_set_updated_at before update on public.instagram_messages
  for each row execute function instagram_private.set_updated_at();

alter table public.instagram_conversations enable row level security;
alter table public.instagram_messages enable row level security;

revoke all on public.instagram_conversations, public.instagram_messages from anon, authenticated;
grant select on public.instagram_conversations, public.instagram_messages to authenticated;
grant all on public.instagram_conversations, public.instagram_messages to service_role;

create policy instagram_conversations_select_member on public.instagram_conversations
  for select to authenticated using (imo_id in (select instagram_private.user_imo_ids()));
create policy instagram_messages_select_member on public.instagram_messages
  for select to authenticated using (imo_id in (select instagram_private.user_imo_ids()));
