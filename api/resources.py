"""What the lifespan builds once and every handler reads: typed, through :func:`resources`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import httpx
from starlette.requests import Request

from instagram_dm.auth import JWTVerifier
from instagram_dm.db.port import Database
from instagram_dm.media.storage import MediaStore
from instagram_dm.service import InstagramService
from instagram_dm.settings import Settings
from instagram_dm.webhooks import DeliveryStore


@dataclass(frozen=True)
class Resources:
    """The app's long-lived parts: settings, database port, service, JWT verifier, webhook delivery store,
    the media store, and the outgoing HTTP client they share."""

    settings: Settings
    db: Database
    service: InstagramService
    verifier: JWTVerifier
    deliveries: DeliveryStore
    http: httpx.AsyncClient
    media: MediaStore


class State(TypedDict):
    """The lifespan state Starlette copies into each ``request.state``."""

    resources: Resources


def resources(request: Request) -> Resources:
    """The running app's :class:`Resources` (TypeError when the lifespan has not run)."""
    value = getattr(request.state, "resources", None)
    if not isinstance(value, Resources):
        raise TypeError("the app's lifespan has not run (use `with TestClient(app)`)")
    return value
