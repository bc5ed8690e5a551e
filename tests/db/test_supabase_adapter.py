"""The supabase-py adapter against a fake PostgREST (httpx.MockTransport): requests, decoding, errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple

import httpx
import pytest

from instagram_dm import errors
from instagram_dm.auth import mint_user_token
from instagram_dm.db.port import ActingUser, translate_error
from instagram_dm.db.supabase_adapter import SupabaseDatabase

SUPABASE_URL = "http://127.0.0.1:54321"
# The local CLI's public demo service_role key (reference §9); never a production key.
SERVICE_ROLE_KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6"
    "MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU"
)
USER_ID = "00000000-0000-4000-8000-0000000000b1"
IMO_ID = "00000000-0000-4000-8000-0000000000a1"

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakePostgREST:
    """Answers every request with `reply` and records what was sent."""

    reply: Handler = field(default=lambda request: httpx.Response(204))
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def postgrest_error(status: int, code: str, message: str, details: str | None = None) -> Handler:
    body = {"code": code, "message": message, "details": details, "hint": None}
    return lambda request: httpx.Response(status, json=body)


@pytest.fixture
def postgrest() -> FakePostgREST:
    return FakePostgREST()


@pytest.fixture
async def http(postgrest: FakePostgREST) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(postgrest.handle)) as client:
        yield client


@pytest.fixture
async def sdb(http: httpx.AsyncClient) -> AsyncIterator[SupabaseDatabase]:
    database = await SupabaseDatabase.connect(SUPABASE_URL, SERVICE_ROLE_KEY, http=http)
    yield database
    await database.close()


# ---- the request --------------------------------------------------------------------------------


async def test_request_shape(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """An RPC is POST <url>/rest/v1/rpc/<fn> with apikey + Bearer service key and the named args as JSON."""
    await sdb.rpc(
        "instagram_oauth_state_consume", {"p_state_hash": "ab" * 32, "p_browser_binding_hash": None}
    )
    request = postgrest.last
    assert request.method == "POST"
    assert str(request.url) == f"{SUPABASE_URL}/rest/v1/rpc/instagram_oauth_state_consume"
    assert request.headers["apikey"] == SERVICE_ROLE_KEY
    assert request.headers["authorization"] == f"Bearer {SERVICE_ROLE_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"p_state_hash": "ab" * 32, "p_browser_binding_hash": None}


# ---- as the user ---------------------------------------------------------------------------------


def acting(role: str = "authenticated") -> ActingUser:
    token = mint_user_token("a-test-secret-that-is-at-least-32-characters", USER_ID, role=role)
    return ActingUser(token=token, claims={"sub": USER_ID, "role": role, "aud": "authenticated"})


async def test_as_user_sends_the_users_jwt(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """As the user, the same RPC goes with the user's JWT as the bearer; apikey stays the adapter's key."""
    user = acting()
    postgrest.reply = lambda request: httpx.Response(200, json=[])
    assert await sdb.rpc_as_user(user, "instagram_integration_status", {"p_imo_id": IMO_ID}) == []
    request = postgrest.last
    assert request.method == "POST"
    assert str(request.url) == f"{SUPABASE_URL}/rest/v1/rpc/instagram_integration_status"
    assert request.headers["apikey"] == SERVICE_ROLE_KEY
    assert request.headers["authorization"] == f"Bearer {user.token}"
    assert request.headers.get_list("authorization") == [f"Bearer {user.token}"]
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"p_imo_id": IMO_ID}


async def test_as_user_does_not_stick(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """A service call after a call as the user carries the service key again, and the user's JWT is gone."""
    user = acting()
    await sdb.rpc_as_user(user, "instagram_disconnect", {"p_integration_id": IMO_ID})
    await sdb.rpc("instagram_health")
    assert postgrest.last.headers["authorization"] == f"Bearer {SERVICE_ROLE_KEY}"
    assert user.token not in str(postgrest.last.headers)


async def test_as_user_refused_token_is_auth_error(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """PostgREST's 401 for the user's JWT (PGRST301) is AuthError, not a broken service key."""
    postgrest.reply = postgrest_error(401, "PGRST301", "JWT expired")
    with pytest.raises(errors.AuthError):
        await sdb.rpc_as_user(acting(), "instagram_integration_status", {"p_imo_id": IMO_ID})
    postgrest.reply = lambda request: httpx.Response(401, json={"message": "Invalid JWT"})
    with pytest.raises(errors.AuthError) as info:
        await sdb.rpc_as_user(acting(), "instagram_integration_status", {"p_imo_id": IMO_ID})
    assert "SUPABASE_SERVICE_ROLE_KEY" not in info.value.message


async def test_as_user_domain_errors_map_as_usual(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """instagram_disconnect's integration_not_found (P0002) comes back as NotFoundError."""
    postgrest.reply = postgrest_error(404, "P0002", "integration_not_found", "No such Instagram integration.")
    with pytest.raises(errors.NotFoundError):
        await sdb.rpc_as_user(acting(), "instagram_disconnect", {"p_integration_id": IMO_ID})


async def test_as_user_without_token_refused_before_http(
    sdb: SupabaseDatabase, postgrest: FakePostgREST
) -> None:
    """A caller without a token cannot be acted as over PostgREST (it would silently be anon)."""
    with pytest.raises(errors.AuthError):
        await sdb.rpc_as_user(ActingUser(token="", claims={"sub": USER_ID, "role": "authenticated"}), "fn")
    assert postgrest.requests == []


@pytest.mark.parametrize("role", ["service_role", "supabase_admin"])
async def test_as_user_other_roles_refused_before_http(
    sdb: SupabaseDatabase, postgrest: FakePostgREST, role: str
) -> None:
    """A JWT naming a role users may not take is ForbiddenError and nothing is sent."""
    with pytest.raises(errors.ForbiddenError):
        await sdb.rpc_as_user(acting(role), "instagram_integration_status", {"p_imo_id": IMO_ID})
    assert postgrest.requests == []


async def test_no_args_sends_empty_object(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """A call without arguments posts {} (PostgREST rejects an empty body)."""
    await sdb.rpc("instagram_health")
    assert json.loads(postgrest.last.content) == {}


async def test_arguments_are_serialised(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """Datetimes become ISO 8601 (nested too), UUIDs and Decimals strings; lists and dicts stay JSON."""
    at = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)
    local = datetime(2026, 11, 26, 13, 30, tzinfo=timezone(timedelta(hours=1)))
    await sdb.rpc(
        "instagram_store_integrations",
        {
            "p_imo_id": uuid.UUID(IMO_ID),
            "p_token_expires_at": at,
            "p_data_access_expires_at": local,
            "p_scopes": ("instagram_basic", "pages_show_list"),
            "p_accounts": [{"page_id": "1", "seen": date(2026, 1, 2), "amount": Decimal("1.10")}],
            "p_user_token": None,
        },
    )
    assert json.loads(postgrest.last.content) == {
        "p_imo_id": IMO_ID,
        "p_token_expires_at": "2026-11-26T12:30:00+00:00",
        "p_data_access_expires_at": "2026-11-26T13:30:00+01:00",
        "p_scopes": ["instagram_basic", "pages_show_list"],
        "p_accounts": [{"page_id": "1", "seen": "2026-01-02", "amount": "1.10"}],
        "p_user_token": None,
    }


@pytest.mark.parametrize("name", ["x; drop table", "Instagram_health", "rpc/../x", "x\n", ""])
async def test_invalid_function_name_rejected_before_http(
    sdb: SupabaseDatabase, postgrest: FakePostgREST, name: str
) -> None:
    """A function name that is not a plain identifier is BadRequestError and nothing is sent."""
    with pytest.raises(errors.BadRequestError):
        await sdb.rpc(name, {})
    assert postgrest.requests == []


async def test_unserialisable_argument_is_bad_request(
    sdb: SupabaseDatabase, postgrest: FakePostgREST
) -> None:
    """An argument that cannot be JSON is BadRequestError naming the argument, and nothing is sent."""
    with pytest.raises(errors.BadRequestError, match="p_accounts"):
        await sdb.rpc("instagram_store_integrations", {"p_accounts": {"x": object()}})
    with pytest.raises(errors.BadRequestError, match="p_limit"):
        await sdb.rpc("instagram_unsubscribe_claim_v1", {"p_limit": float("nan")})
    assert postgrest.requests == []


# ---- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "ok", "user_id": USER_ID}, {"status": "ok", "user_id": USER_ID}),
        ([{"id": 1}, {"id": 2}], [{"id": 1}, {"id": 2}]),
        ([], []),
        ({}, {}),
        (42, 42),
        ("text", "text"),
        (True, True),
        (None, None),
    ],
    ids=["object", "array", "empty_array", "empty_object", "int", "string", "bool", "json_null"],
)
async def test_results_decoded(
    sdb: SupabaseDatabase, postgrest: FakePostgREST, body: Any, expected: Any
) -> None:
    """jsonb objects/arrays come back as dict/list (an empty array stays []), scalars as scalars."""
    postgrest.reply = lambda request: httpx.Response(200, json=body)
    assert await sdb.rpc("fn") == expected


async def test_void_is_none(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """A void function (PostgREST: 204 No Content) returns None, not []."""
    postgrest.reply = lambda request: httpx.Response(204)
    assert await sdb.rpc("instagram_rotate_key_batch", {"p_batch": 1}) is None


async def test_empty_200_is_none(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """An empty 200 body (older PostgREST for void) is None as well."""
    postgrest.reply = lambda request: httpx.Response(200, content=b"")
    assert await sdb.rpc("fn") is None


async def test_non_json_success_body(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """A 200 that is not JSON (a captive portal, a misrouted proxy) is DatabaseError, not a crash."""
    postgrest.reply = lambda request: httpx.Response(200, text="<html>hello</html>")
    with pytest.raises(errors.DatabaseError) as info:
        await sdb.rpc("fn")
    assert "<html>" not in info.value.message


# ---- PostgREST errors ----------------------------------------------------------------------------


class ErrorCase(NamedTuple):
    status: int
    code: str
    message: str
    details: str | None
    cls: type[errors.InstagramDMError]
    our_code: str


NOT_ADMIN = "Only an owner or admin of the IMO can connect Instagram."
KEY_MISMATCH = "The stored tokens were encrypted with a different INSTAGRAM_TOKEN_ENCRYPTION_KEY."
ERROR_CASES = {
    "not_imo_admin": ErrorCase(
        403, "42501", "not_imo_admin", NOT_ADMIN, errors.ForbiddenError, "not_imo_admin"
    ),
    "feature_not_in_plan": ErrorCase(
        403, "42501", "feature_not_in_plan", "Upgrade.", errors.ForbiddenError, "feature_not_in_plan"
    ),
    "encryption_key_mismatch": ErrorCase(
        400,
        "P0001",
        "encryption_key_mismatch",
        KEY_MISMATCH,
        errors.EncryptionKeyMismatchError,
        "encryption_key_mismatch",
    ),
    "integration_not_found": ErrorCase(
        500,
        "P0002",
        "integration_not_found",
        "No such Instagram integration.",
        errors.NotFoundError,
        "integration_not_found",
    ),
    "invalid_encryption_key": ErrorCase(
        400,
        "22023",
        "invalid_encryption_key",
        "At least 32 characters.",
        errors.BadRequestError,
        "invalid_encryption_key",
    ),
    "invalid_state": ErrorCase(400, "P0001", "invalid_state", None, errors.OAuthStateError, "invalid_state"),
    "PGRST202": ErrorCase(
        404,
        "PGRST202",
        "Could not find the function public.nope(p_x) in the schema cache",
        "Searched for the function public.nope with parameter p_x",
        errors.RPCNotFoundError,
        "rpc_not_found",
    ),
    "23505": ErrorCase(
        409,
        "23505",
        'duplicate key value violates unique constraint "instagram_oauth_states_state_hash_key"',
        "Key (state_hash)=(abc) already exists.",
        errors.ConflictError,
        "conflict",
    ),
    "23503": ErrorCase(
        409,
        "23503",
        'insert or update on table "x" violates foreign key constraint',
        None,
        errors.ConflictError,
        "conflict",
    ),
    "PGRST001": ErrorCase(
        503,
        "PGRST001",
        "Database client error. Retrying the connection.",
        None,
        errors.DatabaseUnavailableError,
        "database_unavailable",
    ),
    "PGRST002": ErrorCase(
        503,
        "PGRST002",
        "Could not query the database for the schema cache. Retrying.",
        None,
        errors.DatabaseUnavailableError,
        "database_unavailable",
    ),
    "08006": ErrorCase(
        503, "08006", "connection failure", None, errors.DatabaseUnavailableError, "database_unavailable"
    ),
    "XX000": ErrorCase(500, "XX000", "internal error", None, errors.DatabaseError, "database_error"),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
async def test_postgrest_errors_mapped(
    sdb: SupabaseDatabase, postgrest: FakePostgREST, case: ErrorCase
) -> None:
    """PostgREST's {code, message, details, hint} maps onto our tree: SQLSTATE, PGRST code, snake_case message."""
    postgrest.reply = postgrest_error(case.status, case.code, case.message, case.details)
    with pytest.raises(errors.InstagramDMError) as info:
        await sdb.rpc("fn", {"p_x": 1})
    assert type(info.value) is case.cls
    assert info.value.code == case.our_code


async def test_domain_error_shows_its_detail(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """For our own `raise exception '<code>'`, the detail sentence is the message people see."""
    detail = "Only an owner or admin of the IMO can connect Instagram."
    postgrest.reply = postgrest_error(403, "42501", "not_imo_admin", detail)
    with pytest.raises(errors.ForbiddenError) as info:
        await sdb.rpc("instagram_oauth_state_create", {})
    assert info.value.message == detail
    assert info.value.http_status == 403


@pytest.mark.parametrize(
    ("code", "message", "details"),
    [
        (
            "23505",
            'duplicate key value violates unique constraint "k"',
            "Key (email)=(secret@x.test) exists.",
        ),
        ("42501", "permission denied for function instagram_integration_tokens", None),
        ("XX000", "could not decrypt with key 0123456789abcdef0123456789abcdef", None),
        ("22P02", 'invalid input syntax for type uuid: "secret-value"', None),
    ],
)
async def test_raw_database_messages_are_hidden(
    sdb: SupabaseDatabase, postgrest: FakePostgREST, code: str, message: str, details: str | None
) -> None:
    """A raw Postgres message (not one of our snake_case codes) never reaches the message people see."""
    postgrest.reply = postgrest_error(400, code, message, details)
    with pytest.raises(errors.InstagramDMError) as info:
        await sdb.rpc("fn")
    shown = f"{info.value.message} {info.value} {info.value.code}"
    assert message not in shown
    assert "secret" not in shown
    assert info.value.message == type(info.value).__doc__.strip().splitlines()[0]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("message", "visible"),
    [
        ("not_imo_admin", True),
        ("integration_not_found", True),
        ("permission denied for table x", False),
        ("Not_A_Code", False),
        ('relation "secret_table" does not exist', False),
    ],
)
def test_translate_error_shows_only_snake_case_codes(message: str, visible: bool) -> None:
    """translate_error keeps our snake_case codes and hides any other database message."""
    error = translate_error("42501", message, "detail sentence." if visible else "Key (x)=(secret)")
    assert (error.code == message) is visible
    assert (message in error.message or error.message == "detail sentence.") is visible
    assert "secret" not in error.message


# ---- not PostgREST: the gateway and the network ---------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504, 522])
async def test_gateway_html_is_unavailable(
    sdb: SupabaseDatabase, postgrest: FakePostgREST, status: int
) -> None:
    """A 5xx gateway page (HTML, not PostgREST JSON) is DatabaseUnavailableError; the HTML is not shown."""
    html = "<html><body><h1>503 Service Temporarily Unavailable</h1><p>nginx secret-host</p></body></html>"
    postgrest.reply = lambda request: httpx.Response(status, text=html, headers={"content-type": "text/html"})
    with pytest.raises(errors.DatabaseUnavailableError) as info:
        await sdb.rpc("fn")
    assert "secret-host" not in str(info.value)
    assert info.value.http_status == 503


@pytest.mark.parametrize(
    "reply",
    [
        lambda request: httpx.Response(500, text="Internal Server Error"),
        lambda request: httpx.Response(500, content=b""),
        lambda request: httpx.Response(400, json=["not", "an", "error", "object"]),
        lambda request: httpx.Response(418, json={"message": "I'm a teapot"}),
    ],
    ids=["500_text", "500_empty", "400_json_array", "418_no_code"],
)
async def test_other_non_postgrest_errors(
    sdb: SupabaseDatabase, postgrest: FakePostgREST, reply: Handler
) -> None:
    """Other error bodies without a PostgREST code are a plain DatabaseError, never a JSON crash."""
    postgrest.reply = reply
    with pytest.raises(errors.DatabaseError) as info:
        await sdb.rpc("fn")
    assert type(info.value) is errors.DatabaseError


async def test_refused_key(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """Kong's 401 for a wrong key is a DatabaseError that points at SUPABASE_SERVICE_ROLE_KEY."""
    postgrest.reply = lambda request: httpx.Response(401, json={"message": "Invalid API key"})
    with pytest.raises(errors.DatabaseError, match="SUPABASE_SERVICE_ROLE_KEY"):
        await sdb.rpc("fn")


async def test_proxy_status_names_postgrest_code(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """A body-less error whose Proxy-Status header carries a PostgREST code is mapped by that code."""
    postgrest.reply = lambda request: httpx.Response(
        503, content=b"", headers={"Proxy-Status": "PostgREST; error=PGRST002"}
    )
    with pytest.raises(errors.DatabaseUnavailableError):
        await sdb.rpc("fn")


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError], ids=lambda e: e.__name__
)
async def test_network_errors_are_unavailable(
    sdb: SupabaseDatabase, postgrest: FakePostgREST, exc: type[httpx.TransportError]
) -> None:
    """Connection refused, timeouts and broken responses are DatabaseUnavailableError."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)

    postgrest.reply = fail
    with pytest.raises(errors.DatabaseUnavailableError):
        await sdb.rpc("fn")
    assert len(postgrest.requests) == 1  # POST RPCs are never retried


# ---- the rest of the port ------------------------------------------------------------------------


async def test_ping(sdb: SupabaseDatabase, postgrest: FakePostgREST) -> None:
    """ping() calls instagram_health and raises DatabaseUnavailableError when Supabase is down."""
    postgrest.reply = lambda request: httpx.Response(200, json={"pgcrypto": True})
    await sdb.ping()
    assert postgrest.last.url.path == "/rest/v1/rpc/instagram_health"
    postgrest.reply = lambda request: httpx.Response(503, text="down")
    with pytest.raises(errors.DatabaseUnavailableError):
        await sdb.ping()


async def test_listen_not_supported(sdb: SupabaseDatabase) -> None:
    """There is no LISTEN over REST: supports_listen is False and listen() raises NotImplementedError."""
    assert sdb.supports_listen is False
    with pytest.raises(NotImplementedError):
        await sdb.listen("instagram_refresh")


async def test_injected_client_stays_open(http: httpx.AsyncClient, postgrest: FakePostgREST) -> None:
    """close() leaves an injected httpx client to its owner."""
    database = await SupabaseDatabase.connect(SUPABASE_URL, SERVICE_ROLE_KEY, http=http)
    await database.close()
    assert not http.is_closed


async def test_own_client_without_network() -> None:
    """Without an injected client the adapter makes (and closes) its own; a dead port is unavailable."""
    database = await SupabaseDatabase.connect("http://127.0.0.1:9", SERVICE_ROLE_KEY, timeout=2.0)
    try:
        with pytest.raises(errors.DatabaseUnavailableError):
            await database.rpc("instagram_health")
    finally:
        await database.close()


async def test_bad_url_is_config_error() -> None:
    """A URL supabase-py refuses is a ConfigError that does not echo the key."""
    with pytest.raises(errors.ConfigError) as info:
        await SupabaseDatabase.connect("not a url", SERVICE_ROLE_KEY)
    assert SERVICE_ROLE_KEY not in str(info.value)
