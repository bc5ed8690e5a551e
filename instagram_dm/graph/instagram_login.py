"""An async client for the Instagram API with Instagram Login (the flavour without a Facebook Page).

Three Meta hosts, each its own configurable origin (the sandbox stands in for all three):

    www.instagram.com    the authorization dialog (``/oauth/authorize``)
    api.instagram.com    code -> short-lived Instagram User token (``POST /oauth/access_token``, a form;
                         the answer is ``{"data": [{access_token, user_id, permissions}]}`` or, older,
                         the same keys flat; errors ``{"error_type", "code", "error_message"}``)
    graph.instagram.com  long-lived token (``ig_exchange_token``), refresh (``ig_refresh_token``), the
                         account (``/me``), webhooks (``/{ig-user-id}/subscribed_apps``), the Send API and
                         profiles, with ``Authorization: Bearer``

The HTTP plumbing (masking, error classes, retries, call metering) is :class:`GraphClient`'s, so both
flavours raise the same :mod:`instagram_dm.graph.errors` tree and never log a token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx

from instagram_dm.graph.client import GraphClient
from instagram_dm.graph.errors import MetaOtherError, MetaTransientError, usage_from_headers
from instagram_dm.graph.models import (
    INSTAGRAM_LOGIN,
    INSTAGRAM_LOGIN_SCOPES,
    INSTAGRAM_LOGIN_WEBHOOK_FIELDS,
    AccessToken,
    InstagramAccount,
    InstagramLoginToken,
    InstagramUser,
    SentMessage,
)
from instagram_dm.graph.retry import RetryPolicy
from instagram_dm.usage import CallMeter

if TYPE_CHECKING:
    from instagram_dm.settings import Settings

ACCOUNT_FIELDS = "user_id,username,profile_picture_url"
PROFILE_FIELDS = "name,username,profile_pic"


class InstagramLoginClient:
    """Instagram Login calls: dialog, code exchange, long-lived token, refresh, account, webhooks, sends."""

    name = INSTAGRAM_LOGIN
    scopes = INSTAGRAM_LOGIN_SCOPES
    # Meta documents no PKCE for the Instagram authorization dialog: state and browser binding protect it.
    uses_pkce = False

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        app_id: str,
        app_secret: str,
        version: str = "v25.0",
        dialog_base_url: str = "https://www.instagram.com",
        api_base_url: str = "https://api.instagram.com",
        graph_base_url: str = "https://graph.instagram.com",
        retry: RetryPolicy | None = None,
        meter: CallMeter | None = None,
    ) -> None:
        self._app_id = app_id
        self._app_secret = app_secret
        self._version = version
        self._dialog = dialog_base_url.rstrip("/")
        self._api = api_base_url.rstrip("/")
        self._graph = graph_base_url.rstrip("/")
        # Only its transport is used (masking, classification, retries, metering): URLs are built here.
        self._wire = GraphClient(
            http, app_id=app_id, app_secret=app_secret, version=version, graph_base_url=self._graph,
            retry=retry, meter=meter,
        )  # fmt: skip

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        retry: RetryPolicy | None = None,
        meter: CallMeter | None = None,
    ) -> InstagramLoginClient | None:
        """A client from the ``instagram_login`` settings group; None when it is not configured."""
        if not settings.instagram_login_enabled:
            return None
        return cls(
            http,
            app_id=settings.instagram_login_app_id,
            app_secret=settings.instagram_login_app_secret.reveal(),
            version=settings.graph_api_version,
            dialog_base_url=settings.instagram_login_dialog_base_url,
            api_base_url=settings.instagram_login_api_base_url,
            graph_base_url=settings.instagram_login_graph_base_url,
            retry=retry,
            meter=meter,
        )

    def __repr__(self) -> str:
        return f"InstagramLoginClient(app_id={self._app_id!r}, graph={self._graph!r})"

    @property
    def calls(self) -> int:
        """Number of HTTP requests sent so far (retries included)."""
        return self._wire.calls

    # ---- OAuth ---------------------------------------------------------------------------------

    def dialog_url(
        self,
        *,
        redirect_uri: str,
        state: str,
        scopes: Sequence[str] = INSTAGRAM_LOGIN_SCOPES,
        code_challenge: str | None = None,
    ) -> str:
        """The Instagram authorization dialog (``enable_fb_login=0``: the person signs in with Instagram).
        `code_challenge` is not sent: Meta documents no PKCE here (see ``uses_pkce``)."""
        params = {
            "client_id": self._app_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": ",".join(scopes),
            "state": state,
            "enable_fb_login": "0",
        }
        return f"{self._dialog}/oauth/authorize?{urlencode(params, safe=',')}"

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None = None
    ) -> InstagramLoginToken:
        """``POST api.instagram.com/oauth/access_token`` (a form): the dialog's code (a trailing ``#_``
        stripped) for a short-lived token; both answer shapes. Never retried once it may have left."""
        code = code.removesuffix("#_")
        params = {
            "client_id": self._app_id,
            "client_secret": self._app_secret,
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
            "code": code,
        }
        body, _ = await self._wire._send(
            "POST", f"{self._api}/oauth/access_token", params, secrets=(code,), idempotent=False
        )
        data = body.get("data")
        item: Mapping[str, Any] = body
        if isinstance(data, list):
            item = data[0] if data and isinstance(data[0], dict) else {}
        token = item.get("access_token")
        if not isinstance(token, str) or not token:
            raise MetaOtherError("Instagram's token answer has no access_token")
        raw = item.get("permissions")
        permissions = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, list) else []
        user_id = item.get("user_id")
        return InstagramLoginToken(
            token=token,
            user_id=None if user_id is None else str(user_id),
            permissions=tuple(str(p).strip() for p in permissions if str(p).strip()),
        )

    async def exchange_long_lived(self, token: str) -> AccessToken:
        """``GET graph.instagram.com/access_token?grant_type=ig_exchange_token``: a 60-day token."""
        params = {"grant_type": "ig_exchange_token", "client_secret": self._app_secret, "access_token": token}
        body, _ = await self._wire._send(
            "GET", f"{self._graph}/access_token", params, secrets=(token,), idempotent=True
        )
        return GraphClient._access_token(body)

    async def refresh_token(self, token: str) -> AccessToken:
        """``GET graph.instagram.com/refresh_access_token?grant_type=ig_refresh_token``: the token for
        another 60 days (Meta refuses one under 24 hours old or expired)."""
        params = {"grant_type": "ig_refresh_token", "access_token": token}
        body, _ = await self._wire._send(
            "GET", f"{self._graph}/refresh_access_token", params, secrets=(token,), idempotent=True
        )
        return GraphClient._access_token(body)

    # ---- the account -----------------------------------------------------------------------------

    async def account(self, token: str) -> InstagramAccount:
        """The professional account the token belongs to (``/me``: ``user_id`` is the id webhooks carry)."""
        body = await self._get("/me", {"fields": ACCOUNT_FIELDS}, token)
        account_id = body.get("user_id") or body.get("id")
        if not account_id:
            raise MetaOtherError("Instagram's /me answer has no user_id")
        username, picture = body.get("username"), body.get("profile_picture_url")
        return InstagramAccount(
            id=str(account_id),
            username=None if username is None else str(username),
            profile_picture_url=None if picture is None else str(picture),
        )

    async def subscribe_account(
        self, ig_user_id: str, token: str, fields: Sequence[str] = INSTAGRAM_LOGIN_WEBHOOK_FIELDS
    ) -> None:
        """``POST /{ig-user-id}/subscribed_apps``: this app's webhooks for the account's `fields`."""
        url = f"{self._graph}/{self._version}/{ig_user_id}/subscribed_apps"
        body, _ = await self._wire._send(
            "POST", url, {"subscribed_fields": ",".join(fields)}, secrets=(token,), idempotent=True,
            headers=_bearer(token),
        )  # fmt: skip
        if body.get("success") is not True:
            raise MetaOtherError("Instagram did not confirm the webhook subscribe (success is not true)")

    async def instagram_user(self, ig_user_id: str, token: str) -> InstagramUser:
        """A person's profile by IGSID, as the account sees them."""
        body = await self._get(f"/{ig_user_id}", {"fields": PROFILE_FIELDS}, token)
        return InstagramUser(
            id=str(body.get("id") or ig_user_id),
            username=None if body.get("username") is None else str(body["username"]),
            name=None if body.get("name") is None else str(body["name"]),
            profile_pic=None if body.get("profile_pic") is None else str(body["profile_pic"]),
        )

    # ---- messaging ------------------------------------------------------------------------------

    async def send_message(
        self,
        ig_user_id: str,
        token: str,
        *,
        recipient_id: str,
        text: str | None = None,
        attachment: Mapping[str, Any] | None = None,
        messaging_type: str = "RESPONSE",
        tag: str | None = None,
    ) -> SentMessage:
        """``POST graph.instagram.com/{ig-user-id}/messages`` with ``Authorization: Bearer``; the same
        rules as :meth:`GraphClient.send_message` (never retried once it may have left)."""
        message: dict[str, Any] = {"text": text} if attachment is None else {"attachment": dict(attachment)}
        body: dict[str, Any] = {"recipient": {"id": recipient_id}, "message": message}
        body["messaging_type"] = messaging_type
        if tag is not None:
            body["tag"] = tag
        url = f"{self._graph}/{self._version}/{ig_user_id}/messages"
        try:
            answer, headers = await self._wire._send(
                "POST", url, {}, secrets=(token,), idempotent=False, json_body=body, headers=_bearer(token)
            )
        except MetaOtherError as exc:
            if exc.meta_http_status is None or exc.meta_http_status < 400:
                raise MetaTransientError(exc.message) from None
            raise
        message_id = answer.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise MetaTransientError("Meta accepted the message but returned no message_id")
        percent, regain = usage_from_headers(headers)
        return SentMessage(message_id=message_id, usage_percent=percent, regain_seconds=regain)

    # ---- plumbing --------------------------------------------------------------------------------

    async def _get(self, path: str, params: Mapping[str, str], token: str) -> dict[str, Any]:
        url = f"{self._graph}/{self._version}{path}"
        body, _ = await self._wire._send(
            "GET", url, params, secrets=(token,), idempotent=True, headers=_bearer(token)
        )
        return body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
