"""Fetching an attachment from Meta's CDN: only from Meta's hosts (or the configured Graph origin: the
sandbox in development and tests), streamed into a spooled temporary file, hashed on the way, and cut
off at the cap — never buffered past it.

Redirects are followed by hand (at most three), each hop checked against the same hosts, so a link can
never lead us to an internal address (SSRF).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from typing import IO, Final
from urllib.parse import urljoin, urlsplit

import httpx

from instagram_dm import errors
from instagram_dm.media import sniff

# Meta's CDN hosts: lookaside.fbsbx.com (messaging), scontent-*.cdninstagram.com, scontent.*.fbcdn.net.
META_CDN_SUFFIXES: Final = ("fbsbx.com", "fbcdn.net", "cdninstagram.com")
MAX_REDIRECTS: Final = 3
SPOOL_BYTES: Final = 1024 * 1024  # kept in memory up to this, then on disk
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def allowed(url: str, *, graph_base_url: str) -> bool:
    """True when `url` is an https URL on one of Meta's CDN hosts, or on the configured Graph origin."""
    try:
        parts = urlsplit(url)
        origin = _origin(url)
    except ValueError:  # a port that is not a number
        return False
    if parts.username is not None or parts.password is not None or not origin[1]:
        return False
    if origin == _origin(graph_base_url):
        return True
    host = origin[1]
    on_cdn = any(host == s or host.endswith("." + s) for s in META_CDN_SUFFIXES)
    return on_cdn and origin[0] == "https" and origin[2] == 443


@dataclass
class Downloaded:
    """The bytes of one attachment, in a temporary file (closed with :meth:`close`)."""

    file: IO[bytes] = field(repr=False)
    size: int
    sha256: str
    content_type: str

    def close(self) -> None:
        self.file.close()


def _expired_reason(status: int, body: bytes) -> tuple[str, str]:
    if status == 403 and b"signature expired" in body.lower():
        return "url_signature_expired", "Meta's CDN says the URL signature expired."
    return f"cdn_http_{status}", f"Meta's CDN answered HTTP {status}."


async def download(
    http: httpx.AsyncClient, url: str, *, cap: int, graph_base_url: str, timeout: float = 30.0
) -> Downloaded:
    """GET `url` (following checked redirects) into a temporary file of at most `cap` bytes.

    MediaRefusedError ``host_not_allowed`` / ``too_large`` / ``too_many_redirects`` (no retry helps);
    MediaError ``url_signature_expired`` / ``cdn_http_<status>`` / ``cdn_unreachable`` (retried)."""
    for _ in range(MAX_REDIRECTS + 1):
        if not allowed(url, graph_base_url=graph_base_url):
            raise errors.MediaRefusedError(
                "The attachment is not on a Meta CDN host; we do not fetch it.", code="host_not_allowed"
            )
        try:
            async with http.stream("GET", url, follow_redirects=False, timeout=timeout) as response:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    head = b""
                    async for chunk in response.aiter_bytes():
                        head += chunk
                        if len(head) >= 1024:
                            break
                    code, message = _expired_reason(response.status_code, head)
                    raise errors.MediaError(message, code=code)
                return await _spool(response, cap)
        except httpx.HTTPError as exc:
            raise errors.MediaError(
                f"Meta's CDN could not be reached ({type(exc).__name__}).", code="cdn_unreachable"
            ) from None
    raise errors.MediaRefusedError("The attachment's URL redirects too often.", code="too_many_redirects")


def _too_large(cap: int) -> errors.MediaRefusedError:
    return errors.MediaRefusedError(
        f"The attachment is larger than {cap // sniff.MB} MB, Meta's limit for its type.", code="too_large"
    )


async def _spool(response: httpx.Response, cap: int) -> Downloaded:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(cap)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - handed to the caller
    try:
        return await _copy(response, cap, spool)
    except BaseException:
        spool.close()
        raise


async def _copy(response: httpx.Response, cap: int, spool: IO[bytes]) -> Downloaded:
    digest = hashlib.sha256()
    head = b""
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _too_large(cap)
        if len(head) < sniff.HEAD_BYTES:
            head += chunk[: sniff.HEAD_BYTES - len(head)]
        digest.update(chunk)
        spool.write(chunk)
    content_type = sniff.sniff(head)
    if size > sniff.cap_for_content(content_type):
        raise _too_large(sniff.cap_for_content(content_type))
    spool.seek(0)
    return Downloaded(spool, size, digest.hexdigest(), content_type)
