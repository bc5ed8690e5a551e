"""Meta's attachment CDN, as the sandbox plays it: the webhook emitter registers the bytes of each
attachment it sends and puts a signed, expiring URL in the delivery
(``{origin}/_cdn/ig_messaging/{asset}?oe=<expiry, hex epoch seconds>&oh=<hash>``, the shape of Meta's
``oe``/``oh`` parameters). ``GET`` on it answers the bytes until the expiry (the sandbox's clock, so
``POST /_sandbox/clock`` ages it), then ``403 URL signature expired`` as Meta's CDN does; a changed ``oe``
or ``oh`` is ``403 Bad URL hash``.

Default bytes per attachment type are small but real (a PNG, an MP4, an M4A, a PDF); the send body may
give its own (``media: {"base64", "content_type", "size"}``): ``size`` pads the default to that many bytes
(an oversized image, say), ``content_type`` is the header the CDN claims (it may lie).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sandbox.people import picture_png
from sandbox.state import State

__all__ = ["MediaAsset", "cdn_routes", "default_body", "register"]

DEFAULT_TTL_SECONDS: Final = 600
MAX_MEDIA_BYTES: Final = 64 * 1024 * 1024
_SECRET: Final = secrets.token_bytes(16)
_MP4: Final = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00\x00\x00\x08free"
_M4A: Final = b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A isom" + b"\x00\x00\x00\x08free"
_PDF: Final = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
_TYPES: Final = {
    "image": ("image/png", None),
    "story_mention": ("image/png", None),
    "share": ("image/png", None),
    "video": ("video/mp4", _MP4),
    "reel": ("video/mp4", _MP4),
    "ig_reel": ("video/mp4", _MP4),
    "audio": ("audio/mp4", _M4A),
    "file": ("application/pdf", _PDF),
}


@dataclass
class MediaAsset:
    body: bytes = field(repr=False)
    content_type: str
    expires_at: int  # sandbox epoch seconds

    @property
    def oe(self) -> str:
        return format(self.expires_at, "x")


def _hash(asset_id: str, oe: str) -> str:
    return hmac.new(_SECRET, f"{asset_id}:{oe}".encode(), hashlib.sha256).hexdigest()[:32]


def default_body(kind: str, seed: str) -> tuple[str, bytes]:
    """The content type and bytes the CDN serves for an attachment of `kind`."""
    content_type, body = _TYPES.get(kind, ("image/png", None))
    return content_type, body if body is not None else picture_png(seed, 32)


def register(state: State, origin: str, kind: str, spec: Mapping[str, Any] | None, ttl: int) -> str:
    """Store the bytes of one attachment and return its signed CDN URL, valid for `ttl` seconds."""
    asset_id = secrets.token_hex(8)
    content_type, body = default_body(kind, asset_id)
    spec = spec or {}
    if spec.get("base64") is not None:
        body = base64.b64decode(str(spec["base64"]), validate=True)
    size = int(spec.get("size") or 0)
    if not 0 <= size <= MAX_MEDIA_BYTES:
        raise ValueError(f"media.size must be between 0 and {MAX_MEDIA_BYTES}")
    if size > len(body):
        body += b"\x00" * (size - len(body))
    asset = MediaAsset(body, str(spec.get("content_type") or content_type), state.now() + ttl)
    state.media_assets[asset_id] = asset
    return f"{origin}/_cdn/ig_messaging/{asset_id}?oe={asset.oe}&oh={_hash(asset_id, asset.oe)}"


async def serve(request: Request) -> Response:
    state: State = request.app.state.sandbox.state
    asset_id = request.path_params["asset_id"]
    asset = state.media_assets.get(asset_id)
    if asset is None:
        return PlainTextResponse("Not Found", status_code=404)
    oe = request.query_params.get("oe", "")
    if oe != asset.oe or not hmac.compare_digest(request.query_params.get("oh", ""), _hash(asset_id, oe)):
        return PlainTextResponse("Bad URL hash", status_code=403)
    state.calls["GET /_cdn/ig_messaging"] += 1
    if state.now() > asset.expires_at:
        return PlainTextResponse("URL signature expired", status_code=403)
    return Response(asset.body, media_type=asset.content_type)


def cdn_routes() -> list[Route]:
    return [Route("/_cdn/ig_messaging/{asset_id}", serve, methods=["GET"])]
