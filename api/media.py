"""``GET /functions/v1/instagram-media/{media_id}?expires=&signature=``: the bytes behind a URL that
``instagram_media_url`` signed (docs/media.md).

The database checks the signature and the expiry (``instagram_media_open_v1``): a missing, tampered or
expired one is 403 in the JSON error shape, a deleted media 404. Embedded, the file is served from the
media folder with its sniffed type, ``Content-Disposition`` (a download for files and unknown types,
inline otherwise) and single byte ranges (206, 416) for players; with Supabase Storage the answer is a
redirect to a short-lived Storage signed URL. The type is never one a browser would run as a page.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from api.errors import error_response
from api.resources import resources
from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.media import sniff

CHUNK: Final = 256 * 1024
_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)")
_INLINE: Final = ("image/", "audio/", "video/")


def _forbidden(message: str = "The media link is not valid.") -> Response:
    return error_response(403, "invalid_signature", message)


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The (first, last) byte of a single ``Range: bytes=…`` request; None for the whole file (no header,
    or several ranges, which we answer in full); ``"unsatisfiable"`` for a range outside the file."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None if "," in header else "unsatisfiable"
    first, last = match.groups()
    if not first and not last:
        return "unsatisfiable"
    if not first:  # the last N bytes
        n = int(last)
        return (max(size - n, 0), size - 1) if n > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


async def _chunks(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as file:
        await file.seek(start)
        left = length
        while left > 0:
            chunk = await file.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


async def serve(request: Request) -> Response:
    res = resources(request)
    raw_id = request.path_params["media_id"]
    expires = request.query_params.get("expires", "")
    signature = request.query_params.get("signature", "")
    if not (raw_id.isdigit() and expires.isdigit() and signature) or len(raw_id) > 18 or len(expires) > 12:
        return _forbidden()
    try:
        where = await rpc.media_open(res.db, media_id=int(raw_id), expires=int(expires), signature=signature)
    except errors.ForbiddenError as exc:
        return (
            _forbidden(exc.message)
            if exc.code != "url_expired"
            else error_response(403, exc.code, exc.message)
        )
    download = where.attachment_type == "file" or not where.content_type.startswith(_INLINE)
    filename = f"instagram-{where.media_id}.{sniff.extension(where.content_type)}"
    redirect = await res.media.signed_url(
        where.storage_key, ttl_seconds=60, download=filename if download else None
    )
    if redirect is not None:
        return RedirectResponse(redirect, status_code=302, headers={"Cache-Control": "no-store"})
    path = res.media.local_path(where.storage_key)
    if path is None or not await anyio.Path(path).is_file():
        return error_response(404, "not_found", "This media is no longer kept.")
    size = (await anyio.Path(path).stat()).st_size
    headers = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=60",
        "Content-Disposition": f'{"attachment" if download else "inline"}; filename="{filename}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    wanted = byte_range(request.headers.get("range"), size)
    if wanted == "unsatisfiable":
        response = error_response(416, "range_not_satisfiable", "The requested range is outside the file.")
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    start, end = wanted if isinstance(wanted, tuple) else (0, size - 1)
    length = max(end - start + 1, 0)
    headers["Content-Length"] = str(length)
    status = 200
    if isinstance(wanted, tuple):
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=where.content_type)
    return StreamingResponse(
        _chunks(path, start, length), status_code=status, headers=headers, media_type=where.content_type
    )
