"""GraphClient against the sandbox over real HTTP: the connect flow, paging and every error class."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from instagram_dm.graph import (
    WEBHOOK_FIELDS,
    GraphClient,
    MetaInvalidRequestError,
    MetaOtherError,
    MetaPermissionError,
    MetaRateLimitedError,
    MetaTokenInvalidError,
    MetaTransientError,
    RetryPolicy,
)
from sandbox.fixtures import ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GRACE
from tests.fixtures.sandbox import SandboxControl

REDIRECT = "https://crm.test/functions/v1/instagram-oauth-callback"
SCOPES = ["instagram_basic", "instagram_manage_messages", "pages_manage_metadata", "pages_show_list"]


async def connect(sandbox: SandboxControl, client: GraphClient, user_id: str, **dialog: object) -> str:
    """Drive the scripted dialog and both exchanges; return a long-lived user token."""
    sandbox.dialog("approve", user_id, **dialog)  # type: ignore[arg-type]
    async with httpx.AsyncClient() as browser:
        response = await browser.get(client.dialog_url(redirect_uri=REDIRECT, state="st1", scopes=SCOPES))
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["st1"]
    short = await client.exchange_code(code=query["code"][0], redirect_uri=REDIRECT)
    return (await client.exchange_long_lived(short.token)).token


async def test_full_connect_flow(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """Dialog -> code -> short -> long -> Pages -> IG account -> subscribe, all with Meta's semantics."""
    long_token = await connect(sandbox, graph_client, ALICE)
    info = await graph_client.debug_token(long_token)
    assert info.is_valid and info.type == "USER" and info.user_id == ALICE
    assert info.expires_at is not None and info.data_access_expires_at is not None
    assert set(SCOPES) == set(info.scopes)
    pages = await graph_client.list_pages(long_token)
    assert [p.id for p in pages] == ["101000000000101"]
    page = pages[0]
    assert "MESSAGING" in page.tasks and page.category == "Insurance Agent"
    assert await graph_client.page_token(page.id, long_token) == page.access_token
    page_info = await graph_client.debug_token(page.access_token)
    assert page_info.type == "PAGE" and page_info.expires_at is None  # from a long-lived token: never
    account = await graph_client.page_instagram_account(page.id, page.access_token)
    assert account is not None and account.id == "17841400000000101" and account.username == "alice.recruits"
    await graph_client.subscribe_page(page.id, page.access_token)
    state = sandbox.state()
    assert state["subscriptions"] == {page.id: list(WEBHOOK_FIELDS)}
    assert state["exchanges"] == {ALICE: 1}
    await graph_client.unsubscribe_page(page.id, page.access_token)
    assert sandbox.state()["subscriptions"] == {}
    user = await graph_client.instagram_user("6100000000000001", page.access_token)
    assert (user.username, user.name) == ("prospect.one", "Prospect One") and user.profile_pic


async def test_long_lived_exchange_gives_new_strings(
    sandbox: SandboxControl, graph_client: GraphClient
) -> None:
    """Each exchange returns a new token string, ~60 days, counted per user."""
    long_token = await connect(sandbox, graph_client, BOB)
    again = await graph_client.exchange_long_lived(long_token)
    assert again.token != long_token
    assert again.expires_in is not None and 59 * 86400 < again.expires_in <= 60 * 86400
    assert sandbox.state()["exchanges"] == {BOB: 2}


async def test_reexchange_keep_expiry_mode(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """With keep_expiry, re-exchanging a long-lived token keeps its expiry; extend resets it."""
    (token,) = sandbox.mint(ALICE, "long")
    sandbox.advance_clock(10 * 86400)
    sandbox.configure(long_lived_reexchange="keep_expiry")
    kept = await graph_client.exchange_long_lived(token)
    assert kept.expires_in is not None and kept.expires_in <= 50 * 86400
    sandbox.configure(long_lived_reexchange="extend")
    extended = await graph_client.exchange_long_lived(token)
    assert extended.expires_in == 60 * 86400


async def test_long_lived_lifetime_is_configurable(
    sandbox: SandboxControl, graph_client: GraphClient
) -> None:
    """The long_lived_seconds knob sets how long exchanged and minted long-lived tokens last; bad values are refused."""
    sandbox.configure(long_lived_seconds=5 * 86400)
    (token,) = sandbox.mint(ALICE, "long")
    exchanged = await graph_client.exchange_long_lived(token)
    assert exchanged.expires_in == 5 * 86400
    info = await graph_client.debug_token(token)
    assert info.expires_at is not None
    response = sandbox.http.post("/_sandbox/config", json={"long_lived_seconds": 10})
    assert response.status_code == 400


async def test_bob_has_two_linked_pages(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """A user with two Pages sees both, each with its own Instagram account."""
    (token,) = sandbox.mint(BOB, "long")
    pages = await graph_client.list_pages(token)
    usernames = []
    for page in pages:
        account = await graph_client.page_instagram_account(page.id, page.access_token)
        assert account is not None
        usernames.append(account.username)
    assert usernames == ["bob.life", "bob.health"]


async def test_page_without_instagram(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """Carol's Page has no linked Instagram account: None."""
    (token,) = sandbox.mint(CAROL, "long")
    (page,) = await graph_client.list_pages(token)
    assert await graph_client.page_instagram_account(page.id, page.access_token) is None


async def test_user_without_pages(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """Dave manages no Pages: an empty list."""
    (token,) = sandbox.mint(DAVE, "long")
    assert await graph_client.list_pages(token) == []


async def test_paging_thirty_pages(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """30 Pages arrive over two requests (25 + 5) with real cursors."""
    (token,) = sandbox.mint(ERIN, "long")
    pages = await graph_client.list_pages(token)
    assert len(pages) == 30 and len({p.id for p in pages}) == 30
    assert sandbox.state()["calls"]["GET /me/accounts"] == 2


async def test_paging_with_small_pages_and_an_empty_middle(
    sandbox: SandboxControl, graph_client: GraphClient
) -> None:
    """Grace's hidden Pages give a full, an empty and a short page; the client reads all 35 visible."""
    (token,) = sandbox.mint(GRACE, "long")
    pages = await graph_client.list_pages(token)
    assert len(pages) == 35
    assert sandbox.state()["calls"]["GET /me/accounts"] == 3
    sandbox.configure(page_size=4)
    (erin,) = sandbox.mint(ERIN, "long")
    assert len(await graph_client.list_pages(erin)) == 30
    assert sandbox.state()["calls"]["GET /me/accounts"] == 3 + 8


async def test_declined_scope_blocks_profile_lookup(
    sandbox: SandboxControl, graph_client: GraphClient
) -> None:
    """Frank declined instagram_manage_messages: debug_token lacks it and IGSID lookups are refused."""
    long_token = await connect(sandbox, graph_client, FRANK)
    info = await graph_client.debug_token(long_token)
    assert "instagram_manage_messages" not in info.scopes
    (page,) = await graph_client.list_pages(long_token)
    with pytest.raises(MetaPermissionError) as exc:
        await graph_client.instagram_user("6100000000000001", page.access_token)
    assert exc.value.meta_code == 200


async def test_declined_in_dialog_blocks_page_listing(
    sandbox: SandboxControl, graph_client: GraphClient
) -> None:
    """Declining pages_show_list in the dialog makes /me/accounts a permission error."""
    token = await connect(sandbox, graph_client, ALICE, declined_scopes=["pages_show_list"])
    with pytest.raises(MetaPermissionError):
        await graph_client.list_pages(token)


async def test_expired_token_is_190_463(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """After the clock passes expiry, calls fail with 190/463 and debug_token says invalid."""
    (token,) = sandbox.mint(ALICE, "short")
    sandbox.advance_clock(3601)
    with pytest.raises(MetaTokenInvalidError) as exc:
        await graph_client.list_pages(token)
    assert (exc.value.meta_code, exc.value.meta_subcode, exc.value.meta_http_status) == (190, 463, 400)
    assert token not in str(exc.value)
    with pytest.raises(MetaTokenInvalidError):
        await graph_client.exchange_long_lived(token)
    info = await graph_client.debug_token(token)
    assert not info.is_valid and (info.error_code, info.error_subcode) == (190, 463)


async def test_revoked_token_is_190_460(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """A revoked Page token answers 190/460 and debug_token reports it."""
    (token,) = sandbox.mint(ALICE, "page")
    sandbox.revoke(token)
    with pytest.raises(MetaTokenInvalidError) as exc:
        await graph_client.page_instagram_account("101000000000101", token)
    assert exc.value.meta_subcode == 460
    info = await graph_client.debug_token(token)
    assert (info.is_valid, info.error_subcode) == (False, 460)


async def test_unknown_token_and_unknown_debug_input(graph_client: GraphClient) -> None:
    """A garbage token is 190 on calls and an invalid TokenInfo from debug_token."""
    with pytest.raises(MetaTokenInvalidError):
        await graph_client.list_pages("EAASnotatoken")
    info = await graph_client.debug_token("EAASnotatoken")
    assert not info.is_valid and info.error_code == 190 and info.error_subcode is None


async def test_short_lived_page_token_expires_with_user(
    sandbox: SandboxControl, graph_client: GraphClient
) -> None:
    """A Page token seen through a short-lived user token expires like it."""
    (token,) = sandbox.mint(ALICE, "short")
    (page,) = await graph_client.list_pages(token)
    info = await graph_client.debug_token(page.access_token)
    assert info.expires_at is not None


async def test_code_is_single_use_and_short_lived(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """A used code is 100/36009, an expired one 100/36007, a wrong redirect_uri 100/36008."""
    sandbox.dialog("approve", ALICE)
    async with httpx.AsyncClient() as browser:
        codes = []
        for _ in range(3):
            response = await browser.get(
                graph_client.dialog_url(redirect_uri=REDIRECT, state="s", scopes=SCOPES)
            )
            codes.append(parse_qs(urlsplit(response.headers["location"]).query)["code"][0])
    await graph_client.exchange_code(code=codes[0], redirect_uri=REDIRECT)
    with pytest.raises(MetaInvalidRequestError) as used:
        await graph_client.exchange_code(code=codes[0], redirect_uri=REDIRECT)
    assert used.value.meta_subcode == 36009
    with pytest.raises(MetaInvalidRequestError) as mismatch:
        await graph_client.exchange_code(code=codes[1], redirect_uri=REDIRECT + "/")
    assert mismatch.value.meta_subcode == 36008
    sandbox.advance_clock(601)
    with pytest.raises(MetaInvalidRequestError) as expired:
        await graph_client.exchange_code(code=codes[2], redirect_uri=REDIRECT)
    assert expired.value.meta_subcode == 36007
    for code in codes:
        assert code not in str(used.value) + str(mismatch.value) + str(expired.value)


async def test_wrong_client_credentials(sandbox: SandboxControl) -> None:
    """A wrong app id is code 101 (other); a wrong secret is Meta's code 1 and a wrong proof is 100."""
    async with httpx.AsyncClient() as http:
        bad_id = GraphClient(
            http,
            app_id="nope",
            app_secret=sandbox.app_secret,
            graph_base_url=sandbox.url,
            retry=RetryPolicy.disabled(),
        )
        bad_secret = GraphClient(
            http,
            app_id=sandbox.app_id,
            app_secret="wrong",
            graph_base_url=sandbox.url,
            retry=RetryPolicy.disabled(),
        )
        (token,) = sandbox.mint(ALICE, "long")
        with pytest.raises(MetaOtherError) as other:
            await bad_id.exchange_long_lived(token)
        assert other.value.meta_code == 101
        with pytest.raises(MetaTransientError) as transient:
            await bad_secret.exchange_long_lived(token)
        assert transient.value.meta_code == 1
        with pytest.raises(MetaInvalidRequestError, match="appsecret_proof"):
            await bad_secret.list_pages(token)
        with pytest.raises(MetaTokenInvalidError, match="signature"):
            await bad_secret.debug_token(token)


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        ({"code": 190, "subcode": 463}, MetaTokenInvalidError),
        ({"code": 102}, MetaTokenInvalidError),
        ({"code": 4, "http_status": 403}, MetaRateLimitedError),
        ({"code": 17}, MetaRateLimitedError),
        ({"code": 32}, MetaRateLimitedError),
        ({"code": 613, "subcode": 2534040}, MetaRateLimitedError),
        ({"code": 80006}, MetaRateLimitedError),
        ({"code": 10}, MetaPermissionError),
        ({"code": 200}, MetaPermissionError),
        ({"code": 1, "http_status": 500}, MetaTransientError),
        ({"code": 2, "http_status": 503}, MetaTransientError),
        ({"http_status": 502, "body": "<html><body>502 Bad Gateway</body></html>"}, MetaTransientError),
        ({"code": 100}, MetaInvalidRequestError),
        ({"code": 368}, MetaOtherError),
        ({"http_status": 400, "body": "<html>odd</html>"}, MetaOtherError),
    ],
)
async def test_each_error_class_from_a_sandbox_envelope(
    sandbox: SandboxControl, graph_client: GraphClient, fault: dict[str, object], cls: type[Exception]
) -> None:
    """Injected envelopes (and HTML bodies) from the sandbox map to the right class with their codes."""
    (token,) = sandbox.mint(ALICE, "long")
    sandbox.fault(r"/me/accounts$", count=1, **fault)
    with pytest.raises(cls) as exc:
        await graph_client.list_pages(token)
    assert getattr(exc.value, "meta_code", None) == fault.get("code")
    assert getattr(exc.value, "meta_subcode", None) == fault.get("subcode")
    assert getattr(exc.value, "fbtrace_id", None) is not None or "body" in fault
    assert len(await graph_client.list_pages(token)) == 1  # the fault was used up


async def test_rate_limit_wait_from_usage_header(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """A 613 carrying X-Business-Use-Case-Usage gives retry_after in seconds."""
    (token,) = sandbox.mint(ALICE, "page")
    sandbox.fault(r"/101000000000101$", code=613, subcode=2534040, regain_minutes=4, buc_id="101000000000101")
    with pytest.raises(MetaRateLimitedError) as exc:
        await graph_client.page_instagram_account("101000000000101", token)
    assert exc.value.retry_after == 240.0


async def test_retries_against_the_sandbox(sandbox: SandboxControl) -> None:
    """Two injected 503s are retried into a success; a 190 is not retried."""
    (token,) = sandbox.mint(ALICE, "long")
    async with httpx.AsyncClient() as http:
        client = GraphClient(
            http,
            app_id=sandbox.app_id,
            app_secret=sandbox.app_secret,
            graph_base_url=sandbox.url,
            retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.005),
        )
        sandbox.fault("/debug_token", code=2, http_status=503, count=2)
        assert (await client.debug_token(token)).is_valid
        assert client.calls == 3
        sandbox.fault("/debug_token", code=190, count=5)
        with pytest.raises(MetaTokenInvalidError):
            await client.debug_token(token)
        assert client.calls == 4


async def test_timeout_becomes_transient(sandbox: SandboxControl) -> None:
    """A hanging sandbox call turns into MetaTransientError at the client's timeout."""
    (token,) = sandbox.mint(ALICE, "long")
    sandbox.fault("/me/accounts", timeout_seconds=1, count=1)
    async with httpx.AsyncClient(timeout=0.3) as http:
        client = GraphClient(
            http,
            app_id=sandbox.app_id,
            app_secret=sandbox.app_secret,
            graph_base_url=sandbox.url,
            retry=RetryPolicy.disabled(),
        )
        with pytest.raises(MetaTransientError, match="in time"):
            await client.list_pages(token)


async def test_connection_refused_is_transient() -> None:
    """Nothing listening is a transient error, without the token in it."""
    async with httpx.AsyncClient() as http:
        client = GraphClient(
            http,
            app_id="a",
            app_secret="b",
            graph_base_url="http://127.0.0.1:9",
            retry=RetryPolicy.disabled(),
        )
        with pytest.raises(MetaTransientError) as exc:
            await client.list_pages("EAASsecret-token-value")
    assert "EAASsecret" not in str(exc.value)


async def test_page_token_for_unmanaged_page(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """Asking for a Page the user does not manage is Meta's 100/33."""
    (token,) = sandbox.mint(ALICE, "long")
    with pytest.raises(MetaInvalidRequestError) as exc:
        await graph_client.page_token("101000000000201", token)
    assert exc.value.meta_subcode == 33


async def test_subscribe_needs_a_page_token(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """subscribed_apps with a user token is a (#210) permission error; bad fields are 100."""
    (user_token,) = sandbox.mint(ALICE, "long")
    with pytest.raises(MetaPermissionError) as exc:
        await graph_client.subscribe_page("101000000000101", user_token)
    assert exc.value.meta_code == 210
    (page_token,) = sandbox.mint(ALICE, "page")
    with pytest.raises(MetaInvalidRequestError, match="subscribed_fields"):
        await graph_client.subscribe_page("101000000000101", page_token, ["messaging_seen"])
    assert sandbox.state()["subscriptions"] == {}


async def test_data_access_expiry_is_reported(sandbox: SandboxControl, graph_client: GraphClient) -> None:
    """A user's data_access_expires_at set through the control API shows in debug_token."""
    sandbox.control("PATCH", f"users/{ALICE}", {"data_access_expires_at": "2027-01-01T00:00:00+00:00"})
    (token,) = sandbox.mint(ALICE, "page")
    info = await graph_client.debug_token(token)
    assert info.data_access_expires_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert json.dumps(sandbox.state())  # state stays JSON
