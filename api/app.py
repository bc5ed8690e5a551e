"""The Starlette app: OAuth init + callback, the Meta webhook, health, and (in development) a demo page.

Resources (HTTP client, Graph client, database, JWT verifier, service) are built once in the
lifespan and read by handlers through :func:`api.resources.resources`. Tests and tools inject the
seams: a ``database`` (left open: its owner closes it) and an ``http_transport`` used for every
outgoing request (Graph, JWKS, and Supabase's REST API when the app opens that database itself).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from api import dev, media, openapi, routes, webhook
from api import errors as api_errors
from api.metrics import HTTPMetrics, metrics_endpoint
from api.resources import Resources, State
from api.timing import ServerTimingMiddleware
from instagram_dm import errors, logs
from instagram_dm.auth import JWTVerifier
from instagram_dm.bootstrap import open_database, open_media_store
from instagram_dm.db import rpc
from instagram_dm.db.port import Database
from instagram_dm.graph import GraphClient, InstagramLoginClient, RetryPolicy
from instagram_dm.service import InstagramService
from instagram_dm.settings import Settings
from instagram_dm.webhooks import DeliveryStore

log = logging.getLogger(__name__)

SETTINGS_GROUPS = ("meta", "crypto", "oauth", "database", "jwt")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _publish_media_settings(db: Database, settings: Settings) -> None:
    """Tell the database where signed media URLs point and how long they last (instagram_media_url runs
    there); a database that is down at start-up keeps what it had."""
    media = rpc.MediaSettings(
        url_base=settings.media_url_base, url_ttl_seconds=settings.media_url_ttl_seconds
    )
    try:
        await rpc.media_settings_apply(db, settings=media)
    except errors.DatabaseError as exc:
        log.warning("api.media_settings_not_published", extra={"error_code": exc.code})


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
    graph_retry: RetryPolicy | None = None,
    graph_timeout: float = 10.0,
) -> Starlette:
    """Build the app; settings are validated here, so a bad config fails before the port is bound.

    `database`: use this port instead of opening one from the settings (the app does not close it).
    `http_transport`: send every outgoing HTTP request through it (``httpx.MockTransport`` in tests).
    """
    # An injected database needs no DATABASE_URL / SUPABASE_URL of its own.
    settings.require(*(g for g in SETTINGS_GROUPS if database is None or g != "database"))
    settings.require("instagram_login")  # optional, but half of it set is a mistake
    logs.install_redaction()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        async with contextlib.AsyncExitStack() as stack:
            http = httpx.AsyncClient(
                timeout=httpx.Timeout(graph_timeout, connect=min(graph_timeout, 5.0)),
                transport=http_transport,
            )
            stack.push_async_callback(http.aclose)
            db = database
            if db is None:
                db = await open_database(
                    settings, http=http if http_transport is not None else None, lazy_when_down=True
                )
                stack.push_async_callback(db.close)
            graph = GraphClient.from_settings(settings, http, retry=graph_retry)
            instagram_login = InstagramLoginClient.from_settings(settings, http, retry=graph_retry)
            service = InstagramService(db=db, graph=graph, settings=settings, instagram_login=instagram_login)
            verifier = JWTVerifier.from_settings(settings, http)
            deliveries = DeliveryStore(db, timeout=settings.db_timeout_seconds)
            stack.push_async_callback(deliveries.close)
            if not settings.webhook_verify_token.reveal():
                log.warning(
                    "api.webhook_handshake_disabled", extra={"missing": "INSTAGRAM_WEBHOOK_VERIFY_TOKEN"}
                )
            await _publish_media_settings(db, settings)
            log.info("api.started", extra={"environment": settings.environment})
            yield {
                "resources": Resources(
                    settings=settings,
                    db=db,
                    service=service,
                    verifier=verifier,
                    deliveries=deliveries,
                    http=http,
                    media=open_media_store(settings, http),
                )
            }

    route_list = [
        Route("/functions/v1/instagram-oauth-init", routes.oauth_init, methods=["POST"]),
        Route("/functions/v1/instagram-oauth-callback", routes.oauth_callback, methods=["GET"]),
        Route("/functions/v1/instagram-webhook", webhook.verify, methods=["GET"]),
        Route("/functions/v1/instagram-media/{media_id}", media.serve, methods=["GET", "HEAD"]),
        Route("/healthz", routes.healthz, methods=["GET"]),
        Route("/readyz", routes.readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_endpoint, methods=["GET"]),
    ]
    if settings.is_development:
        route_list += dev.routes()
    middleware = [
        Middleware(HTTPMetrics, routes=route_list),  # outermost: counts every answer, the 500s too
        Middleware(api_errors.LastResort),  # nothing unhandled reaches the server's traceback
        Middleware(webhook.WebhookReceiver),  # POST deliveries: first, past none of the others
        Middleware(ServerTimingMiddleware),
        Middleware(
            CORSMiddleware,
            allow_origins=[_origin(settings.return_url)],
            allow_methods=["POST", "GET", "OPTIONS"],
            allow_headers=["authorization", "apikey", "content-type", "x-client-info"],
            allow_credentials=True,  # init sets the browser-binding cookie (fetch with credentials)
            max_age=600,
        ),
    ]
    return Starlette(
        routes=route_list,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: api_errors.http_error,
            errors.InstagramDMError: api_errors.domain_error,
            Exception: api_errors.unexpected_error,
        },
    )
