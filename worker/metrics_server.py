"""The worker's ``GET /metrics`` on a port of its own (``instagram-dm worker --metrics-port N``; off by default).

A deliberately small HTTP/1.1 server on asyncio (no framework, no thread): one request per connection, GET
``/metrics`` answered with the same exposition as the API's (the database's state read at scrape time), under
the same access rule (`instagram_dm.metrics.authorized`); anything else is a 404 or 405 in the error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from instagram_dm import metrics
from instagram_dm.db.port import Database

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
READ_TIMEOUT_SECONDS = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed"}  # fmt: skip


def _error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps({"error": {"code": code, "message": message}}).encode()


class MetricsServer:
    """Serves the process's metrics for as long as :meth:`running` is entered."""

    def __init__(self, db: Database | None, *, host: str, port: int, token: str = "") -> None:
        self._db = db
        self._host = host
        self._port = port
        self._token = token
        self.port: int | None = None  # the bound port, once running (``port=0`` picks a free one)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MetricsServer]:
        server = await asyncio.start_server(self._serve, self._host, self._port)
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("worker.metrics_listening", extra={"host": self._host, "port": self.port})
        try:
            yield self
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            peer = writer.get_extra_info("peername")
            status, content_type, body = await self._answer(head, peer[0] if peer else None)
            reason = _REASONS.get(status, "")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sends no complete request gets nothing
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, head: bytes, client_host: str | None) -> tuple[int, str, bytes]:
        lines = head[:MAX_HEAD_BYTES].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return _error(400, "bad_request", "That is not an HTTP request line.")
        method, target, _version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if target.split("?", 1)[0] != "/metrics":
            return _error(404, "not_found", "There is nothing at this path.")
        if method != "GET":
            return _error(405, "method_not_allowed", "This path does not answer that method.")
        allowed = metrics.authorized(
            token=self._token, authorization=headers.get("authorization"), client_host=client_host
        )
        if not allowed:
            if self._token:
                return _error(401, "invalid_token", "GET /metrics needs the metrics bearer token.")
            return _error(403, "forbidden", "GET /metrics answers loopback clients only.")
        return 200, metrics.CONTENT_TYPE, await metrics.render(self._db)
