"""Structured logging: a fixed event name as the message, ids in ``extra``, one JSON line per record.

Usage::

    log = logging.getLogger(__name__)
    log.info("refresh.completed", extra={"job_id": 7, "integration_id": "..."})

`configure()` installs the JSON formatter and a redaction filter on the root logger, once, at the
edge (CLI, API start-up, worker start-up). Every record's message is redacted as it is created
(:func:`install_redaction`); the handler's filter and the formatter also mask `extra` fields and the
exception text, so a stray ``access_token=...``, ``"client_secret": "..."``, ``Authorization: Bearer
...`` or Meta token never reaches the output (see :func:`redact` for the shapes).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

SECRET_PARAMS = (
    "access_token",
    "input_token",
    "fb_exchange_token",
    "client_secret",
    "appsecret_proof",
    "code",
    "code_verifier",
    "refresh_token",
    "password",
    "apikey",
    "state",
    "verify_token",
    "p_key",
    "p_old_key",
    "p_new_key",
    "p_code_verifier",
)
# Keys whose string values are masked in JSON/dict text and in structured `extra` fields. "code" and
# "state" are left out there: as keys of our own records they name error codes and job states.
SECRET_KEYS = (frozenset(SECRET_PARAMS) - {"code", "state"}) | {
    "authorization",
    "token",
    "secret",
    "user_token",
    "page_token",
    "user_access_token",
    "page_access_token",
    "service_role_key",
    "jwt_secret",
}
MASK = "***"

_PARAM_RE = re.compile(r"(?i)\b(" + "|".join(SECRET_PARAMS) + r")=([^&\s\"']+)")
_JSON_RE = re.compile(
    r"(?i)(?P<q>[\"'])(?P<name>" + "|".join(sorted(SECRET_KEYS)) + r")(?P=q)(?P<sep>\s*:\s*)"
    r"(?P<vq>[\"'])(?:\\.|(?!(?P=vq)).)*(?P=vq)"
)
_AUTH_HEADER_RE = re.compile(
    r"(?i)\b(?P<name>authorization|apikey|x-api-key)(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?P<scheme>bearer|basic|oauth|token)\s+)?(?P<value>[^\s\"',;}&]+)"
)
_BEARER_RE = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_META_TOKEN_RE = re.compile(r"\b(?:EAA|IGQV)[A-Za-z0-9_-]{24,}")
_DSN_PASSWORD_RE = re.compile(r"(postgres(?:ql)?://[^:/@\s]+):[^@\s]+@")


def _mask_json(m: re.Match[str]) -> str:
    return f"{m['q']}{m['name']}{m['q']}{m['sep']}{m['vq']}{MASK}{m['vq']}"


def _mask_header(m: re.Match[str]) -> str:
    scheme = f"{m['scheme']} " if m["scheme"] else ""
    return f"{m['name']}{m['sep']}{scheme}{MASK}"


def redact(text: str) -> str:
    """Mask secrets in free text: secret query/form parameters, JSON or dict entries with a secret key,
    Authorization/apikey headers, bearer tokens, JWTs, Meta access tokens and DSN passwords."""
    text = _JSON_RE.sub(_mask_json, text)
    text = _AUTH_HEADER_RE.sub(_mask_header, text)
    text = _PARAM_RE.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _JWT_RE.sub(MASK, text)
    text = _META_TOKEN_RE.sub(MASK, text)
    return _DSN_PASSWORD_RE.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def redact_value(value: Any, key: str = "") -> Any:
    """A copy of a structured value with secrets masked: strings redacted, values of secret keys
    replaced, containers walked, other objects (an httpx URL, say) rendered with ``str`` and redacted."""
    if key.lower() in SECRET_KEYS and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    return redact(str(value))


def _redact_message(record: logging.LogRecord) -> None:
    # Render first: arguments may be objects (httpx logs its URL object) whose str() holds a token.
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = str(record.msg)
    record.msg, record.args = redact(message), ()


def install_redaction() -> None:
    """Mask secrets in the message of every log record as it is created, whoever handles it (libraries'
    URLs too). `extra` fields are attached after creation; :class:`RedactingFilter` masks those."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_instagram_dm", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_message(record)
        return record

    factory._instagram_dm = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class RedactingFilter(logging.Filter):
    """Masks secrets in the message, its arguments and the `extra` fields of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_message(record)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, redact_value(value, key))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = redact_value(value, key)
        if record.exc_info and record.exc_info[0] is not None:
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exc"] = redact(str(record.exc_info[1]))
        return json.dumps(payload, default=str)


def configure(level: str = "INFO") -> None:
    """Send JSON lines to stderr with redaction; idempotent."""
    install_redaction()
    root = logging.getLogger()
    if any(getattr(h, "_instagram_dm", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    handler._instagram_dm = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
