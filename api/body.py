"""Request bodies read with a cap: a declared length over the cap is refused before reading, and a body
that grows past it is refused at the first chunk too many (never held whole in memory)."""

from __future__ import annotations

from starlette.requests import Request

from instagram_dm import errors


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLargeError (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLargeError(f"The request body is over {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLargeError(f"The request body is over {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)
