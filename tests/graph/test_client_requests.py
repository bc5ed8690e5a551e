"""GraphClient request shapes, paging, retries and redaction, against httpx.MockTransport."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from instagram_dm.graph import (
    WEBHOOK_FIELDS,
    GraphClient,
    InstagramAccount,
    MetaInvalidRequestError,
    MetaOtherError,
    MetaPermissionError,
    MetaRateLimitedError,
    MetaTokenInvalidError,
    MetaTransientError,
    RetryPolicy,
)
from instagram_dm.settings import Secret, Settings

APP_ID = "1234567890"
APP_SECRET = "app-secret-value-xyz"
USER_TOKEN = "EAASuserTOKENvalue000000000000000000"
PAGE_TOKEN = "EAASpageTOKENvalue000000000000000000"
GRAPH = "https://graph.test"
VERIFIER = "pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ"

Handler = Callable[[httpx.Request], httpx.Response]


def proof(token: str) -> str:
    return hmac.new(APP_SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()


def make(handler: Handler, retry: RetryPolicy | None = None) -> tuple[GraphClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    client = GraphClient(
        http,
        app_id=APP_ID,
        app_secret=APP_SECRET,
        graph_base_url=GRAPH,
        dialog_base_url="https://dialog.test/",
        retry=retry or RetryPolicy.disabled(),
    )
    return client, seen


def query(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.url.query.decode(), keep_blank_values=True).items()}


def ok(body: object, **kwargs: object) -> Handler:
    return lambda request: httpx.Response(200, json=body, **kwargs)  # type: ignore[arg-type]


def test_dialog_url_shape() -> None:
    """The dialog URL carries client_id, redirect_uri, state, comma scopes and response_type=code."""
    client, _ = make(ok({}))
    url = client.dialog_url(
        redirect_uri="https://crm.test/cb?x=1", state="st&ate", scopes=["instagram_basic", "pages_show_list"]
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://dialog.test/v25.0/dialog/oauth"
    assert parse_qs(parts.query) == {
        "client_id": [APP_ID],
        "redirect_uri": ["https://crm.test/cb?x=1"],
        "state": ["st&ate"],
        "scope": ["instagram_basic,pages_show_list"],
        "response_type": ["code"],
    }
    assert "instagram_basic,pages_show_list" in url


def test_dialog_url_with_a_code_challenge_names_s256() -> None:
    """Given a code challenge, the dialog URL also carries it and code_challenge_method=S256."""
    client, _ = make(ok({}))
    url = client.dialog_url(
        redirect_uri="https://crm.test/cb", state="st", scopes=["instagram_basic"], code_challenge="c" * 43
    )
    query = parse_qs(urlsplit(url).query)
    assert (query["code_challenge"], query["code_challenge_method"]) == (["c" * 43], ["S256"])
    assert query["state"] == ["st"] and query["response_type"] == ["code"]


def test_from_settings_uses_meta_settings() -> None:
    """from_settings reads app id/secret, version and both base URLs."""
    settings = Settings(
        instagram_app_id="42",
        instagram_app_secret=Secret("s3cret-value"),
        graph_api_version="v24.0",
        graph_base_url="http://127.0.0.1:54331",
        oauth_dialog_base_url="http://127.0.0.1:54331",
    )
    client = GraphClient.from_settings(settings, httpx.AsyncClient())
    assert client.dialog_url(redirect_uri="https://x.test/cb", state="s", scopes=[]).startswith(
        "http://127.0.0.1:54331/v24.0/dialog/oauth?client_id=42&"
    )
    assert "s3cret" not in repr(client)


async def test_exchange_code_request_shape() -> None:
    """The code exchange is GET /oauth/access_token with client_id, redirect_uri, client_secret, code."""
    client, seen = make(ok({"access_token": USER_TOKEN, "token_type": "bearer", "expires_in": 5183}))
    token = await client.exchange_code(code="AQcode", redirect_uri="https://crm.test/cb")
    assert token.token == USER_TOKEN and token.expires_in == 5183 and token.token_type == "bearer"
    assert USER_TOKEN not in repr(token)
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == "/v25.0/oauth/access_token"
    assert query(request) == {
        "client_id": APP_ID,
        "redirect_uri": "https://crm.test/cb",
        "client_secret": APP_SECRET,
        "code": "AQcode",
    }
    assert client.calls == 1


async def test_exchange_code_sends_the_code_verifier() -> None:
    """Given a code verifier, the code exchange sends it as code_verifier beside the usual parameters."""
    client, seen = make(ok({"access_token": USER_TOKEN, "token_type": "bearer", "expires_in": 5183}))
    await client.exchange_code(code="AQcode", redirect_uri="https://crm.test/cb", code_verifier=VERIFIER)
    assert query(seen[0]) == {
        "client_id": APP_ID,
        "redirect_uri": "https://crm.test/cb",
        "client_secret": APP_SECRET,
        "code": "AQcode",
        "code_verifier": VERIFIER,
    }


async def test_code_verifier_never_reaches_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    """A refused exchange logs and raises without the code verifier, even when Meta's message echoes it."""
    caplog.set_level(logging.DEBUG, logger="instagram_dm.graph")
    echo = {"error": {"code": 100, "message": f"Invalid code_verifier {VERIFIER}", "type": "OAuthException"}}
    client, _ = make(lambda request: httpx.Response(400, json=echo))
    with pytest.raises(MetaInvalidRequestError) as info:
        await client.exchange_code(code="AQcode", redirect_uri="https://crm.test/cb", code_verifier=VERIFIER)
    logged = [json.dumps(vars(r), default=str) for r in caplog.records] + [
        r.getMessage() for r in caplog.records
    ]
    assert any(r.getMessage() == "graph.request" for r in caplog.records)
    assert VERIFIER not in "\n".join([*logged, str(info.value), repr(info.value)])


async def test_exchange_long_lived_request_shape() -> None:
    """fb_exchange_token grant with client credentials and no appsecret_proof."""
    client, seen = make(ok({"access_token": "EAASlong", "token_type": "bearer", "expires_in": 5183944}))
    token = await client.exchange_long_lived(USER_TOKEN)
    assert token.expires_in == 5183944
    assert query(seen[0]) == {
        "grant_type": "fb_exchange_token",
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "fb_exchange_token": USER_TOKEN,
    }


async def test_token_answer_without_expiry() -> None:
    """A token answer without expires_in gives expires_in None; without access_token it is an error."""
    client, _ = make(ok({"access_token": "EAASx", "token_type": "bearer"}))
    assert (await client.exchange_long_lived(USER_TOKEN)).expires_in is None
    client, _ = make(ok({"token_type": "bearer"}))
    with pytest.raises(MetaOtherError):
        await client.exchange_long_lived(USER_TOKEN)


async def test_debug_token_uses_app_token_and_parses_never() -> None:
    """debug_token sends the app token, no proof, and maps expires_at 0 to None."""
    body = {
        "data": {
            "app_id": APP_ID,
            "type": "PAGE",
            "application": "App",
            "data_access_expires_at": 1790000000,
            "expires_at": 0,
            "is_valid": True,
            "issued_at": 1780000000,
            "scopes": ["instagram_basic", "pages_show_list"],
            "user_id": "10000000000001",
        }
    }
    client, seen = make(ok(body))
    info = await client.debug_token(PAGE_TOKEN)
    assert query(seen[0]) == {"input_token": PAGE_TOKEN, "access_token": f"{APP_ID}|{APP_SECRET}"}
    assert info.is_valid and info.type == "PAGE" and info.expires_at is None
    assert info.data_access_expires_at is not None and info.data_access_expires_at.timestamp() == 1790000000
    assert info.scopes == ("instagram_basic", "pages_show_list")
    assert info.error_code is None and info.user_id == "10000000000001"


async def test_debug_token_invalid_is_a_result() -> None:
    """An invalid token is reported in TokenInfo with Meta's code and subcode."""
    body = {
        "data": {
            "error": {"code": 190, "subcode": 463, "message": "expired"},
            "is_valid": False,
            "scopes": [],
        }
    }
    client, _ = make(ok(body))
    info = await client.debug_token(USER_TOKEN)
    assert not info.is_valid
    assert (info.error_code, info.error_subcode) == (190, 463)
    assert info.expires_at is None and info.app_id is None


async def test_debug_token_without_data_is_an_error() -> None:
    """A debug_token answer without data raises MetaOtherError."""
    client, _ = make(ok({"nope": 1}))
    with pytest.raises(MetaOtherError):
        await client.debug_token(USER_TOKEN)


async def test_user_and_page_calls_carry_appsecret_proof() -> None:
    """Calls made with user or Page tokens carry access_token and its appsecret_proof."""

    def handler(request: httpx.Request) -> httpx.Response:
        fields = query(request).get("fields", "")
        if fields == "access_token":
            return httpx.Response(200, json={"access_token": PAGE_TOKEN, "id": "111"})
        if fields.startswith("instagram_business_account"):
            return httpx.Response(
                200,
                json={
                    "instagram_business_account": {"id": "1784", "username": "u", "profile_picture_url": "p"},
                    "id": "111",
                },
            )
        return httpx.Response(
            200, json={"id": "999", "username": "pros", "name": "Pro", "profile_pic": "pic"}
        )

    client, seen = make(handler)
    assert await client.page_token("111", USER_TOKEN) == PAGE_TOKEN
    account = await client.page_instagram_account("111", PAGE_TOKEN)
    user = await client.instagram_user("999", PAGE_TOKEN)
    assert account is not None and (account.id, account.username, account.profile_picture_url) == (
        "1784",
        "u",
        "p",
    )
    assert (user.id, user.username, user.name, user.profile_pic) == ("999", "pros", "Pro", "pic")
    assert [r.url.path for r in seen] == ["/v25.0/111", "/v25.0/111", "/v25.0/999"]
    expected = [USER_TOKEN, PAGE_TOKEN, PAGE_TOKEN]
    for request, token in zip(seen, expected, strict=True):
        params = query(request)
        assert params["access_token"] == token
        assert params["appsecret_proof"] == proof(token)
    assert query(seen[1])["fields"] == "instagram_business_account{id,username,profile_picture_url}"
    assert query(seen[2])["fields"] == "id,username,name,profile_pic"


async def test_page_without_instagram_account_is_none() -> None:
    """A Page without instagram_business_account gives None."""
    client, _ = make(ok({"id": "111"}))
    assert await client.page_instagram_account("111", PAGE_TOKEN) is None


async def test_page_token_missing_is_permission_error() -> None:
    """A Page answer without access_token raises MetaPermissionError."""
    client, _ = make(ok({"id": "111"}))
    with pytest.raises(MetaPermissionError):
        await client.page_token("111", USER_TOKEN)


async def test_subscribe_posts_fields_in_the_body() -> None:
    """subscribe_page POSTs subscribed_fields, access_token and proof as a form body."""
    client, seen = make(ok({"success": True}))
    await client.subscribe_page("111", PAGE_TOKEN)
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/v25.0/111/subscribed_apps"
    assert request.url.query == b""
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form == {
        "subscribed_fields": ",".join(WEBHOOK_FIELDS),
        "access_token": PAGE_TOKEN,
        "appsecret_proof": proof(PAGE_TOKEN),
    }


async def test_subscribe_success_false_raises() -> None:
    """Meta's success:false on subscribe or unsubscribe is an error."""
    client, seen = make(ok({"success": False}))
    with pytest.raises(MetaOtherError, match="subscribe"):
        await client.subscribe_page("111", PAGE_TOKEN, ["messages"])
    with pytest.raises(MetaOtherError, match="unsubscribe"):
        await client.unsubscribe_page("111", PAGE_TOKEN)
    assert seen[1].method == "DELETE"


def paged_handler(pages: list[list[dict[str, object]]]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        index = int(query(request).get("after", "0"))
        body: dict[str, object] = {"data": pages[index]}
        if index + 1 < len(pages):
            body["paging"] = {
                "cursors": {"before": "b", "after": str(index + 1)},
                "next": f"{GRAPH}/v25.0/me/accounts?access_token=STALE&limit=2&after={index + 1}",
            }
        return httpx.Response(200, json=body)

    return handler


def page(n: int) -> dict[str, object]:
    return {
        "id": str(n),
        "name": f"P{n}",
        "access_token": f"EAASpage{n}",
        "tasks": ["MANAGE"],
        "category": "C",
    }


async def test_list_pages_follows_next_through_empty_and_short_pages() -> None:
    """Paging continues through an empty middle page and a short page until next is absent."""
    client, seen = make(paged_handler([[page(1), page(2)], [], [page(3)], [page(4), page(5)]]))
    pages = await client.list_pages(USER_TOKEN)
    assert [p.id for p in pages] == ["1", "2", "3", "4", "5"]
    assert pages[0].tasks == ("MANAGE",) and pages[0].category == "C"
    assert "EAASpage1" not in repr(pages[0])
    assert len(seen) == 4
    first = query(seen[0])
    assert seen[0].url.path == "/v25.0/me/accounts"
    assert first["fields"] == "id,name,access_token,tasks,category"
    for request in seen[1:]:
        params = query(request)
        assert params["access_token"] == USER_TOKEN  # re-signed, not the token in `next`
        assert params["appsecret_proof"] == proof(USER_TOKEN)


async def test_list_pages_refuses_foreign_next() -> None:
    """A paging.next on another origin is not followed (the token would leak)."""
    body = {"data": [page(1)], "paging": {"next": "https://evil.test/v25.0/me/accounts?after=x"}}
    client, seen = make(ok(body))
    with pytest.raises(MetaOtherError, match="origin"):
        await client.list_pages(USER_TOKEN)
    assert len(seen) == 1


async def test_list_pages_detects_loops() -> None:
    """A next URL that repeats stops with an error instead of looping forever."""
    body = {"data": [], "paging": {"next": f"{GRAPH}/v25.0/me/accounts?after=same"}}
    client, seen = make(ok(body))
    with pytest.raises(MetaOtherError, match="repeats"):
        await client.list_pages(USER_TOKEN)
    assert len(seen) == 2


async def test_list_pages_without_data_is_an_error() -> None:
    """An answer without a data list is MetaOtherError."""
    client, _ = make(ok({"paging": {}}))
    with pytest.raises(MetaOtherError):
        await client.list_pages(USER_TOKEN)


def failing(then: httpx.Response, failures: list[httpx.Response | Exception]) -> Handler:
    queue = list(failures)

    def handler(request: httpx.Request) -> httpx.Response:
        if queue:
            item = queue.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        return then

    return handler


FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
GOOD = httpx.Response(200, json={"id": "1", "username": "u"})


async def test_transient_errors_are_retried() -> None:
    """5xx HTML, code 2 and a read timeout are retried until success within the attempts."""
    client, seen = make(
        failing(GOOD, [httpx.Response(502, text="<html>bad gateway</html>"), httpx.ReadTimeout("slow")]),
        retry=FAST,
    )
    assert (await client.instagram_user("1", PAGE_TOKEN)).username == "u"
    assert len(seen) == 3 and client.calls == 3


async def test_retries_are_bounded() -> None:
    """After `attempts` transient failures the transient error is raised."""
    client, seen = make(
        failing(GOOD, [httpx.Response(500, json={"error": {"code": 2, "message": "x"}})] * 5), FAST
    )
    with pytest.raises(MetaTransientError):
        await client.instagram_user("1", PAGE_TOKEN)
    assert len(seen) == 3


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (
            httpx.Response(400, json={"error": {"code": 190, "error_subcode": 463, "message": "x"}}),
            MetaTokenInvalidError,
        ),
        (httpx.Response(400, json={"error": {"code": 613, "message": "x"}}), MetaRateLimitedError),
        (httpx.Response(403, json={"error": {"code": 10, "message": "x"}}), MetaPermissionError),
        (httpx.Response(400, json={"error": {"code": 100, "message": "x"}}), MetaInvalidRequestError),
        (httpx.Response(400, json={"error": {"code": 368, "message": "x"}}), MetaOtherError),
    ],
)
async def test_non_transient_errors_are_not_retried(response: httpx.Response, cls: type[Exception]) -> None:
    """Token, rate-limit, permission, invalid-request and other errors are raised after one call."""
    client, seen = make(failing(GOOD, [response] * 3), FAST)
    with pytest.raises(cls):
        await client.instagram_user("1", PAGE_TOKEN)
    assert len(seen) == 1


async def test_connection_errors_become_transient() -> None:
    """A refused connection surfaces as MetaTransientError after the retries."""
    client, seen = make(failing(GOOD, [httpx.ConnectError("refused")] * 5), FAST)
    with pytest.raises(MetaTransientError, match="could not reach Meta"):
        await client.debug_token(USER_TOKEN)
    assert len(seen) == 3


async def test_code_exchange_is_not_replayed_after_a_timeout() -> None:
    """A code exchange that may have reached Meta is not retried; a refused connection is."""
    client, seen = make(failing(GOOD, [httpx.ReadTimeout("slow")]), FAST)
    with pytest.raises(MetaTransientError):
        await client.exchange_code(code="AQcode", redirect_uri="https://x.test/cb")
    assert len(seen) == 1
    token_body = httpx.Response(200, json={"access_token": "EAASx", "token_type": "bearer", "expires_in": 60})
    client, seen = make(failing(token_body, [httpx.ConnectError("refused")]), FAST)
    assert (await client.exchange_code(code="AQcode", redirect_uri="https://x.test/cb")).token == "EAASx"
    assert len(seen) == 2


async def test_200_with_error_envelope_or_garbage_raises() -> None:
    """A 200 carrying an error envelope is classified; a 200 HTML body is MetaOtherError."""
    client, _ = make(ok({"error": {"code": 190, "message": "x"}}))
    with pytest.raises(MetaTokenInvalidError):
        await client.instagram_user("1", PAGE_TOKEN)
    client, _ = make(lambda r: httpx.Response(200, text="<html>captive portal</html>"))
    with pytest.raises(MetaOtherError, match="non-JSON"):
        await client.instagram_user("1", PAGE_TOKEN)


async def test_secrets_never_reach_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    """Tokens, codes, the client secret and appsecret_proof appear in no log record or exception text."""
    caplog.set_level(logging.DEBUG, logger="instagram_dm.graph")
    echo = (
        f"Malformed access token {USER_TOKEN}; code AQsecretcode0000000000000000000000000; "
        f"secret {APP_SECRET}; proof {proof(USER_TOKEN)}"
    )
    responses = [httpx.Response(500, json={"error": {"code": 2, "message": echo}})] * 2 + [
        httpx.Response(400, json={"error": {"code": 190, "message": echo}})
    ]
    client, _ = make(failing(GOOD, responses), FAST)
    errors: list[str] = []
    for call in (
        lambda: client.list_pages(USER_TOKEN),
        lambda: client.exchange_code(
            code="AQsecretcode0000000000000000000000000", redirect_uri="https://x.test/cb"
        ),
    ):
        with pytest.raises(Exception) as info:  # any Meta error; we inspect its text
            await call()
        errors += [str(info.value), repr(info.value)]
    client, _ = make(ok({"data": []}))
    await client.page_instagram_account("1", PAGE_TOKEN)
    logged = [json.dumps(vars(r), default=str) for r in caplog.records] + [
        r.getMessage() for r in caplog.records
    ]
    assert any(r.getMessage() == "graph.request" for r in caplog.records)
    assert any(r.getMessage() == "graph.retry_scheduled" for r in caplog.records)
    haystack = "\n".join(logged + errors)
    for secret in (USER_TOKEN, PAGE_TOKEN, APP_SECRET, proof(USER_TOKEN), proof(PAGE_TOKEN), "AQsecretcode"):
        assert secret not in haystack
    assert "access_token=***" in haystack


LINKED_FIELDS = "id,name,access_token,instagram_business_account{id,username,profile_picture_url}"


async def test_list_pages_with_instagram_expands_the_account_in_one_listing() -> None:
    """with_instagram asks /me/accounts for the nested IG account and reads it from every page of it."""
    linked = {"id": "1", "name": "P1", "access_token": "EAASpage1"}
    linked["instagram_business_account"] = {
        "id": "178",
        "username": "p.one",
        "profile_picture_url": "https://x",
    }
    bare = {"id": "2", "name": "P2", "access_token": "EAASpage2"}  # no IG account: the field is absent
    tokenless = {"id": "3", "name": "P3", "instagram_business_account": {"id": "179"}}
    next_url = f"{GRAPH}/v25.0/me/accounts?fields={LINKED_FIELDS}&limit=100&after=MQ"

    def handler(request: httpx.Request) -> httpx.Response:
        if "after" in query(request):
            return httpx.Response(200, json={"data": [tokenless]})
        return httpx.Response(200, json={"data": [linked, bare], "paging": {"next": next_url}})

    client, seen = make(handler)
    pages = await client.list_pages(USER_TOKEN, with_instagram=True)
    assert [(p.id, p.instagram_account) for p in pages] == [
        ("1", InstagramAccount(id="178", username="p.one", profile_picture_url="https://x")),
        ("2", None),
        ("3", InstagramAccount(id="179", username=None, profile_picture_url=None)),
    ]
    assert pages[2].access_token == ""
    assert [r.url.path for r in seen] == ["/v25.0/me/accounts", "/v25.0/me/accounts"]
    assert [query(r)["fields"] for r in seen] == [LINKED_FIELDS, LINKED_FIELDS]
    assert query(seen[1])["after"] == "MQ" and query(seen[1])["appsecret_proof"] == proof(USER_TOKEN)


# ---- sending -------------------------------------------------------------------------------------


def sent_answer(request: httpx.Request) -> httpx.Response:
    usage = {"17841400000000001": [{"type": "messenger", "call_count": 42, "total_cputime": 7, "total_time": 9,
                                    "estimated_time_to_regain_access": 0}]}  # fmt: skip
    return httpx.Response(
        200,
        json={"recipient_id": "4242", "message_id": "mid.abc"},
        headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
    )


async def test_send_message_posts_meta_json_with_the_token_in_the_query() -> None:
    """A send is POST /{page}/messages with the JSON body Meta documents; the token and proof in the query."""
    client, seen = make(sent_answer)
    sent = await client.send_message(
        "111", PAGE_TOKEN, recipient_id="4242", text="Hi ä", messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT"
    )
    [request] = seen
    assert (request.method, request.url.path) == ("POST", "/v25.0/111/messages")
    assert json.loads(request.content) == {
        "recipient": {"id": "4242"},
        "message": {"text": "Hi ä"},
        "messaging_type": "MESSAGE_TAG",
        "tag": "HUMAN_AGENT",
    }
    query = parse_qs(urlsplit(str(request.url)).query)
    assert query["access_token"] == [PAGE_TOKEN] and query["appsecret_proof"] == [proof(PAGE_TOKEN)]
    assert (sent.message_id, sent.usage_percent) == ("mid.abc", 42.0)


async def test_send_message_sends_an_attachment_without_text() -> None:
    """An attachment goes as message.attachment {type, payload{url}}, with no tag for a RESPONSE."""
    client, seen = make(sent_answer)
    attachment = {"type": "image", "payload": {"url": "https://cdn.test/a.png"}}
    await client.send_message("111", PAGE_TOKEN, recipient_id="4242", attachment=attachment)
    body = json.loads(seen[0].content)
    assert body == {
        "recipient": {"id": "4242"},
        "message": {"attachment": attachment},
        "messaging_type": "RESPONSE",
    }


async def test_send_message_is_never_retried_after_a_5xx() -> None:
    """A 500 from Meta is raised after one request, even with retries on: the message may have gone out."""
    client, seen = make(
        lambda _r: httpx.Response(500, json={"error": {"code": 2, "message": "x"}}), RetryPolicy()
    )
    with pytest.raises(MetaTransientError):
        await client.send_message("111", PAGE_TOKEN, recipient_id="4242", text="hi")
    assert len(seen) == 1


async def test_a_send_accepted_without_a_message_id_is_of_unknown_outcome() -> None:
    """A 200 without message_id (or unreadable) is transient, not a refusal: Meta may have sent it."""
    client, _ = make(lambda _r: httpx.Response(200, json={"recipient_id": "4242"}))
    with pytest.raises(MetaTransientError):
        await client.send_message("111", PAGE_TOKEN, recipient_id="4242", text="hi")
    client, _ = make(lambda _r: httpx.Response(200, content=b"<html>ok</html>"))
    with pytest.raises(MetaTransientError):
        await client.send_message("111", PAGE_TOKEN, recipient_id="4242", text="hi")
