"""One narrow port to the database: call a named RPC with named arguments.

Both adapters call the same SQL functions from `supabase/migrations/` and return the same Python
values: a ``jsonb`` result comes back decoded (dict / list), scalars as Python scalars, ``void`` as
None. Errors from either adapter go through :func:`translate_error`, so callers catch one tree.

RPC convention (see README "RPCs"): every function is called by name with named arguments
(``p_*``), returns one value (``jsonb`` for structures), and raises domain errors as
``raise exception '<snake_case_code>' using errcode = '<sqlstate>', detail = '<sentence>'``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Protocol

from instagram_dm import errors

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# SQLSTATEs our functions use for domain errors, and what they mean at the edges.
_BY_SQLSTATE: dict[str, type[errors.InstagramDMError]] = {
    "28000": errors.AuthError,  # invalid_authorization_specification
    "42501": errors.ForbiddenError,  # insufficient_privilege
    "P0002": errors.NotFoundError,  # no_data_found
    "22023": errors.BadRequestError,  # invalid_parameter_value
    "22P02": errors.BadRequestError,  # invalid_text_representation (a malformed uuid, say)
    "23505": errors.ConflictError,  # unique_violation
    "23503": errors.ConflictError,  # foreign_key_violation
    "42883": errors.RPCNotFoundError,  # undefined_function
    "PGRST202": errors.RPCNotFoundError,  # PostgREST: function not in its schema cache
    "PGRST301": errors.AuthError,  # PostgREST: the bearer JWT is invalid or expired (a user's, as the user)
    "PGRST302": errors.AuthError,  # PostgREST: no bearer JWT where one is needed
    "PGRST303": errors.AuthError,  # PostgREST: the JWT's claims are not acceptable
    "PGRST000": errors.DatabaseUnavailableError,  # PostgREST: cannot connect to the database
    "PGRST001": errors.DatabaseUnavailableError,  # PostgREST: internal connection error
    "PGRST002": errors.DatabaseUnavailableError,  # PostgREST: schema cache not loaded yet
    "PGRST003": errors.DatabaseUnavailableError,  # PostgREST: timed out waiting for a pool connection
    "39000": errors.TokenCorruptError,  # pgcrypto: "Wrong key or corrupt data" (the fingerprint matched)
}
# Codes carried in the message of `raise exception '<code>'` that have a class of their own.
_BY_MESSAGE: dict[str, type[errors.InstagramDMError]] = {
    "invalid_state": errors.OAuthStateError,
    "encryption_key_mismatch": errors.EncryptionKeyMismatchError,
    "token_corrupt": errors.TokenCorruptError,
}


def json_default(value: object) -> Any:
    """`json.dumps(default=...)` for RPC arguments, the same for both adapters: ISO dates and times,
    UUID and Decimal as strings (PostgREST casts a JSON string to numeric without losing digits)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def check_identifier(name: str) -> str:
    """Return `name` if it is a plain lower-case SQL identifier (an RPC or argument name), else BadRequestError.

    Both adapters check names before any SQL or URL is built from them.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise errors.BadRequestError(f"Not a valid function or argument name: {str(name)[:64]!r}.")
    return name


def translate_error(sqlstate: str | None, message: str, detail: str | None = None) -> errors.InstagramDMError:
    """Map a database error (SQLSTATE, message, detail) onto our exception tree."""
    sqlstate = sqlstate or ""
    code = message.strip()
    is_code = bool(code) and code.replace("_", "").isalnum() and code.islower() and " " not in code
    cls = _BY_MESSAGE.get(code) if is_code else None
    if cls is None:
        cls = _BY_SQLSTATE.get(sqlstate)
    if cls is None:
        cls = (
            errors.DatabaseUnavailableError
            # connection, resources, shutdown; and the transient ones a retry can clear: serialization
            # failure, deadlock, lock not available, statement timeout
            if sqlstate.startswith(("08", "53", "57P")) or sqlstate in {"40001", "40P01", "55P03", "57014"}
            else errors.DatabaseError
        )
    if is_code:
        return cls(detail or code.replace("_", " ").capitalize() + ".", code=code)
    # A raw database message may quote data; keep it out of what people see.
    return cls()


#: The database roles a user's JWT may name, as PostgREST would switch to them. Anything else (a
#: ``service_role`` claim, a made-up role) is refused before any SQL or HTTP request.
USER_ROLES = frozenset({"authenticated", "anon"})


@dataclass(frozen=True)
class ActingUser:
    """A caller whose access token the API has verified, to run app-facing RPCs as (like PostgREST).

    `token` is the raw JWT (sent as ``Authorization: Bearer`` over PostgREST; never logged, never in
    ``repr``); `claims` are its verified claims (set as ``request.jwt.claims`` over asyncpg).
    """

    token: str = field(repr=False)
    claims: Mapping[str, Any]

    @property
    def user_id(self) -> str | None:
        """The ``sub`` claim (what ``auth.uid()`` reads), or None when absent."""
        sub = self.claims.get("sub")
        return sub if isinstance(sub, str) else None

    def database_role(self) -> str:
        """The database role PostgREST would switch to: the ``role`` claim (``anon`` without one);
        ForbiddenError for a role an end user may not take."""
        role = self.claims.get("role", "anon")
        if role not in USER_ROLES:
            raise errors.ForbiddenError(
                "The access token names a role users may not take.", code="role_not_allowed"
            )
        return str(role)


@dataclass(frozen=True)
class Notification:
    """One NOTIFY: the channel it came on and its payload."""

    channel: str
    payload: str


class Notifications(Protocol):
    """A stream of NOTIFYs on one or more channels, over one connection (asyncpg adapter only)."""

    def __aiter__(self) -> AsyncIterator[Notification]: ...

    async def close(self) -> None: ...


class Database(Protocol):
    """Call RPCs (as service_role, or as a verified user); the only way the core talks to Postgres."""

    supports_listen: bool

    async def rpc(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        """Call ``public.<name>(**args)`` and return its decoded result."""
        ...

    async def rpc_as_user(self, user: ActingUser, name: str, args: Mapping[str, Any] | None = None) -> Any:
        """Call ``public.<name>(**args)`` as `user`, exactly as PostgREST runs the CRM app's calls: in
        one transaction, as the role of the JWT (``authenticated``) with its claims, so grants, RLS
        and ``auth.uid()`` decide. For the app-facing RPCs only; service RPCs go through :meth:`rpc`."""
        ...

    async def ping(self) -> None:
        """Raise DatabaseUnavailableError unless the database answers."""
        ...

    async def listen(self, channels: Sequence[str]) -> Notifications:
        """Subscribe to NOTIFY on each of `channels`; raises NotImplementedError where unsupported."""
        ...

    async def close(self) -> None: ...
