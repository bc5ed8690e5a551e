"""The `Database` port over asyncpg, for a direct (or session-pooler) Postgres URL.

Calls are built generically from the RPC name and argument names, like PostgREST does:
``select public.<name>(p_a => $1, p_b => $2)``; Postgres infers each parameter's type from the
function's signature, and arguments are coerced to what asyncpg expects for that type (ISO strings
to datetimes, dicts to jsonb). Connections run as ``service_role`` by default, so grants are
exercised exactly as through PostgREST.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import asyncpg

from instagram_dm import errors
from instagram_dm.db.port import translate_error

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise errors.BadRequestError(f"not a valid function or argument name: {name!r}")
    return name


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _coerce(value: Any, type_name: str) -> Any:
    if value is None:
        return None
    if type_name in {"timestamptz", "timestamp", "date"} and isinstance(value, str):
        return datetime.fromisoformat(value)
    if type_name == "uuid" and isinstance(value, uuid.UUID):
        return value
    if type_name in {"text", "varchar"} and not isinstance(value, str):
        return str(value)
    return value


def _plain(value: Any) -> Any:
    """Make a scalar result JSON-like, as PostgREST would return it."""
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class _Listener:
    def __init__(self, conn: asyncpg.Connection, channel: str) -> None:
        self._conn = conn
        self._channel = channel
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._queue.put_nowait(str(payload))

    def _on_terminate(self, _conn: object) -> None:
        self._queue.put_nowait(None)

    async def start(self) -> None:
        self._conn.add_termination_listener(self._on_terminate)
        await self._conn.add_listener(self._channel, self._on_notify)

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            payload = await self._queue.get()
            if payload is None:
                raise errors.DatabaseUnavailableError("The LISTEN connection was lost.")
            yield payload

    async def close(self) -> None:
        if not self._conn.is_closed():
            try:
                await self._conn.remove_listener(self._channel, self._on_notify)
            finally:
                await self._conn.close()


class AsyncpgDatabase:
    """asyncpg pool adapter; build with :meth:`connect`."""

    supports_listen = True

    def __init__(self, pool: asyncpg.Pool, dsn: str, role: str | None) -> None:
        self._pool = pool
        self._dsn = dsn
        self._role = role

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        role: str | None = "service_role",
        timeout: float = 10.0,
    ) -> AsyncpgDatabase:
        settings = {"role": role} if role else {}
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                server_settings={"application_name": "instagram-dm", **settings},
                timeout=timeout,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise errors.DatabaseUnavailableError(
                f"Cannot connect to the database ({type(exc).__name__})."
            ) from None
        return cls(pool, dsn, role)

    async def rpc(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        args = dict(args or {})
        placeholders = ", ".join(f"{_check_ident(k)} => ${i}" for i, k in enumerate(args, start=1))
        sql = f"select public.{_check_ident(name)}({placeholders})"
        try:
            async with self._pool.acquire() as conn:
                stmt = await conn.prepare(sql)
                params = [
                    _coerce(value, typ.name)
                    for value, typ in zip(args.values(), stmt.get_parameters(), strict=True)
                ]
                return _plain(await stmt.fetchval(*params))
        except asyncpg.PostgresError as exc:
            raise translate_error(
                getattr(exc, "sqlstate", None),
                getattr(exc, "message", str(exc)),
                getattr(exc, "detail", None),
            ) from None
        except (TimeoutError, OSError, asyncpg.InterfaceError) as exc:
            raise errors.DatabaseUnavailableError(
                f"The database connection failed ({type(exc).__name__})."
            ) from None

    async def ping(self) -> None:
        try:
            async with self._pool.acquire(timeout=5) as conn:
                await conn.fetchval("select 1")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise errors.DatabaseUnavailableError(
                f"The database did not answer ({type(exc).__name__})."
            ) from None

    async def listen(self, channel: str) -> _Listener:
        try:
            conn = await asyncpg.connect(self._dsn, timeout=10)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise errors.DatabaseUnavailableError(
                f"Cannot open a LISTEN connection ({type(exc).__name__})."
            ) from None
        listener = _Listener(conn, _check_ident(channel))
        await listener.start()
        return listener

    async def close(self) -> None:
        await self._pool.close()
