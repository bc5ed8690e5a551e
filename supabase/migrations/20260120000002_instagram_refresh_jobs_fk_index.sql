/**
 * Milestone 3 — index the refresh jobs' foreign key. Deleting an integration (or an IMO, by cascade)
 * looks up its jobs by (integration_id, imo_id); the live-job unique index is partial and the imo index
 * leads with imo_id, so without this each cascade scanned the IMO's jobs (quadratic on a big delete).
 * The integration index also serves "jobs of one integration"; members' RLS reads stay on imo_id.
 */

drop index if exists public.instagram_refresh_jobs_imo_idx;
create index if not exists instagram_refresh_jobs_integration_idx
  on public.instagram_refresh_jobs (integration_id, created_at desc);
