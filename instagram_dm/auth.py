"""Verify the caller's Supabase access token (``Authorization: Bearer <jwt>``).

Supabase signs user tokens either with the project's shared secret (HS256, older projects and older
CLIs) or with an asymmetric signing key published at ``/auth/v1/.well-known/jwks.json`` (ES256 on the
local CLI since v2.71, ES256/RS256 on hosted projects). :class:`JWTVerifier` picks the key from the
token's header and never lets the token choose how its key is interpreted:

* ``alg = HS256`` is checked only against ``SUPABASE_JWT_SECRET``; a JWKS key is never used as an HMAC
  secret (the "alg confusion" attack), and ``oct`` keys in the JWKS are ignored.
* ``alg = ES256 | RS256`` is checked only against the JWKS key named by ``kid``, and the key's own
  algorithm must equal the header's.
* ``none`` and every other algorithm are refused.

Then ``exp`` (required), ``aud == "authenticated"`` (anon and service_role keys have no ``aud``) and a
UUID ``sub`` are checked. Every failure is an :class:`~instagram_dm.errors.AuthError` with one of these
codes (all 401)::

    missing_token      no Authorization header, a blank one, or not the Bearer scheme
    invalid_token      malformed, bad signature, refused alg, unknown kid, wrong issuer, no exp
    token_expired      exp is in the past (beyond the leeway)
    invalid_audience   aud is missing or not "authenticated": an API key, not a user session
    invalid_subject    sub is missing or not a UUID
    auth_unavailable   an ES256/RS256 token whose kid we do not hold, and the last JWKS fetch
                       failed (endpoint down); the client should retry, not sign the user out

The JWKS is fetched with the injected ``httpx.AsyncClient`` and cached (10 minutes by default). A
token whose ``kid`` is not in the cache triggers one refetch, but fetches happen at most once every
:attr:`JWTVerifier.min_refetch_seconds`, so a flood of made-up kids cannot hammer the endpoint. While
the endpoint is down the last good key set keeps being used. Tokens never appear in messages or logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx
import jwt

from instagram_dm.db.port import ActingUser
from instagram_dm.errors import AuthError, AuthUnavailableError, ConfigError
from instagram_dm.settings import Settings

__all__ = ["AUDIENCE", "JWTVerifier", "UserClaims"]

log = logging.getLogger(__name__)
_monotonic = time.monotonic  # module-level so tests can move the clock

AUDIENCE = "authenticated"
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
_KEY_TYPE_FOR = {"ES256": "EC", "RS256": "RSA"}
MIN_HS256_SECRET_LENGTH = 32
MAX_TOKEN_LENGTH = 16_384  # Supabase access tokens are ~1 KB; anything huge is refused unparsed.

_MESSAGES = {
    "missing_token": "Sign in first: the request has no 'Authorization: Bearer' access token.",
    "invalid_token": "The access token is invalid.",
    "token_expired": "The access token has expired; refresh the session.",
    "invalid_audience": "The token is not a user access token.",
    "invalid_subject": "The access token does not name a user.",
    "auth_unavailable": "The access token cannot be verified right now; try again shortly.",
}


def mint_user_token(secret: str, user_id: str, *, ttl: int = 3600, **claims: Any) -> str:
    """An HS256 user access token shaped like Supabase Auth's (development, demos and tests only);
    `claims` add to or override the standard ones."""
    now = int(time.time())
    payload = {"sub": user_id, "aud": AUDIENCE, "role": "authenticated", "iat": now, "exp": now + ttl}
    return jwt.encode(payload | claims, secret, algorithm="HS256")


def _reject(code: str) -> AuthError:
    if code == "auth_unavailable":
        return AuthUnavailableError(_MESSAGES[code], code=code)
    return AuthError(_MESSAGES[code], code=code)


@dataclass(frozen=True)
class UserClaims:
    """The verified caller: Supabase user id (a canonical UUID string), email, role and all claims,
    and the raw token they came from (kept out of ``repr`` and equality)."""

    user_id: str
    email: str | None
    role: str
    claims: Mapping[str, Any]
    token: str = field(default="", repr=False, compare=False)

    def acting_user(self) -> ActingUser:
        """The caller as the database port runs app-facing RPCs for them (token + verified claims)."""
        return ActingUser(token=self.token, claims=self.claims)


class _JWKSCache:
    """The signing keys from one JWKS URL, by kid, refreshed on expiry or (rate-limited) on a miss."""

    def __init__(self, url: str, http: httpx.AsyncClient, *, ttl: float, min_interval: float) -> None:
        self._url = url
        self._http = http
        self._ttl = ttl
        self.min_interval = min_interval
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch (monotonic)
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._last_failed = False
        self._lock = asyncio.Lock()

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._ttl

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_interval

    async def key(self, kid: str) -> jwt.PyJWK:
        if self._fresh(_monotonic()) and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = _monotonic()
            # Another task may have refreshed while this one waited for the lock.
            if (kid not in self._keys or not self._fresh(now)) and self._may_fetch(now):
                await self._fetch(now)
            if kid in self._keys:
                return self._keys[kid]
            if self._last_failed:
                raise _reject("auth_unavailable")
            log.debug("auth.unknown_kid", extra={"kid": kid[:64]})
            raise _reject("invalid_token")

    async def _fetch(self, now: float) -> None:
        self._attempted_at = now
        try:
            response = await self._http.get(self._url, headers={"Accept": "application/json"}, timeout=5.0)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self._last_failed = True
            log.warning(
                "auth.jwks_fetch_failed",
                extra={"error_type": type(exc).__name__, "stale_keys": len(self._keys)},
            )
            return
        raw_keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(raw_keys, list):
            self._last_failed = True
            log.warning("auth.jwks_fetch_failed", extra={"error_type": "malformed_jwks"})
            return
        self._keys = dict(pair for pair in map(_usable_key, raw_keys) if pair is not None)
        self._fetched_at = now
        self._last_failed = False
        log.info("auth.jwks_fetched", extra={"keys": len(self._keys)})


def _usable_key(data: object) -> tuple[str, jwt.PyJWK] | None:
    """(kid, key) for an ES256/RS256 signing key; None for anything we must not use."""
    if not isinstance(data, dict):
        return None
    kid = data.get("kid")
    if not isinstance(kid, str) or not kid or data.get("use", "sig") != "sig":
        return None
    if data.get("kty") not in _KEY_TYPE_FOR.values():  # "oct" (the shared secret) and others
        return None
    try:
        key = jwt.PyJWK(data)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if key.algorithm_name not in ASYMMETRIC_ALGORITHMS or _KEY_TYPE_FOR[key.algorithm_name] != data["kty"]:
        return None
    return kid, key


class JWTVerifier:
    """Verifies Supabase user access tokens; share one per process (it caches the JWKS)."""

    #: Smallest gap between two JWKS fetches (unknown-kid refetches and retries after a failure).
    min_refetch_seconds: float = 10.0

    def __init__(
        self,
        *,
        hs256_secret: str | None,
        jwks_url: str | None,
        http: httpx.AsyncClient | None = None,
        issuer: str | None = None,
        leeway: float = 30.0,
        jwks_cache_seconds: float = 600.0,
    ) -> None:
        if not hs256_secret and not jwks_url:
            raise ConfigError("SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL must be set to verify access tokens")
        if hs256_secret and len(hs256_secret) < MIN_HS256_SECRET_LENGTH:
            raise ConfigError(f"SUPABASE_JWT_SECRET must be at least {MIN_HS256_SECRET_LENGTH} characters")
        if jwks_url and http is None:
            raise ConfigError("SUPABASE_JWKS_URL needs an httpx.AsyncClient to fetch the keys")
        self._secret = hs256_secret or None
        self._issuer = issuer
        self._leeway = leeway
        self._jwks = (
            _JWKSCache(jwks_url, http, ttl=jwks_cache_seconds, min_interval=self.min_refetch_seconds)
            if jwks_url and http is not None
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> JWTVerifier:
        """Build from SUPABASE_JWT_SECRET and/or SUPABASE_JWKS_URL; ConfigError when neither is set."""
        settings.require("jwt")
        return cls(
            hs256_secret=settings.supabase_jwt_secret.reveal() or None,
            jwks_url=settings.supabase_jwks_url or None,
            http=http,
        )

    async def verify(self, authorization_header: str | None) -> UserClaims:
        """Check the raw ``Authorization`` header and return the caller; AuthError otherwise."""
        token = _bearer_token(authorization_header)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _reject("invalid_token") from None
        alg = header.get("alg")
        key: str | jwt.PyJWK
        if not isinstance(alg, str):  # a list or an object would not even hash
            raise _reject("invalid_token")
        if alg == "HS256":
            if self._secret is None:
                raise _reject("invalid_token")
            key = self._secret
        elif alg in ASYMMETRIC_ALGORITHMS:
            kid = header.get("kid")
            if self._jwks is None or not isinstance(kid, str) or not kid:
                raise _reject("invalid_token")
            key = await self._jwks.key(kid)
            if key.algorithm_name != alg:
                raise _reject("invalid_token")
        else:  # "none", HS384, PS256, garbage ...
            raise _reject("invalid_token")
        # The allowed algorithm comes from the key we chose, never from the token.
        algorithm = "HS256" if isinstance(key, str) else key.algorithm_name
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp"], "verify_sub": False},
            )
        except jwt.ExpiredSignatureError:
            raise _reject("token_expired") from None
        except jwt.InvalidAudienceError:
            raise _reject("invalid_audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _reject("invalid_audience" if exc.claim == "aud" else "invalid_token") from None
        except jwt.PyJWTError:
            raise _reject("invalid_token") from None
        return _user_claims(claims, token)


def _bearer_token(authorization_header: str | None) -> str:
    scheme, _, token = (authorization_header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _reject("missing_token")
    if len(token) > MAX_TOKEN_LENGTH or " " in token:
        raise _reject("invalid_token")
    return token


def _user_claims(claims: dict[str, Any], token: str) -> UserClaims:
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise _reject("invalid_subject")
    try:
        user_id = str(uuid.UUID(sub))
    except ValueError:
        raise _reject("invalid_subject") from None
    if user_id != sub.lower():  # only the canonical 8-4-4-4-12 form, as Supabase writes it
        raise _reject("invalid_subject")
    email = claims.get("email")
    role = claims.get("role")
    return UserClaims(
        user_id=user_id,
        email=email if isinstance(email, str) and email else None,
        role=role if isinstance(role, str) and role else AUDIENCE,
        claims=MappingProxyType(claims),
        token=token,
    )
