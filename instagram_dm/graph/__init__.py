"""Meta Graph API client (Facebook-Login flavour of the Instagram API): typed results, one error tree."""

from __future__ import annotations

from instagram_dm.graph.client import GraphClient, appsecret_proof
from instagram_dm.graph.errors import (
    GraphError,
    MetaInvalidRequestError,
    MetaOtherError,
    MetaPermissionError,
    MetaRateLimitedError,
    MetaTokenInvalidError,
    MetaTransientError,
    classify,
    reached_meta,
    usage_from_headers,
)
from instagram_dm.graph.instagram_login import InstagramLoginClient
from instagram_dm.graph.models import (
    FACEBOOK_LOGIN,
    FACEBOOK_LOGIN_SCOPES,
    INSTAGRAM_LOGIN,
    INSTAGRAM_LOGIN_SCOPES,
    INSTAGRAM_LOGIN_WEBHOOK_FIELDS,
    PROVIDERS,
    WEBHOOK_FIELDS,
    AccessToken,
    InstagramAccount,
    InstagramLoginToken,
    InstagramUser,
    Page,
    SentMessage,
    TokenInfo,
)
from instagram_dm.graph.provider import LoginProvider, ProviderNotConfiguredError, Providers, parse_provider
from instagram_dm.graph.retry import RetryPolicy

__all__ = [
    "FACEBOOK_LOGIN",
    "FACEBOOK_LOGIN_SCOPES",
    "INSTAGRAM_LOGIN",
    "INSTAGRAM_LOGIN_SCOPES",
    "INSTAGRAM_LOGIN_WEBHOOK_FIELDS",
    "PROVIDERS",
    "WEBHOOK_FIELDS",
    "AccessToken",
    "GraphClient",
    "GraphError",
    "InstagramAccount",
    "InstagramLoginClient",
    "InstagramLoginToken",
    "InstagramUser",
    "LoginProvider",
    "MetaInvalidRequestError",
    "MetaOtherError",
    "MetaPermissionError",
    "MetaRateLimitedError",
    "MetaTokenInvalidError",
    "MetaTransientError",
    "Page",
    "ProviderNotConfiguredError",
    "Providers",
    "RetryPolicy",
    "SentMessage",
    "TokenInfo",
    "appsecret_proof",
    "classify",
    "parse_provider",
    "reached_meta",
    "usage_from_headers",
]
