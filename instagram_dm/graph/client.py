"""An async client for the parts of Meta's Graph API that the Facebook-Login flavour needs.

It sends every request through an injected :class:`httpx.AsyncClient` (tests build one with
``httpx.MockTransport`` or point it at the sandbox), signs user/Page-token calls with
``appsecret_proof``, turns every failure into :mod:`instagram_dm.graph.errors`, and retries only
:class:`~instagram_dm.graph.errors.MetaTransientError` with bounded, jittered backoff.

Logs (``graph.request``, ``graph.retry_scheduled``, ``graph.error``) carry the URL with secret
parameters masked; tokens never reach a log line, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from instagram_dm import metrics, pkce
from instagram_dm.graph.errors import (
    GraphError,
    MetaOtherError,
    MetaPermissionError,
    MetaTransientError,
    classify,
    scrub,
    usage_from_headers,
)
from instagram_dm.graph.models import (
    FACEBOOK_LOGIN,
    FACEBOOK_LOGIN_SCOPES,
    WEBHOOK_FIELDS,
    AccessToken,
    InstagramAccount,
    InstagramUser,
    Page,
    SentMessage,
    TokenInfo,
)
from instagram_dm.graph.retry import RetryPolicy
from instagram_dm.logs import redact
from instagram_dm.usage import CallMeter

if TYPE_CHECKING:
    from instagram_dm.settings import Settings

log = logging.getLogger(__name__)

PAGE_FIELDS = "id,name,access_token,tasks,category"
IG_ACCOUNT_FIELDS = "instagram_business_account{id,username,profile_picture_url}"
# One /me/accounts listing that also expands each Page's Instagram account (absent when none is linked).
LINKED_PAGE_FIELDS = f"id,name,access_token,{IG_ACCOUNT_FIELDS}"
IG_USER_FIELDS = "id,username,name,profile_pic"
MAX_PAGES = 1000  # a safety stop for `paging.next` loops


def appsecret_proof(token: str, app_secret: str) -> str:
    """Hex HMAC-SHA256 of the access token keyed with the app secret."""
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def _timestamp(value: object) -> datetime | None:
    """Meta's epoch seconds; 0 (or absent) means never / unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value, UTC)


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    return str(value)


class GraphClient:
    """Meta Graph API calls for connecting Instagram accounts through Facebook Login."""

    name = FACEBOOK_LOGIN
    scopes = FACEBOOK_LOGIN_SCOPES
    uses_pkce = True  # S256 challenge on the dialog, verifier on the exchange (INSTAGRAM_OAUTH_PKCE)

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        app_id: str,
        app_secret: str,
        version: str = "v25.0",
        graph_base_url: str = "https://graph.facebook.com",
        dialog_base_url: str = "https://www.facebook.com",
        retry: RetryPolicy | None = None,
        meter: CallMeter | None = None,
    ) -> None:
        self._http = http
        self._meter = meter
        self._app_id = app_id
        self._app_secret = app_secret
        self._version = version
        self._graph = graph_base_url.rstrip("/")
        self._dialog = dialog_base_url.rstrip("/")
        self._graph_origin = urlsplit(self._graph)[:2]
        self._retry = retry or RetryPolicy()
        self._calls = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        retry: RetryPolicy | None = None,
        meter: CallMeter | None = None,
    ) -> GraphClient:
        """Build a client from the ``meta`` settings group."""
        return cls(
            http,
            app_id=settings.instagram_app_id,
            app_secret=settings.instagram_app_secret.reveal(),
            version=settings.graph_api_version,
            graph_base_url=settings.graph_base_url,
            dialog_base_url=settings.oauth_dialog_base_url,
            retry=retry,
            meter=meter,
        )

    def __repr__(self) -> str:
        return f"GraphClient(app_id={self._app_id!r}, version={self._version!r}, graph={self._graph!r})"

    @property
    def calls(self) -> int:
        """Number of HTTP requests sent so far (retries included)."""
        return self._calls

    # ---- OAuth ---------------------------------------------------------------------------------

    def dialog_url(
        self, *, redirect_uri: str, state: str, scopes: Sequence[str], code_challenge: str | None = None
    ) -> str:
        """The Facebook Login dialog URL the browser is sent to; with `code_challenge` (PKCE), also
        ``code_challenge`` and ``code_challenge_method=S256``."""
        params = {
            "client_id": self._app_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "scope": ",".join(scopes),
            "response_type": "code",
        }
        if code_challenge is not None:
            params |= {"code_challenge": code_challenge, "code_challenge_method": pkce.CHALLENGE_METHOD}
        query = urlencode(params, safe=",")
        return f"{self._dialog}/{self._version}/dialog/oauth?{query}"

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None = None
    ) -> AccessToken:
        """Exchange the dialog's single-use code for a short-lived user token; `code_verifier` (PKCE)
        is sent when the dialog got its challenge, and masked like the code in logs and errors.

        Not retried once the request may have reached Meta: a replayed code is refused anyway.
        """
        params = {
            "client_id": self._app_id,
            "redirect_uri": redirect_uri,
            "client_secret": self._app_secret,
            "code": code,
        }
        if code_verifier is not None:
            params["code_verifier"] = code_verifier
        body = await self._call(
            "GET",
            "/oauth/access_token",
            params,
            secrets=(code,) if code_verifier is None else (code, code_verifier),
            idempotent=False,
        )
        return self._access_token(body)

    async def exchange_long_lived(self, user_token: str) -> AccessToken:
        """Exchange a user token for a long-lived (~60 days) one (``grant_type=fb_exchange_token``)."""
        body = await self._call(
            "GET",
            "/oauth/access_token",
            {
                "grant_type": "fb_exchange_token",
                "client_id": self._app_id,
                "client_secret": self._app_secret,
                "fb_exchange_token": user_token,
            },
            secrets=(user_token,),
        )
        return self._access_token(body)

    async def debug_token(self, token: str) -> TokenInfo:
        """Inspect a token with the app token; an invalid token is a result, not an exception."""
        app_token = f"{self._app_id}|{self._app_secret}"
        body = await self._call(
            "GET",
            "/debug_token",
            {"input_token": token, "access_token": app_token},
            secrets=(token,),
        )
        data = body.get("data")
        if not isinstance(data, dict):
            raise MetaOtherError("Meta's debug_token answer has no data object")
        raw_error, raw_scopes = data.get("error"), data.get("scopes")
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        scopes: list[Any] = raw_scopes if isinstance(raw_scopes, list) else []
        return TokenInfo(
            is_valid=data.get("is_valid") is True,
            app_id=_opt_str(data.get("app_id")),
            type=_opt_str(data.get("type")),
            user_id=_opt_str(data.get("user_id")),
            expires_at=_timestamp(data.get("expires_at")),
            data_access_expires_at=_timestamp(data.get("data_access_expires_at")),
            issued_at=_timestamp(data.get("issued_at")),
            scopes=tuple(str(s) for s in scopes),
            error_code=error.get("code") if isinstance(error.get("code"), int) else None,
            error_subcode=error.get("subcode") if isinstance(error.get("subcode"), int) else None,
        )

    # ---- Pages and Instagram accounts ------------------------------------------------------------

    async def list_pages(self, user_token: str, *, with_instagram: bool = False) -> list[Page]:
        """Every Page the user manages, following ``paging.next`` until it is absent.

        With `with_instagram`, each Page comes with its linked Instagram account (nested field
        expansion, :data:`LINKED_PAGE_FIELDS`), so no lookup per Page is needed; without it, with its
        tasks and category (:data:`PAGE_FIELDS`).
        """
        pages: list[Page] = []
        fields = LINKED_PAGE_FIELDS if with_instagram else PAGE_FIELDS
        body = await self._call("GET", "/me/accounts", {"fields": fields, "limit": "100"}, token=user_token)
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            data = body.get("data")
            if not isinstance(data, list):
                raise MetaOtherError("Meta's /me/accounts answer has no data list")
            pages.extend(self._page(item) for item in data if isinstance(item, dict))
            paging = body.get("paging")
            next_url = paging.get("next") if isinstance(paging, dict) else None
            if not isinstance(next_url, str) or not next_url:
                return pages
            if next_url in seen:
                raise MetaOtherError("Meta's paging.next repeats itself")
            seen.add(next_url)
            body = await self._follow(next_url, user_token)
        raise MetaOtherError(f"Meta's /me/accounts paging did not end after {MAX_PAGES} pages")

    async def page_instagram_account(self, page_id: str, page_token: str) -> InstagramAccount | None:
        """The Instagram professional account linked to the Page, or None when there is none."""
        body = await self._call("GET", f"/{page_id}", {"fields": IG_ACCOUNT_FIELDS}, token=page_token)
        return self._instagram_account(body.get("instagram_business_account"))

    async def page_token(self, page_id: str, user_token: str) -> str:
        """The Page's access token, as seen through the user's token."""
        body = await self._call("GET", f"/{page_id}", {"fields": "access_token"}, token=user_token)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise MetaPermissionError("Meta returned no access token for the Page")
        return token

    async def subscribe_page(
        self, page_id: str, page_token: str, fields: Sequence[str] = WEBHOOK_FIELDS
    ) -> None:
        """Subscribe the app to the Page's webhook `fields`; raises when Meta says ``success: false``."""
        body = await self._call(
            "POST", f"/{page_id}/subscribed_apps", {"subscribed_fields": ",".join(fields)}, token=page_token
        )
        self._require_success(body, "subscribe")

    async def unsubscribe_page(self, page_id: str, page_token: str) -> None:
        """Remove the app's webhook subscription from the Page."""
        body = await self._call("DELETE", f"/{page_id}/subscribed_apps", {}, token=page_token)
        self._require_success(body, "unsubscribe")

    async def instagram_user(self, ig_user_id: str, token: str) -> InstagramUser:
        """An Instagram user's public profile fields, by IGSID."""
        body = await self._call("GET", f"/{ig_user_id}", {"fields": IG_USER_FIELDS}, token=token)
        return InstagramUser(
            id=str(body.get("id") or ig_user_id),
            username=_opt_str(body.get("username")),
            name=_opt_str(body.get("name")),
            profile_pic=_opt_str(body.get("profile_pic")),
        )

    # ---- messaging ------------------------------------------------------------------------------

    async def send_message(
        self,
        page_id: str,
        page_token: str,
        *,
        recipient_id: str,
        text: str | None = None,
        attachment: Mapping[str, Any] | None = None,
        messaging_type: str = "RESPONSE",
        tag: str | None = None,
    ) -> SentMessage:
        """``POST /{page-id}/messages``: one text or one attachment (``{type, payload: {url}}``) to an IGSID.

        Never retried here (Meta has no idempotency key): only a request that did not leave is retried.
        Errors raised carry ``reached_meta`` (False only when the request certainly did not leave)."""
        message: dict[str, Any] = {"text": text} if attachment is None else {"attachment": dict(attachment)}
        body: dict[str, Any] = {"recipient": {"id": recipient_id}, "message": message}
        body["messaging_type"] = messaging_type
        if tag is not None:
            body["tag"] = tag
        url = f"{self._graph}/{self._version}/{page_id}/messages"
        try:
            answer, headers = await self._send(
                "POST",
                url,
                self._signed({}, page_token),
                secrets=(page_token,),
                idempotent=False,
                json_body=body,
            )
        except MetaOtherError as exc:
            if exc.meta_http_status is None or exc.meta_http_status < 400:
                # A 2xx we cannot read: Meta may well have sent it (the outcome is unknown, not a refusal).
                raise MetaTransientError(exc.message) from None
            raise
        message_id = answer.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            # Accepted, by the status: the message may be out; the echo will say.
            raise MetaTransientError("Meta accepted the message but returned no message_id")
        percent, regain = usage_from_headers(headers)
        return SentMessage(message_id=message_id, usage_percent=percent, regain_seconds=regain)

    # ---- plumbing --------------------------------------------------------------------------------

    @staticmethod
    def _access_token(body: Mapping[str, Any]) -> AccessToken:
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise MetaOtherError("Meta's token answer has no access_token")
        expires_in = body.get("expires_in")
        return AccessToken(
            token=token,
            token_type=str(body.get("token_type") or "bearer"),
            expires_in=int(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else None,
        )

    @staticmethod
    def _instagram_account(raw: object) -> InstagramAccount | None:
        """A (possibly expanded) ``instagram_business_account``; None when absent or without an id."""
        if not isinstance(raw, dict) or not raw.get("id"):
            return None
        return InstagramAccount(
            id=str(raw["id"]),
            username=_opt_str(raw.get("username")),
            profile_picture_url=_opt_str(raw.get("profile_picture_url")),
        )

    @classmethod
    def _page(cls, item: Mapping[str, Any]) -> Page:
        raw_tasks = item.get("tasks")
        tasks: list[Any] = raw_tasks if isinstance(raw_tasks, list) else []
        return Page(
            id=str(item.get("id", "")),
            name=str(item.get("name", "")),
            access_token=str(item.get("access_token") or ""),
            tasks=tuple(str(t) for t in tasks),
            category=_opt_str(item.get("category")),
            instagram_account=cls._instagram_account(item.get("instagram_business_account")),
        )

    @staticmethod
    def _require_success(body: Mapping[str, Any], what: str) -> None:
        if body.get("success") is not True:
            raise MetaOtherError(f"Meta did not confirm the webhook {what} (success is not true)")

    def _signed(self, params: Mapping[str, str], token: str | None) -> dict[str, str]:
        out = dict(params)
        if token is not None:
            out["access_token"] = token
            out["appsecret_proof"] = appsecret_proof(token, self._app_secret)
        return out

    async def _follow(self, next_url: str, token: str) -> dict[str, Any]:
        """GET a ``paging.next`` URL, on our Graph origin only, re-signed with our token."""
        parts = urlsplit(next_url)
        if parts[:2] != self._graph_origin:
            raise MetaOtherError("Meta's paging.next points to another origin; not following it")
        params = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
        params = self._signed(params, token)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        body, _ = await self._send("GET", url, params, secrets=(token,), idempotent=True)
        return body

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        *,
        token: str | None = None,
        secrets: Sequence[str] = (),
        idempotent: bool = True,
    ) -> dict[str, Any]:
        url = f"{self._graph}/{self._version}{path}"
        all_secrets = (*secrets, *((token,) if token else ()))
        body, _ = await self._send(
            method, url, self._signed(params, token), secrets=all_secrets, idempotent=idempotent
        )
        return body

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str],
        *,
        secrets: Sequence[str],
        idempotent: bool,
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, Any], httpx.Headers]:
        secrets = (*secrets, self._app_secret, params.get("appsecret_proof", ""))
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(
                    method, url, params, secrets=secrets, json_body=json_body, headers=headers
                )
            except GraphError as exc:
                retryable = isinstance(exc, MetaTransientError) and (
                    idempotent or getattr(exc, "_before_send", False)
                )
                if not retryable or attempt >= self._retry.attempts:
                    log.warning(
                        "graph.error",
                        extra={
                            "graph_method": method,
                            "graph_path": urlsplit(url).path,
                            "error_code": exc.code,
                            "meta_code": exc.meta_code,
                            "meta_subcode": exc.meta_subcode,
                            "meta_http_status": exc.meta_http_status,
                            "fbtrace_id": exc.fbtrace_id,
                            "attempt": attempt,
                        },
                    )
                    raise
                delay = self._retry.delay(attempt)
                log.info(
                    "graph.retry_scheduled",
                    extra={
                        "graph_method": method,
                        "graph_path": urlsplit(url).path,
                        "error_code": exc.code,
                        "meta_code": exc.meta_code,
                        "attempt": attempt,
                        "delay_s": round(delay, 3),
                    },
                )
                await asyncio.sleep(delay)

    async def _attempt(
        self,
        method: str,
        url: str,
        params: Mapping[str, str],
        *,
        secrets: Sequence[str],
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, Any], httpx.Headers]:
        extra = dict(headers) if headers else None
        if json_body is not None:  # the token stays in the query; the body is Meta's JSON object
            request = self._http.build_request(
                method, url, params=dict(params), json=dict(json_body), headers=extra
            )
        elif method == "POST":
            request = self._http.build_request(method, url, data=dict(params), headers=extra)
        else:
            request = self._http.build_request(method, url, params=dict(params), headers=extra)
        masked_url = scrub(redact(str(request.url)), secrets)
        endpoint = metrics.meta_endpoint(request.url.path)
        started = time.perf_counter()
        self._calls += 1
        if self._meter is not None:
            self._meter.count()
        status: int | None = None
        try:
            body, headers, status = await self._exchange(request, method, masked_url, started, secrets)
        except GraphError as exc:
            metrics.observe_meta_call(
                endpoint,
                status=status if status is not None else exc.meta_http_status,
                seconds=time.perf_counter() - started,
                error=exc,
                meta_code=exc.meta_code,
            )
            raise
        metrics.observe_meta_call(endpoint, status=status, seconds=time.perf_counter() - started)
        return body, headers

    async def _exchange(
        self,
        request: httpx.Request,
        method: str,
        masked_url: str,
        started: float,
        secrets: Sequence[str],
    ) -> tuple[dict[str, Any], httpx.Headers, int]:
        """Send one request; Meta's answer as (body, headers, status), or the GraphError it means."""
        try:
            response = await self._http.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            error = MetaTransientError(f"could not reach Meta ({type(exc).__name__})")
            error._before_send = True  # type: ignore[attr-defined]  # nothing reached Meta: safe to retry
            raise error from None
        except httpx.TimeoutException as exc:
            raise MetaTransientError(f"Meta did not answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise MetaTransientError(f"the connection to Meta failed ({type(exc).__name__})") from None
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        log.debug(
            "graph.request",
            extra={
                "graph_method": method,
                "graph_url": masked_url,
                "meta_http_status": response.status_code,
                "elapsed_ms": elapsed_ms,
                "fbtrace_id": response.headers.get("x-fb-trace-id"),
            },
        )
        content = response.content
        body: Any = None
        try:
            body = json.loads(content) if content else None
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict) or "error" in body:
            if response.status_code < 400 and body is None:
                raise MetaOtherError(f"Meta answered HTTP {response.status_code} with a non-JSON body")
            raise classify(response.status_code, content, response.headers, secrets=secrets)
        return body, response.headers, response.status_code
