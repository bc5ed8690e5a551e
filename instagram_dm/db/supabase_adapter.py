"""The `Database` port over supabase-py (PostgREST), for `SUPABASE_URL` + `SUPABASE_SERVICE_ROLE_KEY`.

Calls ``POST /rest/v1/rpc/<name>`` with the named arguments as JSON; PostgREST runs them as
``service_role``; :meth:`SupabaseDatabase.rpc_as_user` sends the user's JWT instead, so PostgREST
runs the function as that user (role, claims, RLS), exactly as for the CRM web app.
There is no LISTEN over REST: the worker polls with this transport.

supabase-py builds the request (URL, ``apikey`` and ``Authorization`` headers, JSON body); this module
sends it and reads the raw response itself, because supabase-py decodes both an empty ``204`` (a
``void`` function) and a JSON ``[]`` to ``[]``, and the port promises ``None`` for the first and ``[]``
for the second. Error bodies are turned into the same :class:`postgrest.APIError` supabase-py would
raise, then into our tree:

* a PostgREST error JSON ``{"code", "message", "details", "hint"}`` goes through
  :func:`~instagram_dm.db.port.translate_error` (SQLSTATE or ``PGRST*`` code, our snake_case message);
* a body that is not PostgREST's (an HTML page from the gateway, an empty body) is judged by the HTTP
  status: 502/503/504 and Cloudflare's 52x are :class:`DatabaseUnavailableError`, 401 is a refused
  service-role key, anything else :class:`DatabaseError`. The body is never shown;
* a transport failure (connect error, timeout) is :class:`DatabaseUnavailableError`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import httpx
from postgrest import APIError
from postgrest.exceptions import generate_default_error_message

from instagram_dm import errors
from instagram_dm.db.port import (
    ActingUser,
    Database,
    Notifications,
    check_identifier,
    json_default,
    translate_error,
)
from supabase import AsyncClient, AsyncClientOptions, acreate_client

_GATEWAY_DOWN = frozenset({502, 503, 504})


def _jsonable(value: Any) -> Any:
    """What the asyncpg adapter would send, as plain JSON values; TypeError/ValueError if impossible."""
    return json.loads(json.dumps(value, default=json_default, allow_nan=False))


def _params(args: Mapping[str, Any] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in (args or {}).items():
        try:
            params[check_identifier(key)] = _jsonable(value)
        except (TypeError, ValueError):
            raise errors.BadRequestError(f"Argument {key} cannot be sent as JSON.") from None
    return params


def _api_error(response: httpx.Response) -> APIError:
    """The error supabase-py would raise for this response: PostgREST's JSON, or one made from the status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("code") is not None:
        return APIError({key: body.get(key) for key in ("code", "message", "details", "hint")})
    return APIError(generate_default_error_message(response))


def _sqlstate_and_detail(exc: APIError) -> tuple[str | None, str, str | None]:
    details = (
        exc.details if isinstance(exc.details, str) else (json.dumps(exc.details) if exc.details else None)
    )
    message = exc.message if isinstance(exc.message, str) else ""
    return (str(exc.code) if exc.code is not None else None), message, details


def _translate(exc: APIError, status: int, *, as_user: bool = False) -> errors.InstagramDMError:
    code = str(exc.code or "")
    if code and code != str(status):  # PostgREST's own code, or PostgREST named it in Proxy-Status
        return translate_error(*_sqlstate_and_detail(exc))
    # Not a PostgREST body: the gateway (Kong, a load balancer, Cloudflare) answered.
    if status in _GATEWAY_DOWN or 520 <= status <= 530:
        return errors.DatabaseUnavailableError(f"Supabase is unavailable (HTTP {status}).")
    if status == 401 and as_user:
        return errors.AuthError("Supabase refused the user's access token.", code="invalid_token")
    if status == 401:
        return errors.DatabaseError("Supabase refused the service role key; check SUPABASE_SERVICE_ROLE_KEY.")
    return errors.DatabaseError(f"Supabase answered HTTP {status} without a PostgREST error.")


def _decode(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None  # a void function
    try:
        return response.json()
    except ValueError:
        raise errors.DatabaseError("Supabase answered with a body that is not JSON.") from None


class SupabaseDatabase:
    """supabase-py adapter; build with :meth:`connect`."""

    supports_listen = False

    def __init__(self, client: AsyncClient, *, owned_http: httpx.AsyncClient | None = None) -> None:
        self._client = client
        self._owned_http = owned_http

    @classmethod
    async def connect(
        cls, url: str, service_role_key: str, *, http: httpx.AsyncClient | None = None, timeout: float = 15.0
    ) -> SupabaseDatabase:
        """Build the client; `http` (for tests: a MockTransport) stays the caller's to close.

        Without `http` the adapter makes its own client with `timeout` and closes it in :meth:`close`.
        """
        owned = None if http is not None else httpx.AsyncClient(timeout=timeout)
        options = AsyncClientOptions(
            auto_refresh_token=False, persist_session=False, httpx_client=http or owned
        )
        try:
            client = await acreate_client(url, service_role_key, options=options)
        except Exception as exc:
            if owned is not None:
                await owned.aclose()
            raise errors.ConfigError(
                f"Cannot build the Supabase client ({type(exc).__name__}); check SUPABASE_URL and the key."
            ) from None
        return cls(client, owned_http=owned)

    async def rpc(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        return await self._send(name, args, bearer=None)

    async def rpc_as_user(self, user: ActingUser, name: str, args: Mapping[str, Any] | None = None) -> Any:
        """The same request with the user's JWT as ``Authorization: Bearer`` (``apikey`` stays the
        adapter's key): PostgREST verifies it and runs the function as the user, as for supabase-js."""
        user.database_role()  # refuses service_role and made-up roles before anything is sent
        if not user.token:
            raise errors.AuthError("No access token to act as the user with.", code="missing_token")
        return await self._send(name, args, bearer=user.token)

    async def _send(self, name: str, args: Mapping[str, Any] | None, *, bearer: str | None) -> Any:
        params = _params(args)
        # supabase-py builds the request (URL, apikey/Authorization headers, JSON body); sending it
        # here keeps the raw response, so a void function (204) and a JSON [] stay different.
        request = self._client.rpc(check_identifier(name), params).request
        if bearer is not None:
            # The request's own headers (a fresh copy per request) win over the client's.
            request.headers["Authorization"] = f"Bearer {bearer}"
        try:
            # RequestConfig.send is overloaded on the session type; mypy picks the sync overload.
            response = await cast("Awaitable[httpx.Response]", request.send(httpx.Headers()))
        except httpx.HTTPError as exc:
            raise errors.DatabaseUnavailableError(
                f"Supabase did not answer ({type(exc).__name__})."
            ) from None
        if not response.is_success:
            raise _translate(_api_error(response), response.status_code, as_user=bearer is not None)
        return _decode(response)

    async def ping(self) -> None:
        await self.rpc("instagram_health")

    async def listen(self, channels: Sequence[str]) -> Notifications:
        raise NotImplementedError("LISTEN is not available over the Supabase REST transport; poll instead")

    async def close(self) -> None:
        if self._owned_http is not None:
            await self._owned_http.aclose()


if TYPE_CHECKING:  # mypy holds the adapter to the port (a test could only repeat this)

    def _satisfies_the_port(adapter: SupabaseDatabase) -> Database:
        return adapter
