"""JWTVerifier: Supabase user access tokens, HS256 by secret and ES256/RS256 by JWKS (no network)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from instagram_dm import auth
from instagram_dm.auth import JWTVerifier, UserClaims
from instagram_dm.errors import AuthError, ConfigError
from instagram_dm.settings import Secret, Settings
from tests.db.factories import DEMO_ADMIN

# Public local-development values of the Supabase CLI (reference §8, §9); never production keys.
DEMO_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
DEMO_SERVICE_ROLE_KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6"
    "MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU"
)
DEMO_ANON_KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5"
    "OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0"
)
# The CLI's hard-coded ES256 signing key (cli:pkg/config), whose public half every local JWKS lists.
CLI_KID = "b81269f1-21d8-4f2e-b719-c2240a840d90"
CLI_EC_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "M5Sjqn5zwC9Kl1zVfUUGvv9boQjCGd45G8sdopBExB4",
    "y": "P6IXMvA2WYXSHSOMTBH2jsw_9rrzGy89FjPf6oOsIxQ",
}
CLI_EC_D = "dIhR8wywJlqlua4y_yMq2SLhlFXDZJBCvFrY1DCHyVU"

JWKS_URL = "http://127.0.0.1:54321/auth/v1/.well-known/jwks.json"
ISSUER = "http://127.0.0.1:54321/auth/v1"
USER_ID = DEMO_ADMIN  # the seed's admin@demo-agency.test


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def user_payload(**overrides: Any) -> dict[str, Any]:
    """Claims shaped like a GoTrue user session token; `None` overrides drop the claim."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": USER_ID,
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "email": "admin@demo-agency.test",
        "phone": "",
        "role": "authenticated",
        "aal": "aal1",
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = DEMO_SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def hand_signed_hs256(payload: dict[str, Any], key: bytes, header: dict[str, Any] | None = None) -> str:
    """HS256 by hand, for keys PyJWT refuses to use as HMAC secrets (PEM public keys)."""
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


def unsigned(payload: dict[str, Any], alg: str = "none") -> str:
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(payload).encode())}."


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    public_jwk: dict[str, Any]

    def sign(self, payload: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(payload, self.private, algorithm=self.alg, headers={"kid": kid or self.kid})

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


@pytest.fixture(scope="session")
def es256_key() -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    kid = str(uuid.uuid4())
    return SigningKey(kid, "ES256", private, {**jwk, "kid": kid, "use": "sig", "alg": "ES256"})


@pytest.fixture(scope="session")
def rs256_key() -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    kid = str(uuid.uuid4())
    return SigningKey(kid, "RS256", private, {**jwk, "kid": kid, "use": "sig", "alg": "RS256"})


@pytest.fixture(scope="session")
def cli_key() -> SigningKey:
    private = ECAlgorithm.from_jwk({**CLI_EC_JWK, "d": CLI_EC_D})
    public = {**CLI_EC_JWK, "kid": CLI_KID, "use": "sig", "key_ops": ["verify"], "alg": "ES256", "ext": True}
    return SigningKey(CLI_KID, "ES256", private, public)


@dataclass
class JWKSServer:
    """The auth server's JWKS endpoint behind httpx.MockTransport; counts requests, can fail."""

    keys: list[Any]
    requests: int = 0
    failure: Callable[[httpx.Request], httpx.Response] | None = None
    seen_urls: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.seen_urls.append(str(request.url))
        if self.failure is not None:
            return self.failure(request)
        return httpx.Response(200, json={"keys": self.keys})


def connection_refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth, "_monotonic", fake)
    return fake


@pytest.fixture
def jwks(es256_key: SigningKey, rs256_key: SigningKey, cli_key: SigningKey) -> JWKSServer:
    # Like the local CLI's JWKS: asymmetric keys plus the shared secret as an `oct` key without kid.
    oct_key = {"kty": "oct", "k": b64url(DEMO_SECRET.encode())}
    return JWKSServer([es256_key.public_jwk, rs256_key.public_jwk, cli_key.public_jwk, oct_key])


@pytest.fixture
async def http(jwks: JWKSServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(jwks.handle)) as client:
        yield client


@pytest.fixture
def verifier(http: httpx.AsyncClient, clock: Clock) -> JWTVerifier:
    return JWTVerifier(hs256_secret=DEMO_SECRET, jwks_url=JWKS_URL, http=http)


async def rejected(verifier: JWTVerifier, header: str | None) -> AuthError:
    with pytest.raises(AuthError) as info:
        await verifier.verify(header)
    expected = 503 if info.value.code == "auth_unavailable" else 401
    assert info.value.http_status == expected
    return info.value


# ---- accepted tokens -------------------------------------------------------------------------------


async def test_valid_hs256_token(verifier: JWTVerifier, jwks: JWKSServer) -> None:
    """An HS256 user token signed with SUPABASE_JWT_SECRET verifies without touching the JWKS."""
    user = await verifier.verify(f"Bearer {hs256(user_payload())}")
    assert user == UserClaims(
        user_id=USER_ID, email="admin@demo-agency.test", role="authenticated", claims=user.claims
    )
    assert user.claims["aal"] == "aal1"
    assert jwks.requests == 0


async def test_valid_es256_token_via_jwks(
    verifier: JWTVerifier, jwks: JWKSServer, es256_key: SigningKey
) -> None:
    """An ES256 token is verified with the JWKS key named by its kid, fetched from SUPABASE_JWKS_URL."""
    user = await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")
    assert user.user_id == USER_ID
    assert jwks.requests == 1
    assert jwks.seen_urls == [JWKS_URL]


async def test_supabase_cli_default_key(verifier: JWTVerifier, cli_key: SigningKey) -> None:
    """A token minted with the local CLI's published ES256 key verifies against its public JWK."""
    user = await verifier.verify(f"Bearer {cli_key.sign(user_payload())}")
    assert user.user_id == USER_ID


async def test_valid_rs256_token_via_jwks(verifier: JWTVerifier, rs256_key: SigningKey) -> None:
    """An RS256 token is verified with its RSA key from the JWKS."""
    user = await verifier.verify(f"Bearer {rs256_key.sign(user_payload())}")
    assert user.user_id == USER_ID


async def test_jwks_is_cached(
    verifier: JWTVerifier, jwks: JWKSServer, es256_key: SigningKey, clock: Clock
) -> None:
    """The JWKS is fetched once and reused until jwks_cache_seconds (600 s) have passed."""
    for _ in range(5):
        await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")
    assert jwks.requests == 1
    clock.now += 599
    await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")
    assert jwks.requests == 1
    clock.now += 2
    await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")
    assert jwks.requests == 2


async def test_scheme_is_case_insensitive_and_whitespace_tolerated(verifier: JWTVerifier) -> None:
    """'bearer' in any case, with surrounding spaces, is accepted."""
    user = await verifier.verify(f"  bearer   {hs256(user_payload())}  ")
    assert user.user_id == USER_ID


async def test_claims_are_normalised(verifier: JWTVerifier) -> None:
    """The user id is the canonical lower-case UUID; an empty email (phone sign-in) becomes None."""
    token = hs256(user_payload(sub=USER_ID.upper(), email=""))
    user = await verifier.verify(f"Bearer {token}")
    assert user.user_id == USER_ID
    assert user.email is None


async def test_claims_are_read_only(verifier: JWTVerifier) -> None:
    """The verified claims cannot be changed after verification (a read-only mapping at run time)."""
    user = await verifier.verify(f"Bearer {hs256(user_payload())}")
    with pytest.raises(TypeError):
        user.claims["sub"] = "x"  # type: ignore[index]
    assert user.claims["sub"] == USER_ID


async def test_expiry_leeway(verifier: JWTVerifier) -> None:
    """A token expired by less than the leeway (30 s) is still accepted, one expired by more is not."""
    user = await verifier.verify(f"Bearer {hs256(user_payload(exp=int(time.time()) - 25))}")
    assert user.user_id == USER_ID
    late = hs256(user_payload(exp=int(time.time()) - 35, iat=int(time.time()) - 600))
    assert (await rejected(verifier, f"Bearer {late}")).code == "token_expired"


# ---- missing or malformed -------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer   "])
async def test_missing_header(verifier: JWTVerifier, header: str | None) -> None:
    """No header, a blank one, or Bearer without a token is missing_token."""
    assert (await rejected(verifier, header)).code == "missing_token"


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT", "Bearer:"])
async def test_not_bearer(verifier: JWTVerifier, scheme: str) -> None:
    """Any scheme other than Bearer is missing_token, even with a valid JWT after it."""
    assert (await rejected(verifier, f"{scheme} {hs256(user_payload())}")).code == "missing_token"


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "a.b", "Zm9v.YmFy.YmF6", "x" * 20_000, "a.b.c d"])
async def test_malformed_token(verifier: JWTVerifier, token: str) -> None:
    """Garbage, truncated, oversized or space-containing tokens are invalid_token."""
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"


# ---- claims ---------------------------------------------------------------------------------------


async def test_expired(verifier: JWTVerifier) -> None:
    """A token past exp (beyond the leeway) is token_expired."""
    token = hs256(user_payload(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200))
    assert (await rejected(verifier, f"Bearer {token}")).code == "token_expired"


async def test_expired_es256(verifier: JWTVerifier, es256_key: SigningKey) -> None:
    """Expiry is checked for JWKS-verified tokens too."""
    token = es256_key.sign(user_payload(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200))
    assert (await rejected(verifier, f"Bearer {token}")).code == "token_expired"


async def test_missing_exp(verifier: JWTVerifier) -> None:
    """A token without exp never expires, so it is refused as invalid_token."""
    assert (await rejected(verifier, f"Bearer {hs256(user_payload(exp=None))}")).code == "invalid_token"


@pytest.mark.parametrize("aud", ["anon", "service_role", "authenticated-but-not", ["other"]])
async def test_wrong_audience(verifier: JWTVerifier, aud: Any) -> None:
    """aud other than 'authenticated' is invalid_audience."""
    assert (await rejected(verifier, f"Bearer {hs256(user_payload(aud=aud))}")).code == "invalid_audience"


@pytest.mark.parametrize("key", [DEMO_SERVICE_ROLE_KEY, DEMO_ANON_KEY], ids=["service_role", "anon"])
async def test_api_keys_are_not_user_tokens(verifier: JWTVerifier, key: str) -> None:
    """The demo service_role and anon keys are validly signed but have no aud: invalid_audience."""
    assert (await rejected(verifier, f"Bearer {key}")).code == "invalid_audience"


@pytest.mark.parametrize(
    "sub", [None, "", "admin", 42, "00000000000040008000000000000b1", "{" + USER_ID + "}"]
)
async def test_bad_subject(verifier: JWTVerifier, sub: Any) -> None:
    """A missing, non-string or non-canonical-UUID sub is invalid_subject."""
    token = hs256({**user_payload(), "sub": sub} if sub is not None else user_payload(sub=None))
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_subject"


async def test_issuer_checked_when_configured() -> None:
    """With an issuer configured, a token from another issuer is invalid_token."""
    verifier = JWTVerifier(hs256_secret=DEMO_SECRET, jwks_url=None, issuer=ISSUER)
    assert (await verifier.verify(f"Bearer {hs256(user_payload())}")).user_id == USER_ID
    token = hs256(user_payload(iss="https://evil.example/auth/v1"))
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"


# ---- signatures and algorithms --------------------------------------------------------------------


async def test_wrong_hs256_secret(verifier: JWTVerifier) -> None:
    """An HS256 token signed with another secret is invalid_token."""
    token = hs256(user_payload(), secret="another-secret-that-is-at-least-32-characters")
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"


async def test_tampered_payload(verifier: JWTVerifier, es256_key: SigningKey) -> None:
    """Changing the payload of a signed token breaks the signature: invalid_token."""
    head, _, sig = es256_key.sign(user_payload()).split(".")
    forged = b64url(json.dumps(user_payload(sub=str(uuid.uuid4()))).encode())
    assert (await rejected(verifier, f"Bearer {head}.{forged}.{sig}")).code == "invalid_token"


@pytest.mark.parametrize("with_kid", [False, True])
async def test_alg_confusion_hs256_with_public_key(
    verifier: JWTVerifier, jwks: JWKSServer, rs256_key: SigningKey, with_kid: bool
) -> None:
    """An HS256 token whose HMAC key is the public key (PEM) is refused: HS256 only uses the secret."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": rs256_key.kid} if with_kid else {})}
    token = hand_signed_hs256(user_payload(), rs256_key.public_pem(), header)
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"
    assert jwks.requests == 0


async def test_alg_confusion_without_secret(
    http: httpx.AsyncClient, clock: Clock, jwks: JWKSServer, es256_key: SigningKey
) -> None:
    """With only a JWKS configured, HS256 tokens (even keyed with the JWKS's oct secret) are refused."""
    verifier = JWTVerifier(hs256_secret=None, jwks_url=JWKS_URL, http=http)
    for key in (es256_key.public_pem(), DEMO_SECRET.encode()):
        token = hand_signed_hs256(user_payload(), key)
        assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"
    assert jwks.requests == 0


async def test_header_alg_must_match_key(
    verifier: JWTVerifier, es256_key: SigningKey, rs256_key: SigningKey
) -> None:
    """An RS256-signed token that names an EC key's kid is invalid_token."""
    token = rs256_key.sign(user_payload(), kid=es256_key.kid)
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS512", "ES512", "PS256", "EdDSA", ""])
async def test_refused_algorithms(verifier: JWTVerifier, jwks: JWKSServer, alg: str) -> None:
    """alg none (any case) and every algorithm other than HS256/ES256/RS256 is invalid_token."""
    assert (await rejected(verifier, f"Bearer {unsigned(user_payload(), alg)}")).code == "invalid_token"
    assert jwks.requests == 0


async def test_asymmetric_token_without_kid(verifier: JWTVerifier, es256_key: SigningKey) -> None:
    """An ES256 token without kid is invalid_token (Supabase always names the key)."""
    token = jwt.encode(user_payload(), es256_key.private, algorithm="ES256")
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"


async def test_asymmetric_token_without_jwks_configured(es256_key: SigningKey) -> None:
    """With only the HS256 secret configured, ES256 tokens are invalid_token."""
    verifier = JWTVerifier(hs256_secret=DEMO_SECRET, jwks_url=None)
    assert (await rejected(verifier, f"Bearer {es256_key.sign(user_payload())}")).code == "invalid_token"


# ---- JWKS refresh, rate limit and outages ---------------------------------------------------------


async def test_unknown_kid_refetches_once_then_invalid(
    verifier: JWTVerifier, jwks: JWKSServer, es256_key: SigningKey, clock: Clock
) -> None:
    """A kid not in the cached JWKS triggers one refetch; if still unknown the token is invalid_token."""
    await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")
    assert jwks.requests == 1
    clock.now += 60  # the cache is a minute old: fresh, so only the unknown kid causes the refetch
    token = es256_key.sign(user_payload(), kid="rotated-away")
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"
    assert jwks.requests == 2
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"
    assert jwks.requests == 2  # not again right away


async def test_unknown_kid_flood_is_rate_limited(
    verifier: JWTVerifier, jwks: JWKSServer, es256_key: SigningKey, clock: Clock
) -> None:
    """Many made-up kids cause at most one fetch per min_refetch_seconds."""
    for _ in range(50):
        token = es256_key.sign(user_payload(), kid=str(uuid.uuid4()))
        assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"
    assert jwks.requests == 1
    clock.now += JWTVerifier.min_refetch_seconds
    await rejected(verifier, f"Bearer {es256_key.sign(user_payload(), kid='another')}")
    assert jwks.requests == 2


async def test_rotated_key_is_picked_up(
    verifier: JWTVerifier, jwks: JWKSServer, es256_key: SigningKey, clock: Clock
) -> None:
    """A new signing key published after the JWKS was cached is found by the unknown-kid refetch."""
    await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")
    new_private = ec.generate_private_key(ec.SECP256R1())
    new_jwk = {**ECAlgorithm.to_jwk(new_private.public_key(), as_dict=True), "kid": "new", "alg": "ES256"}
    jwks.keys.append(new_jwk)
    clock.now += JWTVerifier.min_refetch_seconds
    token = jwt.encode(user_payload(), new_private, algorithm="ES256", headers={"kid": "new"})
    assert (await verifier.verify(f"Bearer {token}")).user_id == USER_ID
    assert jwks.requests == 2


@pytest.mark.parametrize(
    "failure",
    [
        connection_refused,
        lambda r: httpx.Response(503, text="<html>Bad Gateway</html>"),
        lambda r: httpx.Response(200, text="<html>captive portal</html>"),
        lambda r: httpx.Response(200, json={"no": "keys"}),
    ],
    ids=["connect_error", "503_html", "200_not_json", "200_no_keys"],
)
async def test_jwks_down_is_auth_unavailable(
    verifier: JWTVerifier,
    jwks: JWKSServer,
    es256_key: SigningKey,
    clock: Clock,
    failure: Callable[[httpx.Request], httpx.Response],
) -> None:
    """JWKS unreachable with no cached keys: auth_unavailable (503, retry), refetched only after the backoff."""
    jwks.failure = failure
    token = es256_key.sign(user_payload())
    assert (await rejected(verifier, f"Bearer {token}")).code == "auth_unavailable"
    assert (await rejected(verifier, f"Bearer {token}")).code == "auth_unavailable"
    assert jwks.requests == 1  # the second call did not hit the failing endpoint
    jwks.failure = None
    clock.now += JWTVerifier.min_refetch_seconds
    assert (await verifier.verify(f"Bearer {token}")).user_id == USER_ID
    assert jwks.requests == 2


async def test_stale_keys_used_while_jwks_down(
    verifier: JWTVerifier, jwks: JWKSServer, es256_key: SigningKey, clock: Clock
) -> None:
    """After the cache expires, a failing JWKS endpoint does not lock users out: the last keys are kept."""
    await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")
    jwks.failure = connection_refused
    clock.now += 3600
    assert (await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")).user_id == USER_ID
    assert jwks.requests == 2


async def test_hs256_works_while_jwks_down(verifier: JWTVerifier, jwks: JWKSServer) -> None:
    """HS256 tokens never depend on the JWKS endpoint."""
    jwks.failure = connection_refused
    assert (await verifier.verify(f"Bearer {hs256(user_payload())}")).user_id == USER_ID
    assert jwks.requests == 0


async def test_symmetric_and_foreign_jwks_entries_ignored(
    http: httpx.AsyncClient, clock: Clock, jwks: JWKSServer, es256_key: SigningKey
) -> None:
    """oct keys, encryption keys and unsupported curves in the JWKS are skipped, not fatal."""
    p384 = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
    jwks.keys = [
        {"kty": "oct", "kid": "secret", "k": b64url(DEMO_SECRET.encode())},
        {**es256_key.public_jwk, "kid": "enc", "use": "enc"},
        {**p384, "kid": "p384"},
        {"kty": "EC", "kid": "broken", "crv": "P-256", "x": "AA", "y": "AA"},
        "not a dict",
        es256_key.public_jwk,
    ]
    verifier = JWTVerifier(hs256_secret=None, jwks_url=JWKS_URL, http=http)
    assert (await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")).user_id == USER_ID
    secret_token = jwt.encode(user_payload(), DEMO_SECRET, algorithm="HS256", headers={"kid": "secret"})
    assert (await rejected(verifier, f"Bearer {secret_token}")).code == "invalid_token"
    enc_token = es256_key.sign(user_payload(), kid="enc")
    clock.now += JWTVerifier.min_refetch_seconds
    assert (await rejected(verifier, f"Bearer {enc_token}")).code == "invalid_token"


async def test_token_never_in_messages_or_logs(
    verifier: JWTVerifier, jwks: JWKSServer, es256_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """Rejections and JWKS log lines never contain the token or its signature."""
    caplog.set_level(logging.DEBUG, logger="instagram_dm.auth")
    jwks.failure = connection_refused
    tokens = [
        es256_key.sign(user_payload()),
        es256_key.sign(user_payload(), kid="unknown"),
        hs256(user_payload(exp=int(time.time()) - 3600)),
        hs256(user_payload(aud="anon")),
        hs256(user_payload(sub="nope")),
    ]
    for token in tokens:
        error = await rejected(verifier, f"Bearer {token}")
        for text in (str(error), repr(error), error.message):
            assert token not in text
            assert token.split(".")[2] not in text
    assert caplog.records
    for record in caplog.records:
        assert not any(token.split(".")[2] in record.getMessage() + repr(vars(record)) for token in tokens)


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SEGMENT = st.text(alphabet=_B64URL, max_size=60)
_ARBITRARY_HEADERS = st.one_of(
    st.none(),
    st.text(max_size=200),
    st.builds(lambda t: f"Bearer {t}", st.text(max_size=200)),
    st.builds(lambda a, b, c: f"Bearer {a}.{b}.{c}", _SEGMENT, _SEGMENT, _SEGMENT),
    st.builds(
        lambda h, p: f"Bearer {b64url(json.dumps(h).encode())}.{b64url(json.dumps(p).encode())}.c2ln",
        st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit"]), st.one_of(st.text(), st.integers())),
        st.dictionaries(st.text(max_size=5), st.one_of(st.text(), st.integers(), st.none())),
    ),
)


@settings(max_examples=300, deadline=None)
@given(header=_ARBITRARY_HEADERS)
def test_arbitrary_headers_only_raise_auth_error(header: str | None) -> None:
    """Whatever the Authorization header holds, verify() raises AuthError and nothing else."""

    async def check() -> None:
        empty = httpx.MockTransport(lambda request: httpx.Response(200, json={"keys": []}))
        async with httpx.AsyncClient(transport=empty) as client:
            verifier = JWTVerifier(hs256_secret=DEMO_SECRET, jwks_url=JWKS_URL, http=client)
            with pytest.raises(AuthError):
                await verifier.verify(header)

    asyncio.run(check())


# ---- construction ---------------------------------------------------------------------------------


async def test_from_settings(http: httpx.AsyncClient, clock: Clock, es256_key: SigningKey) -> None:
    """from_settings reads SUPABASE_JWT_SECRET and SUPABASE_JWKS_URL."""
    settings = Settings(supabase_jwt_secret=Secret(DEMO_SECRET), supabase_jwks_url=JWKS_URL)
    verifier = JWTVerifier.from_settings(settings, http)
    assert (await verifier.verify(f"Bearer {hs256(user_payload())}")).user_id == USER_ID
    assert (await verifier.verify(f"Bearer {es256_key.sign(user_payload())}")).user_id == USER_ID


def test_from_settings_needs_a_key_source(http: httpx.AsyncClient) -> None:
    """Neither SUPABASE_JWT_SECRET nor SUPABASE_JWKS_URL set is a ConfigError naming both."""
    with pytest.raises(ConfigError, match="SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL"):
        JWTVerifier.from_settings(Settings(), http)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hs256_secret": None, "jwks_url": None}, "must be set"),
        ({"hs256_secret": "short", "jwks_url": None}, "at least 32"),
        ({"hs256_secret": None, "jwks_url": JWKS_URL}, "httpx.AsyncClient"),
    ],
)
def test_constructor_refuses_bad_config(kwargs: dict[str, Any], match: str) -> None:
    """No key source, a short HS256 secret, or a JWKS URL without an HTTP client is a ConfigError."""
    with pytest.raises(ConfigError, match=match):
        JWTVerifier(**kwargs)


@pytest.mark.parametrize(
    "header",
    [{"alg": []}, {"alg": {}}, {"alg": 5}, {"alg": None}, {"alg": ["HS256"]}, {"alg": "RS256", "kid": []}],
    ids=["list", "object", "number", "null", "list-of-hs256", "kid-list"],
)
async def test_a_header_of_the_wrong_json_types_is_invalid_token(
    verifier: JWTVerifier, header: dict[str, Any]
) -> None:
    """A JWT header whose alg (or kid) is not a string is invalid_token (it used to raise TypeError: a 500)."""
    token = hand_signed_hs256(user_payload(), DEMO_SECRET.encode(), header)
    assert (await rejected(verifier, f"Bearer {token}")).code == "invalid_token"
