"""instagram_dm.pkce: the code verifier's shape and the S256 challenge (RFC 7636)."""

from __future__ import annotations

import re

from instagram_dm import pkce


def test_challenge_matches_the_rfc_example() -> None:
    """The S256 challenge of RFC 7636 Appendix B's verifier is the one the RFC gives."""
    assert pkce.challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_verifier_is_86_unreserved_characters() -> None:
    """A new verifier is 86 characters of the URL-safe alphabet, inside RFC 7636's 43..128."""
    verifier = pkce.new_verifier()
    assert len(verifier) == 86
    assert re.fullmatch(r"[A-Za-z0-9_-]+", verifier)
    assert pkce.VERIFIER_RE.match(verifier)


def test_verifiers_are_fresh() -> None:
    """Each call makes another verifier."""
    assert len({pkce.new_verifier() for _ in range(100)}) == 100


def test_challenge_is_43_characters_without_padding() -> None:
    """A challenge is base64url of 32 bytes: 43 characters, no '=' padding."""
    value = pkce.challenge(pkce.new_verifier())
    assert len(value) == 43 and "=" not in value and re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
