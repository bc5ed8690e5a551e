"""The sandbox itself: dialog, shapes against golden files, validation, control API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from sandbox.core import endpoint_key
from sandbox.fields import parse_fields
from sandbox.fixtures import ALICE, BOB, DAVE, ERIN
from tests.fixtures.sandbox import SandboxControl

GOLDEN = Path(__file__).parent.parent / "golden"
REDIRECT = "https://crm.test/cb?keep=1"
V = "v25.0"


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively (lists by their first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def golden(name: str) -> Any:
    return shape(json.loads((GOLDEN / f"{name}.json").read_text()))


def proof(sandbox: SandboxControl, token: str) -> str:
    return hmac.new(sandbox.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def graph(
    sandbox: SandboxControl, method: str, path: str, token: str | None = None, **params: str
) -> httpx.Response:
    if token is not None:
        params = {"access_token": token, "appsecret_proof": proof(sandbox, token), **params}
    return sandbox.http.request(method, f"/{V}{path}", params=params)


def dialog_params(sandbox: SandboxControl, **extra: str) -> dict[str, str]:
    return {
        "client_id": sandbox.app_id,
        "redirect_uri": REDIRECT,
        "state": "xyz",
        "scope": "instagram_basic,pages_show_list,pages_manage_metadata",
        "response_type": "code",
        **extra,
    }


def test_interactive_dialog_renders_and_approves(sandbox: SandboxControl) -> None:
    """The default dialog is an HTML page; posting Approve redirects with code + state, keeping the query."""
    page = sandbox.http.get(f"/{V}/dialog/oauth", params=dialog_params(sandbox))
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Bob Broker" in page.text and "Approve" not in page.text.split("<form")[0]
    action = re.search(r'action="([^"]+)"', page.text)
    assert action is not None
    form = {**dialog_params(sandbox), "user_id": BOB, "action": "approve"}
    body = urlencode([*form.items(), ("granted", "instagram_basic"), ("granted", "pages_show_list")])
    response = sandbox.http.post(
        action.group(1), content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    query = parse_qs(location.query)
    assert (location.netloc, location.path, location.fragment) == ("crm.test", "/cb", "_=_")
    assert query["keep"] == ["1"] and query["state"] == ["xyz"] and query["code"][0].startswith("AQ")
    token = sandbox.http.get(
        f"/{V}/oauth/access_token",
        params={
            "client_id": sandbox.app_id,
            "client_secret": sandbox.app_secret,
            "redirect_uri": REDIRECT,
            "code": query["code"][0],
        },
    ).json()["access_token"]
    record = sandbox.control("POST", "tokens/inspect", {"token": token})
    assert record["user_id"] == BOB and record["scopes"] == ["instagram_basic", "pages_show_list"]


def test_interactive_dialog_deny(sandbox: SandboxControl) -> None:
    """Posting Deny redirects with Meta's denial parameters."""
    form = {**dialog_params(sandbox), "user_id": ALICE, "action": "deny"}
    response = sandbox.http.post(
        f"/{V}/dialog/oauth/confirm",
        content=urlencode(form),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query == {
        "keep": ["1"],
        "error": ["access_denied"],
        "error_code": ["200"],
        "error_description": ["Permissions error"],
        "error_reason": ["user_denied"],
        "state": ["xyz"],
    }


def test_scripted_deny_answers_302_immediately(sandbox: SandboxControl) -> None:
    """In deny mode the dialog GET itself redirects with error=access_denied."""
    sandbox.dialog("deny")
    response = sandbox.http.get(f"/{V}/dialog/oauth", params=dialog_params(sandbox))
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["location"]).query)["error_reason"] == ["user_denied"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"client_id": "other"}, "Invalid App ID"),
        ({"redirect_uri": "javascript:alert(1)"}, "URL Blocked"),
        ({"response_type": "token"}, "response_type"),
    ],
)
def test_dialog_rejects_bad_requests(sandbox: SandboxControl, override: dict[str, str], needle: str) -> None:
    """A wrong client_id, a non-http redirect_uri or another response_type gives an HTML 400, no redirect."""
    sandbox.dialog("approve", ALICE)
    response = sandbox.http.get(f"/{V}/dialog/oauth", params=dialog_params(sandbox, **override))
    assert response.status_code == 400 and needle in response.text
    assert "location" not in response.headers


def test_dialog_user_must_exist(sandbox: SandboxControl) -> None:
    """Scripting the dialog for an unknown user is a 400 from the control API."""
    response = sandbox.http.post("/_sandbox/dialog", json={"mode": "approve", "user_id": "404"})
    assert response.status_code == 400


def test_shapes_match_golden_files(sandbox: SandboxControl) -> None:
    """Token, Pages, Page token, IG account, subscribe, debug_token and error answers match the reference."""
    sandbox.dialog("approve", ALICE)
    location = sandbox.http.get(f"/{V}/dialog/oauth", params=dialog_params(sandbox)).headers["location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    exchanged = sandbox.http.get(
        f"/{V}/oauth/access_token",
        params={
            "client_id": sandbox.app_id,
            "client_secret": sandbox.app_secret,
            "redirect_uri": REDIRECT,
            "code": code,
        },
    ).json()
    assert shape(exchanged) == golden("oauth_access_token")
    long_lived = sandbox.http.get(
        f"/{V}/oauth/access_token",
        params={
            "grant_type": "fb_exchange_token",
            "client_id": sandbox.app_id,
            "client_secret": sandbox.app_secret,
            "fb_exchange_token": exchanged["access_token"],
        },
    ).json()
    assert shape(long_lived) == golden("oauth_access_token")
    user_token = long_lived["access_token"]
    accounts = graph(sandbox, "GET", "/me/accounts", user_token).json()
    assert shape(accounts) == golden("me_accounts")
    page_id = accounts["data"][0]["id"]
    page_token = graph(sandbox, "GET", f"/{page_id}", user_token, fields="access_token").json()
    assert shape(page_token) == golden("page_access_token")
    ig = graph(
        sandbox, "GET", f"/{page_id}", page_token["access_token"], fields="instagram_business_account"
    ).json()
    assert shape(ig) == golden("page_instagram_business_account")
    subscribed = graph(
        sandbox,
        "POST",
        f"/{page_id}/subscribed_apps",
        page_token["access_token"],
        subscribed_fields="messages",
    )
    assert shape(subscribed.json()) == golden("subscribed_apps_success")
    debug = sandbox.http.get(
        f"/{V}/debug_token",
        params={"input_token": user_token, "access_token": f"{sandbox.app_id}|{sandbox.app_secret}"},
    ).json()
    expected = golden("debug_token")["data"]
    assert {k: v for k, v in shape(debug)["data"].items() if k in expected} == expected
    sandbox.advance_clock(61 * 86400)
    error = graph(sandbox, "GET", "/me/accounts", user_token)
    assert error.status_code == 400
    assert shape(error.json()) == golden("error_envelope")
    assert error.json()["error"]["error_subcode"] == 463
    assert "invalid_token" in error.headers["www-authenticate"]


def test_usage_and_trace_headers(sandbox: SandboxControl) -> None:
    """Graph answers carry x-app-usage (JSON), x-fb-trace-id and facebook-api-version."""
    (token,) = sandbox.mint(ALICE)
    response = graph(sandbox, "GET", "/me", token)
    assert response.json() == {"name": "Alice Agent", "id": ALICE}
    assert set(json.loads(response.headers["x-app-usage"])) == {"call_count", "total_cputime", "total_time"}
    assert response.headers["x-fb-trace-id"] and response.headers["facebook-api-version"] == V


def test_appsecret_proof_is_required_and_checked(sandbox: SandboxControl) -> None:
    """Missing or wrong appsecret_proof is a 100 GraphMethodException; switching the check off allows it."""
    (token,) = sandbox.mint(ALICE)
    missing = sandbox.http.get(f"/{V}/me/accounts", params={"access_token": token}).json()["error"]
    assert (missing["code"], missing["type"]) == (100, "GraphMethodException")
    assert "require an appsecret_proof" in missing["message"]
    wrong = sandbox.http.get(f"/{V}/me/accounts", params={"access_token": token, "appsecret_proof": "00"})
    assert "Invalid appsecret_proof" in wrong.json()["error"]["message"]
    sandbox.configure(require_appsecret_proof=False)
    assert sandbox.http.get(f"/{V}/me/accounts", params={"access_token": token}).status_code == 200


def test_bearer_header_is_accepted(sandbox: SandboxControl) -> None:
    """The token may come in an Authorization: Bearer header."""
    (token,) = sandbox.mint(ALICE)
    response = sandbox.http.get(
        f"/{V}/me",
        params={"appsecret_proof": proof(sandbox, token)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.json()["id"] == ALICE


def test_missing_token_and_bad_version(sandbox: SandboxControl) -> None:
    """No token is Meta's 2500; an unversioned-looking path is an error envelope too."""
    assert sandbox.http.get(f"/{V}/me/accounts").json()["error"]["code"] == 2500
    assert sandbox.http.get("/nonsense/me").json()["error"]["code"] == 2500


def test_unknown_field_and_nested_fields(sandbox: SandboxControl) -> None:
    """Unknown fields are (#100); nested instagram_business_account{...} returns the subfields."""
    (token,) = sandbox.mint(ALICE, "page")
    bad = graph(sandbox, "GET", "/101000000000101", token, fields="id,bogus").json()["error"]
    assert bad["code"] == 100 and "bogus" in bad["message"]
    nested = graph(
        sandbox,
        "GET",
        "/101000000000101",
        token,
        fields="instagram_business_account{id,username,profile_picture_url}",
    ).json()
    assert nested["instagram_business_account"]["username"] == "alice.recruits"
    assert set(nested["instagram_business_account"]) == {"id", "username", "profile_picture_url"}


def test_paging_cursors_and_garbage_cursor(sandbox: SandboxControl) -> None:
    """next carries an after cursor; a garbage cursor is a (#100) error."""
    (token,) = sandbox.mint(ERIN)
    first = graph(sandbox, "GET", "/me/accounts", token).json()
    assert len(first["data"]) == 25 and "next" in first["paging"]
    after = parse_qs(urlsplit(first["paging"]["next"]).query)["after"][0]
    assert after == first["paging"]["cursors"]["after"]
    second = graph(sandbox, "GET", "/me/accounts", token, after=after).json()
    assert len(second["data"]) == 5 and "next" not in second["paging"]
    assert graph(sandbox, "GET", "/me/accounts", token, after="!!").json()["error"]["code"] == 100


def test_subscriptions_get_and_delete(sandbox: SandboxControl) -> None:
    """GET subscribed_apps lists the fields; DELETE removes them."""
    (token,) = sandbox.mint(BOB, "page", page_id="101000000000202")
    assert graph(sandbox, "GET", "/101000000000202/subscribed_apps", token).json() == {"data": []}
    graph(
        sandbox,
        "POST",
        "/101000000000202/subscribed_apps",
        token,
        subscribed_fields="messages,message_echoes",
    )
    listed = graph(sandbox, "GET", "/101000000000202/subscribed_apps", token).json()["data"]
    assert (
        listed[0]["subscribed_fields"] == ["messages", "message_echoes"] and listed[0]["id"] == sandbox.app_id
    )
    assert graph(sandbox, "DELETE", "/101000000000202/subscribed_apps", token).json() == {"success": True}
    assert sandbox.state()["subscriptions"] == {}
    other = graph(sandbox, "POST", "/101000000000201/subscribed_apps", token, subscribed_fields="messages")
    assert other.json()["error"]["error_subcode"] == 33


def test_faults_match_method_and_count_and_spare_control(sandbox: SandboxControl) -> None:
    """A fault hits only its method and path, N times; /_sandbox/ is never faulted."""
    (token,) = sandbox.mint(ALICE)
    sandbox.fault(".*", method="GET", code=1, http_status=500, count=2)
    assert sandbox.state()["faults"][0]["remaining"] == 2  # control GET not consumed
    assert graph(sandbox, "GET", "/me", token).status_code == 500
    assert graph(sandbox, "GET", "/me", token).json()["error"]["code"] == 1
    assert graph(sandbox, "GET", "/me", token).status_code == 200
    state = sandbox.state()
    assert state["faults"][0]["hits"] == 2 and state["calls"]["GET /me"] == 3
    sandbox.fault("/me$", body="<html>down</html>", http_status=503, headers={"retry-after": "3"}, count=-1)
    for _ in range(3):
        response = graph(sandbox, "GET", "/me", token)
        assert response.status_code == 503 and response.text == "<html>down</html>"
        assert response.headers["retry-after"] == "3"
    sandbox.control("DELETE", "faults")
    assert graph(sandbox, "GET", "/me", token).status_code == 200


def test_bad_control_requests_are_400(sandbox: SandboxControl) -> None:
    """Malformed control bodies answer 400 with a message, never 500."""
    for path, body in [
        ("faults", {"path": "("}),
        ("faults", {}),
        ("latency", {"path": ".*", "ms": -1}),
        ("clock", {}),
        ("config", {"long_lived_reexchange": "forever"}),
        ("config", {"page_size": 0}),
        ("config", {"require_pkce": "yes"}),
        ("tokens", {"user_id": "nobody"}),
        ("tokens", {"user_id": ALICE, "kind": "weird"}),
        ("tokens", {"user_id": DAVE, "kind": "page"}),
        ("users", {"id": ALICE}),
        ("users", ["not an object"]),
    ]:
        response = sandbox.http.post(f"/_sandbox/{path}", json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"]["message"]
    assert sandbox.http.post("/_sandbox/faults", content=b"{nope").status_code == 400
    assert sandbox.http.post("/_sandbox/revoke", json={"token": "nope"}).status_code == 404


def test_latency_is_applied_per_path(sandbox: SandboxControl) -> None:
    """A latency rule delays matching Graph calls only, never the control API."""
    (token,) = sandbox.mint(ALICE)
    sandbox.latency("/me$", 150)
    started = time.perf_counter()
    graph(sandbox, "GET", "/me", token)
    assert time.perf_counter() - started >= 0.14
    started = time.perf_counter()
    sandbox.state()
    graph(sandbox, "GET", "/debug_token", None)
    assert time.perf_counter() - started < 0.14
    sandbox.control("DELETE", "latency")


def test_bulk_users_and_tokens(sandbox: SandboxControl) -> None:
    """Hundreds of users with Pages and their tokens are created in two requests, and stats stay small."""
    started = time.perf_counter()
    users = sandbox.create_users([{"page_count": 1} for _ in range(500)])
    specs = [{"user_id": u["id"], "kind": "long"} for u in users] + [
        {"user_id": u["id"], "kind": "page"} for u in users
    ]
    minted = sandbox.control("POST", "tokens", specs)["tokens"]
    assert time.perf_counter() - started < 5
    assert len(minted) == 1000 and all(len(t) == 1 for t in minted)
    assert len({t[0] for t in minted}) == 1000
    state = sandbox.state()
    assert state["tokens_issued"] == {"user_long": 500, "page": 500} and "tokens" not in state
    assert len(sandbox.state(tokens=True)["tokens"]) == 1000
    first = users[0]
    assert first["pages"][0]["instagram_id"] is not None
    many = sandbox.mint(first["id"], "long", count=3, expires_in=60)
    assert len(set(many)) == 3


def test_custom_user_spec(sandbox: SandboxControl) -> None:
    """A user spec can fix ids, decline scopes, hide Pages and omit Instagram."""
    created = sandbox.control(
        "POST",
        "users",
        {
            "id": "555",
            "name": "Zed",
            "declined_scopes": ["pages_manage_metadata"],
            "pages": [
                {"id": "777", "name": "Zed Page", "instagram": None},
                {"id": "778", "instagram": {"id": "1784999", "username": "zed.ig"}},
            ],
        },
    )
    assert created == {
        "id": "555",
        "pages": [{"id": "777", "instagram_id": None}, {"id": "778", "instagram_id": "1784999"}],
    }
    (token,) = sandbox.mint("555", "page", page_id="778")
    assert (
        "pages_manage_metadata" not in sandbox.control("POST", "tokens/inspect", {"token": token})["scopes"]
    )
    error = graph(sandbox, "POST", "/778/subscribed_apps", token, subscribed_fields="messages").json()[
        "error"
    ]
    assert error["code"] == 200
    detail = sandbox.control("GET", "users/555")
    assert [p["id"] for p in detail["pages"]] == ["777", "778"]


def test_revoke_all_tokens_of_a_user(sandbox: SandboxControl) -> None:
    """Revoking by user_id invalidates every token of that user with the given subcode."""
    tokens = sandbox.mint(ALICE, count=2) + sandbox.mint(ALICE, "page")
    assert sandbox.control("POST", "revoke", {"user_id": ALICE, "subcode": 458})["revoked"] == 3
    for token in tokens:
        error = graph(sandbox, "GET", "/me", token).json()["error"]
        assert (error["code"], error["error_subcode"]) == (190, 458)


def test_clock_set_and_reset(sandbox: SandboxControl) -> None:
    """The clock can be set to an instant; reset brings back real time and the fixtures."""
    now = sandbox.control("POST", "clock", {"set": "2030-01-01T00:00:00Z"})["now"]
    assert now == 1893456000
    sandbox.create_users([{"id": "999"}])
    sandbox.reset()
    state = sandbox.state()
    assert abs(state["now"] - time.time()) < 5 and state["user_count"] == 7


def test_pure_helpers() -> None:
    """parse_fields handles nesting; endpoint_key drops the version and ids."""
    assert parse_fields("id,a{b,c{d}},e") == {"id": None, "a": {"b": None, "c": {"d": None}}, "e": None}
    assert endpoint_key("POST", "/v25.0/12345/subscribed_apps") == "POST /{id}/subscribed_apps"
    assert endpoint_key("GET", "/v25.0/me/accounts") == "GET /me/accounts"


LINKED_FIELDS = "id,name,access_token,instagram_business_account{id,username,profile_picture_url}"


def test_accounts_expand_the_instagram_account_and_omit_it_when_none(sandbox: SandboxControl) -> None:
    """/me/accounts with a nested instagram_business_account expands it per Page, absent where none is linked."""
    sandbox.control(
        "POST",
        "users",
        {
            "id": "556",
            "pages": [
                {"id": "781", "name": "Linked", "instagram": {"id": "1784781", "username": "linked.ig"}},
                {"id": "782", "name": "Bare", "instagram": None},
            ],
        },
    )
    (token,) = sandbox.mint("556", "long")
    body = graph(sandbox, "GET", "/me/accounts", token, fields=LINKED_FIELDS).json()
    linked, bare = body["data"]
    assert set(linked) == {"id", "name", "access_token", "instagram_business_account"}
    assert linked["instagram_business_account"]["id"] == "1784781"
    assert linked["instagram_business_account"]["username"] == "linked.ig"
    assert set(linked["instagram_business_account"]) == {"id", "username", "profile_picture_url"}
    assert set(bare) == {"id", "name", "access_token"}
    assert graph(
        sandbox, "GET", "/782", bare["access_token"], fields="instagram_business_account"
    ).json() == {"id": "782"}


def test_accounts_next_keeps_the_nested_fields(sandbox: SandboxControl) -> None:
    """paging.next of an expanded listing asks for the same nested fields, so every page is expanded."""
    (token,) = sandbox.mint(ERIN, "long")
    first = graph(sandbox, "GET", "/me/accounts", token, fields=LINKED_FIELDS).json()
    assert parse_qs(urlsplit(first["paging"]["next"]).query)["fields"] == [LINKED_FIELDS]
    after = first["paging"]["cursors"]["after"]
    second = graph(sandbox, "GET", "/me/accounts", token, fields=LINKED_FIELDS, after=after).json()
    usernames = [p["instagram_business_account"]["username"] for p in first["data"] + second["data"]]
    assert usernames == [f"erin.page{n:02d}" for n in range(1, 31)]


def test_accounts_nested_unknown_field_is_refused(sandbox: SandboxControl) -> None:
    """An unknown field inside the nested expansion is (#100) on /me/accounts as on the Page."""
    (token,) = sandbox.mint(ALICE, "long")
    error = graph(sandbox, "GET", "/me/accounts", token, fields="id,instagram_business_account{bogus}").json()
    assert error["error"]["code"] == 100 and "IGUser" in error["error"]["message"]


def test_consent_page_names_pages_in_the_singular_and_marks_declined_permissions(
    sandbox: SandboxControl,
) -> None:
    """The account picker says "1 Page" (not "1 Pages") and carries each account's declined permissions, which
    the page's script leaves unticked (Frank declined instagram_manage_messages)."""
    page = sandbox.http.get(f"/{V}/dialog/oauth", params=dialog_params(sandbox)).text
    assert "(1 Page)" in page and "(1 Pages)" not in page
    assert 'data-declined="instagram_manage_messages"' in page
    assert "box.checked = !declined.includes(box.value)" in page


# ---- PKCE ------------------------------------------------------------------------------------------

VERIFIER = "sandbox-pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyz"


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def scripted_code(sandbox: SandboxControl, **extra: str) -> str:
    """Approve the dialog (scripted, Alice) with `extra` parameters; return the code it redirects with."""
    sandbox.dialog("approve", ALICE)
    response = sandbox.http.get(f"/{V}/dialog/oauth", params=dialog_params(sandbox, **extra))
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]


def redeem(sandbox: SandboxControl, code: str, **extra: str) -> httpx.Response:
    params = {"client_id": sandbox.app_id, "client_secret": sandbox.app_secret, "redirect_uri": REDIRECT}
    return sandbox.http.get(f"/{V}/oauth/access_token", params={**params, "code": code, **extra})


def with_challenge(verifier: str = VERIFIER) -> dict[str, str]:
    return {"code_challenge": s256(verifier), "code_challenge_method": "S256"}


def test_code_with_a_challenge_needs_its_verifier(sandbox: SandboxControl) -> None:
    """A code issued with an S256 challenge is exchanged only with the verifier whose S256 it is."""
    code = scripted_code(sandbox, **with_challenge())
    response = redeem(sandbox, code, code_verifier=VERIFIER)
    assert response.status_code == 200 and response.json()["access_token"].startswith("EAAS")


@pytest.mark.parametrize(
    "verifier",
    [None, "", "another-verifier-0123456789-abcdefghijklmnopqrstuvwxyz", "short", s256(VERIFIER)],
    ids=["missing", "empty", "another", "malformed", "the-challenge-itself"],
)
def test_missing_or_wrong_verifier_is_meta_error_100(sandbox: SandboxControl, verifier: str | None) -> None:
    """Without the matching verifier the exchange is Meta's OAuthException 100 with a readable message, and
    the code stays redeemable by the right verifier."""
    code = scripted_code(sandbox, **with_challenge())
    response = redeem(sandbox, code, **({} if verifier is None else {"code_verifier": verifier}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("OAuthException", 100)
    assert "code_verifier" in error["message"] and "fbtrace_id" in error
    assert sandbox.state()["code_exchanges"] == {}
    assert redeem(sandbox, code, code_verifier=VERIFIER).status_code == 200


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"code_challenge": s256(VERIFIER), "code_challenge_method": "plain"}, "must be S256"),
        ({"code_challenge": s256(VERIFIER)}, "must be S256"),  # no method means plain
        ({"code_challenge": "too-short", "code_challenge_method": "S256"}, "43 characters"),
        ({"code_challenge_method": "S256"}, "without a code_challenge"),
    ],
    ids=["plain", "no-method", "malformed", "method-alone"],
)
def test_dialog_refuses_anything_but_an_s256_challenge(
    sandbox: SandboxControl, extra: dict[str, str], needle: str
) -> None:
    """plain (or no method), a malformed challenge, or a method without a challenge is an HTML 400, no code."""
    sandbox.dialog("approve", ALICE)
    response = sandbox.http.get(f"/{V}/dialog/oauth", params=dialog_params(sandbox, **extra))
    assert response.status_code == 400 and needle in response.text
    assert "location" not in response.headers


def test_code_without_a_challenge_works_without_a_verifier_by_default(sandbox: SandboxControl) -> None:
    """PKCE is optional by default: a code issued without a challenge is redeemed without a verifier."""
    assert sandbox.state()["config"]["require_pkce"] is False
    assert redeem(sandbox, scripted_code(sandbox)).status_code == 200


def test_require_pkce_refuses_a_dialog_without_a_challenge(sandbox: SandboxControl) -> None:
    """With require_pkce on, the dialog refuses a request without a code_challenge and accepts one with it."""
    assert sandbox.configure(require_pkce=True)["require_pkce"] is True
    sandbox.dialog("approve", ALICE)
    refused = sandbox.http.get(f"/{V}/dialog/oauth", params=dialog_params(sandbox))
    assert refused.status_code == 400 and "requires PKCE" in refused.text
    assert "location" not in refused.headers
    code = scripted_code(sandbox, **with_challenge())
    assert redeem(sandbox, code, code_verifier=VERIFIER).status_code == 200


def test_require_pkce_refuses_an_older_code_without_a_challenge(sandbox: SandboxControl) -> None:
    """A code issued without a challenge before require_pkce was switched on is refused at the exchange."""
    code = scripted_code(sandbox)
    sandbox.configure(require_pkce=True)
    response = redeem(sandbox, code)
    assert response.status_code == 400 and response.json()["error"]["code"] == 100
    assert "requires PKCE" in response.json()["error"]["message"]


def test_reset_switches_require_pkce_off(sandbox: SandboxControl) -> None:
    """require_pkce is a run-time knob: a reset puts it back to the default (off)."""
    sandbox.configure(require_pkce=True)
    sandbox.reset()
    assert sandbox.state()["config"]["require_pkce"] is False


def test_consent_form_carries_the_challenge(sandbox: SandboxControl) -> None:
    """The interactive consent page posts the challenge back, so its code needs the verifier too."""
    page = sandbox.http.get(f"/{V}/dialog/oauth", params=dialog_params(sandbox, **with_challenge()))
    assert f'name="code_challenge" value="{s256(VERIFIER)}"' in page.text
    assert 'name="code_challenge_method" value="S256"' in page.text
    form = {**dialog_params(sandbox, **with_challenge()), "user_id": ALICE, "action": "approve"}
    response = sandbox.http.post(
        f"/{V}/dialog/oauth/confirm",
        content=urlencode([*form.items(), ("granted", "instagram_basic")]),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    code = parse_qs(urlsplit(response.headers["location"]).query)["code"][0]
    assert redeem(sandbox, code).status_code == 400
    assert redeem(sandbox, code, code_verifier=VERIFIER).status_code == 200
