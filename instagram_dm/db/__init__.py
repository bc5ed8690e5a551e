"""The database port (`Database`) and its two adapters: asyncpg (direct Postgres) and supabase-py."""

from __future__ import annotations

from instagram_dm.db.port import ActingUser, Database, Notifications, check_identifier, translate_error

__all__ = ["ActingUser", "Database", "Notifications", "check_identifier", "translate_error"]
