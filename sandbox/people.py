"""People (IGSIDs): made on first use, looked up with a Page token, optionally made to fail.

An id that is neither a Page, an Instagram account nor a user is an IGSID when it is all digits: the
first lookup creates ``person_<igsid>`` / ``Person <last 4 digits>`` with a picture served by the
sandbox itself (``/_sandbox/people/{igsid}/picture.png``). `POST /_sandbox/people` renames a person
or makes their lookup fail (Meta's 100/2534014, a 500, ...).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sandbox.fields import check_fields
from sandbox.state import GraphFailure, InstagramUserRec, ProfileFailure, State, TokenRec

if TYPE_CHECKING:
    from sandbox.core import Sandbox

__all__ = [
    "DEFAULT_FAILURE",
    "apply_spec",
    "looks_like_igsid",
    "person",
    "person_node",
    "picture_png",
    "picture_url",
]

# The failure `"fail": {}` means: Meta's answer for an id that is not an IGSID of this account.
DEFAULT_FAILURE: Mapping[str, Any] = {
    "http_status": 400,
    "code": 100,
    "subcode": 2534014,
    "message": "(#100) No matching user found",
}
_SERVER_ERROR = "An unexpected error has occurred. Please retry your request later."


def looks_like_igsid(node_id: str) -> bool:
    return node_id.isdigit() and 5 <= len(node_id) <= 20


def picture_url(origin: str, igsid: str) -> str:
    return f"{origin.rstrip('/')}/_sandbox/people/{igsid}/picture.png"


def person(state: State, igsid: str, origin: str) -> InstagramUserRec:
    """The person with this IGSID, created (deterministically from the id) on first use."""
    rec = state.ig_users.get(igsid)
    if rec is None:
        rec = InstagramUserRec(igsid, f"person_{igsid}", f"Person {igsid[-4:]}", picture_url(origin, igsid))
        state.ig_users[igsid] = rec
    return rec


def _failure(spec: Mapping[str, Any]) -> ProfileFailure:
    status = int(spec.get("http_status", 400))
    if not 400 <= status <= 599:
        raise ValueError("fail.http_status must be between 400 and 599")
    if status >= 500:
        base: Mapping[str, Any] = {"code": 2, "message": _SERVER_ERROR, "is_transient": True}
    elif "code" in spec:
        base = {"message": "(#{code}) Profile lookup failed".format(code=int(spec["code"]))}
    else:
        base = DEFAULT_FAILURE
    merged = {**base, **spec}
    transient = merged.get("is_transient")
    return ProfileFailure(
        http_status=status,
        code=int(merged["code"]),
        subcode=int(merged["subcode"]) if merged.get("subcode") is not None else None,
        message=str(merged["message"]),
        is_transient=transient if isinstance(transient, bool) else None,
        remaining=int(merged.get("count", -1)),
    )


def apply_spec(state: State, igsid: str, origin: str, spec: Mapping[str, Any]) -> InstagramUserRec:
    """``{"username"?, "name"?, "profile_pic"?, "fail"?: {...} | null}`` onto the person (made if new)."""
    rec = person(state, igsid, origin)
    for key in ("username", "name", "profile_pic"):
        if spec.get(key) is not None:
            setattr(rec, key, str(spec[key]))
    if "fail" in spec:
        fail = spec["fail"]
        if fail is not None and not isinstance(fail, Mapping):
            raise TypeError("fail must be an object or null")
        rec.failure = None if fail is None else _failure(fail)
    return rec


def _raise_failure(rec: InstagramUserRec) -> None:
    failure = rec.failure
    if failure is None or failure.remaining == 0:
        return
    if failure.remaining > 0:
        failure.remaining -= 1
    raise GraphFailure(
        failure.message,
        code=failure.code,
        subcode=failure.subcode,
        status=failure.http_status,
        is_transient=failure.is_transient,
    )


def person_node(
    sandbox: Sandbox, token: TokenRec, rec: InstagramUserRec, fields: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``GET /{igsid}``: needs a Page token with instagram_manage_messages; fields as Meta's IGSID node."""
    if token.kind != "page":
        raise GraphFailure("(#210) A page access token is required to request this resource.", code=210)
    sandbox.need_scope(token, "instagram_manage_messages")
    wanted = fields or {"name": None, "profile_pic": None, "id": None}
    check_fields(wanted, "IGSID")
    _raise_failure(rec)
    values: dict[str, Any] = {
        "username": rec.username,
        "name": rec.name,
        "profile_pic": rec.profile_pic,
        "follower_count": 87,
        "is_verified_user": False,
        "is_user_follow_business": True,
        "is_business_follow_user": False,
    }
    out = {k: values[k] for k in wanted if k != "id"}
    out["id"] = rec.id
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def picture_png(igsid: str, size: int = 8) -> bytes:
    """A small square PNG in a colour derived from the IGSID."""
    red, green, blue = hashlib.sha256(igsid.encode()).digest()[:3]
    row = b"\x00" + bytes((red, green, blue)) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * size))
        + _chunk(b"IEND", b"")
    )
