"""`GET` and `POST /functions/v1/instagram-webhook`: Meta's subscription handshake, and deliveries checked
against the app secret over the exact bytes, then stored durably (see `instagram_dm.webhooks`). No Meta
call and no parsing before the answer: the worker processes what was stored."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from api.body import read_capped
from api.errors import error_response
from api.resources import resources
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


async def receive(request: Request) -> Response:
    res = resources(request)
    body = await read_capped(request, MAX_DELIVERY_BYTES)
    if not signature_valid(
        body, request.headers.get(SIGNATURE_HEADER), res.settings.instagram_app_secret.reveal()
    ):
        log.warning("webhook.signature_rejected", extra={"bytes": len(body)})
        return error_response(
            401, "invalid_signature", "The X-Hub-Signature-256 header does not match the body."
        )
    await res.deliveries.store(body)
    return JSONResponse({"received": True})
