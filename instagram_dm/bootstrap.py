"""The composition root: builds the real adapters from settings, once, at start-up."""

from __future__ import annotations

import httpx

from instagram_dm.db.port import Database
from instagram_dm.settings import Settings


async def open_database(
    settings: Settings, *, max_size: int = 10, http: httpx.AsyncClient | None = None
) -> Database:
    """asyncpg when DATABASE_URL is set, else supabase-py over SUPABASE_URL + service role key
    (through `http` when given; the caller closes it)."""
    settings.require("database")
    if settings.database_url:
        from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase

        return await AsyncpgDatabase.connect(settings.database_url.reveal(), max_size=max_size)
    from instagram_dm.db.supabase_adapter import SupabaseDatabase

    return await SupabaseDatabase.connect(
        settings.supabase_url, settings.supabase_service_role_key.reveal(), http=http
    )
