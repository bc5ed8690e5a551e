/**
 * Milestone 1 — enums for the Instagram DM integration. All carry the instagram_ prefix.
 */

create type public.instagram_connection_status as enum (
  'pending', 'connected', 'reauth_required', 'disconnected', 'error'
);
comment on type public.instagram_connection_status is
  'pending: connect started; connected: tokens valid; reauth_required: Meta revoked or expired the grant; '
  'disconnected: an admin disconnected; error: repeated unknown failures.';

create type public.instagram_message_type as enum (
  'text', 'image', 'video', 'audio', 'file', 'share', 'story_mention', 'story_reply', 'reaction', 'unsupported'
);

create type public.instagram_message_direction as enum ('inbound', 'outbound');

create type public.instagram_message_status as enum ('queued', 'sending', 'sent', 'delivered', 'read', 'failed');

create type public.instagram_scheduled_status as enum ('scheduled', 'sending', 'sent', 'failed', 'cancelled');

create type public.instagram_template_category as enum (
  'greeting', 'follow_up', 'recruiting', 'scheduling', 'other'
);

grant usage on type public.instagram_connection_status, public.instagram_message_type,
  public.instagram_message_direction, public.instagram_message_status, public.instagram_scheduled_status,
  public.instagram_template_category to authenticated, service_role;
