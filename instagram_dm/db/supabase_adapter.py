"""The `Database` port over supabase-py (PostgREST), for `SUPABASE_URL` + `SUPABASE_SERVICE_ROLE_KEY`.

Calls ``POST /rest/v1/rpc/<name>`` with the named arguments as JSON; PostgREST runs them as
``service_role``. There is no LISTEN over REST: the worker polls with this transport.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from postgrest import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from instagram_dm import errors
from instagram_dm.db.port import Notifications, translate_error


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _sqlstate_and_detail(exc: APIError) -> tuple[str | None, str, str | None]:
    details = exc.details if isinstance(exc.details, str) else (json.dumps(exc.details) if exc.details else None)
    return exc.code, exc.message or "", details


class SupabaseDatabase:
    """supabase-py adapter; build with :meth:`connect`."""

    supports_listen = False

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @classmethod
    async def connect(
        cls, url: str, service_role_key: str, *, http: httpx.AsyncClient | None = None, timeout: float = 15.0
    ) -> SupabaseDatabase:
        options = AsyncClientOptions(
            postgrest_client_timeout=timeout,
            auto_refresh_token=False,
            persist_session=False,
            httpx_client=http,
        )
        try:
            client = await acreate_client(url, service_role_key, options=options)
        except Exception as exc:
            raise errors.ConfigError(
                f"Cannot build the Supabase client ({type(exc).__name__}); check SUPABASE_URL and the key."
            ) from None
        return cls(client)

    async def rpc(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        params = {k: _jsonable(v) for k, v in (args or {}).items()}
        try:
            response = await self._client.rpc(name, params).execute()
        except APIError as exc:
            raise translate_error(*_sqlstate_and_detail(exc)) from None
        except httpx.HTTPError as exc:
            raise errors.DatabaseUnavailableError(f"Supabase did not answer ({type(exc).__name__}).") from None
        data = response.data
        return None if data == [] else data

    async def ping(self) -> None:
        await self.rpc("instagram_health")

    async def listen(self, channel: str) -> Notifications:
        raise NotImplementedError("LISTEN is not available over the Supabase REST transport; poll instead")

    async def close(self) -> None:
        http = self._client.options.httpx_client
        if http is not None:
            await http.aclose()
