"""The OpenAPI 3.1 document of the API's contract routes, kept here and nowhere else, served at
``GET /openapi.json``.

What it covers: every route the app mounts in production (``create_app`` with ``INSTAGRAM_DM_ENV`` other than
``development``), each method but the HEAD Starlette adds to a GET. Development-only routes — the ones mounted
only with ``INSTAGRAM_DM_ENV=development``, all under ``/dev`` (and the ``/`` that points there) — are left
out on purpose; :func:`is_development_path` is that rule, and ``tests/api/test_openapi.py`` checks both
directions: every production route and method is described here, and every development-only route matches the
rule. A new production route therefore needs its entry below.

Every refusal is ``{"error": {"code", "message"}}``; each response lists the codes it can carry as an
``enum``, so a schema check (schemathesis in ``make test``) notices a code the document does not know.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["DOCUMENT", "is_development_path", "openapi_endpoint"]

JSON = "application/json"


def is_development_path(path: str) -> bool:
    """The routes the document leaves out: the development pages (``/``, ``/dev``, ``/dev/...``)."""
    return path in ("/", "/dev") or path.startswith("/dev/")


def _error(description: str, *codes: str) -> dict[str, Any]:
    """A refusal response: the error envelope with `codes` as the only codes it may carry."""
    return {
        "description": f"{description} Codes: {', '.join(f'`{c}`' for c in codes)}.",
        "content": {
            JSON: {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Error"},
                        {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
                    ]
                }
            }
        },
    }


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


_DATABASE_DOWN = _error(
    "The database did not answer within INSTAGRAM_DB_TIMEOUT_SECONDS; try again.", "database_unavailable"
)
_TIMING = {
    "Server-Timing": {
        "description": "Time spent inside the app: `app;dur=<milliseconds>`.",
        "schema": {"type": "string"},
    }
}

_OAUTH_INIT: dict[str, Any] = {
    "summary": "Start connecting Instagram accounts to an IMO (Facebook Login or Instagram Login)",
    "description": "An IMO admin on a plan with `instagram_messaging` gets the Meta dialog URL; a single-use "
    "state (10 minutes) is stored, and an HttpOnly cookie binds it to this browser (call with credentials).",
    "operationId": "oauthInit",
    "tags": ["connect"],
    "security": [{"userJWT": []}],
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["imo_id"],
                    "properties": {
                        "imo_id": {
                            "type": "string",
                            "format": "uuid",
                            "description": "The IMO to connect for.",
                        },
                        "return_to": {
                            "type": "string",
                            "description": "Where the browser lands afterwards; must share "
                            "INSTAGRAM_RETURN_URL's origin (default: INSTAGRAM_RETURN_URL).",
                        },
                        "provider": {
                            "enum": ["facebook_login", "instagram_login"],
                            "default": "facebook_login",
                            "description": "How to connect: Facebook Login (accounts of the user's Pages) or "
                            "Instagram Login (one professional account, no Page; only when INSTAGRAM_LOGIN_* is set).",
                        },
                    },
                }
            }
        },
    },
    "responses": {
        "200": _json(
            "The Meta dialog URL to send the browser to.",
            {
                "type": "object",
                "required": ["url", "expires_at"],
                "properties": {
                    "url": {"type": "string", "format": "uri"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "provider": {"enum": ["facebook_login", "instagram_login"]},
                },
            },
            headers={
                "Set-Cookie": {
                    "description": "`ig_oauth_<id>`: the browser binding (HttpOnly, SameSite=Lax, path: the "
                    "callback), unless INSTAGRAM_OAUTH_BIND_BROWSER=false.",
                    "schema": {"type": "string"},
                },
                **_TIMING,
            },
        ),
        "400": _error(
            "The body is not a JSON object, or a field is wrong.",
            "invalid_json",
            "invalid_imo_id",
            "invalid_return_to",
            "invalid_provider",
            "provider_not_configured",
        ),
        "401": _error(
            "No valid user access token.",
            "missing_token",
            "invalid_token",
            "token_expired",
            "invalid_audience",
            "invalid_subject",
        ),
        "403": _error(
            "The user is not an admin of the IMO, or its plan lacks instagram_messaging.",
            "not_imo_admin",
            "feature_not_in_plan",
        ),
        "413": _error("The body is over 16 KiB.", "body_too_large"),
        "503": _error(
            "The database or the JWKS endpoint did not answer; try again.",
            "database_unavailable",
            "auth_unavailable",
        ),
    },
}

_CALLBACK_PARAMS = [
    ("state", "The state init issued (single use)."),
    ("code", "Meta's authorization code."),
    ("error", "Meta's denial (`access_denied` …)."),
    ("error_reason", "Meta's denial reason (`user_denied` …)."),
    ("error_description", "Meta's denial, in words."),
    ("error_code", "Meta's error code, on some denials."),
    ("error_message", "Meta's error message, on some denials."),
]

_OAUTH_CALLBACK: dict[str, Any] = {
    "summary": "Meta's redirect after the dialog",
    "description": "Checks the state (single use, same browser, user still allowed) before any Meta call, then "
    "exchanges the code and stores every linked account. The browser is sent back to the return URL with "
    "`instagram=connected&integration_id=<id>…[&webhooks=failed]` or `instagram=error&reason=<code>` "
    "(`user_denied`, `invalid_state`, `missing_code`, `session_mismatch`, `missing_permissions` with "
    "`missing=a,b`, `no_instagram_account`, `meta_unavailable`, `oauth_failed`, `not_allowed`, "
    "`internal_error`).",
    "operationId": "oauthCallback",
    "tags": ["connect"],
    "parameters": [
        {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
        for name, text in _CALLBACK_PARAMS
    ],
    "responses": {
        "302": {
            "description": "Back to the app's return URL with the outcome in the query.",
            "headers": {"Location": {"schema": {"type": "string"}}, **_TIMING},
        },
        "400": {
            "description": "No state we issued (unknown, malformed or missing): no safe return URL is known, so "
            "a readable HTML page says so.",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
    },
}

_WEBHOOK_VERIFY: dict[str, Any] = {
    "summary": "Meta's webhook subscription handshake",
    "operationId": "webhookVerify",
    "tags": ["webhook"],
    "parameters": [
        {"name": "hub.mode", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "hub.verify_token",
            "in": "query",
            "required": False,
            "description": "Compared in constant time with INSTAGRAM_WEBHOOK_VERIFY_TOKEN.",
            "schema": {"type": "string"},
        },
        {"name": "hub.challenge", "in": "query", "required": False, "schema": {"type": "string"}},
    ],
    "responses": {
        "200": {
            "description": "`hub.mode=subscribe` and the verify token match: the challenge, as sent.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "403": _error(
            "The handshake does not match (or no verify token is configured).", "verification_failed"
        ),
    },
}

_WEBHOOK_RECEIVE: dict[str, Any] = {
    "summary": "A webhook delivery from Meta",
    "description": "The signature is checked over the raw bytes with the app secret; a valid delivery is "
    "stored as received (deduplicated by its SHA-256) before the 200, and processed by the worker. A signed "
    "body that is not JSON is stored too (and marked failed by processing). Never a 5xx for a signed body but "
    "503 when the database could not store it in time (Meta delivers again).",
    "operationId": "webhookReceive",
    "tags": ["webhook"],
    "parameters": [
        {
            "name": "X-Hub-Signature-256",
            "in": "header",
            "required": False,
            "description": "`sha256=<hex HMAC-SHA256 of the raw body with the app secret>`.",
            "schema": {"type": "string"},
        }
    ],
    "requestBody": {
        "required": False,
        "content": {
            JSON: {"schema": {"description": "Meta's delivery, stored as the exact bytes received."}}
        },
    },
    "responses": {
        "200": _json(
            "Stored durably.",
            {"type": "object", "required": ["received"], "properties": {"received": {"const": True}}},
            headers=_TIMING,
        ),
        "401": _error("The signature is missing or does not match the body.", "invalid_signature"),
        "413": _error("The body is over 1 MiB (declared or streamed).", "body_too_large"),
        "503": _DATABASE_DOWN,
    },
}

_MEDIA: dict[str, Any] = {
    "summary": "The stored copy of an inbound attachment, at a URL instagram_media_url signed",
    "description": "The database checks the signature and the expiry. Embedded, the bytes are served with "
    "their sniffed type, `Content-Disposition` (a download for files) and single byte ranges; with Supabase "
    "Storage the answer is a redirect to a 60-second Storage signed URL.",
    "operationId": "media",
    "tags": ["media"],
    "parameters": [
        {"name": "media_id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "expires", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "signature", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}},
    ],
    "responses": {
        "200": {"description": "The bytes.", "content": {"*/*": {"schema": {"type": "string"}}}},
        "206": {"description": "The requested range.", "content": {"*/*": {"schema": {"type": "string"}}}},
        "302": {"description": "Supabase Storage: a short-lived signed URL of the bytes."},
        "403": _error("The signature is missing, wrong or expired.", "invalid_signature", "url_expired"),
        "404": _error("The media is no longer kept.", "not_found"),
        "416": _error("The range is outside the file.", "range_not_satisfiable"),
        "503": _DATABASE_DOWN,
    },
}

_METRICS: dict[str, Any] = {
    "summary": "Prometheus metrics (text exposition format)",
    "description": "With INSTAGRAM_METRICS_TOKEN set, `Authorization: Bearer <token>` is required; without it "
    "only loopback clients are answered. The database's state (queues, integrations, expiring tokens, webhook "
    "lag) is read at scrape time within 2 s; `instagram_dm_snapshot_up` says whether it was.",
    "operationId": "metrics",
    "tags": ["operations"],
    "security": [{}, {"metricsToken": []}],
    "responses": {
        "200": {
            "description": "Every metric of this process.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "401": _error("A metrics token is configured and this request does not carry it.", "invalid_token"),
        "403": _error("No metrics token is configured and the client is not on loopback.", "forbidden"),
    },
}

_OPENAPI: dict[str, Any] = {
    "summary": "This document",
    "operationId": "openapi",
    "tags": ["operations"],
    "responses": {"200": _json("The OpenAPI 3.1 document of the contract routes.", {"type": "object"})},
}

_HEALTHZ: dict[str, Any] = {
    "summary": "Liveness: the process answers",
    "operationId": "healthz",
    "tags": ["operations"],
    "responses": {
        "200": _json(
            "Alive.",
            {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
        )
    },
}

_READINESS = {
    "type": "object",
    "required": ["status", "database"],
    "properties": {
        "status": {"enum": ["ok", "degraded", "unavailable"]},
        "database": {"type": "string", "description": "`ok`, or the error code of the failed check."},
        "pg_cron": {"type": "boolean"},
    },
}

_READYZ: dict[str, Any] = {
    "summary": "Readiness: the database answers, with pgcrypto and pg_cron",
    "operationId": "readyz",
    "tags": ["operations"],
    "responses": {
        "200": _json("Ready.", _READINESS),
        "503": _json(
            "The database does not answer (`unavailable`) or lacks an extension (`degraded`).", _READINESS
        ),
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "instagram-dm",
        "version": "0.1.0",
        "summary": "Instagram Direct Messages for the CRM's Messages page: connect, Meta's webhook, operations.",
        "description": "Paths mirror the Supabase Edge Function names, so `supabase.functions.invoke(...)` works. "
        'Every refusal is `{"error": {"code": "<snake_case>", "message": "<sentence>"}}`: never a trace or a '
        "token. The app's data calls are SQL RPCs (see docs/rpc.md), not HTTP routes of this API.",
    },
    "tags": [
        {
            "name": "connect",
            "description": "Connecting Instagram accounts (Facebook Login or Instagram Login).",
        },
        {"name": "media", "description": "Stored copies of inbound attachments."},
        {"name": "webhook", "description": "Meta's webhook."},
        {"name": "operations", "description": "Health, metrics, this document."},
    ],
    "paths": {
        "/functions/v1/instagram-oauth-init": {"post": _OAUTH_INIT},
        "/functions/v1/instagram-oauth-callback": {"get": _OAUTH_CALLBACK},
        "/functions/v1/instagram-webhook": {"get": _WEBHOOK_VERIFY, "post": _WEBHOOK_RECEIVE},
        "/functions/v1/instagram-media/{media_id}": {"get": _MEDIA},
        "/metrics": {"get": _METRICS},
        "/openapi.json": {"get": _OPENAPI},
        "/healthz": {"get": _HEALTHZ},
        "/readyz": {"get": _READYZ},
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                            "message": {"type": "string", "minLength": 1},
                        },
                    }
                },
            }
        },
        "securitySchemes": {
            "userJWT": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "The signed-in user's Supabase access token.",
            },
            "metricsToken": {"type": "http", "scheme": "bearer", "description": "INSTAGRAM_METRICS_TOKEN."},
        },
    },
}

_RENDERED = json.dumps(DOCUMENT, separators=(",", ":")).encode()


async def openapi_endpoint(request: Request) -> Response:
    return Response(_RENDERED, media_type=JSON)
