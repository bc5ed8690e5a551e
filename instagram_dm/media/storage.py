"""Where media copies live: one small port, two adapters.

* :class:`LocalMediaStore` — a folder (``INSTAGRAM_MEDIA_DIR``, default ``.local/media``): the embedded
  setup; the API serves the files itself at signed URLs.
* :class:`SupabaseMediaStore` — the private Storage bucket ``instagram-media`` through supabase-py's
  storage client (storage3); the API answers a signed URL with a redirect to a short-lived Storage one.

Keys are ``<imo_id>/<sha256 hex>-<nonce>`` (made by :func:`new_key`), so an IMO's files share a folder
(Storage policies read the IMO from it) and a key is never re-used after a deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import IO, Final, Protocol

import httpx

from instagram_dm import errors

BUCKET: Final = "instagram-media"
_KEY: Final = re.compile(r"[0-9a-f-]{36}/[0-9a-f]{64}-[0-9a-f]{8,32}")


def new_key(imo_id: str, sha256: str) -> str:
    """A fresh storage key for bytes with SHA-256 `sha256` of IMO `imo_id`."""
    return check_key(f"{imo_id.lower()}/{sha256}-{secrets.token_hex(8)}")


def check_key(key: str) -> str:
    """`key` if it has our shape (so it can never name a path outside the store), else ValueError."""
    if not _KEY.fullmatch(key):
        raise ValueError("not a media storage key")
    return key


class MediaStore(Protocol):
    """Stores and deletes copies by key."""

    async def put(self, key: str, file: IO[bytes], *, content_type: str) -> None:
        """Store the bytes of `file` (read from its current position) under `key`."""
        ...

    async def delete(self, key: str) -> None:
        """Delete `key`; a key that is not there is not an error."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file holding `key` when this store is a folder (the API streams it), else None."""
        ...

    async def signed_url(self, key: str, *, ttl_seconds: int, download: str | None) -> str | None:
        """A URL of the store that serves `key` for `ttl_seconds`, when it can make one (Storage)."""
        ...


class LocalMediaStore:
    """A folder of files, written atomically (temporary file, then rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def local_path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, file: IO[bytes], *, content_type: str) -> None:
        await asyncio.to_thread(self._put, self.local_path(key), file)

    @staticmethod
    def _put(path: Path, file: IO[bytes]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
            with partial.open("wb") as out:
                shutil.copyfileobj(file, out, 1024 * 1024)
            os.replace(partial, path)
        except OSError as exc:
            raise errors.MediaError(
                f"The media folder refused the file ({exc.strerror}).", code="storage_failed"
            ) from None

    async def delete(self, key: str) -> None:
        path = self.local_path(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the IMO's folder, once empty

    async def signed_url(self, key: str, *, ttl_seconds: int, download: str | None) -> str | None:
        return None


class SupabaseMediaStore:
    """The private Storage bucket, through storage3 with the service role key."""

    def __init__(self, supabase_url: str, service_role_key: str, http: httpx.AsyncClient) -> None:
        from storage3 import AsyncStorageClient

        headers = {"apikey": service_role_key, "Authorization": f"Bearer {service_role_key}"}
        client = AsyncStorageClient(f"{supabase_url.rstrip('/')}/storage/v1/", headers, http_client=http)
        self._bucket = client.from_(BUCKET)

    def local_path(self, key: str) -> Path | None:
        return None

    async def put(self, key: str, file: IO[bytes], *, content_type: str) -> None:
        from storage3.utils import StorageException

        data = await asyncio.to_thread(file.read)  # at most 25 MB (the caps)
        try:
            await self._bucket.upload(check_key(key), data, {"content-type": content_type, "upsert": "true"})
        except (StorageException, httpx.HTTPError) as exc:
            raise errors.MediaError(
                f"Supabase Storage refused the file ({type(exc).__name__}).", code="storage_failed"
            ) from None

    async def delete(self, key: str) -> None:
        from storage3.utils import StorageException

        try:
            await self._bucket.remove([check_key(key)])
        except (StorageException, httpx.HTTPError) as exc:
            raise errors.MediaError(
                f"Supabase Storage did not delete the file ({type(exc).__name__}).", code="storage_failed"
            ) from None

    async def signed_url(self, key: str, *, ttl_seconds: int, download: str | None) -> str | None:
        from storage3.utils import StorageException

        options = {"download": download} if download else {}
        try:
            signed = await self._bucket.create_signed_url(check_key(key), ttl_seconds, options)  # type: ignore[arg-type]
        except (StorageException, httpx.HTTPError) as exc:
            raise errors.MediaError(
                f"Supabase Storage did not sign the URL ({type(exc).__name__}).", code="storage_failed"
            ) from None
        return signed.get("signedUrl") or signed.get("signedURL")


def open_store(
    *, kind: str, media_dir: str, supabase_url: str, service_role_key: str, http: httpx.AsyncClient
) -> MediaStore:
    """The store the settings name: ``local`` (a folder) or ``supabase`` (the Storage bucket)."""
    if kind == "supabase":
        return SupabaseMediaStore(supabase_url, service_role_key, http)
    return LocalMediaStore(media_dir)
