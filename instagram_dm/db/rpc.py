"""The typed RPC layer: one keyword-only async function per SQL function we call, and its result.

This module is the catalogue of the SQL functions in ``supabase/migrations/`` that Python calls. Each
function names its SQL function once, takes the SQL arguments as keyword-only parameters (the SQL
name without ``p_``), and turns the decoded ``jsonb`` into a frozen dataclass, so names, arguments
and result fields are checked by mypy here and nowhere else. ``tests/db/test_rpc.py`` checks every
function against ``pg_proc`` of the migrated database (name and exact argument names).

=====================================  ====================================================  ==============
Python (SQL ``public.instagram_…``)    what it does                                          who may call
=====================================  ====================================================  ==============
``oauth_state_create``                 check the user may connect for the IMO (admin, plan),  service_role
                                       store a hashed single-use OAuth state (and its PKCE
                                       code verifier, encrypted)
``oauth_state_consume``                spend a state once: ok | used | expired | unknown |   service_role
                                       foreign_browser | not_allowed (role/plan re-checked)
                                       | key_mismatch; ok carries the decrypted verifier
``store_integrations``                 encrypt and upsert one integration per linked          service_role
                                       account, in one transaction (admin/plan re-checked)
``integration_tokens``                 decrypted tokens of one integration (current key, or   service_role
                                       the previous one during a rotation)
``key_check``                          stored token rows per key: current, previous, foreign  service_role
``unsubscribe_token``                  the Page token of an unsubscription a worker holds     service_role
``refresh_enqueue``                    the daily sweep: a refresh job per integration due     service_role
``refresh_enqueue_one``                a refresh job for one integration now                  service_role
``integration_status``                 the IMO's integrations, safe fields only; ``[]`` for   authenticated
                                       non-members (security invoker: RLS decides)            (as the user)
``disconnect``                         an IMO admin wipes the tokens, marks disconnected,     authenticated
                                       queues the Page unsubscribe                            (as the user)
``rotate_key_batch``                   re-encrypt up to ``batch`` rows from the old key to    service_role
                                       the new one (resumable)
``health``                             extensions present, migrations applied, server time    service_role
``webhook_ingest``                     store signed webhook deliveries (exact bytes), one     service_role
                                       row per distinct body, in one statement
``webhook_replay``                     queue stored deliveries for processing again           service_role
``profile_token``                      the Page token of a profile fetch a worker holds       service_role
``list_conversations``                 the IMO's conversations, newest first, keyset-paged    authenticated
                                       (security invoker: RLS decides)                        (as the user)
``list_messages``                      a conversation's messages, newest first                authenticated
``mark_conversation_read``             unread count to 0 (``not_found`` for non-members)      authenticated
``send_message``                       queue one outbound message as the member (rules        authenticated
                                       checked; the same client id returns the first)
``retry_message``                      a failed outbound message queued again                 authenticated
``usage_summary``                      the IMO's month: sent, received, calls, limit, left    authenticated
``upsert_template`` / ``delete_template``  an IMO admin keeps the IMO's message templates      authenticated
``render_template``                    preview a template in a conversation (one-pass         authenticated
                                       substitution; ``missing_variables`` names each)
``list_templates``                     the IMO's active templates (RLS decides)               authenticated
``messaging_access``                   the caller's role in an IMO and whether its plan has   authenticated
                                       Instagram messaging (the Messages page's first read)
``send_token``                         the Page token of an account a worker holds a send of  service_role
``send_reslot``                        a new pacing slot for a held send that woke too late   service_role
``settings_apply``                     publish the worker's sending settings to the database  service_role
``usage_add_calls``                    add a worker's Meta API call counts per IMO            service_role
``media_settings_apply``               publish the API's media URL base and TTL               service_role
``media_lookup``                       bytes with this SHA-256 already stored for the IMO     service_role
                                       of a media copy a worker holds
``media_url``                          a short-lived signed URL of an attachment's copy       authenticated
                                       (``media_pending`` / ``media_unavailable``)            (as the user)
``media_open``                         check a signed media URL, say where its bytes are      service_role
``media_prune``                        the retention: old copies and finished deletions go    service_role
``ops_snapshot``                       queues per kind, integrations by status, expiring      service_role
                                       tokens, webhook lag, last errors (metrics, status)
``rpc_catalogue``                      the functions authenticated may call, from pg_catalog  service_role
                                       (``instagram-dm rpc-docs``)
=====================================  ====================================================  ==============

The job kinds' queue functions (``…_claim_v1`` / ``_complete_vN`` / ``_fail_v1`` / ``_release_v1``) share
one shape per role and are called by name through :class:`worker.queue.Queue`; each kind declares their
names, and ``tests/worker/test_kinds_sql.py`` checks them against ``pg_proc`` the same way.

Conventions:

* ``async def <name>(db: Database, *, <arg>: <type>, ...) -> <Result>`` for service-role functions;
  app-facing ones take the caller second, ``(db, user: ActingUser, *, ...)``, and go through
  :meth:`Database.rpc_as_user`, so grants, RLS and ``auth.uid()`` decide as for the web app.
* Python parameter ``x`` is SQL argument ``p_x``; every SQL argument is passed, defaults included
  (the pg_proc test requires the sets to be equal). A versioned SQL name (``…_v1``) keeps its suffix in
  the SQL string only: ``refresh_claim`` calls ``instagram_refresh_claim_v1``.
* Structured arguments the SQL reads with ``->>`` are frozen dataclasses with ``to_json()``
  (e.g. :class:`AccountToStore`), converted in the function, never in callers.
* Results are frozen dataclasses with ``from_json()``; ids are canonical UUID strings, timestamps
  aware ``datetime``; a result that does not have the promised shape is
  :class:`~instagram_dm.errors.DatabaseError` ``unexpected_result`` (a migration and this module
  disagree). Token fields are ``repr=False``.
* Every function is listed in :data:`CATALOGUE`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast, get_args

from instagram_dm import errors
from instagram_dm.db.port import ActingUser, Database

__all__ = [
    "CATALOGUE",
    "AccountToStore",
    "Disconnected",
    "Dispatched",
    "Health",
    "IntegrationStatus",
    "IntegrationTokens",
    "KeyCheck",
    "KeyRotationBatch",
    "MediaLocation",
    "MediaSettings",
    "MediaURL",
    "MessagingAccess",
    "OpsError",
    "OpsQueue",
    "OpsSnapshot",
    "ProfileToken",
    "RefreshEnqueued",
    "RpcArgument",
    "RpcFunction",
    "SendSlot",
    "SendToken",
    "SendingSettings",
    "StateConsumed",
    "StateCreated",
    "StateStatus",
    "StoredIntegration",
    "StoredObject",
    "UnsubscribeToken",
    "WebhookIngested",
    "cancel_scheduled_message",
    "delete_template",
    "disconnect",
    "health",
    "integration_status",
    "integration_tokens",
    "key_check",
    "list_conversations",
    "list_messages",
    "list_scheduled_messages",
    "list_templates",
    "mark_conversation_read",
    "media_lookup",
    "media_open",
    "media_prune",
    "media_settings_apply",
    "media_url",
    "messaging_access",
    "oauth_state_consume",
    "oauth_state_create",
    "ops_snapshot",
    "profile_token",
    "refresh_enqueue",
    "refresh_enqueue_one",
    "render_template",
    "reschedule_message",
    "retry_message",
    "rotate_key_batch",
    "rpc_catalogue",
    "schedule_message",
    "scheduled_dispatch",
    "send_message",
    "send_reslot",
    "send_token",
    "settings_apply",
    "store_integrations",
    "unsubscribe_token",
    "upsert_template",
    "usage_add_calls",
    "usage_summary",
    "webhook_ingest",
    "webhook_replay",
]

# ---- reading results ------------------------------------------------------------------------------


def _unexpected(what: str) -> errors.DatabaseError:
    return errors.DatabaseError(
        f"The database returned an unexpected result ({what}).", code="unexpected_result"
    )


def _object(value: object, rpc: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _unexpected(f"{rpc}: not an object")
    return value


def _array(value: object, rpc: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise _unexpected(f"{rpc}: not an array")
    return [_object(item, rpc) for item in value]


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _unexpected(f"{key} is not a string")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _str(data, key)


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise _unexpected(f"{key} is not a boolean")
    return value


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _unexpected(f"{key} is not an integer")
    return value


def _opt_datetime(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(_str(data, key))
    except ValueError:
        raise _unexpected(f"{key} is not a timestamp") from None


def _datetime(data: Mapping[str, Any], key: str) -> datetime:
    value = _opt_datetime(data, key)
    if value is None:
        raise _unexpected(f"{key} is missing")
    return value


def _strings(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _unexpected(f"{key} is not a list of strings")
    return tuple(value)


# ---- OAuth states ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateCreated:
    """A stored OAuth state: its row id and until when it may be consumed."""

    id: str
    expires_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StateCreated:
        return cls(id=_str(data, "id"), expires_at=_datetime(data, "expires_at"))


async def oauth_state_create(
    db: Database,
    *,
    state_hash: str,
    user_id: str,
    imo_id: str,
    return_to: str,
    ttl_seconds: int,
    browser_binding_hash: str | None,
    code_verifier: str | None,
    key: str | None,
    provider: str = "facebook_login",
) -> StateCreated:
    """``instagram_oauth_state_create``: ForbiddenError ``not_imo_admin`` / ``feature_not_in_plan``,
    BadRequestError ``invalid_ttl`` / ``invalid_code_verifier`` / ``invalid_encryption_key``. The
    verifier (None: no PKCE) is stored encrypted with `key`; `provider` is handed back by the consume."""
    result = await db.rpc(
        "instagram_oauth_state_create",
        {
            "p_state_hash": state_hash,
            "p_user_id": user_id,
            "p_imo_id": imo_id,
            "p_return_to": return_to,
            "p_ttl_seconds": ttl_seconds,
            "p_browser_binding_hash": browser_binding_hash,
            "p_code_verifier": code_verifier,
            "p_key": key,
            "p_provider": provider,
        },
    )
    return StateCreated.from_json(_object(result, "instagram_oauth_state_create"))


StateStatus = Literal["ok", "used", "expired", "unknown", "foreign_browser", "not_allowed", "key_mismatch"]
_STATE_STATUSES: frozenset[str] = frozenset(get_args(StateStatus))


@dataclass(frozen=True)
class StateConsumed:
    """The outcome of spending a state; `user_id`, `imo_id` and the PKCE `code_verifier` (None when the
    state has none) only when ``ok``, `return_to` when known."""

    status: StateStatus
    return_to: str | None = None
    user_id: str | None = None
    imo_id: str | None = None
    code_verifier: str | None = field(default=None, repr=False)
    provider: str = "facebook_login"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StateConsumed:
        status = _str(data, "status")
        if status not in _STATE_STATUSES:
            raise _unexpected(f"unknown state status {status[:32]!r}")
        consumed = cls(
            status=cast("StateStatus", status),
            return_to=_opt_str(data, "return_to"),
            user_id=_opt_str(data, "user_id"),
            imo_id=_opt_str(data, "imo_id"),
            code_verifier=_opt_str(data, "code_verifier"),
            provider=_opt_str(data, "provider") or "facebook_login",
        )
        if status == "ok" and (
            consumed.user_id is None or consumed.imo_id is None or consumed.return_to is None
        ):
            raise _unexpected("an ok state without user, IMO or return URL")
        return consumed


async def oauth_state_consume(
    db: Database,
    *,
    state_hash: str,
    browser_binding_hash: str | None,
    key: str | None,
    previous_key: str | None,
) -> StateConsumed:
    """``instagram_oauth_state_consume``: spends the state whatever the outcome; a stored verifier is
    decrypted with `key` (or `previous_key` during a rotation)."""
    result = await db.rpc(
        "instagram_oauth_state_consume",
        {
            "p_state_hash": state_hash,
            "p_browser_binding_hash": browser_binding_hash,
            "p_key": key,
            "p_previous_key": previous_key,
        },
    )
    return StateConsumed.from_json(_object(result, "instagram_oauth_state_consume"))


# ---- integrations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountToStore:
    """One linked Instagram account as ``instagram_store_integrations`` reads it from ``p_accounts``; an
    Instagram Login account has no Page (`page_id` None) and its messaging token is its user token."""

    page_id: str | None
    page_name: str | None
    page_token: str = field(repr=False)
    ig_account_id: str
    ig_username: str | None
    ig_profile_picture_url: str | None
    webhook_subscribed: bool
    webhook_error_code: str | None = None
    webhook_error_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The object the SQL reads with ``->>`` (the keys are the SQL's, in one place)."""
        return {
            "page_id": self.page_id,
            "page_name": self.page_name,
            "page_token": self.page_token,
            "ig_account_id": self.ig_account_id,
            "ig_username": self.ig_username,
            "ig_profile_picture_url": self.ig_profile_picture_url,
            "webhook_subscribed": self.webhook_subscribed,
            "webhook_error_code": self.webhook_error_code,
            "webhook_error_message": self.webhook_error_message,
        }


@dataclass(frozen=True)
class StoredIntegration:
    """One integration created or updated by a connect."""

    id: str
    instagram_business_account_id: str
    facebook_page_id: str | None
    webhook_subscribed: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredIntegration:
        return cls(
            id=_str(data, "id"),
            instagram_business_account_id=_str(data, "instagram_business_account_id"),
            facebook_page_id=_opt_str(data, "facebook_page_id"),
            webhook_subscribed=_bool(data, "webhook_subscribed"),
        )


async def store_integrations(
    db: Database,
    *,
    imo_id: str,
    user_id: str,
    key: str,
    user_token: str,
    token_expires_at: datetime | None,
    data_access_expires_at: datetime | None,
    scopes: Sequence[str],
    accounts: Sequence[AccountToStore],
    provider: str = "facebook_login",
) -> tuple[StoredIntegration, ...]:
    """``instagram_store_integrations``: ForbiddenError when the user lost the role or the plan,
    BadRequestError ``missing_token`` / ``missing_page`` / ``no_accounts`` / ``invalid_encryption_key``,
    ConflictError ``connected_through_other_provider`` (the account is live in the IMO through the other one)."""
    result = await db.rpc(
        "instagram_store_integrations",
        {
            "p_imo_id": imo_id,
            "p_user_id": user_id,
            "p_key": key,
            "p_user_token": user_token,
            "p_token_expires_at": token_expires_at,
            "p_data_access_expires_at": data_access_expires_at,
            "p_scopes": list(scopes),
            "p_accounts": [account.to_json() for account in accounts],
            "p_provider": provider,
        },
    )
    return tuple(StoredIntegration.from_json(row) for row in _array(result, "instagram_store_integrations"))


@dataclass(frozen=True)
class IntegrationTokens:
    """The decrypted tokens of one integration and what a refresh needs beside them."""

    integration_id: str
    imo_id: str
    status: str
    facebook_page_id: str | None
    instagram_business_account_id: str | None
    token_expires_at: datetime | None
    data_access_expires_at: datetime | None
    token_version: str | None
    token_digest: str | None
    user_token: str | None = field(repr=False)
    page_token: str | None = field(repr=False)
    provider: str = "facebook_login"
    token_issued_at: datetime | None = None  # when the stored token was issued (connect or last refresh)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IntegrationTokens:
        return cls(
            integration_id=_str(data, "integration_id"),
            imo_id=_str(data, "imo_id"),
            status=_str(data, "status"),
            facebook_page_id=_opt_str(data, "facebook_page_id"),
            instagram_business_account_id=_opt_str(data, "instagram_business_account_id"),
            token_expires_at=_opt_datetime(data, "token_expires_at"),
            data_access_expires_at=_opt_datetime(data, "data_access_expires_at"),
            token_version=_opt_str(data, "token_version"),
            token_digest=_opt_str(data, "token_digest"),
            user_token=_opt_str(data, "user_token"),
            page_token=_opt_str(data, "page_token"),
            provider=_opt_str(data, "provider") or "facebook_login",
            token_issued_at=_opt_datetime(data, "token_issued_at"),
        )


async def integration_tokens(
    db: Database, *, integration_id: str, key: str, previous_key: str | None = None
) -> IntegrationTokens:
    """``instagram_integration_tokens``: NotFoundError ``integration_not_found``,
    EncryptionKeyMismatchError when neither key opens the row, TokenCorruptError when it is damaged."""
    result = await db.rpc(
        "instagram_integration_tokens",
        {"p_integration_id": integration_id, "p_key": key, "p_previous_key": previous_key},
    )
    return IntegrationTokens.from_json(_object(result, "instagram_integration_tokens"))


@dataclass(frozen=True)
class KeyCheck:
    """How many stored token rows each key opens, and how many neither does."""

    current: int
    previous: int
    foreign: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyCheck:
        return cls(
            current=_int(data, "current"), previous=_int(data, "previous"), foreign=_int(data, "foreign")
        )


async def key_check(db: Database, *, key: str, previous_key: str | None = None) -> KeyCheck:
    """``instagram_key_check_v1``."""
    result = await db.rpc("instagram_key_check_v1", {"p_key": key, "p_previous_key": previous_key})
    return KeyCheck.from_json(_object(result, "instagram_key_check_v1"))


@dataclass(frozen=True)
class UnsubscribeToken:
    """What an unsubscribe needs right before calling Meta."""

    still_in_use: bool
    page_token: str | None = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UnsubscribeToken:
        return cls(still_in_use=_bool(data, "still_in_use"), page_token=_opt_str(data, "page_token"))


async def unsubscribe_token(
    db: Database, *, job_id: str, worker: str, key: str, previous_key: str | None = None
) -> UnsubscribeToken:
    """``instagram_unsubscribe_token_v1``: whether a connected integration uses the Page now, else the Page
    token of the unsubscription `worker` holds; NotFoundError ``job_not_held`` when it holds none."""
    result = await db.rpc(
        "instagram_unsubscribe_token_v1",
        {"p_job_id": job_id, "p_worker": worker, "p_key": key, "p_previous_key": previous_key},
    )
    return UnsubscribeToken.from_json(_object(result, "instagram_unsubscribe_token_v1"))


async def refresh_enqueue(db: Database, *, window_seconds: int) -> int:
    """``instagram_refresh_enqueue_v1``: what the daily cron job does; returns how many were enqueued."""
    return int(await db.rpc("instagram_refresh_enqueue_v1", {"p_window_seconds": window_seconds}))


@dataclass(frozen=True)
class RefreshEnqueued:
    """Whether a new refresh job was enqueued, and the live job's id either way."""

    enqueued: bool
    job_id: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RefreshEnqueued:
        return cls(enqueued=_bool(data, "enqueued"), job_id=_int(data, "job_id"))


async def refresh_enqueue_one(db: Database, *, integration_id: str) -> RefreshEnqueued:
    """``instagram_refresh_enqueue_one_v1``: NotFoundError / BadRequestError ``integration_not_connected``."""
    result = await db.rpc("instagram_refresh_enqueue_one_v1", {"p_integration_id": integration_id})
    return RefreshEnqueued.from_json(_object(result, "instagram_refresh_enqueue_one_v1"))


@dataclass(frozen=True)
class IntegrationStatus:
    """One integration as the web app may see it: safe fields only, never a token."""

    id: str
    imo_id: str
    status: str
    instagram_business_account_id: str
    instagram_username: str | None
    instagram_profile_picture_url: str | None
    facebook_page_id: str | None
    facebook_page_name: str | None
    token_expires_at: datetime | None
    data_access_expires_at: datetime | None
    last_refreshed_at: datetime | None
    last_error_code: str | None
    last_error_message: str | None
    last_error_at: datetime | None
    webhook_subscribed: bool
    granted_scopes: tuple[str, ...]
    connected_at: datetime
    updated_at: datetime
    provider: str = "facebook_login"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IntegrationStatus:
        return cls(
            id=_str(data, "id"),
            imo_id=_str(data, "imo_id"),
            status=_str(data, "status"),
            instagram_business_account_id=_str(data, "instagram_business_account_id"),
            instagram_username=_opt_str(data, "instagram_username"),
            instagram_profile_picture_url=_opt_str(data, "instagram_profile_picture_url"),
            facebook_page_id=_opt_str(data, "facebook_page_id"),
            facebook_page_name=_opt_str(data, "facebook_page_name"),
            token_expires_at=_opt_datetime(data, "token_expires_at"),
            data_access_expires_at=_opt_datetime(data, "data_access_expires_at"),
            last_refreshed_at=_opt_datetime(data, "last_refreshed_at"),
            last_error_code=_opt_str(data, "last_error_code"),
            last_error_message=_opt_str(data, "last_error_message"),
            last_error_at=_opt_datetime(data, "last_error_at"),
            webhook_subscribed=_bool(data, "webhook_subscribed"),
            granted_scopes=_strings(data, "granted_scopes"),
            connected_at=_datetime(data, "connected_at"),
            updated_at=_datetime(data, "updated_at"),
            provider=_opt_str(data, "provider") or "facebook_login",
        )


async def integration_status(db: Database, user: ActingUser, *, imo_id: str) -> tuple[IntegrationStatus, ...]:
    """``instagram_integration_status``, as `user`: ``()`` when they are not a member of the IMO."""
    result = await db.rpc_as_user(user, "instagram_integration_status", {"p_imo_id": imo_id})
    return tuple(IntegrationStatus.from_json(row) for row in _array(result, "instagram_integration_status"))


@dataclass(frozen=True)
class Disconnected:
    """A disconnected integration, and whether its Page's webhook unsubscribe was queued."""

    id: str
    status: str
    unsubscribe_queued: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Disconnected:
        return cls(
            id=_str(data, "id"),
            status=_str(data, "status"),
            unsubscribe_queued=_bool(data, "unsubscribe_queued"),
        )


async def disconnect(db: Database, user: ActingUser, *, integration_id: str) -> Disconnected:
    """``instagram_disconnect``, as `user`: NotFoundError ``integration_not_found`` unless they are an
    owner or admin of the integration's IMO (the same answer for another IMO's integration)."""
    result = await db.rpc_as_user(user, "instagram_disconnect", {"p_integration_id": integration_id})
    return Disconnected.from_json(_object(result, "instagram_disconnect"))


# ---- operations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRotationBatch:
    """Rows re-encrypted by one batch, rows still on the old key, rows on a third key (left alone)."""

    rotated: int
    remaining: int
    foreign: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyRotationBatch:
        return cls(
            rotated=_int(data, "rotated"), remaining=_int(data, "remaining"), foreign=_int(data, "foreign")
        )


async def rotate_key_batch(db: Database, *, old_key: str, new_key: str, batch: int) -> KeyRotationBatch:
    """``instagram_rotate_key_batch``: BadRequestError ``invalid_encryption_key`` / ``same_key``."""
    result = await db.rpc(
        "instagram_rotate_key_batch", {"p_old_key": old_key, "p_new_key": new_key, "p_batch": batch}
    )
    return KeyRotationBatch.from_json(_object(result, "instagram_rotate_key_batch"))


@dataclass(frozen=True)
class Health:
    """What readiness checks need: the extensions, the applied migrations, the server's clock."""

    pgcrypto: bool
    pg_cron: bool
    migrations: tuple[str, ...]
    server_time: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Health:
        return cls(
            pgcrypto=_bool(data, "pgcrypto"),
            pg_cron=_bool(data, "pg_cron"),
            migrations=_strings(data, "migrations"),
            server_time=_datetime(data, "server_time"),
        )


async def health(db: Database) -> Health:
    """``instagram_health``."""
    return Health.from_json(_object(await db.rpc("instagram_health"), "instagram_health"))


@dataclass(frozen=True)
class WebhookIngested:
    """How many deliveries of a batch were new, and how many were already stored (same bytes)."""

    stored: int
    duplicates: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WebhookIngested:
        return cls(stored=_int(data, "stored"), duplicates=_int(data, "duplicates"))


async def webhook_ingest(
    db: Database, *, bodies: Sequence[bytes], provider: str = "facebook_login"
) -> WebhookIngested:
    """``instagram_webhook_ingest_v2``: the exact bytes travel as base64 (any bytes, both transports);
    `provider` is the app whose secret signed them (processing routes by it)."""
    encoded = [base64.b64encode(body).decode("ascii") for body in bodies]
    result = await db.rpc("instagram_webhook_ingest_v2", {"p_bodies": encoded, "p_provider": provider})
    return WebhookIngested.from_json(_object(result, "instagram_webhook_ingest_v2"))


async def webhook_replay(db: Database, *, failed_only: bool, since: datetime | None) -> int:
    """``instagram_webhook_replay_v1``: how many stored deliveries were queued again."""
    result = await db.rpc("instagram_webhook_replay_v1", {"p_failed_only": failed_only, "p_since": since})
    return _int(_object(result, "instagram_webhook_replay_v1"), "queued")


@dataclass(frozen=True)
class ProfileToken:
    """What a profile fetch needs: its integration's Page token (None when none is stored)."""

    page_token: str | None = field(repr=False)
    provider: str = "facebook_login"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProfileToken:
        return cls(
            page_token=_opt_str(data, "page_token"), provider=_opt_str(data, "provider") or "facebook_login"
        )


async def profile_token(
    db: Database, *, job_id: int, worker: str, key: str, previous_key: str | None = None
) -> ProfileToken:
    """``instagram_profile_token_v1``: NotFoundError ``job_not_held`` when `worker` does not hold the job."""
    result = await db.rpc(
        "instagram_profile_token_v1",
        {"p_job_id": job_id, "p_worker": worker, "p_key": key, "p_previous_key": previous_key},
    )
    return ProfileToken.from_json(_object(result, "instagram_profile_token_v1"))


async def list_conversations(
    db: Database,
    user: ActingUser,
    *,
    imo_id: str,
    limit: int = 50,
    before: datetime | None = None,
    integration_id: str | None = None,
    unread_only: bool = False,
) -> list[Mapping[str, Any]]:
    """``instagram_list_conversations``, as `user`: ``[]`` when they are not a member of the IMO."""
    result = await db.rpc_as_user(
        user,
        "instagram_list_conversations",
        {
            "p_imo_id": imo_id,
            "p_limit": limit,
            "p_before": before,
            "p_integration_id": integration_id,
            "p_unread_only": unread_only,
        },
    )
    return _array(result, "instagram_list_conversations")


async def list_messages(
    db: Database, user: ActingUser, *, conversation_id: str, limit: int = 50, before: datetime | None = None
) -> list[Mapping[str, Any]]:
    """``instagram_list_messages``, as `user`: ``[]`` when they are not a member of the conversation's IMO."""
    result = await db.rpc_as_user(
        user,
        "instagram_list_messages",
        {"p_conversation_id": conversation_id, "p_limit": limit, "p_before": before},
    )
    return _array(result, "instagram_list_messages")


async def mark_conversation_read(db: Database, user: ActingUser, *, conversation_id: str) -> None:
    """``instagram_mark_conversation_read``, as `user`: NotFoundError ``not_found`` for non-members."""
    await db.rpc_as_user(user, "instagram_mark_conversation_read", {"p_conversation_id": conversation_id})


async def send_message(
    db: Database,
    user: ActingUser,
    *,
    conversation_id: str,
    text: str | None = None,
    attachment: Mapping[str, str] | None = None,
    client_message_id: str | None = None,
) -> Mapping[str, Any]:
    """``instagram_send_message``, as `user`: the queued message; refusals raise with their code."""
    result = await db.rpc_as_user(
        user,
        "instagram_send_message",
        {
            "p_conversation_id": conversation_id,
            "p_text": text,
            "p_attachment": dict(attachment) if attachment is not None else None,
            "p_client_message_id": client_message_id,
        },
    )
    return _object(result, "instagram_send_message")


async def retry_message(db: Database, user: ActingUser, *, message_id: str) -> Mapping[str, Any]:
    """``instagram_retry_message``, as `user`: the message queued again."""
    result = await db.rpc_as_user(user, "instagram_retry_message", {"p_message_id": message_id})
    return _object(result, "instagram_retry_message")


async def usage_summary(
    db: Database, user: ActingUser, *, imo_id: str, month: datetime | None = None
) -> Mapping[str, Any]:
    """``instagram_usage_summary``, as `user`: NotFoundError ``not_found`` for non-members."""
    result = await db.rpc_as_user(
        user, "instagram_usage_summary", {"p_imo_id": imo_id, "p_month": month.date() if month else None}
    )
    return _object(result, "instagram_usage_summary")


@dataclass(frozen=True)
class SendToken:
    """The decrypted Page token of an account a worker holds a send of, and its version (a cache key)."""

    page_token: str | None = field(repr=False)
    token_version: str
    provider: str = "facebook_login"
    account_id: str | None = None  # the Instagram account (Instagram Login sends from it)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SendToken:
        return cls(
            page_token=_opt_str(data, "page_token"),
            token_version=_str(data, "token_version"),
            provider=_opt_str(data, "provider") or "facebook_login",
            account_id=_opt_str(data, "account_id"),
        )


async def send_token(
    db: Database, *, integration_id: str, worker: str, key: str, previous_key: str | None = None
) -> SendToken:
    """``instagram_send_token_v1``: NotFoundError ``job_not_held`` unless `worker` holds a send of the account."""
    result = await db.rpc(
        "instagram_send_token_v1",
        {
            "p_integration_id": integration_id,
            "p_worker": worker,
            "p_key": key,
            "p_previous_key": previous_key,
        },
    )
    return SendToken.from_json(_object(result, "instagram_send_token_v1"))


@dataclass(frozen=True)
class SendSlot:
    """A pacing slot on the database's clock: when (``slot_at``), the clock as it was given (``clock_at``),
    both epoch seconds, and how late a send may still leave."""

    slot_at: float | None  # None: the account has no free slot soon (busy or paused)
    clock_at: float
    max_lateness_seconds: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SendSlot:
        slot = data.get("slot_at")
        return cls(
            None if slot is None else float(slot),
            float(data["clock_at"]),
            float(data["max_lateness_seconds"]),
        )

    def monotonic(self) -> float | None:
        """The slot on this process's monotonic clock (as far after now as it was after ``clock_at``)."""
        return None if self.slot_at is None else time.monotonic() + self.slot_at - self.clock_at


async def send_reslot(db: Database, *, job_id: int, worker: str) -> SendSlot:
    """``instagram_send_reslot_v1``: a new slot for a send `worker` holds (NotFoundError ``job_not_held``)."""
    result = await db.rpc("instagram_send_reslot_v1", {"p_job_id": job_id, "p_worker": worker})
    return SendSlot.from_json(_object(result, "instagram_send_reslot_v1"))


@dataclass(frozen=True)
class SendingSettings:
    """What a worker publishes at start-up for the app's sending RPCs (PostgREST has no environment)."""

    human_agent_enabled: bool
    send_rate_per_second: float
    echo_wait_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "human_agent_enabled": self.human_agent_enabled,
            "send_rate_per_second": self.send_rate_per_second,
            "echo_wait_seconds": self.echo_wait_seconds,
        }


async def settings_apply(db: Database, *, settings: SendingSettings) -> None:
    """``instagram_settings_apply_v1``."""
    await db.rpc("instagram_settings_apply_v1", {"p_settings": settings.to_json()})


async def usage_add_calls(db: Database, *, counts: Mapping[str, int]) -> int:
    """``instagram_usage_add_calls_v1``: Meta API calls per IMO since the last report."""
    result = await db.rpc(
        "instagram_usage_add_calls_v1",
        {"p_counts": [{"imo_id": imo_id, "calls": calls} for imo_id, calls in counts.items()]},
    )
    return int(result or 0)


async def upsert_template(
    db: Database,
    user: ActingUser,
    *,
    imo_id: str,
    name: str,
    body: str,
    category: str = "other",
    id: str | None = None,
) -> Mapping[str, Any]:
    """``instagram_upsert_template``, as `user` (an IMO admin): the template with its derived variables."""
    result = await db.rpc_as_user(
        user,
        "instagram_upsert_template",
        {"p_imo_id": imo_id, "p_name": name, "p_body": body, "p_category": category, "p_id": id},
    )
    return _object(result, "instagram_upsert_template")


async def delete_template(db: Database, user: ActingUser, *, id: str) -> Mapping[str, Any]:
    """``instagram_delete_template``, as `user` (an IMO admin)."""
    return _object(
        await db.rpc_as_user(user, "instagram_delete_template", {"p_id": id}), "instagram_delete_template"
    )


async def render_template(
    db: Database,
    user: ActingUser,
    *,
    template_id: str,
    conversation_id: str,
    variables: Mapping[str, str] | None = None,
) -> Mapping[str, Any]:
    """``instagram_render_template``, as `user`: ``{text, variables}``, or ``missing_variables`` naming each."""
    result = await db.rpc_as_user(
        user,
        "instagram_render_template",
        {
            "p_template_id": template_id,
            "p_conversation_id": conversation_id,
            "p_variables": dict(variables or {}),
        },
    )
    return _object(result, "instagram_render_template")


async def list_templates(db: Database, user: ActingUser, *, imo_id: str) -> list[Mapping[str, Any]]:
    """``instagram_list_templates``, as `user`: the IMO's active templates by name (``[]`` for non-members)."""
    result = await db.rpc_as_user(user, "instagram_list_templates", {"p_imo_id": imo_id})
    return _array(result, "instagram_list_templates")


@dataclass(frozen=True)
class MessagingAccess:
    """What the caller may do in an IMO: their role, and whether its plan has Instagram messaging."""

    imo_id: str
    imo_name: str
    role: str
    is_admin: bool
    plan: str | None
    instagram_messaging: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MessagingAccess:
        return cls(
            imo_id=_str(data, "imo_id"),
            imo_name=_str(data, "imo_name"),
            role=_str(data, "role"),
            is_admin=_bool(data, "is_admin"),
            plan=_opt_str(data, "plan"),
            instagram_messaging=_bool(data, "instagram_messaging"),
        )


async def messaging_access(db: Database, user: ActingUser, *, imo_id: str) -> MessagingAccess:
    """``instagram_messaging_access``, as `user`: NotFoundError ``not_found`` unless they are a member."""
    result = await db.rpc_as_user(user, "instagram_messaging_access", {"p_imo_id": imo_id})
    return MessagingAccess.from_json(_object(result, "instagram_messaging_access"))


async def schedule_message(
    db: Database,
    user: ActingUser,
    *,
    conversation_id: str,
    send_at: datetime,
    text: str | None = None,
    template_id: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> Mapping[str, Any]:
    """``instagram_schedule_message``, as `user`: the scheduled message (status ``scheduled``)."""
    result = await db.rpc_as_user(
        user,
        "instagram_schedule_message",
        {
            "p_conversation_id": conversation_id,
            "p_send_at": send_at,
            "p_text": text,
            "p_template_id": template_id,
            "p_variables": dict(variables or {}),
        },
    )
    return _object(result, "instagram_schedule_message")


async def cancel_scheduled_message(db: Database, user: ActingUser, *, id: str) -> Mapping[str, Any]:
    """``instagram_cancel_scheduled_message``, as `user`: the message, cancelled (or ``not_cancellable``)."""
    result = await db.rpc_as_user(user, "instagram_cancel_scheduled_message", {"p_id": id})
    return _object(result, "instagram_cancel_scheduled_message")


async def reschedule_message(
    db: Database, user: ActingUser, *, id: str, send_at: datetime
) -> Mapping[str, Any]:
    """``instagram_reschedule_message``, as `user`: the message at its new time (or ``not_reschedulable``)."""
    result = await db.rpc_as_user(user, "instagram_reschedule_message", {"p_id": id, "p_send_at": send_at})
    return _object(result, "instagram_reschedule_message")


async def list_scheduled_messages(
    db: Database, user: ActingUser, *, conversation_id: str, include_finished: bool = False
) -> list[Mapping[str, Any]]:
    """``instagram_list_scheduled_messages``, as `user`: the conversation's scheduled messages, soonest first."""
    result = await db.rpc_as_user(
        user,
        "instagram_list_scheduled_messages",
        {"p_conversation_id": conversation_id, "p_include_finished": include_finished},
    )
    return _array(result, "instagram_list_scheduled_messages")


@dataclass(frozen=True)
class Dispatched:
    """What one dispatch of due scheduled messages did, and when the next one is due."""

    dispatched: int
    failed: int
    next_due_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Dispatched:
        return cls(
            dispatched=_int(data, "dispatched"),
            failed=_int(data, "failed"),
            next_due_at=_opt_datetime(data, "next_due_at"),
        )


async def scheduled_dispatch(db: Database, *, limit: int) -> Dispatched:
    """``instagram_scheduled_dispatch_v1``: up to `limit` due scheduled messages handed to the send path."""
    result = await db.rpc("instagram_scheduled_dispatch_v1", {"p_limit": limit})
    return Dispatched.from_json(_object(result, "instagram_scheduled_dispatch_v1"))


#: Every function of this module, for the catalogue test against pg_proc.
@dataclass(frozen=True)
class MediaSettings:
    """What the API publishes for ``instagram_media_url``: its public media URL and a signed URL's life."""

    url_base: str
    url_ttl_seconds: int

    def to_json(self) -> dict[str, Any]:
        return {"url_base": self.url_base, "url_ttl_seconds": self.url_ttl_seconds}


async def media_settings_apply(db: Database, *, settings: MediaSettings) -> None:
    """``instagram_media_settings_apply_v1``."""
    await db.rpc("instagram_media_settings_apply_v1", {"p_settings": settings.to_json()})


@dataclass(frozen=True)
class StoredObject:
    """Bytes an IMO already stored (``media_lookup``), or None."""

    storage_key: str
    size: int
    content_type: str


async def media_lookup(db: Database, *, job_id: int, worker: str, sha256: str) -> StoredObject | None:
    """``instagram_media_lookup_v1``: NotFoundError ``job_not_held`` when `worker` does not hold the job."""
    result = _object(
        await db.rpc(
            "instagram_media_lookup_v1", {"p_job_id": job_id, "p_worker": worker, "p_sha256": sha256}
        ),
        "instagram_media_lookup_v1",
    )
    if not result.get("found"):
        return None
    return StoredObject(_str(result, "storage_key"), _int(result, "size"), _str(result, "content_type"))


@dataclass(frozen=True)
class MediaURL:
    """A signed URL of our copy of one attachment."""

    url: str = field(repr=False)  # a bearer of access until it expires
    expires_at: datetime
    content_type: str
    size: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MediaURL:
        expires = _opt_datetime(data, "expires_at")
        if expires is None:
            raise _unexpected("expires_at is missing")
        return cls(_str(data, "url"), expires, _str(data, "content_type"), _int(data, "size"))


async def media_url(db: Database, user: ActingUser, *, message_id: str, index: int = 0) -> MediaURL:
    """``instagram_media_url``, as `user`: NotFoundError ``not_found``; BadRequestError ``media_pending`` /
    ``media_unavailable``."""
    result = await db.rpc_as_user(user, "instagram_media_url", {"p_message_id": message_id, "p_index": index})
    return MediaURL.from_json(_object(result, "instagram_media_url"))


@dataclass(frozen=True)
class MediaLocation:
    """Where the bytes behind a valid signed URL are."""

    media_id: int
    attachment_type: str
    storage_key: str
    content_type: str
    size: int


async def media_open(db: Database, *, media_id: int, expires: int, signature: str) -> MediaLocation:
    """``instagram_media_open_v1``: ForbiddenError ``invalid_signature`` / ``url_expired``, NotFoundError
    ``not_found`` once the media is deleted."""
    result = _object(
        await db.rpc(
            "instagram_media_open_v1",
            {"p_media_id": media_id, "p_expires": expires, "p_signature": signature},
        ),
        "instagram_media_open_v1",
    )
    return MediaLocation(
        _int(result, "media_id"),
        _str(result, "attachment_type"),
        _str(result, "storage_key"),
        _str(result, "content_type"),
        _int(result, "size"),
    )


async def media_prune(db: Database, *, keep_days: int | None = None) -> Mapping[str, Any]:
    """``instagram_media_prune_v1``: ``{media_deleted, deletions_pruned}``."""
    return _object(
        await db.rpc("instagram_media_prune_v1", {"p_keep_days": keep_days}), "instagram_media_prune_v1"
    )


# ---- operations: metrics, `instagram-dm status`, the RPC catalogue ----------------------------------


def _float(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _unexpected(f"{key} is not a number")
    return float(value)


@dataclass(frozen=True)
class OpsQueue:
    """One job kind's queue: jobs by state, how late the most overdue one is, what was buried lately."""

    kind: str
    available: int
    running: int
    retryable: int
    due: int
    oldest_due_seconds: float
    discarded_24h: int
    failed: int  # webhooks only: deliveries kept as not JSON / an unknown shape
    unroutable: int  # webhooks only: deliveries for an account no live integration has

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpsQueue:
        return cls(
            kind=_str(data, "kind"),
            available=_int(data, "available"),
            running=_int(data, "running"),
            retryable=_int(data, "retryable"),
            due=_int(data, "due"),
            discarded_24h=_int(data, "discarded_24h"),
            failed=_int(data, "failed"),
            unroutable=_int(data, "unroutable"),
            oldest_due_seconds=_float(data, "oldest_due_seconds"),
        )


@dataclass(frozen=True)
class OpsError:
    """One recent error: an integration's last one, or a job buried (discarded / failed)."""

    source: str  # "integration" or a job kind
    id: str
    code: str
    message: str | None
    at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpsError:
        return cls(
            source=_str(data, "source"),
            id=_str(data, "id"),
            code=_str(data, "code"),
            message=_opt_str(data, "message"),
            at=_datetime(data, "at"),
        )


@dataclass(frozen=True)
class OpsSnapshot:
    """What operators watch, read in one call at scrape time (``instagram_ops_snapshot_v1``)."""

    server_time: datetime
    queues: tuple[OpsQueue, ...]
    integrations: Mapping[str, int]  # status -> count
    tokens_expiring_7d: int
    webhook_lag_seconds: float  # age of the oldest delivery not processed yet (0: none waiting)
    last_errors: tuple[OpsError, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpsSnapshot:
        integrations = _object(data.get("integrations"), "instagram_ops_snapshot_v1")
        return cls(
            server_time=_datetime(data, "server_time"),
            queues=tuple(OpsQueue.from_json(q) for q in _array(data.get("queues"), "queues")),
            integrations={str(k): _int(integrations, k) for k in integrations},
            tokens_expiring_7d=_int(data, "tokens_expiring_7d"),
            webhook_lag_seconds=_float(data, "webhook_lag_seconds"),
            last_errors=tuple(OpsError.from_json(e) for e in _array(data.get("last_errors"), "last_errors")),
        )


async def ops_snapshot(db: Database) -> OpsSnapshot:
    """``instagram_ops_snapshot_v1``: read-only; callers bound it with a timeout of their own."""
    result = await db.rpc("instagram_ops_snapshot_v1")
    return OpsSnapshot.from_json(_object(result, "instagram_ops_snapshot_v1"))


@dataclass(frozen=True)
class RpcArgument:
    """One argument of an RPC as pg_catalog states it (``default`` is the SQL expression, or None)."""

    name: str
    type: str
    default: str | None


@dataclass(frozen=True)
class RpcFunction:
    """One function ``authenticated`` may execute, as pg_catalog describes it, with its comment."""

    name: str
    signature: str
    arguments: tuple[RpcArgument, ...]
    returns: str
    security: Literal["definer", "invoker"]
    volatility: str
    granted_to: tuple[str, ...]
    comment: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RpcFunction:
        security = _str(data, "security")
        if security not in ("definer", "invoker"):
            raise _unexpected("security is neither definer nor invoker")
        return cls(
            name=_str(data, "name"),
            signature=_str(data, "signature"),
            arguments=tuple(
                RpcArgument(name=_str(a, "name"), type=_str(a, "type"), default=_opt_str(a, "default"))
                for a in _array(data.get("arguments"), "arguments")
            ),
            returns=_str(data, "returns"),
            security=cast(Literal["definer", "invoker"], security),
            volatility=_str(data, "volatility"),
            granted_to=_strings(data, "granted_to"),
            comment=_opt_str(data, "comment"),
        )


async def rpc_catalogue(db: Database) -> tuple[RpcFunction, ...]:
    """``instagram_rpc_catalogue_v1``: the app-facing RPCs, by name."""
    result = await db.rpc("instagram_rpc_catalogue_v1")
    return tuple(RpcFunction.from_json(f) for f in _array(result, "instagram_rpc_catalogue_v1"))


CATALOGUE: tuple[Callable[..., Awaitable[object]], ...] = (
    oauth_state_create,
    oauth_state_consume,
    store_integrations,
    integration_tokens,
    key_check,
    unsubscribe_token,
    refresh_enqueue,
    refresh_enqueue_one,
    integration_status,
    disconnect,
    rotate_key_batch,
    health,
    webhook_ingest,
    webhook_replay,
    profile_token,
    list_conversations,
    list_messages,
    mark_conversation_read,
    send_message,
    retry_message,
    usage_summary,
    send_token,
    send_reslot,
    settings_apply,
    usage_add_calls,
    upsert_template,
    delete_template,
    render_template,
    list_templates,
    messaging_access,
    schedule_message,
    cancel_scheduled_message,
    reschedule_message,
    list_scheduled_messages,
    scheduled_dispatch,
    media_settings_apply,
    media_lookup,
    media_url,
    media_open,
    media_prune,
    ops_snapshot,
    rpc_catalogue,
)
