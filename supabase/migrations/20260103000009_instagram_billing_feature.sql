/**
 * Milestone 1 — the instagram_messaging feature belongs to the Team tier ($50/mo) only.
 */

update public.subscription_plans
set features = array_append(features, 'instagram_messaging')
where name = 'Team' and not ('instagram_messaging' = any (features));

update public.subscription_plans
set features = array_remove(features, 'instagram_messaging')
where name <> 'Team' and 'instagram_messaging' = any (features);
