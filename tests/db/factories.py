"""Arrange rows in every table for one IMO, as a superuser (RLS tests read them back as users)."""

from __future__ import annotations

import uuid

import asyncpg


async def integration(
    conn: asyncpg.Connection,
    imo_id: str,
    *,
    ig_account_id: str | None = None,
    page_id: str | None = None,
    status: str = "pending",
) -> str:
    ig = ig_account_id or str(17841400000000000 + uuid.uuid4().int % 10**9)
    page = page_id or str(100000000000000 + uuid.uuid4().int % 10**9)
    row_id: str = await conn.fetchval(
        """insert into public.instagram_integrations
             (imo_id, facebook_page_id, facebook_page_name, instagram_business_account_id, instagram_username,
              status, user_access_token_encrypted, page_access_token_encrypted, token_key_fingerprint)
           values ($1, $2, 'Page', $3, 'someone', $4::public.instagram_connection_status,
                   '\\xdeadbeef', '\\xfeedface', 'fp')
           returning id::text""",
        imo_id,
        page,
        ig,
        status,
    )
    return row_id


async def tenant_rows(conn: asyncpg.Connection, imo_id: str) -> dict[str, str]:
    """One row in each IMO-scoped table; returns their ids by table."""
    integration_id = await integration(conn, imo_id)
    lead_id = await conn.fetchval(
        "insert into public.recruiting_leads (imo_id, first_name) values ($1, 'Lee') returning id::text",
        imo_id,
    )
    conversation_id = await conn.fetchval(
        """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid, recruiting_lead_id)
           values ($1, $2, $3, $4) returning id::text""",
        integration_id,
        imo_id,
        str(uuid.uuid4().int % 10**15),
        lead_id,
    )
    message_id = await conn.fetchval(
        """insert into public.instagram_messages (conversation_id, imo_id, meta_message_id, direction, text)
           values ($1, $2, $3, 'inbound', 'hello') returning id::text""",
        conversation_id,
        imo_id,
        f"mid.{uuid.uuid4().hex}",
    )
    scheduled_id = await conn.fetchval(
        """insert into public.instagram_scheduled_messages (imo_id, conversation_id, body, scheduled_for)
           values ($1, $2, 'later', now() + interval '1 day') returning id::text""",
        imo_id,
        conversation_id,
    )
    template_id = await conn.fetchval(
        """insert into public.instagram_message_templates (imo_id, name, body)
           values ($1, 'Welcome', 'Hi {{first_name}}') returning id::text""",
        imo_id,
    )
    await conn.execute(
        "insert into public.instagram_usage (imo_id, month, messages_sent) values ($1, date_trunc('month', now()), 3)",
        imo_id,
    )
    notification_id = await conn.fetchval(
        "insert into public.notifications (imo_id, kind, title) values ($1, 'test', 'Hello') returning id::text",
        imo_id,
    )
    return {
        "instagram_integrations": integration_id,
        "recruiting_leads": lead_id,
        "instagram_conversations": conversation_id,
        "instagram_messages": message_id,
        "instagram_scheduled_messages": scheduled_id,
        "instagram_message_templates": template_id,
        "notifications": notification_id,
    }
