/**
 * Milestone 1 — recruiting_leads.lead_source (with 'instagram') and the link from a lead to its
 * Instagram conversation. Works whether the CRM already has lead_source as text or as an enum.
 */

do $lead_source$
declare
  v_type regtype;
begin
  select a.atttypid::regtype into v_type
  from pg_attribute a
  where a.attrelid = 'public.recruiting_leads'::regclass and a.attname = 'lead_source' and not a.attisdropped;

  if v_type is null then
    alter table public.recruiting_leads add column lead_source text not null default 'manual'
      constraint recruiting_leads_lead_source_check check (lead_source in (
        'manual', 'referral', 'website', 'import', 'facebook', 'linkedin', 'instagram', 'other'));
  elsif exists (select 1 from pg_type t where t.oid = v_type and t.typtype = 'e') then
    execute format('alter type %s add value if not exists %L', v_type, 'instagram');
  end if;
end
$lead_source$;

alter table public.recruiting_leads
  add column if not exists instagram_conversation_id uuid
    references public.instagram_conversations (id) on delete set null;

create index if not exists recruiting_leads_lead_source_idx on public.recruiting_leads (imo_id, lead_source);
create unique index if not exists recruiting_leads_instagram_conversation_key
  on public.recruiting_leads (instagram_conversation_id) where instagram_conversation_id is not null;
