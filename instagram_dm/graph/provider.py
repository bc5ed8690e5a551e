"""The two ways to connect an Instagram account, behind one shape.

:class:`LoginProvider` is what both flavours implement the same way: the dialog URL and its scopes,
whether PKCE applies, the code exchange, the long-lived token, the profile lookup and the send (each on its
own host). Account discovery, refresh and the webhook subscription differ in kind, not just in host, so each
client names them after what it does:

    ============================  =====================================  ===================================
    step                          Facebook Login (:class:`GraphClient`)  Instagram Login
                                                                         (:class:`InstagramLoginClient`)
    ============================  =====================================  ===================================
    dialog                        www.facebook.com/v…/dialog/oauth       www.instagram.com/oauth/authorize
    code exchange                 GET graph.facebook.com/oauth/…         POST api.instagram.com/oauth/…
    long-lived token              fb_exchange_token                      ig_exchange_token
    account discovery             /me/accounts (Pages, linked accounts)  /me (the account itself)
    refresh                       fb_exchange_token again + debug_token  ig_refresh_token (≥ 24 h old)
    webhook subscription          POST /{page-id}/subscribed_apps        POST /{ig-user-id}/subscribed_apps
    send, profiles                graph.facebook.com, Page token         graph.instagram.com, Bearer
    ============================  =====================================  ===================================

:class:`Providers` holds the configured clients; everything after a connect picks one by the name stored
on the integration (``instagram_integrations.provider``), never by configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from instagram_dm import errors
from instagram_dm.graph.client import GraphClient
from instagram_dm.graph.instagram_login import InstagramLoginClient
from instagram_dm.graph.models import FACEBOOK_LOGIN, INSTAGRAM_LOGIN, PROVIDERS, InstagramUser, SentMessage


class LoginProvider(Protocol):
    """What both flavours do alike."""

    name: str
    scopes: tuple[str, ...]
    uses_pkce: bool

    def dialog_url(
        self, *, redirect_uri: str, state: str, scopes: Sequence[str], code_challenge: str | None = None
    ) -> str: ...

    async def instagram_user(self, ig_user_id: str, token: str, /) -> InstagramUser: ...

    async def send_message(
        self,
        sender_id: str,
        token: str,
        /,
        *,
        recipient_id: str,
        text: str | None = None,
        attachment: Mapping[str, Any] | None = None,
        messaging_type: str = "RESPONSE",
        tag: str | None = None,
    ) -> SentMessage: ...


class ProviderNotConfiguredError(errors.BadRequestError):
    """The connect asked for a provider this deployment does not offer (its settings are not set)."""

    code = "provider_not_configured"


def parse_provider(value: object) -> str:
    """A provider name from a request body: ``facebook_login`` when absent; 400 ``invalid_provider`` else."""
    if value is None:
        return FACEBOOK_LOGIN
    if not isinstance(value, str) or value not in PROVIDERS:
        raise errors.BadRequestError(
            f"provider must be one of {', '.join(PROVIDERS)}.", code="invalid_provider"
        )
    return value


@dataclass(frozen=True)
class Providers:
    """The configured flavours: Facebook Login always, Instagram Login when its settings are set."""

    facebook: GraphClient
    instagram: InstagramLoginClient | None = None

    @property
    def offered(self) -> tuple[str, ...]:
        """The providers a connect may choose."""
        return (FACEBOOK_LOGIN,) if self.instagram is None else (FACEBOOK_LOGIN, INSTAGRAM_LOGIN)

    def get(self, name: str) -> LoginProvider:
        """The client for `name`; ProviderNotConfiguredError when it is not offered here."""
        if name == FACEBOOK_LOGIN:
            return self.facebook
        if name == INSTAGRAM_LOGIN and self.instagram is not None:
            return self.instagram
        raise ProviderNotConfiguredError(
            f"The {name} provider is not configured here (set INSTAGRAM_LOGIN_APP_ID and "
            "INSTAGRAM_LOGIN_APP_SECRET to offer it)."
            if name == INSTAGRAM_LOGIN
            else f"Unknown provider {name[:40]!r}.",
            code="provider_not_configured",
        )

    def instagram_login(self) -> InstagramLoginClient:
        """The Instagram Login client; ProviderNotConfiguredError when it is not configured."""
        if self.instagram is None:
            self.get(INSTAGRAM_LOGIN)  # raises
        assert self.instagram is not None  # noqa: S101  # for mypy: get() raised otherwise
        return self.instagram
