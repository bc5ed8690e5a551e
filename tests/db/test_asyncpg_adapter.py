"""The asyncpg adapter against the real migrated database: calls, types, decoding, errors, LISTEN, role."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.db.port import ActingUser, Notification
from tests.fixtures.database import (
    DEMO_ADMIN,
    DEMO_IMO,
    DEMO_MEMBER,
    STARTER_ADMIN,
    STARTER_IMO,
    claims_for,
)
from tests.fixtures.servers import SilenceableProxy, silent_server

KEY = "k" * 40
OTHER_KEY = "o" * 40


def state_hash() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def store(db: AsyncpgDatabase, **overrides: object) -> list[dict[str, object]]:
    args: dict[str, object] = {
        "p_imo_id": DEMO_IMO,
        "p_user_id": DEMO_ADMIN,
        "p_key": KEY,
        "p_user_token": "user-token-plaintext",
        "p_token_expires_at": datetime(2027, 1, 25, 12, 0, tzinfo=UTC),
        "p_data_access_expires_at": "2027-02-24T12:00:00+00:00",
        "p_scopes": ["instagram_basic", "instagram_manage_messages"],
        "p_accounts": [
            {
                "page_id": "1001",
                "page_name": "Demo Page",
                "ig_account_id": "17841400000000001",
                "ig_username": "demo",
                "page_token": "page-token-plaintext",
                "webhook_subscribed": True,
            }
        ],
    }
    args.update(overrides)
    result: list[dict[str, object]] = await db.rpc("instagram_store_integrations", args)
    return result


# ---- calls, argument types and decoding ---------------------------------------------------------


async def test_named_args_and_types(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """uuid strings, timestamptz as datetime and as ISO string, text[] and jsonb arrays all arrive typed."""
    stored = await store(db)
    assert len(stored) == 1
    assert stored[0]["instagram_business_account_id"] == "17841400000000001"
    row = await pg.fetchrow(
        """select imo_id::text, connected_by::text, token_expires_at, data_access_expires_at, granted_scopes,
                  webhook_subscribed, page_access_token_encrypted
           from public.instagram_integrations where id = $1""",
        uuid.UUID(str(stored[0]["id"])),
    )
    assert row is not None
    assert (row["imo_id"], row["connected_by"]) == (DEMO_IMO, DEMO_ADMIN)
    assert row["token_expires_at"] == datetime(2027, 1, 25, 12, 0, tzinfo=UTC)
    assert row["data_access_expires_at"] == datetime(2027, 2, 24, 12, 0, tzinfo=UTC)
    assert row["granted_scopes"] == ["instagram_basic", "instagram_manage_messages"]
    assert row["webhook_subscribed"] is True
    assert b"page-token-plaintext" not in row["page_access_token_encrypted"]


async def test_uuid_objects_and_zulu_timestamps(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """uuid.UUID arguments and ISO strings ending in Z are accepted as well."""
    stored = await store(db, p_imo_id=uuid.UUID(DEMO_IMO), p_token_expires_at="2027-01-25T12:00:00Z")
    expires = await pg.fetchval(
        "select token_expires_at from public.instagram_integrations where id = $1::uuid", str(stored[0]["id"])
    )
    assert expires == datetime(2027, 1, 25, 12, 0, tzinfo=UTC)


async def test_jsonb_result_decoded(db: AsyncpgDatabase) -> None:
    """A jsonb result comes back as dicts and lists; timestamps inside it are ISO strings, as over PostgREST."""
    stored = await store(db)
    tokens = await db.rpc("instagram_integration_tokens", {"p_integration_id": stored[0]["id"], "p_key": KEY})
    assert isinstance(tokens, dict)
    assert tokens["user_token"] == "user-token-plaintext"
    assert tokens["page_token"] == "page-token-plaintext"
    assert tokens["imo_id"] == DEMO_IMO
    assert datetime.fromisoformat(tokens["token_expires_at"]) == datetime(2027, 1, 25, 12, 0, tzinfo=UTC)
    health = await db.rpc("instagram_health")
    assert health["pgcrypto"] is True
    assert isinstance(health["migrations"], list)


async def test_empty_jsonb_array_is_a_list(db: AsyncpgDatabase) -> None:
    """An empty jsonb array stays [] (not None), matching the supabase adapter."""
    assert await db.rpc("instagram_integration_status", {"p_imo_id": str(uuid.uuid4())}) == []


async def test_void_is_none(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """A void function returns None."""
    await pg.execute(
        "create function public.instagram_test_void() returns void language sql as 'select'; "
        "grant execute on function public.instagram_test_void() to service_role"
    )
    try:
        assert await db.rpc("instagram_test_void") is None
    finally:
        await pg.execute("drop function public.instagram_test_void()")


async def test_jsonb_dict_argument(db: AsyncpgDatabase) -> None:
    """A dict is sent as a jsonb object (the function sees an object, not an array, and says so)."""
    with pytest.raises(errors.BadRequestError) as info:
        await store(db, p_accounts={"page_id": "1001", "page_token": "x"})
    assert info.value.code == "no_accounts"


async def test_jsonb_argument_with_datetimes(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """Datetimes nested in a jsonb argument are encoded as ISO strings, as the supabase adapter does."""
    account = {
        "page_id": "1002",
        "ig_account_id": "17841400000000002",
        "page_token": "p",
        "page_name": datetime(2026, 11, 26, tzinfo=UTC),
    }
    await store(db, p_accounts=[account])
    name = await pg.fetchval(
        "select facebook_page_name from public.instagram_integrations where instagram_business_account_id = $1",
        "17841400000000002",
    )
    assert name == "2026-11-26T00:00:00+00:00"


# ---- errors --------------------------------------------------------------------------------------


def state_args(user_id: str, imo_id: str, **extra: object) -> dict[str, object]:
    return {
        "p_state_hash": state_hash(),
        "p_user_id": user_id,
        "p_imo_id": imo_id,
        "p_return_to": "/m",
        **extra,
    }


async def test_oauth_state_create_for_admin(db: AsyncpgDatabase) -> None:
    """An admin of a Team-plan IMO gets a state row back as a dict."""
    created = await db.rpc("instagram_oauth_state_create", state_args(DEMO_ADMIN, DEMO_IMO))
    assert set(created) == {"id", "expires_at"}
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(minutes=9) < expires - datetime.now(UTC) <= timedelta(minutes=10)


async def test_non_admin_is_forbidden(db: AsyncpgDatabase) -> None:
    """A plain member gets ForbiddenError not_imo_admin with the function's detail sentence."""
    with pytest.raises(errors.ForbiddenError) as info:
        await db.rpc("instagram_oauth_state_create", state_args(DEMO_MEMBER, DEMO_IMO))
    assert info.value.code == "not_imo_admin"
    assert info.value.message == "Only an owner or admin of the IMO can connect Instagram."
    assert info.value.http_status == 403


async def test_starter_plan_is_forbidden(db: AsyncpgDatabase) -> None:
    """The Starter IMO's admin gets ForbiddenError feature_not_in_plan."""
    with pytest.raises(errors.ForbiddenError) as info:
        await db.rpc("instagram_oauth_state_create", state_args(STARTER_ADMIN, STARTER_IMO))
    assert info.value.code == "feature_not_in_plan"


async def test_domain_bad_request(db: AsyncpgDatabase) -> None:
    """A 22023 domain error (TTL out of range) is BadRequestError with its code."""
    with pytest.raises(errors.BadRequestError) as info:
        await db.rpc("instagram_oauth_state_create", state_args(DEMO_ADMIN, DEMO_IMO, p_ttl_seconds=5))
    assert info.value.code == "invalid_ttl"


async def test_not_found(db: AsyncpgDatabase) -> None:
    """An unknown integration is NotFoundError integration_not_found (P0002)."""
    with pytest.raises(errors.NotFoundError) as info:
        await db.rpc("instagram_integration_tokens", {"p_integration_id": str(uuid.uuid4()), "p_key": KEY})
    assert info.value.code == "integration_not_found"


async def test_encryption_key_mismatch(db: AsyncpgDatabase) -> None:
    """Reading tokens with another key is EncryptionKeyMismatchError."""
    stored = await store(db)
    with pytest.raises(errors.EncryptionKeyMismatchError):
        await db.rpc(
            "instagram_integration_tokens", {"p_integration_id": stored[0]["id"], "p_key": OTHER_KEY}
        )


async def test_unique_violation_is_conflict(db: AsyncpgDatabase) -> None:
    """Storing the same state hash twice is ConflictError, and the raw constraint message is hidden."""
    args = state_args(DEMO_ADMIN, DEMO_IMO)
    await db.rpc("instagram_oauth_state_create", args)
    with pytest.raises(errors.ConflictError) as info:
        await db.rpc("instagram_oauth_state_create", args)
    assert "state_hash" not in info.value.message
    assert info.value.code == "conflict"


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("instagram_does_not_exist", {}),
        ("instagram_health", {"p_unexpected": 1}),
        ("instagram_oauth_state_consume", {}),
    ],
    ids=["unknown_function", "unknown_argument", "missing_argument"],
)
async def test_unknown_function(db: AsyncpgDatabase, name: str, args: dict[str, object]) -> None:
    """No function matching the name and argument names is RPCNotFoundError."""
    with pytest.raises(errors.RPCNotFoundError):
        await db.rpc(name, args)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("x; drop table", {}),
        ("instagram_health; select 1", {}),
        ("Instagram_Health", {}),
        ("instagram_health\n", {}),
        ("instagram_health", {"p_x => 1); drop table public.imos; --": 1}),
    ],
)
async def test_invalid_identifier_rejected_before_sql(
    database_url: str, name: str, args: dict[str, object]
) -> None:
    """Bad function or argument names are BadRequestError before any SQL: even a closed pool is not touched."""
    database = await AsyncpgDatabase.connect(database_url, min_size=0, max_size=1)
    await database.close()
    with pytest.raises(errors.BadRequestError):
        await database.rpc(name, args)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("p_user_id", "not-a-uuid-secret-value"),
        ("p_ttl_seconds", "secret-value"),
        ("p_ttl_seconds", 2**40),
    ],
)
async def test_wrong_argument_type_is_bad_request(db: AsyncpgDatabase, argument: str, value: object) -> None:
    """An argument of the wrong type is BadRequestError naming the argument, never echoing the value."""
    args = state_args(DEMO_ADMIN, DEMO_IMO)
    args[argument] = value
    with pytest.raises(errors.BadRequestError) as info:
        await db.rpc("instagram_oauth_state_create", args)
    assert argument in info.value.message
    assert "secret-value" not in str(info.value)


async def test_bad_iso_timestamp_is_bad_request(db: AsyncpgDatabase) -> None:
    """A timestamptz argument that is not ISO 8601 is BadRequestError naming the argument."""
    with pytest.raises(errors.BadRequestError, match="p_token_expires_at"):
        await store(db, p_token_expires_at="next tuesday")


async def test_connect_to_closed_port_is_unavailable() -> None:
    """Connecting to a port nobody listens on is DatabaseUnavailableError without the password."""
    dsn = f"postgresql://postgres:hunter2-secret@127.0.0.1:{closed_port()}/postgres"
    with pytest.raises(errors.DatabaseUnavailableError) as info:
        await AsyncpgDatabase.connect(dsn, timeout=2.0)
    assert "hunter2" not in str(info.value)


# ---- the timeout: a silent or locked database never hangs a call ---------------------------------


async def test_connect_to_a_silent_database_is_unavailable_within_the_timeout() -> None:
    """A database that accepts connections and never answers: connect is DatabaseUnavailableError in time."""
    async with silent_server() as port:
        started = time.monotonic()
        with pytest.raises(errors.DatabaseUnavailableError):
            await asyncio.wait_for(
                AsyncpgDatabase.connect(
                    f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres", timeout=0.5
                ),
                timeout=5,
            )
        assert time.monotonic() - started < 2


async def test_calls_on_a_silent_database_are_unavailable_within_the_timeout() -> None:
    """A lazily opened pool on a silent database: rpc, rpc_as_user and ping each give up within the
    timeout, and close() does not hang either."""
    async with silent_server() as port:
        dsn = f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres"
        database = await AsyncpgDatabase.connect(dsn, min_size=0, timeout=0.5)
        user = ActingUser(token="t", claims=claims_for(DEMO_ADMIN))
        calls = [
            database.rpc("instagram_health"),
            database.rpc_as_user(user, "instagram_health"),
            database.ping(),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(errors.DatabaseUnavailableError):
                await asyncio.wait_for(call, timeout=5)
            assert time.monotonic() - started < 2
        await asyncio.wait_for(database.close(), timeout=5)


async def test_a_database_falling_silent_mid_run_fails_calls_within_the_timeout(
    pg: asyncpg.Connection, database_url: str
) -> None:
    """Connected through a proxy that then drops every byte: calls on the pooled connections and new
    connections alike are DatabaseUnavailableError within the timeout, and close() does not hang."""
    port = urlsplit(database_url).port
    assert port is not None
    async with SilenceableProxy(port) as proxy:
        dsn = database_url.replace(f":{port}/", f":{proxy.port}/")
        database = await AsyncpgDatabase.connect(dsn, min_size=2, max_size=3, timeout=0.5)
        await database.rpc("instagram_health")
        proxy.silence()
        for call in [database.rpc("instagram_health"), database.ping(), database.rpc("instagram_health")]:
            started = time.monotonic()
            with pytest.raises(errors.DatabaseUnavailableError):
                await asyncio.wait_for(call, timeout=5)
            assert time.monotonic() - started < 2
        await asyncio.wait_for(database.close(), timeout=5)


async def test_a_statement_waiting_on_a_lock_gives_up_within_the_timeout(
    pg: asyncpg.Connection, database_url: str
) -> None:
    """A statement blocked by a lock another session holds is DatabaseUnavailableError within the
    timeout (and cancelled on the server); the pool answers again once the lock is gone."""
    database = await AsyncpgDatabase.connect(database_url, timeout=0.5)
    try:
        async with pg.transaction():
            await pg.execute("lock table public.instagram_oauth_states in access exclusive mode")
            started = time.monotonic()
            with pytest.raises(errors.DatabaseUnavailableError):
                await asyncio.wait_for(
                    database.rpc("instagram_oauth_state_create", state_args(DEMO_ADMIN, DEMO_IMO)), timeout=5
                )
            assert time.monotonic() - started < 2
            waiting = await pg.fetchval(
                "select count(*) from pg_stat_activity where application_name = 'instagram-dm'"
                " and wait_event_type = 'Lock'"
            )
            assert waiting == 0
        await database.ping()
    finally:
        await database.close()


# ---- ping, LISTEN, role --------------------------------------------------------------------------


async def test_ping(db: AsyncpgDatabase) -> None:
    """ping() succeeds on a live pool and is DatabaseUnavailableError once the pool is closed."""
    await db.ping()
    await db.close()
    with pytest.raises(errors.DatabaseUnavailableError):
        await db.ping()


async def test_listen_receives_notify(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """listen() on two channels over one connection yields each NOTIFY with its channel and payload, in
    order; close() ends the iteration."""
    channel, other = (f"instagram_test_{uuid.uuid4().hex[:8]}" for _ in range(2))
    notifications = await db.listen([channel, other])
    received: list[Notification] = []

    async def consume() -> None:
        async for notification in notifications:
            received.append(notification)

    consumer = asyncio.create_task(consume())
    try:
        await pg.execute("select pg_notify($1, 'first')", channel)
        await pg.execute("select pg_notify($1, 'second')", other)
        await pg.execute("select pg_notify('instagram_not_listened', 'third')")
        await pg.execute("select pg_notify($1, 'fourth')", channel)
        async with asyncio.timeout(5):
            while len(received) < 3:
                await asyncio.sleep(0.01)
        assert received == [
            Notification(channel, "first"),
            Notification(other, "second"),
            Notification(channel, "fourth"),
        ]
    finally:
        await notifications.close()
    async with asyncio.timeout(5):
        await consumer  # ended quietly, no DatabaseUnavailableError


async def test_listen_rejects_bad_channel(db: AsyncpgDatabase) -> None:
    """A channel that is not a plain identifier is BadRequestError (and no connection is left open)."""
    with pytest.raises(errors.BadRequestError):
        await db.listen("x; select pg_sleep(10)")


@pytest.fixture
async def whoami(pg: asyncpg.Connection) -> AsyncIterator[str]:
    """A throwaway security-invoker function returning current_user, executable by service_role only."""
    name = f"instagram_test_whoami_{uuid.uuid4().hex[:8]}"
    ddl = f"""create function public.{name}() returns text language sql stable as $$ select current_user::text $$;
        revoke execute on function public.{name}() from public, anon, authenticated;
        grant execute on function public.{name}() to service_role;"""  # noqa: S608  # our own name, not input
    await pg.execute(ddl)
    try:
        yield name
    finally:
        await pg.execute(f"drop function if exists public.{name}()")


async def test_runs_as_service_role(db: AsyncpgDatabase, whoami: str) -> None:
    """Calls run with current_user = service_role (not the postgres login), and a scalar text comes back."""
    assert await db.rpc(whoami) == "service_role"


async def test_role_governs_grants(database_url: str, whoami: str) -> None:
    """The same service-only functions are refused to an adapter connected as `authenticated`."""
    as_user = await AsyncpgDatabase.connect(database_url, min_size=1, max_size=1, role="authenticated")
    try:
        for name in (whoami, "instagram_health"):
            with pytest.raises(errors.ForbiddenError) as info:
                await as_user.rpc(name)
            assert "permission denied" not in info.value.message
    finally:
        await as_user.close()


# ---- as the user (what PostgREST does for the web app) ------------------------------------------


def as_user(user_id: str | None, role: str = "authenticated", **claims: object) -> ActingUser:
    """A verified caller; over asyncpg only the claims matter (the token is PostgREST's business)."""
    return ActingUser(token="not-sent-over-asyncpg", claims=claims_for(user_id, role) | claims)


async def status_as(db: AsyncpgDatabase, user: ActingUser, imo_id: str = DEMO_IMO) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = await db.rpc_as_user(
        user, "instagram_integration_status", {"p_imo_id": imo_id}
    )
    return rows


async def test_as_user_member_sees_the_imos_integrations(db: AsyncpgDatabase) -> None:
    """A member (not admin) reading the app-facing status as themself gets the IMO's rows, without tokens."""
    stored = await store(db)
    rows = await status_as(db, as_user(DEMO_MEMBER))
    assert [r["id"] for r in rows] == [stored[0]["id"]]
    assert not {"user_token", "page_token", "user_access_token_encrypted"} & set(rows[0])


async def test_as_user_non_member_sees_nothing(db: AsyncpgDatabase) -> None:
    """Another IMO's admin gets [] for Demo Agency: RLS on instagram_integrations decides."""
    await store(db)
    assert await status_as(db, as_user(STARTER_ADMIN)) == []


@pytest.mark.parametrize(
    "user",
    [as_user(str(uuid.uuid4())), as_user(None, role="authenticated")],
    ids=["forged_sub", "absent_sub"],
)
async def test_as_user_unknown_or_absent_sub_gets_nothing(db: AsyncpgDatabase, user: ActingUser) -> None:
    """Claims naming no member (a made-up sub, or none: auth.uid() is null) see nothing and disconnect nothing."""
    stored = await store(db)
    assert await status_as(db, user) == []
    with pytest.raises(errors.NotFoundError):
        await db.rpc_as_user(user, "instagram_disconnect", {"p_integration_id": stored[0]["id"]})


async def test_as_user_admin_disconnects(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """The IMO's admin disconnects through the app-facing RPC; the transaction is committed."""
    stored = await store(db)
    result = await db.rpc_as_user(
        as_user(DEMO_ADMIN), "instagram_disconnect", {"p_integration_id": stored[0]["id"]}
    )
    assert result == {"id": stored[0]["id"], "status": "disconnected", "unsubscribe_queued": True}
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "disconnected"


async def test_as_user_member_cannot_disconnect(db: AsyncpgDatabase, pg: asyncpg.Connection) -> None:
    """A member who is not an admin is refused (as not found) and the integration stays connected."""
    stored = await store(db)
    with pytest.raises(errors.NotFoundError) as info:
        await db.rpc_as_user(
            as_user(DEMO_MEMBER), "instagram_disconnect", {"p_integration_id": stored[0]["id"]}
        )
    assert info.value.code == "integration_not_found"
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "connected"


async def test_as_user_other_imos_integration_is_not_found(
    db: AsyncpgDatabase, pg: asyncpg.Connection
) -> None:
    """Another IMO's admin gets the same integration_not_found as for an id that does not exist."""
    stored = await store(db)
    for integration_id in (stored[0]["id"], str(uuid.uuid4())):
        with pytest.raises(errors.NotFoundError) as info:
            await db.rpc_as_user(
                as_user(STARTER_ADMIN), "instagram_disconnect", {"p_integration_id": integration_id}
            )
        assert info.value.code == "integration_not_found"
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "connected"


async def test_as_user_anon_role_is_refused(db: AsyncpgDatabase) -> None:
    """Claims with role anon run as anon, whom the app-facing RPCs are not granted to (403)."""
    await store(db)
    for name, args in (
        ("instagram_integration_status", {"p_imo_id": DEMO_IMO}),
        ("instagram_disconnect", {"p_integration_id": str(uuid.uuid4())}),
    ):
        with pytest.raises(errors.ForbiddenError):
            await db.rpc_as_user(as_user(DEMO_ADMIN, role="anon"), name, args)


@pytest.mark.parametrize("role", ["service_role", "postgres", "authenticated; drop table x"])
async def test_as_user_other_roles_are_refused_before_sql(database_url: str, role: str) -> None:
    """A JWT naming a role users may not take is ForbiddenError before any SQL (a closed pool is not touched)."""
    database = await AsyncpgDatabase.connect(database_url, min_size=0, max_size=1)
    await database.close()
    with pytest.raises(errors.ForbiddenError) as info:
        await database.rpc_as_user(
            as_user(DEMO_ADMIN, role=role), "instagram_integration_status", {"p_imo_id": DEMO_IMO}
        )
    assert info.value.code == "role_not_allowed"


async def test_as_user_service_functions_are_refused(db: AsyncpgDatabase) -> None:
    """As the user, service-only functions are out of reach, exactly as through PostgREST."""
    with pytest.raises(errors.ForbiddenError):
        await db.rpc_as_user(as_user(DEMO_ADMIN), "instagram_health")


@pytest.fixture
async def whoami_as_user(pg: asyncpg.Connection) -> AsyncIterator[str]:
    """A throwaway function returning current_user, auth.uid() and auth.role(), executable by authenticated."""
    name = f"instagram_test_who_{uuid.uuid4().hex[:8]}"
    ddl = f"""create function public.{name}() returns jsonb language sql stable as $$
          select jsonb_build_object('current_user', current_user::text, 'uid', auth.uid(), 'role', auth.role(),
                                    'email', auth.jwt() ->> 'email') $$;
        revoke execute on function public.{name}() from public, anon;
        grant execute on function public.{name}() to authenticated, service_role;"""  # noqa: S608  # our own name
    await pg.execute(ddl)
    try:
        yield name
    finally:
        await pg.execute(f"drop function if exists public.{name}()")


async def test_as_user_sets_role_and_claims_for_one_transaction(
    database_url: str, whoami_as_user: str
) -> None:
    """The call runs as authenticated with auth.uid()/role()/jwt() from the claims; on the same pooled
    connection the next plain call is service_role again with no claims left behind."""
    database = await AsyncpgDatabase.connect(database_url, min_size=1, max_size=1)
    try:
        seen = await database.rpc_as_user(as_user(DEMO_MEMBER), whoami_as_user)
        assert seen == {
            "current_user": "authenticated",
            "uid": DEMO_MEMBER,
            "role": "authenticated",
            "email": f"{DEMO_MEMBER}@test",
        }
        after = await database.rpc(whoami_as_user)
        assert after == {"current_user": "service_role", "uid": None, "role": None, "email": None}
    finally:
        await database.close()


async def test_as_user_error_rolls_back_and_resets(database_url: str, whoami_as_user: str) -> None:
    """A refused call as the user leaves the pooled connection as service_role, without the user's claims."""
    database = await AsyncpgDatabase.connect(database_url, min_size=1, max_size=1)
    try:
        with pytest.raises(errors.NotFoundError):
            await database.rpc_as_user(
                as_user(DEMO_MEMBER), "instagram_disconnect", {"p_integration_id": str(uuid.uuid4())}
            )
        assert (await database.rpc(whoami_as_user))["current_user"] == "service_role"
    finally:
        await database.close()
