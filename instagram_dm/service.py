"""InstagramService: the Python counterpart of the brief's `instagramService.ts` (OAuth methods).

The API is a thin shell over this class: it authenticates the caller, then calls
:meth:`start_connection`, :meth:`complete_connection`, :meth:`status` or :meth:`disconnect`.
All state lives in Postgres (reached through the `Database` port); Meta through `GraphClient`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from instagram_dm import errors, pkce
from instagram_dm.db import rpc
from instagram_dm.db.port import ActingUser, Database
from instagram_dm.graph import (
    FACEBOOK_LOGIN,
    FACEBOOK_LOGIN_SCOPES,
    INSTAGRAM_LOGIN,
    INSTAGRAM_LOGIN_SCOPES,
    GraphClient,
    InstagramAccount,
    InstagramLoginClient,
    Page,
    Providers,
    parse_provider,
)
from instagram_dm.graph import errors as graph_errors
from instagram_dm.settings import Settings

log = logging.getLogger(__name__)

# Facebook Login's scopes: the brief's, plus pages_show_list, without which /me/accounts returns nothing.
REQUIRED_SCOPES: tuple[str, ...] = FACEBOOK_LOGIN_SCOPES
STATE_TTL_SECONDS = 600
STATE_NONCE_BYTES = 32
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32)
_PAGE_LOOKUP_CONCURRENCY = 8
# What a refused state means for the person: a forwarded consent link, a lost role or plan, or stale.
_STATE_REASONS = {"foreign_browser": "session_mismatch", "not_allowed": "not_allowed"}


def hash_state(nonce: str) -> str:
    """What the database keeps of a state (or browser-binding) nonce: its SHA-256, hex."""
    return hashlib.sha256(nonce.encode()).hexdigest()


def binding_cookie_name(nonce: str) -> str:
    """The cookie that binds one pending connect to the browser that started it (one per state)."""
    return f"ig_oauth_{hash_state(nonce)[:16]}"


def _parse_uuid(value: object, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError):
        raise errors.BadRequestError(f"{what} must be a UUID.", code=f"invalid_{what}") from None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")


def resolve_return_to(return_to: str | None, default_return_url: str) -> str:
    """An absolute URL on the origin of `default_return_url`, or BadRequestError (no open redirects)."""
    if return_to is None or return_to == "":
        return default_return_url
    if not isinstance(return_to, str) or len(return_to) > 2048 or any(c in return_to for c in "\r\n\t\\"):
        raise errors.BadRequestError("return_to must be a URL on the app's origin.", code="invalid_return_to")
    try:  # urlsplit and .port raise ValueError on a bad port, an open bracket, NFKC tricks in the host ...
        candidate = urljoin(default_return_url, return_to) if return_to.startswith("/") else return_to
        if return_to.startswith("//"):
            candidate = ""  # scheme-relative: another host
        parts = urlsplit(candidate)
        same_origin = _origin(candidate) == _origin(default_return_url)
    except ValueError:
        same_origin = False
    if (
        not same_origin
        or parts.scheme not in {"http", "https"}
        or parts.username is not None
        or parts.password is not None
    ):
        raise errors.BadRequestError("return_to must be a URL on the app's origin.", code="invalid_return_to")
    return candidate


def with_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    """`url` with `params` appended to its query (existing parameters kept, ours replace same names)."""
    parts = urlsplit(url)
    names = {k for k, _ in params}
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode([*query, *params]), parts.fragment))


@dataclass(frozen=True)
class ConnectStart:
    """Where to send the browser to start connecting, until when the state is good, and the cookie
    (name, value) the browser must keep so that the callback is accepted only from it."""

    url: str
    expires_at: str
    binding_cookie: tuple[str, str] | None = field(default=None, repr=False)
    provider: str = FACEBOOK_LOGIN


@dataclass(frozen=True)
class ConnectResult:
    """The outcome of an OAuth callback, ready to become a redirect (or a 400 page)."""

    ok: bool
    reason: str | None = None
    return_to: str | None = None
    integration_ids: tuple[str, ...] = ()
    missing_scopes: tuple[str, ...] = ()
    webhook_failures: tuple[str, ...] = ()

    def redirect_url(self) -> str | None:
        """The browser's next stop; None when no safe return URL is known (show a 400 page)."""
        if self.return_to is None:
            return None
        if self.ok:
            params = [("instagram", "connected"), *(("integration_id", i) for i in self.integration_ids)]
            if self.webhook_failures:
                params.append(("webhooks", "failed"))
            return with_query(self.return_to, params)
        params = [("instagram", "error"), ("reason", self.reason or "unknown")]
        if self.missing_scopes:
            params.append(("missing", ",".join(self.missing_scopes)))
        return with_query(self.return_to, params)


class _Abort(Exception):
    def __init__(self, reason: str, **detail: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _LinkedAccount:
    page: Page
    account: InstagramAccount


class InstagramService:
    """OAuth connect, status and disconnect for an IMO's Instagram accounts."""

    def __init__(
        self,
        *,
        db: Database,
        graph: GraphClient,
        settings: Settings,
        instagram_login: InstagramLoginClient | None = None,
    ) -> None:
        settings.require("crypto", "oauth")
        self._db = db
        self._graph = graph
        # Facebook Login always; Instagram Login only when its client (its settings) is given.
        self._providers = Providers(graph, instagram_login)
        self._settings = settings
        self._key = settings.token_encryption_key.reveal()

    # ---- start ------------------------------------------------------------------------------------

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers a connect may choose here."""
        return self._providers.offered

    async def start_connection(
        self, *, user_id: str, imo_id: object, return_to: object = None, provider: object = None
    ) -> ConnectStart:
        """Check the user may connect for the IMO, store a single-use state (with the chosen provider),
        return that provider's dialog URL. 400 ``invalid_provider`` / ``provider_not_configured``."""
        imo = _parse_uuid(imo_id, "imo_id")
        name = parse_provider(provider)
        client = self._providers.get(name)
        if return_to is not None and not isinstance(return_to, str):
            raise errors.BadRequestError("return_to must be a string.", code="invalid_return_to")
        target = resolve_return_to(return_to, self._settings.return_url)
        nonce = secrets.token_urlsafe(STATE_NONCE_BYTES)
        binding = secrets.token_urlsafe(STATE_NONCE_BYTES) if self._settings.oauth_bind_browser else None
        # PKCE: the verifier stays here (encrypted with the state); only its challenge goes to the browser.
        # (Facebook Login only: Meta documents no PKCE for the Instagram dialog.)
        verifier = pkce.new_verifier() if self._settings.oauth_pkce and client.uses_pkce else None
        created = await rpc.oauth_state_create(
            self._db,
            state_hash=hash_state(nonce),
            user_id=user_id,
            imo_id=imo,
            return_to=target,
            ttl_seconds=STATE_TTL_SECONDS,
            browser_binding_hash=None if binding is None else hash_state(binding),
            code_verifier=verifier,
            key=None if verifier is None else self._key,
            provider=name,
        )
        url = client.dialog_url(
            redirect_uri=self._settings.oauth_redirect_uri,
            state=nonce,
            scopes=client.scopes,
            code_challenge=None if verifier is None else pkce.challenge(verifier),
        )
        log.info(
            "oauth.started",
            extra={"imo_id": imo, "user_id": user_id, "pkce": verifier is not None, "provider": name},
        )
        cookie = None if binding is None else (binding_cookie_name(nonce), binding)
        return ConnectStart(
            url=url, expires_at=created.expires_at.isoformat(), binding_cookie=cookie, provider=name
        )

    # ---- callback ---------------------------------------------------------------------------------

    async def complete_connection(
        self, params: Mapping[str, str], cookies: Mapping[str, str] | None = None
    ) -> ConnectResult:
        """Handle Meta's redirect: denial, then state (single use, same browser, still allowed), then
        tokens, Pages, accounts, webhooks, storage. `cookies` are the browser's (for the binding).

        A person's browser lands here, so a database that is away is a redirect to the app with
        ``reason=temporarily_unavailable`` (its default return URL: the state could not be read), never JSON."""
        try:
            return await self._complete_connection(params, cookies)
        except errors.DatabaseUnavailableError as exc:
            log.warning("oauth.database_unavailable", extra={"error_code": exc.code})
            return ConnectResult(
                ok=False, reason="temporarily_unavailable", return_to=self._settings.return_url
            )

    async def _complete_connection(
        self, params: Mapping[str, str], cookies: Mapping[str, str] | None
    ) -> ConnectResult:
        nonce = params.get("state", "")
        binding = (cookies or {}).get(binding_cookie_name(nonce)) if _NONCE_RE.match(nonce) else None
        if params.get("error") or params.get("error_reason"):
            state = await self._consume_state(nonce, binding)
            denied = params.get("error") == "access_denied" or params.get("error_reason") == "user_denied"
            reason = "user_denied" if denied else "meta_error"
            log.info("oauth.denied", extra={"reason": reason, "imo_id": state.imo_id})
            return ConnectResult(
                ok=False, reason=reason, return_to=state.return_to or self._settings.return_url
            )

        state = await self._consume_state(nonce, binding)
        if state.status != "ok" or state.user_id is None or state.imo_id is None or state.return_to is None:
            log.info("oauth.state_refused", extra={"state_status": state.status})
            reason = _STATE_REASONS.get(state.status, "invalid_state")
            return ConnectResult(ok=False, reason=reason, return_to=state.return_to)
        return_to, user_id, imo_id = state.return_to, state.user_id, state.imo_id

        code = params.get("code", "")
        if not code or len(code) > 4096:
            return ConnectResult(ok=False, reason="missing_code", return_to=return_to)
        try:
            if state.provider == INSTAGRAM_LOGIN:
                ids, failures = await self._connect_instagram_login(code=code, user_id=user_id, imo_id=imo_id)
            else:
                ids, failures = await self._connect(
                    code=code, code_verifier=state.code_verifier, user_id=user_id, imo_id=imo_id
                )
        except _Abort as abort:
            log.warning(
                "oauth.failed",
                extra={
                    "reason": abort.reason,
                    "imo_id": imo_id,
                    "user_id": user_id,
                    "provider": state.provider,
                },
            )
            return ConnectResult(
                ok=False,
                reason=abort.reason,
                return_to=return_to,
                missing_scopes=tuple(abort.detail.get("missing", ())),
            )
        log.info(
            "oauth.connected",
            extra={
                "provider": state.provider,
                "imo_id": imo_id,
                "user_id": user_id,
                "integration_ids": list(ids),
                "webhook_failures": len(failures),
            },
        )
        return ConnectResult(ok=True, return_to=return_to, integration_ids=ids, webhook_failures=failures)

    async def _consume_state(self, nonce: str, binding: str | None) -> rpc.StateConsumed:
        if not _NONCE_RE.match(nonce):
            return rpc.StateConsumed(status="unknown")
        return await rpc.oauth_state_consume(
            self._db,
            state_hash=hash_state(nonce),
            browser_binding_hash=None if not binding else hash_state(binding),
            key=self._key,
            previous_key=self._settings.previous_key,
        )

    async def _connect(
        self, *, code: str, code_verifier: str | None, user_id: str, imo_id: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Four Meta round trips on the critical path: code (+ the state's PKCE verifier, when it has
        one) -> short-lived token; -> long-lived token; ``debug_token`` alongside the Page listing
        (Instagram accounts expanded in place); every Page's ``subscribed_apps`` at once. Then one RPC
        stores everything."""
        try:
            short = await self._graph.exchange_code(
                code=code, redirect_uri=self._settings.oauth_redirect_uri, code_verifier=code_verifier
            )
            long_lived = await self._graph.exchange_long_lived(short.token)
            listing = asyncio.create_task(self._linked_accounts(long_lived.token))

            async def drop_listing() -> None:
                listing.cancel()
                await asyncio.wait([listing])
                if not listing.cancelled():
                    listing.exception()  # retrieved: its outcome no longer matters

            try:
                info = await self._graph.debug_token(long_lived.token)
            except BaseException:
                await drop_listing()
                raise
            # The token's verdict outranks whatever the listing says (or is still doing).
            missing = [s for s in REQUIRED_SCOPES if s not in info.scopes]
            if not info.is_valid or missing:
                await drop_listing()
            if not info.is_valid:
                raise _Abort("oauth_failed")
            if missing:
                raise _Abort("missing_permissions", missing=missing)
            linked = await listing
            if not linked:
                raise _Abort("no_instagram_account")
            subscriptions = await asyncio.gather(*(self._subscribe(item.page) for item in linked))
        except (graph_errors.MetaTransientError, graph_errors.MetaRateLimitedError):
            raise _Abort("meta_unavailable") from None
        except graph_errors.MetaPermissionError:
            raise _Abort("missing_permissions") from None
        except errors.MetaError:
            raise _Abort("oauth_failed") from None

        expires_at = info.expires_at
        if expires_at is None and long_lived.expires_in:
            expires_at = datetime.now(UTC) + timedelta(seconds=long_lived.expires_in)
        accounts = [
            rpc.AccountToStore(
                page_id=item.page.id,
                page_name=item.page.name,
                page_token=item.page.access_token,
                ig_account_id=item.account.id,
                ig_username=item.account.username,
                ig_profile_picture_url=item.account.profile_picture_url,
                webhook_subscribed=error is None,
                webhook_error_code=None if error is None else error.code,
                webhook_error_message=None
                if error is None
                else f"Webhook subscription failed: {error.message}",
            )
            for item, error in zip(linked, subscriptions, strict=True)
        ]
        stored = await self._store(
            imo_id=imo_id,
            user_id=user_id,
            user_token=long_lived.token,
            token_expires_at=expires_at,
            data_access_expires_at=info.data_access_expires_at,
            scopes=info.scopes,
            accounts=accounts,
            provider=FACEBOOK_LOGIN,
        )
        ids = tuple(row.id for row in stored)
        failures = tuple(item.account.id for item, error in zip(linked, subscriptions, strict=True) if error)
        return ids, failures

    async def _store(
        self,
        *,
        imo_id: str,
        user_id: str,
        user_token: str,
        token_expires_at: datetime | None,
        data_access_expires_at: datetime | None,
        scopes: Sequence[str],
        accounts: Sequence[rpc.AccountToStore],
        provider: str,
    ) -> tuple[rpc.StoredIntegration, ...]:
        """One RPC stores every account of the connect; its refusals become the redirect's reason."""
        try:
            return await rpc.store_integrations(
                self._db,
                imo_id=imo_id,
                user_id=user_id,
                key=self._key,
                user_token=user_token,
                token_expires_at=token_expires_at,
                data_access_expires_at=data_access_expires_at,
                scopes=scopes,
                accounts=accounts,
                provider=provider,
            )
        except errors.ForbiddenError:
            raise _Abort("not_allowed") from None
        except errors.ConflictError as exc:
            if exc.code == "connected_through_other_provider":
                raise _Abort("connected_through_other_provider") from None
            log.error("oauth.store_failed", extra={"imo_id": imo_id, "error_code": exc.code})
            raise _Abort("internal_error") from None
        except errors.InstagramDMError as exc:
            log.error("oauth.store_failed", extra={"imo_id": imo_id, "error_code": exc.code})
            raise _Abort("internal_error") from None

    async def _connect_instagram_login(
        self, *, code: str, user_id: str, imo_id: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Instagram Login, four round trips: code -> short-lived token (api.instagram.com, with the granted
        permissions); -> long-lived token (``ig_exchange_token``); the account (``/me``); its
        ``subscribed_apps``. Then one RPC stores the one account (no Page: the Instagram User token is
        its messaging token)."""
        client = self._providers.instagram
        if client is None:  # offered at init, no longer configured at the callback
            raise _Abort("provider_not_configured")
        try:
            short = await client.exchange_code(code=code, redirect_uri=self._settings.oauth_redirect_uri)
            missing = [s for s in INSTAGRAM_LOGIN_SCOPES if s not in short.permissions]
            if short.permissions and missing:
                raise _Abort("missing_permissions", missing=missing)
            long_lived = await client.exchange_long_lived(short.token)
            account = await client.account(long_lived.token)
            error: errors.MetaError | None = None
            try:
                await client.subscribe_account(account.id, long_lived.token)
            except (graph_errors.MetaTransientError, graph_errors.MetaRateLimitedError):
                raise
            except errors.MetaError as exc:
                log.warning("oauth.webhook_subscribe_failed", extra={"error_code": exc.code})
                error = exc
        except (graph_errors.MetaTransientError, graph_errors.MetaRateLimitedError):
            raise _Abort("meta_unavailable") from None
        except graph_errors.MetaPermissionError:
            raise _Abort("missing_permissions") from None
        except errors.MetaError:
            raise _Abort("oauth_failed") from None
        expires_at = (
            datetime.now(UTC) + timedelta(seconds=long_lived.expires_in) if long_lived.expires_in else None
        )
        stored = await self._store(
            imo_id=imo_id,
            user_id=user_id,
            user_token=long_lived.token,
            token_expires_at=expires_at,
            data_access_expires_at=None,
            scopes=short.permissions or INSTAGRAM_LOGIN_SCOPES,
            accounts=[
                rpc.AccountToStore(
                    page_id=None,
                    page_name=None,
                    page_token=long_lived.token,
                    ig_account_id=account.id,
                    ig_username=account.username,
                    ig_profile_picture_url=account.profile_picture_url,
                    webhook_subscribed=error is None,
                    webhook_error_code=None if error is None else error.code,
                    webhook_error_message=None
                    if error is None
                    else f"Webhook subscription failed: {error.message}",
                )
            ],
            provider=INSTAGRAM_LOGIN,
        )
        return tuple(row.id for row in stored), (() if error is None else (account.id,))

    async def _linked_accounts(self, user_token: str) -> list[_LinkedAccount]:
        """Every Page with a Page token and a linked Instagram account, from one ``/me/accounts``
        listing (all its pages) that expands each Page's account in place.

        If Meta refuses the expanded listing (permission or parameter: one Page whose account we may
        not read), list the Pages plainly and look each account up, skipping the Pages Meta refuses, so
        that one unreadable Page does not sink the others. Outages propagate.
        """
        try:
            pages = await self._graph.list_pages(user_token, with_instagram=True)
        except (graph_errors.MetaPermissionError, graph_errors.MetaInvalidRequestError) as exc:
            log.warning("oauth.page_listing_refused", extra={"error_code": exc.code})
        else:
            return [
                _LinkedAccount(page, page.instagram_account)
                for page in pages
                # no token: the user lacks a task on this Page that yields one
                if page.access_token and page.instagram_account is not None
            ]
        limit = asyncio.Semaphore(_PAGE_LOOKUP_CONCURRENCY)

        async def lookup(page: Page) -> _LinkedAccount | None:
            if not page.access_token:
                return None
            try:
                async with limit:
                    account = await self._graph.page_instagram_account(page.id, page.access_token)
            except (
                graph_errors.MetaPermissionError,
                graph_errors.MetaInvalidRequestError,
                graph_errors.MetaTokenInvalidError,
            ) as exc:
                log.warning("oauth.page_skipped", extra={"page_id": page.id, "error_code": exc.code})
                return None
            return None if account is None else _LinkedAccount(page, account)

        found = await asyncio.gather(*(lookup(p) for p in await self._graph.list_pages(user_token)))
        return [item for item in found if item is not None]

    async def _subscribe(self, page: Page) -> errors.MetaError | None:
        """Subscribe the Page's webhooks; a refusal is returned (and recorded), an outage propagates."""
        try:
            await self._graph.subscribe_page(page.id, page.access_token)
        except (graph_errors.MetaTransientError, graph_errors.MetaRateLimitedError):
            raise
        except errors.MetaError as exc:
            log.warning("oauth.webhook_subscribe_failed", extra={"page_id": page.id, "error_code": exc.code})
            return exc
        return None

    # ---- status and disconnect ---------------------------------------------------------------------

    async def status(self, *, user: ActingUser, imo_id: object) -> tuple[rpc.IntegrationStatus, ...]:
        """The IMO's integrations with safe fields only, read as `user` (RLS decides): () for non-members."""
        return await rpc.integration_status(self._db, user, imo_id=_parse_uuid(imo_id, "imo_id"))

    async def disconnect(self, *, user: ActingUser, integration_id: object) -> rpc.Disconnected:
        """As `user`: wipe the tokens, mark disconnected and queue the Page's webhook unsubscribe
        (IMO owners and admins only; anyone else gets NotFoundError, as for a missing integration)."""
        result = await rpc.disconnect(
            self._db, user, integration_id=_parse_uuid(integration_id, "integration_id")
        )
        log.info("integration.disconnected", extra={"integration_id": result.id, "user_id": user.user_id})
        return result
