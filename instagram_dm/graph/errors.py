"""Errors from Meta's Graph API, classified by Meta's ``code`` and ``error_subcode`` (never by text).

Every class derives from :class:`instagram_dm.errors.MetaError`, so callers outside the Graph client
catch one tree::

    MetaError
    └── GraphError                   carries Meta's envelope: code, subcode, type, fbtrace_id, HTTP status
        ├── MetaTokenInvalidError    190, 102: expired / revoked / invalid token -> reauth
        ├── MetaRateLimitedError     4, 17, 32, 341, 613, 80006 (and HTTP 429): back off (`retry_after`)
        ├── MetaPermissionError      10, 200-299: a permission or task is missing -> reauth
        ├── MetaTransientError       1, 2, HTTP 5xx, timeouts, connection errors: retry with backoff
        ├── MetaInvalidRequestError  100: a parameter is wrong; permanent
        └── MetaOtherError           anything else (368 policy block, 2500, unknown bodies)

:func:`classify` maps one HTTP answer (status, raw body, headers) onto that tree. It is pure: no I/O,
no logging. Exception messages keep Meta's own text only after :func:`instagram_dm.logs.redact` and
:func:`scrub`, so they never contain a token, a code or a secret.

Two statuses, one meaning each: ``meta_http_status`` is the HTTP status *Meta* answered with
(``None`` when no answer arrived); ``http_status`` keeps its meaning across the whole tree, the status
our edges answer with: 502 for a Meta failure, 503 when Meta is down or rate limiting us (try later).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from instagram_dm.errors import MetaError
from instagram_dm.logs import MASK, redact

TOKEN_CODES = frozenset({102, 190})
RATE_LIMIT_CODES = frozenset({4, 17, 32, 341, 613, 80006})
PERMISSION_CODES = frozenset({10, *range(200, 300)})
TRANSIENT_CODES = frozenset({1, 2})
INVALID_REQUEST_CODES = frozenset({100})

# Facebook access tokens start with "EAA"; app tokens are "{app_id}|{app_secret}"; codes with "AQ".
# Instagram User tokens (Instagram Login) start with "IG" (IGQV..., IGAA...).
_TOKEN_LIKE_RE = re.compile(
    r"\b(?:EAA[A-Za-z0-9_-]{16,}|IG[A-Z][A-Za-z0-9_-]{20,}|AQ[A-Za-z0-9_-]{30,}|\d{5,}\|[A-Za-z0-9_-]{8,})"
)
_MAX_MESSAGE = 300


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask secret parameters (``redact``), token-shaped strings and each of `secrets` in `text`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return _TOKEN_LIKE_RE.sub(MASK, redact(text))


class GraphError(MetaError):
    """Meta's Graph API returned an error."""

    code = "meta_error"
    http_status = 502

    def __init__(
        self,
        message: str | None = None,
        *,
        meta_code: int | None = None,
        meta_subcode: int | None = None,
        meta_type: str | None = None,
        fbtrace_id: str | None = None,
        meta_http_status: int | None = None,
        is_transient: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.meta_code = meta_code
        self.meta_subcode = meta_subcode
        self.meta_type = meta_type
        self.fbtrace_id = fbtrace_id
        self.meta_http_status = meta_http_status
        self.is_transient = is_transient
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, meta_code={self.meta_code}, "
            f"meta_subcode={self.meta_subcode}, meta_http_status={self.meta_http_status}, "
            f"fbtrace_id={self.fbtrace_id!r})"
        )


class MetaTokenInvalidError(GraphError):
    """The Meta access token is expired, revoked or invalid."""

    code = "meta_token_invalid"


class MetaRateLimitedError(GraphError):
    """Meta is rate limiting these calls."""

    code = "meta_rate_limited"
    http_status = 503


class MetaPermissionError(GraphError):
    """The Meta token lacks a permission or task needed for this call."""

    code = "meta_permission"


class MetaTransientError(GraphError):
    """Meta is temporarily unavailable."""

    code = "meta_unavailable"
    http_status = 503


class MetaInvalidRequestError(GraphError):
    """Meta rejected a parameter of the request."""

    code = "meta_invalid_request"


class MetaOtherError(GraphError):
    """Meta's Graph API returned an unexpected error."""

    code = "meta_error"


def class_for(meta_code: int | None, meta_http_status: int | None) -> type[GraphError]:
    """The exception class for Meta's error ``code`` (preferred) or, without one, the HTTP status."""
    if meta_code is not None:
        if meta_code in TOKEN_CODES:
            return MetaTokenInvalidError
        if meta_code in RATE_LIMIT_CODES:
            return MetaRateLimitedError
        if meta_code in PERMISSION_CODES:
            return MetaPermissionError
        if meta_code in TRANSIENT_CODES:
            return MetaTransientError
        if meta_code in INVALID_REQUEST_CODES:
            return MetaInvalidRequestError
    if meta_http_status is not None:
        if meta_http_status >= 500:
            return MetaTransientError
        if meta_http_status == 429:
            return MetaRateLimitedError
    return MetaOtherError


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _loads_object(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``X-Business-Use-Case-Usage`` (``estimated_time_to_regain_access``, minutes),
    ``X-App-Usage`` / ``X-Ad-Account-Usage`` (same key when present) or ``Retry-After``; None if unknown."""
    lowered = {k.lower(): v for k, v in headers.items()}
    minutes: list[float] = []
    buc = _loads_object(lowered.get("x-business-use-case-usage"))
    if isinstance(buc, dict):
        for entries in buc.values():
            for entry in entries if isinstance(entries, list) else [entries]:
                if isinstance(entry, dict):
                    value = entry.get("estimated_time_to_regain_access")
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        minutes.append(float(value))
    for name in ("x-app-usage", "x-ad-account-usage"):
        usage = _loads_object(lowered.get(name))
        if isinstance(usage, dict):
            value = usage.get("estimated_time_to_regain_access")
            if isinstance(value, int | float) and not isinstance(value, bool):
                minutes.append(float(value))
    if minutes and max(minutes) > 0:
        return max(minutes) * 60.0
    retry_after = lowered.get("retry-after", "").strip()
    if retry_after.isdigit():
        return float(retry_after)
    return None


def usage_from_headers(headers: Mapping[str, str]) -> tuple[float | None, float | None]:
    """How busy Meta says the account is, from ``X-Business-Use-Case-Usage``: the highest of call_count,
    total_cputime and total_time (percent) and the regain-access time in seconds; (None, None) without it."""
    lowered = {k.lower(): v for k, v in headers.items()}
    buc = _loads_object(lowered.get("x-business-use-case-usage"))
    percents: list[float] = []
    regain: list[float] = []
    if isinstance(buc, dict):
        for entries in buc.values():
            for entry in entries if isinstance(entries, list) else [entries]:
                if not isinstance(entry, dict):
                    continue
                for name in ("call_count", "total_cputime", "total_time"):
                    value = entry.get(name)
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        percents.append(float(value))
                value = entry.get("estimated_time_to_regain_access")
                if isinstance(value, int | float) and not isinstance(value, bool):
                    regain.append(float(value) * 60.0)
    return (max(percents) if percents else None, max(regain) if regain else None)


def reached_meta(exc: BaseException) -> bool:
    """False only when the request certainly never left (no connection was made)."""
    return not getattr(exc, "_before_send", False)


def classify(
    status: int, body: bytes, headers: Mapping[str, str], *, secrets: Iterable[str] = ()
) -> GraphError:
    """Build the typed error for one Meta answer; HTML or other non-JSON bodies still get a class.

    `secrets` are extra strings (the tokens of the request) masked out of Meta's message.
    """
    secrets = tuple(secrets)
    envelope: Any = None
    try:
        envelope = json.loads(body) if body else None
    except ValueError:
        envelope = None
    error = envelope.get("error") if isinstance(envelope, dict) else None
    if not isinstance(error, dict) and isinstance(envelope, dict) and "error_type" in envelope:
        # api.instagram.com's flat shape: {"error_type", "code" (an HTTP-like status), "error_message"}
        error = {"type": envelope.get("error_type"), "message": envelope.get("error_message")}
        if _as_int(envelope.get("code")) not in (None, status):
            error["code"] = envelope.get("code")
    if not isinstance(error, dict):
        cls = class_for(None, status)
        kind = "a non-JSON body" if envelope is None else "no error envelope"
        return cls(
            f"Meta answered HTTP {status} with {kind}",
            meta_http_status=status,
            retry_after=retry_after_from_headers(headers) if cls is MetaRateLimitedError else None,
        )
    meta_code = _as_int(error.get("code"))
    meta_subcode = _as_int(error.get("error_subcode"))
    meta_type = error.get("type") if isinstance(error.get("type"), str) else None
    fbtrace_id = error.get("fbtrace_id") if isinstance(error.get("fbtrace_id"), str) else None
    raw_transient = error.get("is_transient")
    is_transient = raw_transient if isinstance(raw_transient, bool) else None
    cls = class_for(meta_code, status)
    if cls is MetaOtherError and is_transient:
        cls = MetaTransientError
    raw_message = error.get("message")
    raw_message = raw_message if isinstance(raw_message, str) else ""
    text = scrub(raw_message, secrets)[:_MAX_MESSAGE] or (cls.__doc__ or "").strip()
    detail = f"code {meta_code}" + (f"/{meta_subcode}" if meta_subcode is not None else "")
    if fbtrace_id:
        detail += f", fbtrace_id {fbtrace_id}"
    return cls(
        f"{text} ({detail})",
        meta_code=meta_code,
        meta_subcode=meta_subcode,
        meta_type=meta_type,
        fbtrace_id=fbtrace_id,
        meta_http_status=status,
        is_transient=is_transient,
        retry_after=retry_after_from_headers(headers) if cls is MetaRateLimitedError else None,
    )
