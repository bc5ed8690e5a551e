"""An in-memory `Database` for unit tests (procrastinate's ``InMemoryConnector`` style).

Each RPC name maps to a Python method of the same name (``instagram_health`` …) or to a handler
registered with :meth:`InMemoryDatabase.on`; every call is recorded in :attr:`InMemoryDatabase.calls`
(name, arguments, and the user for :meth:`~InMemoryDatabase.rpc_as_user`). Names and argument values
are checked as the real adapters check them (plain identifiers, JSON-serialisable), so a test cannot
pass here with a call the database would refuse for its shape. What the SQL decides (grants, RLS,
admin checks) is **not** modelled: tests of those run against the real Postgres.

    db = InMemoryDatabase()
    db.on("instagram_store_integrations", raises=errors.ForbiddenError(code="not_imo_admin"))
    db.unavailable = True          # every call (and ping) raises DatabaseUnavailableError
    assert db.calls_to("instagram_oauth_state_consume")[0].args["p_state_hash"] == ...
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from instagram_dm import errors
from instagram_dm.db.port import ActingUser, Database, Notifications, check_identifier, json_default

__all__ = ["Call", "InMemoryDatabase"]


@dataclass(frozen=True)
class Call:
    """One recorded RPC call."""

    name: str
    args: Mapping[str, Any]
    user: ActingUser | None = field(default=None, repr=False)


Handler = Callable[[Call], Any]
_UNSET: Any = object()


class InMemoryDatabase:
    """The port in memory; RPCs it does not know raise RPCNotFoundError, as the real ones would."""

    supports_listen = False

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.unavailable = False
        self.closed = False
        self.states: dict[str, dict[str, Any]] = {}  # instagram_oauth_states by state_hash
        self._handlers: dict[str, Handler] = {}

    # ---- arranging and asserting --------------------------------------------------------------------

    def on(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        returns: Any = _UNSET,
        raises: Exception | None = None,
    ) -> None:
        """Answer `name` with `handler(call)`, a fixed value (`returns`) or an exception (`raises`)."""
        if handler is None:
            if raises is not None:
                error = raises

                def handler(call: Call) -> Any:
                    raise error

            elif returns is not _UNSET:
                value = returns

                def handler(call: Call) -> Any:
                    return value

            else:
                raise TypeError("on() needs a handler, returns= or raises=")
        self._handlers[check_identifier(name)] = handler

    def calls_to(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.name == name]

    # ---- the port ----------------------------------------------------------------------------------

    async def rpc(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        return self._dispatch(Call(name, self._checked(name, args)))

    async def rpc_as_user(self, user: ActingUser, name: str, args: Mapping[str, Any] | None = None) -> Any:
        user.database_role()
        return self._dispatch(Call(name, self._checked(name, args), user))

    async def ping(self) -> None:
        if self.unavailable or self.closed:
            raise errors.DatabaseUnavailableError("The in-memory database is switched off.")

    async def listen(self, channels: Sequence[str]) -> Notifications:
        raise NotImplementedError("InMemoryDatabase has no LISTEN")

    async def close(self) -> None:
        self.closed = True

    def _checked(self, name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
        check_identifier(name)
        checked: dict[str, Any] = {}
        for key, value in (args or {}).items():
            try:
                json.dumps(value, default=json_default, allow_nan=False)
            except (TypeError, ValueError):
                raise errors.BadRequestError(f"Argument {key} cannot be sent as JSON.") from None
            checked[check_identifier(key)] = value
        return checked

    def _dispatch(self, call: Call) -> Any:
        self.calls.append(call)
        if self.unavailable or self.closed:
            raise errors.DatabaseUnavailableError("The in-memory database is switched off.")
        handler = self._handlers.get(call.name) or getattr(self, call.name, None)
        if handler is None or not call.name.startswith("instagram_"):
            raise errors.RPCNotFoundError()
        return handler(call)

    # ---- default RPCs (minimal behaviour; override with on()) -------------------------------------------

    def instagram_health(self, call: Call) -> dict[str, Any]:
        return {
            "pgcrypto": True,
            "pg_cron": True,
            "migrations": [],
            "server_time": datetime.now(UTC).isoformat(),
        }

    def instagram_oauth_state_create(self, call: Call) -> dict[str, Any]:
        expires_at = datetime.now(UTC) + timedelta(seconds=int(call.args.get("p_ttl_seconds", 600)))
        row = {
            "id": str(uuid.uuid4()),
            "user_id": str(call.args["p_user_id"]),
            "imo_id": str(call.args["p_imo_id"]),
            "return_to": call.args["p_return_to"],
            "browser_binding_hash": call.args.get("p_browser_binding_hash"),
            "code_verifier": call.args.get("p_code_verifier"),  # the SQL encrypts it; a fake need not
            "expires_at": expires_at,
            "consumed": False,
        }
        if call.args["p_state_hash"] in self.states:
            raise errors.ConflictError()
        self.states[call.args["p_state_hash"]] = row
        return {"id": row["id"], "expires_at": expires_at.isoformat()}

    def instagram_oauth_state_consume(self, call: Call) -> dict[str, Any]:
        row = self.states.get(call.args["p_state_hash"])
        if row is None:
            return {"status": "unknown"}
        if row["consumed"]:
            return {"status": "used", "return_to": row["return_to"]}
        if row["expires_at"] <= datetime.now(UTC):
            return {"status": "expired", "return_to": row["return_to"]}
        row["consumed"] = True
        binding = row["browser_binding_hash"]
        if binding is not None and binding != call.args.get("p_browser_binding_hash"):
            return {"status": "foreign_browser", "return_to": row["return_to"]}
        return {
            "status": "ok",
            "user_id": row["user_id"],
            "imo_id": row["imo_id"],
            "return_to": row["return_to"],
            "code_verifier": row["code_verifier"],
        }


if TYPE_CHECKING:
    _satisfies_the_port: Database = InMemoryDatabase()
