"""The typed RPC layer: each function names a real SQL function with exactly its arguments, and the
results parse what the migrated database returns."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.db.memory import Call, InMemoryDatabase
from instagram_dm.db.port import ActingUser
from tests.fixtures.database import DEMO_ADMIN, DEMO_IMO, DEMO_MEMBER, claims_for

KEY = "k" * 40
ACCOUNT = rpc.AccountToStore(
    page_id="1001",
    page_name="Demo Page",
    page_token="page-token-plaintext",
    ig_account_id="17841400000000001",
    ig_username="demo",
    ig_profile_picture_url=None,
    webhook_subscribed=True,
)


class _Stop(Exception):
    pass


class _Recorder(InMemoryDatabase):
    """Records the call and stops before any result is parsed."""

    def _dispatch(self, call: Call) -> Any:
        self.calls.append(call)
        raise _Stop


def _sample(parameter: inspect.Parameter) -> object:
    return {
        "accounts": [ACCOUNT],
        "scopes": ["instagram_basic"],
        "bodies": [b"{}"],
        "attachment": {"type": "image", "url": "https://cdn.test/a.png"},
        "month": None,
        "settings": rpc.SendingSettings(
            human_agent_enabled=False, send_rate_per_second=100, echo_wait_seconds=20
        ),
        "counts": {DEMO_IMO: 1},
        "variables": {"first_name": "Ana"},
    }.get(parameter.name, "x")


async def _recorded_call(function: Callable[..., Awaitable[object]]) -> Call:
    db = _Recorder()
    signature = inspect.signature(function)
    positional: list[object] = [db]
    if "user" in signature.parameters:
        positional.append(ActingUser(token="t", claims=claims_for(DEMO_ADMIN)))
    keywords = {
        name: _sample(p)
        for name, p in signature.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    with pytest.raises(_Stop):
        await function(*positional, **keywords)
    [call] = db.calls
    return call


def test_catalogue_lists_every_function() -> None:
    """CATALOGUE holds every public async function of rpc.py (so the pg_proc test sees them all)."""
    public = {
        name
        for name, value in vars(rpc).items()
        if inspect.iscoroutinefunction(value)
        and not name.startswith("_")
        and value.__module__ == rpc.__name__
    }
    assert {f.__name__ for f in rpc.CATALOGUE} == public
    assert public <= set(rpc.__all__)


@pytest.mark.parametrize("function", rpc.CATALOGUE, ids=lambda f: f.__name__)
async def test_function_matches_pg_proc(
    function: Callable[..., Awaitable[object]], pg: asyncpg.Connection
) -> None:
    """The SQL function exists in the migrated database (once), with exactly the argument names sent,
    and those are the Python keyword parameters with a p_ prefix; as-user functions are granted to
    authenticated, the others are not."""
    call = await _recorded_call(function)
    rows = await pg.fetch(
        """select coalesce(array(select a.name from unnest(p.proargnames, p.proargmodes::text[]) with ordinality
                             as a(name, mode, i) where a.mode is null or a.mode in ('i', 'b') order by a.i),
                           p.proargnames, '{}') as names,
                  has_function_privilege('authenticated', p.oid, 'execute') as for_users
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'public' and p.proname = $1""",
        call.name,
    )
    assert len(rows) == 1, f"{call.name}: {len(rows)} functions in public"
    assert set(call.args) == set(rows[0]["names"])
    keyword_only = [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert sorted(f"p_{name}" for name in keyword_only) == sorted(call.args)
    assert rows[0]["for_users"] is (call.user is not None)


async def test_catalogue_round_trip(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """Each result type parses what the real functions return, through the real adapter."""
    user = ActingUser(token="t", claims=claims_for(DEMO_ADMIN))
    created = await rpc.oauth_state_create(
        db,
        state_hash="ab" * 32,
        user_id=DEMO_ADMIN,
        imo_id=DEMO_IMO,
        return_to="http://app.test/m",
        ttl_seconds=600,
        browser_binding_hash=None,
        code_verifier="v" * 43,
        key=KEY,
    )
    assert created.expires_at > datetime.now(UTC)
    consumed = await rpc.oauth_state_consume(
        db, state_hash="ab" * 32, browser_binding_hash=None, key=KEY, previous_key=None
    )
    assert consumed == rpc.StateConsumed(
        status="ok",
        return_to="http://app.test/m",
        user_id=DEMO_ADMIN,
        imo_id=DEMO_IMO,
        code_verifier="v" * 43,
    )
    assert "v" * 43 not in repr(consumed)
    again = await rpc.oauth_state_consume(
        db, state_hash="ab" * 32, browser_binding_hash=None, key=KEY, previous_key=None
    )
    assert (again.status, again.user_id, again.code_verifier) == ("used", None, None)

    [stored] = await rpc.store_integrations(
        db,
        imo_id=DEMO_IMO,
        user_id=DEMO_ADMIN,
        key=KEY,
        user_token="user-token-plaintext",
        token_expires_at=datetime(2027, 1, 25, tzinfo=UTC),
        data_access_expires_at=None,
        scopes=["instagram_basic"],
        accounts=[ACCOUNT],
    )
    assert stored.instagram_business_account_id == ACCOUNT.ig_account_id and stored.webhook_subscribed
    tokens = await rpc.integration_tokens(db, integration_id=stored.id, key=KEY)
    assert (tokens.user_token, tokens.page_token) == ("user-token-plaintext", "page-token-plaintext")
    assert "plaintext" not in repr(tokens) and "plaintext" not in repr(ACCOUNT)
    assert tokens.token_expires_at == datetime(2027, 1, 25, tzinfo=UTC)

    [status] = await rpc.integration_status(
        db, ActingUser(token="t", claims=claims_for(DEMO_MEMBER)), imo_id=DEMO_IMO
    )
    assert (status.id, status.granted_scopes, status.facebook_page_name) == (
        stored.id,
        ("instagram_basic",),
        "Demo Page",
    )
    gone = await rpc.disconnect(db, user, integration_id=stored.id)
    assert gone == rpc.Disconnected(id=stored.id, status="disconnected", unsubscribe_queued=True)

    batch = await rpc.rotate_key_batch(db, old_key=KEY, new_key="n" * 40, batch=10)
    assert batch == rpc.KeyRotationBatch(rotated=1, remaining=0, foreign=0)  # the queued unsubscribe's token
    health = await rpc.health(db)
    assert health.pgcrypto and "20261201000003" in health.migrations


@pytest.mark.parametrize(
    ("result", "function"),
    [
        ({"status": "maybe"}, rpc.StateConsumed.from_json),
        ({"status": "ok", "return_to": "/m"}, rpc.StateConsumed.from_json),
        ({"id": 7, "expires_at": "2027-01-01T00:00:00Z"}, rpc.StateCreated.from_json),
        ({"id": "x", "expires_at": "next tuesday"}, rpc.StateCreated.from_json),
        ({"rotated": True, "remaining": 0, "foreign": 0}, rpc.KeyRotationBatch.from_json),
        (
            {"pgcrypto": True, "pg_cron": True, "migrations": [1], "server_time": "2027-01-01T00:00:00Z"},
            rpc.Health.from_json,
        ),
    ],
    ids=[
        "unknown_status",
        "ok_without_user",
        "id_not_string",
        "bad_timestamp",
        "bool_as_int",
        "migrations_not_text",
    ],
)
def test_unexpected_results_are_database_errors(
    result: dict[str, Any], function: Callable[[Any], object]
) -> None:
    """A result that does not have the promised shape is DatabaseError unexpected_result, not a KeyError later."""
    with pytest.raises(errors.DatabaseError) as info:
        function(result)
    assert info.value.code == "unexpected_result"


async def test_non_object_result_is_database_error() -> None:
    """An array where an object is promised (or the reverse) is DatabaseError unexpected_result."""
    db = InMemoryDatabase()
    db.on("instagram_health", returns=[])
    db.on("instagram_store_integrations", returns={"id": str(uuid.uuid4())})
    with pytest.raises(errors.DatabaseError, match="unexpected"):
        await rpc.health(db)
    with pytest.raises(errors.DatabaseError, match="unexpected"):
        await rpc.store_integrations(
            db,
            imo_id=DEMO_IMO,
            user_id=DEMO_ADMIN,
            key=KEY,
            user_token="u",
            token_expires_at=None,
            data_access_expires_at=None,
            scopes=[],
            accounts=[ACCOUNT],
        )
