"""The composition root: builds the real adapters from settings, once, at start-up."""

from __future__ import annotations

import logging

import httpx

from instagram_dm import errors
from instagram_dm.db.port import Database
from instagram_dm.media.storage import MediaStore, open_store
from instagram_dm.settings import Settings

log = logging.getLogger(__name__)


async def open_database(
    settings: Settings,
    *,
    max_size: int = 10,
    http: httpx.AsyncClient | None = None,
    lazy_when_down: bool = False,
) -> Database:
    """asyncpg when DATABASE_URL is set, else supabase-py over SUPABASE_URL + service role key
    (through `http` when given; the caller closes it). Every call is bounded by
    INSTAGRAM_DB_TIMEOUT_SECONDS.

    `lazy_when_down`: if the database cannot be reached now, log ``database.unavailable_at_start`` and
    return a pool that connects on first use (each call until then is DatabaseUnavailableError) instead
    of raising; the API starts this way and its readyz says 503 until the database answers.
    """
    settings.require("database")
    timeout = settings.db_timeout_seconds
    if settings.database_url:
        from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase

        dsn = settings.database_url.reveal()
        try:
            return await AsyncpgDatabase.connect(dsn, max_size=max_size, timeout=timeout)
        except errors.DatabaseUnavailableError as exc:
            if not lazy_when_down:
                raise
            log.warning("database.unavailable_at_start", extra={"error_code": exc.code, "error": exc.message})
            return await AsyncpgDatabase.connect(dsn, min_size=0, max_size=max_size, timeout=timeout)
    from instagram_dm.db.supabase_adapter import SupabaseDatabase

    return await SupabaseDatabase.connect(
        settings.supabase_url, settings.supabase_service_role_key.reveal(), http=http, timeout=timeout
    )


def open_media_store(settings: Settings, http: httpx.AsyncClient) -> MediaStore:
    """The media store of the settings: the folder INSTAGRAM_MEDIA_DIR, or the Supabase Storage bucket."""
    return open_store(
        kind=settings.media_storage_kind,
        media_dir=settings.media_dir,
        supabase_url=settings.supabase_url,
        service_role_key=settings.supabase_service_role_key.reveal(),
        http=http,
    )
