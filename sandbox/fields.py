"""Meta's ``fields=`` parameter: parsing (with nested expansion) and per-node validation.

``id,name,instagram_business_account{id,username,profile_picture_url}`` becomes
``{"id": None, "name": None, "instagram_business_account": {"id": None, "username": None, ...}}``;
a field the node type does not have is Meta's #100 "Tried accessing nonexisting field".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.state import GraphFailure

__all__ = ["FIELDS_BY_NODE", "check_fields", "parse_fields"]

FIELDS_BY_NODE = {
    "Page": frozenset(
        {"id", "name", "category", "category_list", "tasks", "access_token", "instagram_business_account"}
    ),
    "IGUser": frozenset({"id", "username", "name", "profile_picture_url", "followers_count", "media_count"}),
    "IGSID": frozenset(
        {
            "id",
            "username",
            "name",
            "profile_pic",
            "follower_count",
            "is_verified_user",
            "is_user_follow_business",
            "is_business_follow_user",
        }
    ),
    "User": frozenset({"id", "name"}),
}


def parse_fields(raw: str) -> dict[str, dict[str, Any] | None]:
    """``a,b{c,d{e}}`` -> ``{"a": None, "b": {"c": None, "d": {"e": None}}}``."""

    def parse(pos: int) -> tuple[dict[str, dict[str, Any] | None], int]:
        out: dict[str, dict[str, Any] | None] = {}
        name = ""
        while pos < len(raw):
            char = raw[pos]
            if char == "{":
                sub, pos = parse(pos + 1)
                out[name.strip()] = sub
                name = ""
            elif char == "}":
                if name.strip():
                    out[name.strip()] = None
                return out, pos + 1
            elif char == ",":
                if name.strip():
                    out[name.strip()] = None
                name = ""
                pos += 1
            else:
                name += char
                pos += 1
        if name.strip():
            out[name.strip()] = None
        return out, pos

    return parse(0)[0]


def check_fields(fields: Mapping[str, Any], node_type: str) -> None:
    """#100 for the first requested field that `node_type` does not have."""
    allowed = FIELDS_BY_NODE[node_type]
    for name in fields:
        if name not in allowed:
            raise GraphFailure(
                f"(#100) Tried accessing nonexisting field ({name}) on node type ({node_type})", code=100
            )
