"""Fetching from Meta's CDN (instagram_dm.media.fetch) and typing bytes (sniff), without a network:
httpx.MockTransport gives the exact answers."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from instagram_dm import errors
from instagram_dm.media import fetch, sniff

GRAPH = "http://127.0.0.1:54331"
CDN = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        (CDN, True),
        ("https://scontent-iad3-1.cdninstagram.com/v/t51/a.jpg", True),
        ("https://scontent.xx.fbcdn.net/v/a.mp4", True),
        (f"{GRAPH}/_cdn/ig_messaging/abc", True),
        ("http://lookaside.fbsbx.com/a", False),  # not https
        ("https://lookaside.fbsbx.com:8443/a", False),
        ("https://evilfbcdn.net/a", False),
        ("https://fbcdn.net.evil.com/a", False),
        ("https://user:pw@lookaside.fbsbx.com/a", False),
        ("http://127.0.0.1:54332/a", False),  # the Graph host, another port
        ("http://169.254.169.254/latest/meta-data/", False),
        ("file:///etc/passwd", False),
        ("https://lookaside.fbsbx.com:x/a", False),
    ],
)
def test_only_meta_hosts_and_the_graph_origin_are_allowed(url: str, ok: bool) -> None:
    """Meta's CDN hosts over https on 443 and the configured Graph origin pass; anything else does not."""
    assert fetch.allowed(url, graph_base_url=GRAPH) is ok


async def test_a_stream_without_length_is_cut_off_at_the_cap() -> None:
    """A body with no Content-Length that never ends is read only to just past the cap, then too_large."""
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 65536
            yield b"\xff\xd8\xff" + b"\x00" * 65533

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(errors.MediaRefusedError) as caught:
            await fetch.download(http, CDN, cap=1024 * 1024, graph_base_url=GRAPH)
    assert caught.value.code == "too_large"
    assert sent <= 1024 * 1024 + 2 * 65536


async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    """Content-Length above the cap: too_large without reading the body."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(9 * sniff.MB)}, content=b"")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(errors.MediaRefusedError, match="8 MB"):
            await fetch.download(http, CDN, cap=sniff.IMAGE_CAP, graph_base_url=GRAPH)


async def test_a_redirect_to_another_host_is_not_followed() -> None:
    """A CDN redirect to an internal address is refused (host_not_allowed) and never requested."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://10.0.0.1/admin"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(errors.MediaRefusedError) as caught:
            await fetch.download(http, CDN, cap=sniff.IMAGE_CAP, graph_base_url=GRAPH)
    assert caught.value.code == "host_not_allowed"
    assert asked == [CDN]


async def test_redirects_within_meta_are_followed_and_hashed() -> None:
    """lookaside → scontent is followed; the file's SHA-256, size and sniffed type come back."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "lookaside.fbsbx.com":
            return httpx.Response(302, headers={"location": "https://scontent.xx.fbcdn.net/a"})
        return httpx.Response(200, headers={"content-type": "text/html"}, content=PNG)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        got = await fetch.download(http, CDN, cap=sniff.IMAGE_CAP, graph_base_url=GRAPH)
    try:
        assert (got.content_type, got.size, got.file.read()) == ("image/png", len(PNG), PNG)
        assert got.sha256 == hashlib.sha256(PNG).hexdigest()
    finally:
        got.close()


async def test_cdn_refusals_are_retryable_with_their_reason() -> None:
    """403 "URL signature expired" is url_signature_expired, a 404 cdn_http_404: MediaError, not refused."""
    answers = iter([httpx.Response(403, text="URL signature expired"), httpx.Response(404, text="nope")])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        codes = []
        for _ in range(2):
            with pytest.raises(errors.MediaError) as caught:
                await fetch.download(http, CDN, cap=sniff.IMAGE_CAP, graph_base_url=GRAPH)
            assert not isinstance(caught.value, errors.MediaRefusedError)
            codes.append(caught.value.code)
    assert codes == ["url_signature_expired", "cdn_http_404"]


async def test_an_image_type_over_eight_mb_is_refused_whatever_meta_called_it() -> None:
    """A 'video' attachment whose bytes are a 9 MB JPEG is too large for an image."""
    body = b"\xff\xd8\xff" + b"\x00" * (9 * sniff.MB)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(errors.MediaRefusedError):
            await fetch.download(http, CDN, cap=sniff.cap_for("video"), graph_base_url=GRAPH)


@pytest.mark.parametrize(
    ("head", "content_type"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (PNG, "image/png"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", "video/mp4"),
        (b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00", "audio/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video/quicktime"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "image/heic"),
        (b"ID3\x04\x00", "audio/mpeg"),
        (b"\xff\xfb\x90\x00", "audio/mpeg"),
        (b"OggS\x00\x02", "audio/ogg"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"\x1a\x45\xdf\xa3\x01", "video/webm"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"<html><script>alert(1)</script>", "application/octet-stream"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'>", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_sniffing_reads_the_magic_numbers(head: bytes, content_type: str) -> None:
    """Each file's first bytes name its type; markup a browser would run is never given a renderable type."""
    assert sniff.sniff(head) == content_type
