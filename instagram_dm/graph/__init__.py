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
from instagram_dm.graph.models import (
    WEBHOOK_FIELDS,
    AccessToken,
    InstagramAccount,
    InstagramUser,
    Page,
    SentMessage,
    TokenInfo,
)
from instagram_dm.graph.retry import RetryPolicy

__all__ = [
    "WEBHOOK_FIELDS",
    "AccessToken",
    "GraphClient",
    "GraphError",
    "InstagramAccount",
    "InstagramUser",
    "MetaInvalidRequestError",
    "MetaOtherError",
    "MetaPermissionError",
    "MetaRateLimitedError",
    "MetaTokenInvalidError",
    "MetaTransientError",
    "Page",
    "RetryPolicy",
    "SentMessage",
    "TokenInfo",
    "appsecret_proof",
    "classify",
    "reached_meta",
    "usage_from_headers",
]
