"""The two media store adapters: the folder (atomic writes, keys that cannot escape it) and Supabase Storage
through storage3 (the exact requests, seen through httpx.MockTransport)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from instagram_dm import errors
from instagram_dm.media.storage import LocalMediaStore, SupabaseMediaStore, check_key, new_key

IMO = "00000000-0000-4000-8000-0000000000a1"
SHA = "ab" * 32


def test_keys_cannot_name_a_path_outside_the_store() -> None:
    """Only <imo uuid>/<sha256>-<nonce> is a key; traversal and other shapes are ValueError."""
    key = new_key(IMO, SHA)
    assert check_key(key) == key and key.startswith(f"{IMO}/{SHA}-")
    for bad in ("../etc/passwd", f"{IMO}/../../x", f"{IMO}/{SHA}", "/abs/path", f"{IMO}/{SHA}-zz"):
        with pytest.raises(ValueError, match="key"):
            check_key(bad)


async def test_the_folder_stores_and_deletes(tmp_path: Path) -> None:
    """put writes the bytes under the key (no partial file left), delete removes it and the empty folder."""
    store = LocalMediaStore(tmp_path)
    key = new_key(IMO, SHA)
    await store.put(key, io.BytesIO(b"bytes"), content_type="image/png")
    assert store.local_path(key).read_bytes() == b"bytes"
    assert [p.name for p in (tmp_path / IMO).iterdir()] == [key.split("/")[1]]
    await store.delete(key)
    await store.delete(key)  # already gone: fine
    assert list(tmp_path.iterdir()) == []


async def test_supabase_storage_gets_the_requests_it_expects() -> None:
    """Upload (POST with x-upsert and the content type), remove (DELETE with prefixes), sign (POST expiresIn)."""
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, dict(request.headers), request.read()))
        if "/object/sign/" in request.url.path:
            return httpx.Response(200, json={"signedURL": "/object/sign/instagram-media/k?token=t"})
        return httpx.Response(200, json=[{"name": "k"}] if request.method == "DELETE" else {"Key": "k"})

    key = new_key(IMO, SHA)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        store = SupabaseMediaStore("https://proj.supabase.co", "service-key", http)
        await store.put(key, io.BytesIO(b"png"), content_type="image/png")
        await store.delete(key)
        url = await store.signed_url(key, ttl_seconds=60, download="a.pdf")
    (m1, p1, h1, b1), (m2, p2, _h2, b2), (m3, p3, _h3, b3) = seen
    assert (m1, p1) == ("POST", f"/storage/v1/object/instagram-media/{key}")
    assert (h1["x-upsert"], h1["authorization"], h1["apikey"]) == (
        "true",
        "Bearer service-key",
        "service-key",
    )
    assert b"png" in b1 and b"image/png" in b1 + h1.get("content-type", "").encode()
    assert (m2, p2, json.loads(b2)) == ("DELETE", "/storage/v1/object/instagram-media", {"prefixes": [key]})
    assert (m3, p3) == ("POST", f"/storage/v1/object/sign/instagram-media/{key}")
    assert json.loads(b3) == {"expiresIn": "60", "download": "a.pdf"}
    assert url is not None and url.startswith(
        "https://proj.supabase.co/storage/v1/object/sign/instagram-media/k?token=t"
    )


async def test_a_storage_outage_is_a_retryable_media_error() -> None:
    """A 503 from Storage on upload is MediaError storage_failed (retried), never the raw response."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503, json={"statusCode": "503", "error": "unavailable", "message": "secret detail"}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        store = SupabaseMediaStore("https://proj.supabase.co", "service-key", http)
        with pytest.raises(errors.MediaError) as caught:
            await store.put(new_key(IMO, SHA), io.BytesIO(b"x"), content_type="image/png")
    assert caught.value.code == "storage_failed"
    assert "secret" not in caught.value.message
