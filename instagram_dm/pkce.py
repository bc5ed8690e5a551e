"""PKCE (RFC 7636) for the connect flow: a code verifier per state, and its S256 code challenge.

init keeps the verifier on the server (encrypted with the state row) and sends only the challenge to
Meta's dialog; the callback sends the verifier with the code exchange. A code issued for another flow's
challenge (a victim's code pasted into an attacker's callback) is then refused by Meta, as long as Meta
enforces PKCE (documented for manually built Facebook Login flows, marked "in testing").
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

__all__ = ["CHALLENGE_METHOD", "VERIFIER_RE", "challenge", "new_verifier"]

CHALLENGE_METHOD = "S256"
# RFC 7636 §4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
# 64 random bytes are 86 base64url characters (no padding): inside 43..128 as they are, so nothing to
# trim, and 512 bits of entropy (RFC 7636 §7.1 asks for at least 256).
_VERIFIER_BYTES = 64


def new_verifier() -> str:
    """A fresh code verifier: 86 characters of the URL-safe alphabet (a subset of RFC 7636's)."""
    return secrets.token_urlsafe(_VERIFIER_BYTES)


def challenge(verifier: str) -> str:
    """The S256 code challenge: BASE64URL(SHA-256(ASCII(verifier))) without padding (43 characters)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
