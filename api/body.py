"""Request bodies read with a cap: a declared length over the cap is refused before reading, and a body
that grows past it is refused at the first chunk too many (never held whole in memory)."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from instagram_dm import errors


def refuse_declared(content_length: bytes | str | None, limit: int) -> None:
    """PayloadTooLargeError (413) when the declared Content-Length is over `limit`."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise errors.PayloadTooLargeError(f"The request body is over {limit} bytes.")


async def receive_capped(receive: Receive, limit: int) -> bytes:
    """The whole body from the ASGI `receive`, or PayloadTooLargeError at the first chunk past `limit`;
    ClientDisconnect when the client goes away first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLargeError(f"The request body is over {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_capped(request: Request, limit: int) -> bytes:
    """The request's whole body, or PayloadTooLargeError (413) as soon as it is known to exceed `limit`."""
    refuse_declared(request.headers.get("content-length"), limit)
    return await receive_capped(request.receive, limit)
