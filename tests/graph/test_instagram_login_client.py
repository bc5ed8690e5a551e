"""InstagramLoginClient's exact requests (httpx.MockTransport) and how it reads Instagram's answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from instagram_dm.graph import InstagramLoginClient, MetaOtherError, MetaTokenInvalidError, RetryPolicy

TOKEN = "IGAAtesttokenvalue0123456789abcdefghijkl"


def client(
    handler: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]
) -> InstagramLoginClient:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return InstagramLoginClient(
        http,
        app_id="ig-app",
        app_secret="ig-secret",
        dialog_base_url="https://www.instagram.test",
        api_base_url="https://api.instagram.test",
        graph_base_url="https://graph.instagram.test",
        retry=RetryPolicy.disabled(),
    )


def test_dialog_url_asks_for_the_two_business_scopes_without_pkce() -> None:
    """The dialog is Instagram's /oauth/authorize with the app id, both business scopes and the state."""
    url = urlsplit(
        client(lambda r: httpx.Response(200), []).dialog_url(redirect_uri="https://x.test/cb", state="s")
    )
    query = parse_qs(url.query)
    assert (url.netloc, url.path) == ("www.instagram.test", "/oauth/authorize")
    assert query["scope"] == ["instagram_business_basic,instagram_business_manage_messages"]
    assert (query["client_id"], query["state"], query["response_type"]) == (["ig-app"], ["s"], ["code"])
    assert "code_challenge" not in query


@pytest.mark.parametrize(
    "answer",
    [
        {"data": [{"access_token": TOKEN, "user_id": "17841400000000101", "permissions": "a,b"}]},
        {"access_token": TOKEN, "user_id": 17841400000000101, "permissions": ["a", "b"]},
    ],
    ids=["data", "flat"],
)
async def test_code_exchange_posts_a_form_and_reads_both_shapes(answer: dict[str, object]) -> None:
    """POST api.instagram.com/oauth/access_token as a form (code without its #_); either answer shape."""
    seen: list[httpx.Request] = []
    token = await client(lambda r: httpx.Response(200, json=answer), seen).exchange_code(
        code="AQcode#_", redirect_uri="https://x.test/cb"
    )
    [request] = seen
    form = parse_qs(request.content.decode())
    assert (request.method, request.url.host, request.url.path) == (
        "POST",
        "api.instagram.test",
        "/oauth/access_token",
    )
    assert form == {
        "client_id": ["ig-app"],
        "client_secret": ["ig-secret"],
        "grant_type": ["authorization_code"],
        "redirect_uri": ["https://x.test/cb"],
        "code": ["AQcode"],
    }
    assert (token.token, token.user_id, token.permissions) == (TOKEN, "17841400000000101", ("a", "b"))


async def test_instagrams_flat_error_is_classified_and_masked() -> None:
    """{"error_type", "code": 400, "error_message"}: a Meta error whose message never shows the code."""
    body = {"error_type": "OAuthException", "code": 400, "error_message": "Invalid code AQsecretcode"}
    with pytest.raises(MetaOtherError) as caught:
        await client(lambda r: httpx.Response(400, json=body), []).exchange_code(
            code="AQsecretcode", redirect_uri="https://x.test/cb"
        )
    assert caught.value.meta_type == "OAuthException" and caught.value.meta_http_status == 400
    assert "AQsecretcode" not in str(caught.value)


async def test_send_uses_bearer_on_the_instagram_graph() -> None:
    """A send is POST graph.instagram.com/{v}/{ig-user-id}/messages, JSON body, token only in the header."""
    seen: list[httpx.Request] = []
    sent = await client(
        lambda r: httpx.Response(200, json={"recipient_id": "1", "message_id": "m1"}), seen
    ).send_message("17841400000000101", TOKEN, recipient_id="6100000000000001", text="hi")
    [request] = seen
    assert (
        request.url.path == "/v25.0/17841400000000101/messages" and request.url.host == "graph.instagram.test"
    )
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(request.url)
    assert json.loads(request.content)["recipient"] == {"id": "6100000000000001"}
    assert sent.message_id == "m1"


async def test_refresh_sends_ig_refresh_token_and_an_expired_token_is_reauth() -> None:
    """refresh_access_token with grant_type=ig_refresh_token; Meta's 190 is MetaTokenInvalidError."""
    seen: list[httpx.Request] = []
    ok = client(
        lambda r: httpx.Response(200, json={"access_token": TOKEN + "x", "expires_in": 5184000}), seen
    )
    fresh = await ok.refresh_token(TOKEN)
    assert parse_qs(seen[0].url.query.decode())["grant_type"] == ["ig_refresh_token"]
    assert seen[0].url.path == "/refresh_access_token" and fresh.expires_in == 5184000
    expired = {
        "error": {
            "message": "Session has expired",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 463,
        }
    }
    with pytest.raises(MetaTokenInvalidError):
        await client(lambda r: httpx.Response(400, json=expired), []).refresh_token(TOKEN)
