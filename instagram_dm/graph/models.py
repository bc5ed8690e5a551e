"""Typed results of Graph calls: small frozen dataclasses, never raw dicts.

Token strings are ``repr=False`` so a result can be logged or shown in a traceback safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# Page-level webhook fields for Instagram messaging through a Page (`POST /{page-id}/subscribed_apps`).
# The Instagram-object fields (`messages`, `messaging_seen`, ...) are chosen in the App Dashboard; at
# the Page level the read receipts field is `message_reads` (Page field names, as Chatwoot subscribes).
WEBHOOK_FIELDS: tuple[str, ...] = (
    "messages",
    "messaging_postbacks",
    "message_reactions",
    "message_reads",
    "message_echoes",
    "messaging_referrals",
)

# Instagram-object webhook fields for an account connected through Instagram Login
# (`POST /{ig-user-id}/subscribed_apps` on graph.instagram.com).
INSTAGRAM_LOGIN_WEBHOOK_FIELDS: tuple[str, ...] = (
    "messages",
    "messaging_postbacks",
    "messaging_seen",
    "message_reactions",
    "messaging_referral",
)

# The two ways to connect (`instagram_integrations.provider`) and the scopes each dialog asks for.
FACEBOOK_LOGIN = "facebook_login"
INSTAGRAM_LOGIN = "instagram_login"
PROVIDERS: tuple[str, ...] = (FACEBOOK_LOGIN, INSTAGRAM_LOGIN)
# The brief's scopes, plus pages_show_list, without which /me/accounts returns nothing.
FACEBOOK_LOGIN_SCOPES: tuple[str, ...] = (
    "instagram_basic",
    "instagram_manage_messages",
    "pages_manage_metadata",
    "pages_show_list",
)
INSTAGRAM_LOGIN_SCOPES: tuple[str, ...] = ("instagram_business_basic", "instagram_business_manage_messages")


@dataclass(frozen=True)
class AccessToken:
    """A user access token from `/oauth/access_token`; ``expires_in`` in seconds, None if not given."""

    token: str = field(repr=False)
    token_type: str
    expires_in: int | None


@dataclass(frozen=True)
class TokenInfo:
    """What `/debug_token` says about a token; ``expires_at`` None means it never expires."""

    is_valid: bool
    app_id: str | None
    type: str | None
    user_id: str | None
    expires_at: datetime | None
    data_access_expires_at: datetime | None
    issued_at: datetime | None
    scopes: tuple[str, ...]
    error_code: int | None
    error_subcode: int | None


@dataclass(frozen=True)
class InstagramAccount:
    """The Instagram professional account linked to a Page."""

    id: str
    username: str | None
    profile_picture_url: str | None


@dataclass(frozen=True)
class Page:
    """A Facebook Page the user manages, with its Page access token (empty when Meta gave none).

    ``instagram_account`` is filled only when the listing asked for it (``with_instagram=True``); it is
    None when no Instagram account is linked to the Page. ``tasks`` and ``category`` only when asked.
    """

    id: str
    name: str
    access_token: str = field(repr=False)
    tasks: tuple[str, ...] = ()
    category: str | None = None
    instagram_account: InstagramAccount | None = None


@dataclass(frozen=True)
class InstagramUser:
    """An Instagram user (by IGSID) as the Page sees them."""

    id: str
    username: str | None
    name: str | None
    profile_pic: str | None


@dataclass(frozen=True)
class SentMessage:
    """Meta's answer to a send, and how busy the account is (``X-Business-Use-Case-Usage``, percent)."""

    message_id: str
    usage_percent: float | None = None
    regain_seconds: float | None = None


@dataclass(frozen=True)
class InstagramLoginToken:
    """api.instagram.com's answer to a code exchange (either shape): a short-lived Instagram User token,
    the Instagram user id it belongs to and the permissions granted."""

    token: str = field(repr=False)
    user_id: str | None
    permissions: tuple[str, ...]
