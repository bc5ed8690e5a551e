"""Development only: ``GET /dev/media/{message_id}`` shows the demo admin an attachment through
``instagram_media_url`` (a redirect to the signed URL), as the web app would; kept apart from the inbox page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api.dev import _dev_user
from api.resources import resources
from instagram_dm.db import rpc


async def media(request: Request) -> Response:
    res = resources(request)
    index = request.query_params.get("index", "0")
    signed = await rpc.media_url(
        res.db,
        await _dev_user(request),
        message_id=request.path_params["message_id"],
        index=int(index) if index.isdigit() else 0,
    )
    return RedirectResponse(signed.url, status_code=302, headers={"Cache-Control": "no-store"})
