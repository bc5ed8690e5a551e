"""The one exception tree of instagram-dm.

Every error the core raises derives from :class:`InstagramDMError`. Each class's docstring is its
default message, and ``code`` is the stable ``snake_case`` code the edges (HTTP API, CLI) show::

    InstagramDMError
    ├── ConfigError                 a setting is missing, a placeholder, or malformed
    ├── AuthError                   the caller's access token is missing, expired or forged (401)
    │   └── AuthUnavailableError        it cannot be checked now: the JWKS endpoint is down (503)
    ├── ForbiddenError              authenticated, but not allowed (403)
    ├── BadRequestError             input that can never succeed (400)
    ├── NotFoundError               the row named does not exist (404)
    ├── DatabaseError               the database failed or refused
    │   ├── DatabaseUnavailableError    cannot reach it (503)
    │   ├── RPCNotFoundError            the function is missing: migrations not applied
    │   ├── ConflictError               a unique key or foreign key said no (409)
    │   ├── EncryptionKeyMismatchError  ciphertext was written with a key we do not hold
    │   └── TokenCorruptError           ciphertext under our key that does not decrypt
    ├── OAuthStateError             the OAuth state is unknown, expired or already used
    ├── MediaError                  copying or storing an attachment failed (retried)
    │   └── MediaRefusedError           it can never be copied: too large, a host we do not fetch from
    └── MetaError                   Meta's Graph API answered with an error (see graph.errors)

Messages never contain tokens, codes or secrets: the edges show them to people.
"""

from __future__ import annotations


class InstagramDMError(Exception):
    """Something went wrong in instagram-dm."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        if code is not None:
            self.code = code
        super().__init__(self.message)


class ConfigError(InstagramDMError):
    """The configuration is incomplete or invalid."""

    code = "config_error"


class AuthError(InstagramDMError):
    """The access token is missing, expired or invalid."""

    code = "unauthorized"
    http_status = 401


class AuthUnavailableError(AuthError):
    """The access token cannot be verified right now; try again shortly."""

    code = "auth_unavailable"
    http_status = 503


class ForbiddenError(InstagramDMError):
    """You are not allowed to do this."""

    code = "forbidden"
    http_status = 403


class BadRequestError(InstagramDMError):
    """The request is malformed."""

    code = "bad_request"
    http_status = 400


class PayloadTooLargeError(BadRequestError):
    """The request body is over the route's limit (it was not read to the end)."""

    code = "body_too_large"
    http_status = 413


class NotFoundError(InstagramDMError):
    """Not found."""

    code = "not_found"
    http_status = 404


class DatabaseError(InstagramDMError):
    """The database could not complete the request."""

    code = "database_error"


class DatabaseUnavailableError(DatabaseError):
    """The database is unreachable."""

    code = "database_unavailable"
    http_status = 503


class RPCNotFoundError(DatabaseError):
    """A database function is missing; are the migrations applied?"""

    code = "rpc_not_found"


class ConflictError(DatabaseError):
    """The change conflicts with existing data."""

    code = "conflict"
    http_status = 409


class EncryptionKeyMismatchError(DatabaseError):
    """The stored tokens were encrypted with a different INSTAGRAM_TOKEN_ENCRYPTION_KEY."""

    code = "encryption_key_mismatch"


class TokenCorruptError(DatabaseError):
    """A stored token cannot be decrypted: its ciphertext is damaged."""

    code = "token_corrupt"


class OAuthStateError(InstagramDMError):
    """The OAuth state is unknown, expired or already used."""

    code = "invalid_state"
    http_status = 400


class MediaError(InstagramDMError):
    """The attachment could not be copied now."""

    code = "media_unavailable"
    http_status = 502


class MediaRefusedError(MediaError):
    """The attachment can never be copied."""

    code = "media_refused"
    http_status = 400


class MetaError(InstagramDMError):
    """Meta's Graph API returned an error."""

    code = "meta_error"
    http_status = 502
