"""`GET` and `POST /functions/v1/instagram-webhook`: Meta's subscription handshake, and deliveries checked
against the app secret over the exact bytes, then stored durably (see `instagram_dm.webhooks`). No Meta
call and no parsing before the answer: the worker processes what was stored."""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import errors as api_errors
from api.body import receive_capped, refuse_declared
from api.errors import error_response
from api.resources import Resources, resources
from instagram_dm import errors, metrics
from instagram_dm.graph.models import FACEBOOK_LOGIN, INSTAGRAM_LOGIN
from instagram_dm.webhooks import MAX_DELIVERY_BYTES, SIGNATURE_HEADER, handshake_challenge, signature_valid

log = logging.getLogger(__name__)


async def verify(request: Request) -> Response:
    settings = resources(request).settings
    params = {k: v for k, v in reversed(request.query_params.multi_items())}  # the first one counts
    challenge = handshake_challenge(params, settings.webhook_verify_token.reveal())
    if challenge is None:
        log.warning("webhook.handshake_refused", extra={"mode": params.get("hub.mode", "")[:20]})
        return error_response(403, "verification_failed", "The verify token does not match.")
    log.info("webhook.handshake_accepted")
    return PlainTextResponse(challenge)


WEBHOOK_PATH = "/functions/v1/instagram-webhook"
_OK_BODY = b'{"received":true}'  # what JSONResponse({"received": True}) renders
_OK_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_OK_BODY)).encode())]
_SIGNATURE = SIGNATURE_HEADER.encode()


class WebhookReceiver:
    """``POST /functions/v1/instagram-webhook`` as plain ASGI, ahead of the rest of the middleware stack
    (CORS, timing, exception middleware, routing: none of it applies to Meta's server-to-server POST, and
    under load it cost more than the delivery's own work). Everything else goes on to the app.

    The answer is as before: 200 ``{"received": true}`` only once the body is committed, 401 when the
    signature does not match, 413 over 1 MiB (declared or streamed), the domain error's status (503 when
    the database does not answer) otherwise; a ``Server-Timing`` header on each."""

    #: The one operation it answers itself (no mounted route has it; the OpenAPI test reads this).
    operation = (WEBHOOK_PATH, "POST")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != WEBHOOK_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        outcome = "invalid_signature"
        try:
            response = await _store_delivery(scope, receive)
        except ClientDisconnect:
            metrics.WEBHOOK_DELIVERIES.labels("client_disconnected").inc()
            return
        except errors.InstagramDMError as exc:
            outcome = exc.code
            response = await api_errors.domain_error(Request(scope), exc)
        except Exception as exc:
            outcome = "internal_error"
            response = await api_errors.unexpected_error(Request(scope), exc)
        elapsed = time.perf_counter() - started
        timing = (b"server-timing", f"app;dur={elapsed * 1000:.3f}".encode())
        if response is None:
            metrics.WEBHOOK_DELIVERIES.labels("accepted").inc()
            metrics.WEBHOOK_INGEST.observe(elapsed)
        else:
            metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
        if response is None:
            await send({"type": "http.response.start", "status": 200, "headers": [*_OK_HEADERS, timing]})
            await send({"type": "http.response.body", "body": _OK_BODY})
        else:
            response.raw_headers.append(timing)
            await response(scope, receive, send)


async def _store_delivery(scope: Scope, receive: Receive) -> Response | None:
    """None once the delivery is stored (the 200), else the refusal; domain errors raise."""
    res: Resources = scope["state"]["resources"]
    signature: str | None = None
    declared: bytes | None = None
    for name, value in scope["headers"]:
        if name == _SIGNATURE:
            signature = signature or value.decode("latin-1")
        elif name == b"content-length":
            declared = value
    refuse_declared(declared, MAX_DELIVERY_BYTES)
    body = await receive_capped(receive, MAX_DELIVERY_BYTES)
    # Each app signs its own deliveries: the Meta app's secret (Facebook Login) or, when configured, the
    # Instagram app's (Instagram Login). The one that matches says which integrations the delivery is for.
    settings = res.settings
    if signature_valid(body, signature, settings.instagram_app_secret.reveal()):
        provider = FACEBOOK_LOGIN
    elif settings.instagram_login_enabled and signature_valid(
        body, signature, settings.instagram_login_app_secret.reveal()
    ):
        provider = INSTAGRAM_LOGIN
    else:
        log.warning("webhook.signature_rejected", extra={"bytes": len(body)})
        return error_response(
            401, "invalid_signature", "The X-Hub-Signature-256 header does not match the body."
        )
    await res.deliveries.store(body, provider)
    return None
