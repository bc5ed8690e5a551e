"""Structured logging: a fixed event name as the message, ids in ``extra``, one JSON line per record.

Usage::

    log = logging.getLogger(__name__)
    log.info("refresh.completed", extra={"job_id": 7, "integration_id": "..."})

`configure()` installs the JSON formatter and a redaction filter on the root logger, once, at the
edge (CLI, API start-up, worker start-up). The filter masks secrets in URLs and messages, so a stray
``access_token=...`` never reaches the output.
"""

from __future__ import annotations

import json
import logging
import re
import sys
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
    "refresh_token",
    "password",
    "apikey",
    "state",
)
_PARAM_RE = re.compile(r"(?i)\b(" + "|".join(SECRET_PARAMS) + r")=([^&\s\"']+)")
_BEARER_RE = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_DSN_PASSWORD_RE = re.compile(r"(postgres(?:ql)?://[^:/@\s]+):[^@\s]+@")
MASK = "***"


def redact(text: str) -> str:
    """Mask secret query parameters, bearer tokens and DSN passwords in free text."""
    text = _PARAM_RE.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _DSN_PASSWORD_RE.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def _redact_message(record: logging.LogRecord) -> None:
    # Render first: arguments may be objects (httpx logs its URL object) whose str() holds a token.
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = str(record.msg)
    record.msg, record.args = redact(message), ()


def install_redaction() -> None:
    """Mask secrets in every log record as it is created, whoever handles it (libraries' URLs too)."""
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
    """Masks secrets in the message, its arguments and string extras of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_message(record)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
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
