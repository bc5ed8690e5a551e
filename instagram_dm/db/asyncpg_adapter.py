"""The `Database` port over asyncpg, for a direct (or session-pooler) Postgres URL.

Calls are built generically from the RPC name and argument names, like PostgREST does:
``select public.<name>(p_a => $1, p_b => $2)``; Postgres infers each parameter's type from the
function's signature, and arguments are coerced to what asyncpg expects for that type (ISO strings
to datetimes, dicts to jsonb). Connections run as ``service_role`` by default, so grants are
exercised exactly as through PostgREST; :meth:`AsyncpgDatabase.rpc_as_user` switches one transaction to
the user's role and claims, as PostgREST does for the CRM app's requests.

One ``timeout`` bounds everything: opening a connection, waiting for a pooled one (and handing it back)
and each statement (asyncpg's ``command_timeout``, which also cancels the statement on the server). Past
it a call is DatabaseUnavailableError, so a silent or locked database never hangs a caller.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from instagram_dm import errors
from instagram_dm.db.port import (
    ActingUser,
    Database,
    Notification,
    check_identifier,
    json_default,
    translate_error,
)

_check_ident = check_identifier
_ARGUMENT_POSITION = re.compile(r"query argument \$(\d+)")
# The connection is gone, as in an outage. InternalClientError: a connection whose backend was killed while a
# timed-out query was being cancelled can fail its reset on release this way (asyncpg #784).
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
_CONNECTION_LOST_OR_REFUSED: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *_CONNECTION_LOST)


def _json_encode(value: Any) -> str:
    return json.dumps(value, default=json_default, allow_nan=False)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=_json_encode, decoder=json.loads, schema="pg_catalog")


def _coerce(value: Any, type_name: str) -> Any:
    if value is None:
        return None
    if type_name in {"timestamptz", "timestamp"} and isinstance(value, str):
        return datetime.fromisoformat(value)
    if type_name == "date" and isinstance(value, str):
        return date.fromisoformat(value)
    if type_name == "uuid" and isinstance(value, uuid.UUID):
        return value
    if type_name in {"text", "varchar"} and not isinstance(value, str):
        return str(value)
    return value


def _coerce_argument(name: str, value: Any, type_name: str) -> Any:
    try:
        return _coerce(value, type_name)
    except ValueError:
        raise errors.BadRequestError(f"Argument {name} is not a valid {type_name}.") from None


def _bad_argument(names: list[str], asyncpg_message: str) -> errors.BadRequestError:
    match = _ARGUMENT_POSITION.search(asyncpg_message)
    position = int(match.group(1)) if match else 0
    which = names[position - 1] if 0 < position <= len(names) else "an argument"
    return errors.BadRequestError(f"Argument {which} has the wrong type for the function.")


def _plain(value: Any) -> Any:
    """Make a scalar result JSON-like, as PostgREST would return it."""
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _call_sql(name: str, args: Mapping[str, Any] | None) -> tuple[str, list[str], list[Any]]:
    """``select public.<name>(p_a => $1, ...)``, the argument names and values; names checked first."""
    args = dict(args or {})
    placeholders = ", ".join(f"{_check_ident(k)} => ${i}" for i, k in enumerate(args, start=1))
    return f"select public.{_check_ident(name)}({placeholders})", list(args), list(args.values())


# Why a connect failed, in words, and the code doctor picks its fix by.
_CONNECT_REASONS: tuple[tuple[type[BaseException], str, str], ...] = (
    (asyncpg.InvalidPasswordError, "database_auth_failed", "the user or password was refused"),
    (asyncpg.InvalidAuthorizationSpecificationError, "database_auth_failed", "the user was refused"),
    (asyncpg.InvalidCatalogNameError, "database_not_found", "no such database"),
    (TimeoutError, "database_unavailable", "no answer in time"),
    (ConnectionRefusedError, "database_unavailable", "nothing listens there"),
    (OSError, "database_unavailable", "the host cannot be reached"),
)


def connect_error(dsn: str, exc: BaseException) -> errors.DatabaseUnavailableError:
    """One readable line naming host and port (never the password) and what went wrong."""
    parts = urlsplit(dsn)
    try:
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    except ValueError:
        where = parts.hostname or "the configured host"
    database = parts.path.lstrip("/") or "postgres"
    code, reason = "database_unavailable", type(exc).__name__
    for kind, kind_code, words in _CONNECT_REASONS:
        if isinstance(exc, kind):
            code, reason = kind_code, words
            break
    return errors.DatabaseUnavailableError(
        f"Cannot connect to the database {database!r} at {where}: {reason}.", code=code
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


# set_config('role', ..., true) is `set local role ...` with the role as a bound parameter.
_ACT_AS_USER = """select set_config('role', $1, true), set_config('request.jwt.claims', $2, true),
    set_config('request.jwt.claim.sub', $3, true), set_config('request.jwt.claim.role', $4, true)"""


def _translate(exc: asyncpg.PostgresError, names: list[str]) -> errors.InstagramDMError:
    message = getattr(exc, "message", None)
    if message is None and getattr(exc, "sqlstate", None) == "22000":
        # asyncpg could not encode an argument; its text quotes the value (maybe a token).
        return _bad_argument(names, str(exc))
    return translate_error(getattr(exc, "sqlstate", None), message or "", getattr(exc, "detail", None))


class _Listener:
    def __init__(self, conn: asyncpg.Connection, channels: Sequence[str]) -> None:
        self._conn = conn
        self._channels = tuple(channels)
        self._queue: asyncio.Queue[Notification | None] = asyncio.Queue()
        self._closed = False

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        self._queue.put_nowait(Notification(channel, str(payload)))

    def _on_terminate(self, _conn: object) -> None:
        self._queue.put_nowait(None)

    async def start(self) -> None:
        self._conn.add_termination_listener(self._on_terminate)
        for channel in self._channels:
            await self._conn.add_listener(channel, self._on_notify)

    async def __aiter__(self) -> AsyncIterator[Notification]:
        while True:
            payload = await self._queue.get()
            if payload is None:
                if self._closed:  # close() was called: end the iteration quietly
                    return
                raise errors.DatabaseUnavailableError("The LISTEN connection was lost.")
            yield payload

    async def close(self) -> None:
        self._closed = True
        self._queue.put_nowait(None)
        if not self._conn.is_closed():
            try:
                for channel in self._channels:
                    await self._conn.remove_listener(channel, self._on_notify)
            finally:
                await self._conn.close()


class AsyncpgDatabase:
    """asyncpg pool adapter; build with :meth:`connect`."""

    supports_listen = True

    def __init__(self, pool: asyncpg.Pool, dsn: str, role: str | None, timeout: float = 5.0) -> None:
        self._pool = pool
        self._dsn = dsn
        self._param_types: dict[str, tuple[str, ...]] = {}
        self._role = role
        self._timeout = timeout

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        role: str | None = "service_role",
        timeout: float = 5.0,
    ) -> AsyncpgDatabase:
        """Open the pool. With ``min_size=0`` nothing is connected yet (the first call connects), so
        this cannot fail for a database that is down; otherwise DatabaseUnavailableError."""
        if timeout <= 0:
            raise errors.ConfigError("the database timeout must be positive")
        settings = {"role": role} if role else {}
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                server_settings={"application_name": "instagram-dm", **settings},
                timeout=timeout,
                command_timeout=timeout,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise connect_error(dsn, exc) from None
        return cls(pool, dsn, role, timeout)

    async def rpc(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        sql, names, values = _call_sql(name, args)
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                return await self._fetch(conn, sql, names, values)
        except asyncpg.PostgresError as exc:
            raise _translate(exc, names) from None
        except _CONNECTION_LOST as exc:
            raise errors.DatabaseUnavailableError(
                f"The database connection failed ({type(exc).__name__})."
            ) from None

    async def rpc_as_user(self, user: ActingUser, name: str, args: Mapping[str, Any] | None = None) -> Any:
        """One transaction, as PostgREST does it per request: ``set local role`` to the JWT's role, its
        claims into ``request.jwt.claims`` (and ``request.jwt.claim.sub`` / ``.role``, which
        ``auth.uid()`` / ``auth.role()`` read first, so nothing left on a pooled session can speak for
        the user), then the call. Both settings end with the transaction."""
        role = user.database_role()  # refuses service_role and made-up roles before any SQL
        claims = _json_encode(dict(user.claims))
        sub, claimed_role = user.claims.get("sub"), user.claims.get("role")
        sql, names, values = _call_sql(name, args)
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn, conn.transaction():
                await conn.execute(_ACT_AS_USER, role, claims, _text(sub), _text(claimed_role))
                return await self._fetch(conn, sql, names, values)
        except asyncpg.PostgresError as exc:
            raise _translate(exc, names) from None
        except _CONNECTION_LOST as exc:
            raise errors.DatabaseUnavailableError(
                f"The database connection failed ({type(exc).__name__})."
            ) from None

    async def _fetch(
        self, conn: asyncpg.Connection | PoolConnectionProxy, sql: str, names: list[str], values: list[Any]
    ) -> Any:
        types = self._param_types.get(sql)
        if types is None:
            # Learn the parameter types once; later calls reuse asyncpg's statement cache
            # (one round trip instead of prepare + execute).
            stmt = await conn.prepare(sql)
            types = self._param_types[sql] = tuple(t.name for t in stmt.get_parameters())
        params = [
            _coerce_argument(key, value, typ) for key, value, typ in zip(names, values, types, strict=True)
        ]
        return _plain(await conn.fetchval(sql, *params))

    async def ping(self) -> None:
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                await conn.fetchval("select 1")
        except _CONNECTION_LOST_OR_REFUSED as exc:
            raise errors.DatabaseUnavailableError(
                f"The database did not answer ({type(exc).__name__})."
            ) from None

    async def listen(self, channels: Sequence[str]) -> _Listener:
        channels = (channels,) if isinstance(channels, str) else tuple(channels)
        for channel in channels:
            _check_ident(channel)
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout, command_timeout=self._timeout)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise connect_error(self._dsn, exc) from None
        listener = _Listener(conn, channels)
        try:
            await listener.start()
        except _CONNECTION_LOST_OR_REFUSED as exc:
            conn.terminate()
            raise errors.DatabaseUnavailableError(
                f"Cannot open a LISTEN connection ({type(exc).__name__})."
            ) from None
        except BaseException:
            conn.terminate()
            raise
        return listener

    async def close(self) -> None:
        """Close gracefully within the timeout; past it (a silent database) drop the connections."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()


if TYPE_CHECKING:  # mypy holds the adapter to the port (a test could only repeat this)

    def _satisfies_the_port(adapter: AsyncpgDatabase) -> Database:
        return adapter
