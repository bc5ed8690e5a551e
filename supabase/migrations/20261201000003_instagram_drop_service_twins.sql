/**
 * Drop the service-only twins of the app-facing status and disconnect RPCs.
 *
 * instagram_integration_status_for_user(p_user_id, p_imo_id) and
 * instagram_disconnect_for_user(p_user_id, p_integration_id) existed only because the API could not
 * call the app-facing functions as the user it had authenticated. It now can: the Database port's
 * rpc_as_user runs a call exactly as PostgREST does (asyncpg: one transaction with
 * `set local role authenticated` and the verified JWT's claims in request.jwt.claims; supabase-py:
 * the user's JWT as the bearer), so RLS, the column grants and auth.uid() decide, in one place.
 *
 * Kept unchanged (the CRM web app calls them):
 *   public.instagram_integration_status(p_imo_id uuid)      security invoker, [] for non-members
 *   public.instagram_disconnect(p_integration_id uuid)      IMO owners/admins, via auth.uid()
 *   instagram_private.disconnect_integration(uuid, uuid)     what instagram_disconnect runs
 */

drop function if exists public.instagram_integration_status_for_user(uuid, uuid);
drop function if exists public.instagram_disconnect_for_user(uuid, uuid);
