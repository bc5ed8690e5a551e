"""Who is signed in on the development pages: one of the seeded demo users, named by a cookie.

Signing in stores the demo user's short name (``admin``, ``member``, ``starter``) in an HttpOnly cookie;
each request mints a short-lived user JWT for that user (HS256, ``SUPABASE_JWT_SECRET``, as Supabase Auth
would issue it), verifies it with the app's own verifier and runs the app-facing RPCs as that user through
:meth:`Database.rpc_as_user` (``set local role authenticated`` + ``request.jwt.claims``), so RLS and the
membership checks decide exactly as for the CRM web app.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.resources import resources
from api.routes import read_json_object
from instagram_dm import errors
from instagram_dm.auth import mint_user_token
from instagram_dm.db.port import ActingUser
from instagram_dm.demo import DEMO_ADMIN, DEMO_IMO, DEMO_MEMBER, STARTER_ADMIN, STARTER_IMO

COOKIE = "ig_dev_user"
TOKEN_TTL_SECONDS = 900


@dataclass(frozen=True)
class DemoUser:
    """A seeded user the development pages can sign in as (DESIGN.md "Demo data")."""

    key: str
    user_id: str
    imo_id: str
    name: str
    email: str
    blurb: str


DEMO_USERS: dict[str, DemoUser] = {
    u.key: u
    for u in (
        DemoUser(
            "admin", DEMO_ADMIN, DEMO_IMO, "Dana Admin", "admin@demo-agency.test", "Demo Agency · admin"
        ),
        DemoUser(
            "member", DEMO_MEMBER, DEMO_IMO, "Alex Agent", "agent@demo-agency.test", "Demo Agency · member"
        ),
        DemoUser(
            "starter",
            STARTER_ADMIN,
            STARTER_IMO,
            "Sam Starter",
            "admin@starter-agency.test",
            "Starter Agency · admin (Starter plan)",
        ),
    )
}


def signed_in(request: Request) -> DemoUser | None:
    """The demo user the cookie names, or None."""
    return DEMO_USERS.get(request.cookies.get(COOKIE, ""))


def require_user(request: Request) -> DemoUser:
    user = signed_in(request)
    if user is None:
        raise errors.AuthError("Sign in as one of the demo users first.", code="not_signed_in")
    return user


def token_for(request: Request, user: DemoUser) -> str:
    secret = resources(request).settings.supabase_jwt_secret.reveal()
    return mint_user_token(secret, user.user_id, ttl=TOKEN_TTL_SECONDS, email=user.email)


async def acting_user(request: Request) -> tuple[DemoUser, ActingUser]:
    """The signed-in demo user, and the caller the RPCs run as: a fresh token through the app's verifier."""
    user = require_user(request)
    claims = await resources(request).verifier.verify(f"Bearer {token_for(request, user)}")
    return user, claims.acting_user()


async def current(request: Request) -> Response:
    """``GET /dev/session``: who is signed in (null when nobody is: a 200, not a refusal) and who may sign in."""
    user = signed_in(request)
    return JSONResponse(
        {
            "user": None if user is None else {"key": user.key, "name": user.name, "email": user.email},
            "users": [
                {"key": u.key, "name": u.name, "email": u.email, "blurb": u.blurb}
                for u in DEMO_USERS.values()
            ],
        }
    )


async def sign_in(request: Request) -> Response:
    """``POST /dev/session {"user": "admin" | "member" | "starter"}``: sets the cookie."""
    key = (await read_json_object(request)).get("user")
    user = DEMO_USERS.get(key) if isinstance(key, str) else None
    if user is None:
        raise errors.BadRequestError(
            f"user must be one of {', '.join(DEMO_USERS)}.", code="unknown_demo_user"
        )
    response = JSONResponse({"user": user.key, "name": user.name})
    response.set_cookie(COOKIE, user.key, path="/", httponly=True, samesite="lax")
    return response


async def sign_out(request: Request) -> Response:
    """``DELETE /dev/session``: clears the cookie."""
    response = JSONResponse({"user": None})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response


async def token(request: Request) -> Response:
    """``GET /dev/session/token``: a short-lived access token for the page's own call to
    ``/functions/v1/instagram-oauth-init`` (the web app holds its Supabase session token the same way)."""
    user = require_user(request)
    return JSONResponse({"access_token": token_for(request, user), "imo_id": user.imo_id})
