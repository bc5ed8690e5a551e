-- Demo data with fixed ids (see DESIGN.md "Demo data"). Idempotent: safe to load repeatedly.
-- Users sign in locally with tokens minted by `instagram-dm dev-token` (HS256, the CLI's dev secret).

insert into auth.users (id, aud, role, email, email_confirmed_at, raw_app_meta_data, raw_user_meta_data)
values
  ('00000000-0000-4000-8000-0000000000b1', 'authenticated', 'authenticated', 'admin@demo-agency.test', now(),
   '{"provider": "email"}', '{"full_name": "Dana Admin"}'),
  ('00000000-0000-4000-8000-0000000000b2', 'authenticated', 'authenticated', 'agent@demo-agency.test', now(),
   '{"provider": "email"}', '{"full_name": "Alex Agent"}'),
  ('00000000-0000-4000-8000-0000000000b3', 'authenticated', 'authenticated', 'admin@starter-agency.test', now(),
   '{"provider": "email"}', '{"full_name": "Sam Starter"}')
on conflict (id) do nothing;

insert into public.imos (id, name) values
  ('00000000-0000-4000-8000-0000000000a1', 'Demo Agency'),
  ('00000000-0000-4000-8000-0000000000a2', 'Starter Agency')
on conflict (id) do nothing;

insert into public.imo_members (imo_id, user_id, role) values
  ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000b1', 'admin'),
  ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-0000000000b2', 'member'),
  ('00000000-0000-4000-8000-0000000000a2', '00000000-0000-4000-8000-0000000000b3', 'admin')
on conflict (imo_id, user_id) do nothing;

insert into public.imo_subscriptions (imo_id, plan_id, status)
select '00000000-0000-4000-8000-0000000000a1'::uuid, p.id, 'active' from public.subscription_plans p where p.name = 'Team'
on conflict (imo_id) do nothing;

insert into public.imo_subscriptions (imo_id, plan_id, status)
select '00000000-0000-4000-8000-0000000000a2'::uuid, p.id, 'active' from public.subscription_plans p where p.name = 'Starter'
on conflict (imo_id) do nothing;
