"""What a file is, from its first bytes (never from the URL or the server's Content-Type), and how big it
may be. Pure: no I/O.

Meta's limits: images 8 MB; audio, video and files 25 MB. A type we do not recognise is
``application/octet-stream`` (served as a download, never rendered).
"""

from __future__ import annotations

from typing import Final

MB: Final = 1024 * 1024
IMAGE_CAP: Final = 8 * MB
OTHER_CAP: Final = 25 * MB
HEAD_BYTES: Final = 64  # enough for every signature below
UNKNOWN: Final = "application/octet-stream"

_PREFIXES: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"OggS", "audio/ogg"),
    (b"fLaC", "audio/flac"),
    (b"#!AMR", "audio/amr"),
    (b"ID3", "audio/mpeg"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),
    (b"PK\x03\x04", "application/zip"),
)
_RIFF: Final = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
_FTYP_BRANDS: Final = {
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"avif": "image/avif",
    b"qt  ": "video/quicktime",
}


def sniff(head: bytes) -> str:
    """The content type the bytes starting with `head` have (``application/octet-stream`` if unknown)."""
    for prefix, content_type in _PREFIXES:
        if head.startswith(prefix):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _FTYP_BRANDS:
            return _FTYP_BRANDS[brand]
        return "video/3gpp" if brand.startswith(b"3gp") else "video/mp4"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "audio/mpeg"  # an MPEG audio frame without an ID3 tag
    return UNKNOWN


def cap_for(attachment_type: str) -> int:
    """The most bytes we fetch for an attachment of Meta's `attachment_type` (before the bytes are known)."""
    return IMAGE_CAP if attachment_type == "image" else OTHER_CAP


def cap_for_content(content_type: str) -> int:
    """The most bytes a file of `content_type` may have once sniffed (an image is an image, whatever Meta
    called it)."""
    return IMAGE_CAP if content_type.startswith("image/") else OTHER_CAP


def extension(content_type: str) -> str:
    """A file name extension for `content_type` (downloads), ``bin`` when unknown."""
    subtype = content_type.split("/", 1)[-1]
    return {
        "jpeg": "jpg",
        "mpeg": "mp3",
        "quicktime": "mov",
        "x-msvideo": "avi",
        "octet-stream": "bin",
        "3gpp": "3gp",
    }.get(subtype, subtype)
