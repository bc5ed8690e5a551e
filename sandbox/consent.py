"""The HTML of the Login dialog: the interactive consent page and the dialog's error page."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from starlette.responses import HTMLResponse

from sandbox.state import UserRec

__all__ = ["FORM_FIELDS", "consent_page", "dialog_error"]

_CONSENT = Template((Path(__file__).parent / "consent.html").read_text(encoding="utf-8"))
_MAX_LISTED_USERS = 200
FORM_FIELDS = frozenset(
    {
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "response_type",
        "code_challenge",
        "code_challenge_method",
    }
)


def dialog_error(message: str) -> HTMLResponse:
    """Facebook's "Sorry, something went wrong" page (400)."""
    body = (
        "<!doctype html><title>Error</title><h1>Sorry, something went wrong.</h1>"
        f"<p>{html.escape(message)}</p>"
    )
    return HTMLResponse(body, status_code=400)


def consent_page(
    *,
    app_name: str,
    action: str,
    params: Mapping[str, str],
    users: Iterable[UserRec],
    scopes: Iterable[str],
) -> HTMLResponse:
    """The consent form: an account picker, one checkbox per requested scope, Continue / Not now.

    It posts the dialog's own parameters (hidden) back to `action`."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
        if k in FORM_FIELDS
    )
    options = "".join(
        f'<option value="{html.escape(u.id)}" data-declined="{html.escape(",".join(sorted(u.declined_scopes)))}">'
        f"{html.escape(u.name)} ({len(u.page_ids)} {'Page' if len(u.page_ids) == 1 else 'Pages'})</option>"
        for u in list(users)[:_MAX_LISTED_USERS]
    )
    boxes = "".join(
        f'<label><input type="checkbox" name="granted" value="{html.escape(s)}" checked> '
        f"{html.escape(s)}</label>"
        for s in scopes
    )
    page = _CONSENT.substitute(
        app_name=html.escape(app_name),
        action=html.escape(action),
        hidden=hidden,
        options=options,
        scopes=boxes,
        redirect=html.escape(urlsplit(params["redirect_uri"]).netloc),
    )
    return HTMLResponse(page)
