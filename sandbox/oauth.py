"""Facebook Login: the OAuth dialog (scripted or interactive) and ``/oauth/access_token``.

Codes are single-use and expire after 10 minutes; ``redirect_uri`` must be byte-identical in the
exchange; ``grant_type=fb_exchange_token`` turns a user token into a long-lived one.

PKCE (RFC 7636): a dialog request with ``code_challenge`` (``code_challenge_method=S256`` only; ``plain``
or no method is refused) binds its code to that challenge, and the code exchange then needs the
``code_verifier`` whose S256 is the challenge. A code issued without a challenge is exchanged without a
verifier (one sent anyway is ignored), unless ``require_pkce`` is on: then the dialog refuses requests
without a challenge and such codes are refused at the exchange.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.consent import consent_page, dialog_error
from sandbox.core import Params, Sandbox, graph_route
from sandbox.state import CodeRec, GraphFailure, new_token

__all__ = ["exchange", "grant_code", "oauth_routes", "s256"]


def _with_query(url: str, params: Mapping[str, str], fragment: str = "") -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, fragment))


# ---- the token endpoint -----------------------------------------------------------------------------


def _check_client(sandbox: Sandbox, params: Params, *, secret: bool) -> None:
    client_id = params.get("client_id")
    if not client_id:
        raise GraphFailure("Missing client_id parameter.", code=101)
    if client_id != sandbox.config.app_id:
        raise GraphFailure("Error validating application. Invalid application ID.", code=101)
    if secret and not hmac.compare_digest(params.get("client_secret", ""), sandbox.config.app_secret):
        raise GraphFailure("Error validating client secret.", code=1)


_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # BASE64URL(SHA-256), no padding
_VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def s256(verifier: str) -> str:
    """RFC 7636's S256 transformation: BASE64URL(SHA-256(ASCII(verifier))) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _check_verifier(sandbox: Sandbox, code_rec: CodeRec, verifier: str | None) -> None:
    if code_rec.code_challenge is None:
        if sandbox.state.require_pkce:
            raise GraphFailure(
                "This authorization code was issued without a code_challenge, and this app requires PKCE.",
                code=100,
            )
        return  # no challenge, nothing to prove: a verifier sent anyway is ignored
    if not verifier:
        raise GraphFailure(
            "Missing code_verifier parameter: this authorization code was issued with a code_challenge.",
            code=100,
        )
    if not _VERIFIER_RE.match(verifier) or not hmac.compare_digest(s256(verifier), code_rec.code_challenge):
        raise GraphFailure(
            "Invalid code_verifier: it does not match the code_challenge this authorization code was issued for.",
            code=100,
        )


def exchange(sandbox: Sandbox, params: Params) -> dict[str, Any]:
    """``/oauth/access_token``: a code for a short-lived token, or a user token for a long-lived one."""
    _check_client(sandbox, params, secret=True)
    state, config = sandbox.state, sandbox.config
    now = state.now()
    if params.get("grant_type") == "fb_exchange_token":
        source = state.check(params.get("fb_exchange_token"))
        if source.kind == "page":
            raise GraphFailure("(#100) fb_exchange_token must be a user access token", code=100)
        keep = source.kind == "user_long" and state.long_lived_reexchange == "keep_expiry"
        expires_at = source.expires_at if keep and source.expires_at else now + state.long_lived_ttl
        rec = state.issue(source.user_id, "user_long", source.scopes, expires_at=expires_at)
        state.exchanges[source.user_id] += 1
    else:
        code = params.get("code")
        if not code:
            raise GraphFailure("Missing authorization code", code=100)
        code_rec = state.codes.get(code)
        if code_rec is None:
            raise GraphFailure("Invalid verification code format.", code=100)
        if params.get("redirect_uri") != code_rec.redirect_uri:
            raise GraphFailure(
                "Error validating verification code. Please make sure your redirect_uri is identical to "
                "the one you used in the OAuth dialog request",
                code=100,
                subcode=36008,
            )
        if code_rec.used:
            raise GraphFailure("This authorization code has been used.", code=100, subcode=36009)
        if now >= code_rec.issued_at + config.code_ttl:
            raise GraphFailure("This authorization code has expired.", code=100, subcode=36007)
        _check_verifier(sandbox, code_rec, params.get("code_verifier"))  # a refusal leaves the code unused
        code_rec.used = True
        rec = state.issue(
            code_rec.user_id, "user_short", code_rec.scopes, expires_at=now + config.short_lived_ttl
        )
        state.code_exchanges[code_rec.user_id] += 1
    assert rec.expires_at is not None  # noqa: S101  # user tokens always expire
    return {"access_token": rec.value, "token_type": "bearer", "expires_in": rec.expires_at - now}


def grant_code(
    sandbox: Sandbox,
    user_id: str,
    redirect_uri: str,
    scopes: tuple[str, ...],
    *,
    code_challenge: str | None = None,
) -> str:
    """A fresh single-use authorization code for `user_id`, bound to an S256 `code_challenge` if given."""
    value = "AQ" + new_token()[4:]
    sandbox.state.codes[value] = CodeRec(
        value, user_id, redirect_uri, scopes, sandbox.state.now(), code_challenge=code_challenge
    )
    return value


async def oauth_access_token(sandbox: Sandbox, request: Request, params: Params) -> dict[str, Any]:
    return exchange(sandbox, params)


# ---- the dialog -------------------------------------------------------------------------------------


def _check_dialog(sandbox: Sandbox, params: Params) -> HTMLResponse | None:
    if params.get("client_id") != sandbox.config.app_id:
        return dialog_error("Invalid App ID: The provided app ID does not look like a valid app ID.")
    redirect_uri = params.get("redirect_uri", "")
    if urlsplit(redirect_uri).scheme not in {"http", "https"} or not urlsplit(redirect_uri).netloc:
        return dialog_error("URL Blocked: redirect_uri is missing or not an absolute http(s) URL.")
    allowed = sandbox.config.allowed_redirect_uris
    if allowed and redirect_uri not in allowed:
        return dialog_error("URL Blocked: This redirect failed because the redirect URI is not whitelisted.")
    if params.get("response_type", "code") != "code":
        return dialog_error("The sandbox supports response_type=code only.")
    return _check_challenge(sandbox, params)


def _check_challenge(sandbox: Sandbox, params: Params) -> HTMLResponse | None:
    challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
    if not challenge:
        if method:
            return dialog_error("code_challenge_method was given without a code_challenge.")
        if sandbox.state.require_pkce:
            return dialog_error("This app requires PKCE: code_challenge and code_challenge_method=S256.")
        return None
    if method != "S256":  # RFC 7636: no method means plain (the challenge is the verifier itself)
        return dialog_error("code_challenge_method must be S256 (plain is not accepted).")
    if not _CHALLENGE_RE.match(challenge):
        return dialog_error("code_challenge must be 43 characters of base64url (an S256 challenge).")
    return None


def _requested_scopes(params: Params) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for s in re.split(r"[,\s]+", params.get("scope", "")) if s))


def _finish_dialog(
    sandbox: Sandbox, params: Params, *, approve: bool, user_id: str | None, declined: frozenset[str]
) -> Response:
    redirect_uri = params["redirect_uri"]
    state_param = {"state": params["state"]} if "state" in params else {}
    if not approve:
        query = {
            "error": "access_denied",
            "error_code": "200",
            "error_description": "Permissions error",
            "error_reason": "user_denied",
            **state_param,
        }
        return RedirectResponse(_with_query(redirect_uri, query, "_=_"), status_code=302)
    users = sandbox.state.users
    user = users.get(user_id or "") or next(iter(users.values()), None)
    if user is None:
        return dialog_error("The sandbox has no users; create one with POST /_sandbox/users.")
    requested = _requested_scopes(params)
    scopes = tuple(s for s in sandbox.state.granted_scopes(user, requested) if s not in declined)
    code = grant_code(
        sandbox, user.id, redirect_uri, scopes, code_challenge=params.get("code_challenge") or None
    )
    return RedirectResponse(_with_query(redirect_uri, {"code": code, **state_param}, "_=_"), status_code=302)


async def dialog(request: Request) -> Response:
    """``GET /{v}/dialog/oauth``: scripted answers redirect at once; interactive shows the consent page."""
    sandbox: Sandbox = request.app.state.sandbox
    params = dict(request.query_params)
    problem = _check_dialog(sandbox, params)
    if problem is not None:
        return problem
    script = sandbox.state.dialog
    if script.mode != "interactive":
        return _finish_dialog(
            sandbox,
            params,
            approve=script.mode == "approve",
            user_id=script.user_id,
            declined=script.declined_scopes,
        )
    return consent_page(
        app_name=sandbox.config.app_name,
        action=f"{request.url.path}/confirm",
        params=params,
        users=sandbox.state.users.values(),
        scopes=_requested_scopes(params),
    )


async def dialog_confirm(request: Request) -> Response:
    """``POST /{v}/dialog/oauth/confirm``: the consent form's answer."""
    sandbox: Sandbox = request.app.state.sandbox
    pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
    params = {k: v for k, v in pairs if k != "granted"}
    problem = _check_dialog(sandbox, params)
    if problem is not None:
        return problem
    granted = {v for k, v in pairs if k == "granted"}
    declined = frozenset(s for s in _requested_scopes(params) if s not in granted)
    return _finish_dialog(
        sandbox,
        params,
        approve=params.get("action") == "approve",
        user_id=params.get("user_id"),
        declined=declined,
    )


def oauth_routes() -> list[Route]:
    """The dialog and the token endpoint."""
    return [
        Route("/{version}/dialog/oauth", dialog, methods=["GET"]),
        Route("/{version}/dialog/oauth/confirm", dialog_confirm, methods=["POST"]),
        Route("/{version}/oauth/access_token", graph_route(oauth_access_token), methods=["GET", "POST"]),
    ]
