"""The sandbox's Send API (sandbox/send.py): validation, the 24-hour window, usage headers, echoes,
faults after delivery and the per-account rate limit, over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest

from sandbox.fixtures import ALICE, BOB, FRANK
from sandbox.send import usage_header, window_failure
from sandbox.webhooks import igsid, mid, sign
from tests.fixtures.receiver import Receiver
from tests.fixtures.sandbox import SandboxControl

V = "v25.0"
ALICE_PAGE = "101000000000101"
ALICE_IG = "17841400000000101"
BOB_IG = "17841400000000201"
PERSON = igsid("sandbox", 1)
HOUR = 3600
DAY = 24 * HOUR


@pytest.fixture
def token(sandbox: SandboxControl, receiver: Receiver) -> str:
    """Alice's Page token; echoes go to the test receiver; person 1 wrote to Alice's account just now."""
    sandbox.control("POST", "people", {"igsid": PERSON, "last_message_at": "now"})
    return sandbox.mint(ALICE, "page")[0]


def proof(sandbox: SandboxControl, token: str) -> str:
    return hmac.new(sandbox.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def post(
    sandbox: SandboxControl,
    token: str,
    message: dict[str, Any] | None = None,
    *,
    recipient: str = PERSON,
    node: str = ALICE_PAGE,
    timeout: float | None = None,
    **extra: Any,
) -> httpx.Response:
    """A JSON-body send, the token and its proof in the query string."""
    body: dict[str, Any] = {"recipient": {"id": recipient}, **extra}
    body["message"] = {"text": "hello from the CRM"} if message is None else message
    params = {"access_token": token, "appsecret_proof": proof(sandbox, token)}
    return sandbox.http.post(
        f"/{V}/{node}/messages", params=params, json=body, timeout=timeout or sandbox.http.timeout
    )


def error(response: httpx.Response) -> tuple[int, int, int | None]:
    body = response.json()["error"]
    return response.status_code, body["code"], body.get("error_subcode")


def sent(sandbox: SandboxControl, **filters: str) -> list[dict[str, Any]]:
    return sandbox.http.get("/_sandbox/messages", params=filters).json()["messages"]  # type: ignore[no-any-return]


def wrote(sandbox: SandboxControl, ago_seconds: float, person: str = PERSON) -> None:
    """The person's last message to Alice's account was `ago_seconds` before sandbox-now."""
    sandbox.control("POST", "people", {"igsid": person, "last_message_at": "now"})
    sandbox.advance_clock(ago_seconds)


def echoes(receiver: Receiver) -> list[dict[str, Any]]:
    return [e for r in receiver.requests for e in r.events if e["message"].get("is_echo")]


# ---- success ---------------------------------------------------------------------------------------


def test_text_send_answers_recipient_and_a_new_mid(sandbox: SandboxControl, token: str) -> None:
    """A valid text send answers exactly {recipient_id, message_id}, the account's first send mid."""
    response = post(sandbox, token)
    assert (response.status_code, response.json()) == (
        200,
        {"recipient_id": PERSON, "message_id": mid(f"send:{ALICE_IG}", 1)},
    )


def test_success_carries_business_use_case_and_app_usage(sandbox: SandboxControl, token: str) -> None:
    """A send answers X-Business-Use-Case-Usage (messenger, keyed by the Page) and X-App-Usage."""
    response = post(sandbox, token)
    (usage,) = json.loads(response.headers["x-business-use-case-usage"])[ALICE_PAGE]
    app_usage = json.loads(response.headers["x-app-usage"])
    assert (set(usage), usage["type"], usage["estimated_time_to_regain_access"], set(app_usage)) == (
        {"type", "call_count", "total_cputime", "total_time", "estimated_time_to_regain_access"},
        "messenger",
        0,
        {"call_count", "total_cputime", "total_time"},
    )


def test_call_count_grows_with_the_sends_of_the_minute(sandbox: SandboxControl, token: str) -> None:
    """call_count is the minute's sends as a percentage of a minute at the full rate (2/s: 120)."""
    sandbox.configure(send_rate_per_second=2)
    sandbox.control("POST", "clock", {"set": "2026-12-01T10:00:00Z"})
    sandbox.control("POST", "people", {"igsid": PERSON, "last_message_at": "now"})
    counts = [
        json.loads(post(sandbox, token).headers["x-business-use-case-usage"])[ALICE_PAGE][0]["call_count"]
        for _ in range(2)
    ]
    assert counts == [1, 2]


def test_forced_usage_is_answered(sandbox: SandboxControl, token: str) -> None:
    """send_usage forces the header's values, e.g. call_count 95 and 5 minutes to regain access."""
    sandbox.configure(send_usage={"call_count": 95, "estimated_time_to_regain_access": 5})
    (usage,) = json.loads(post(sandbox, token).headers["x-business-use-case-usage"])[ALICE_PAGE]
    assert (usage["call_count"], usage["estimated_time_to_regain_access"]) == (95, 5)


def test_usage_header_shape() -> None:
    """usage_header names the Page once, with the messenger use case at the given percentage."""
    assert json.loads(usage_header("P", 40)) == {
        "P": [
            {
                "type": "messenger",
                "call_count": 40,
                "total_cputime": 20,
                "total_time": 20,
                "estimated_time_to_regain_access": 0,
            }
        ]
    }


def test_form_fields_with_the_token_in_the_body_are_accepted(sandbox: SandboxControl, token: str) -> None:
    """A form post (recipient and message as JSON text, access_token in the body) is a send."""
    form = {
        "recipient": json.dumps({"id": PERSON}),
        "message": json.dumps({"text": "form"}),
        "messaging_type": "RESPONSE",
        "access_token": token,
        "appsecret_proof": proof(sandbox, token),
    }
    response = sandbox.http.post(f"/{V}/{ALICE_PAGE}/messages", data=form)
    assert (response.status_code, sent(sandbox)[0]["messaging_type"]) == (200, "RESPONSE")


def test_token_in_the_json_body_is_accepted(sandbox: SandboxControl, token: str) -> None:
    """access_token and appsecret_proof may travel in the JSON body itself."""
    body = {
        "recipient": {"id": PERSON},
        "message": {"text": "json"},
        "access_token": token,
        "appsecret_proof": proof(sandbox, token),
    }
    assert sandbox.http.post(f"/{V}/{ALICE_PAGE}/messages", json=body).status_code == 200


def test_bearer_token_on_me_messages_sends_from_the_tokens_page(sandbox: SandboxControl, token: str) -> None:
    """/me/messages with Authorization: Bearer sends from the Page the token belongs to."""
    response = sandbox.http.post(
        f"/{V}/me/messages",
        params={"appsecret_proof": proof(sandbox, token)},
        json={"recipient": {"id": PERSON}, "message": {"text": "hi"}},
        headers={"authorization": f"Bearer {token}"},
    )
    assert (response.status_code, sent(sandbox)[0]["page_id"]) == (200, ALICE_PAGE)


def test_attachment_send_is_recorded(sandbox: SandboxControl, token: str) -> None:
    """An https image attachment is accepted and recorded with its type and URL and no text."""
    attachment = {"type": "image", "payload": {"url": "https://cdn.test/a.png"}}
    assert post(sandbox, token, {"attachment": attachment}).status_code == 200
    (row,) = sent(sandbox)
    assert (row["text"], row["attachments"]) == (None, [attachment])


def test_up_to_ten_images_in_attachments_are_accepted(sandbox: SandboxControl, token: str) -> None:
    """message.attachments[] with images is one send carrying all of them."""
    images = [{"type": "image", "payload": {"url": f"https://cdn.test/{n}.png"}} for n in range(10)]
    assert post(sandbox, token, {"attachments": images}).status_code == 200
    assert sent(sandbox)[0]["attachments"] == images


def test_text_of_exactly_1000_utf8_bytes_is_accepted(sandbox: SandboxControl, token: str) -> None:
    """The limit is 1000 UTF-8 bytes: 500 two-byte characters pass."""
    assert post(sandbox, token, {"text": "ä" * 500}).status_code == 200


def test_every_accepted_send_is_listed(sandbox: SandboxControl, token: str) -> None:
    """GET /_sandbox/messages lists each accepted send with Page, account, recipient, text, type, tag,
    mid and time; /_sandbox/state counts them."""
    answer = post(sandbox, token, {"text": "one"}, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT").json()
    (row,) = sent(sandbox, recipient_id=PERSON)
    assert {
        k: row[k] for k in ("page_id", "account_id", "recipient_id", "text", "messaging_type", "tag")
    } == {
        "page_id": ALICE_PAGE,
        "account_id": ALICE_IG,
        "recipient_id": PERSON,
        "text": "one",
        "messaging_type": "MESSAGE_TAG",
        "tag": "HUMAN_AGENT",
    }
    assert (
        row["mid"],
        abs(row["at"] - sandbox.state()["now"]) <= 2,
        sandbox.state()["messages"]["sent"],
    ) == (
        answer["message_id"],
        True,
        1,
    )


def test_calls_are_counted_per_endpoint(sandbox: SandboxControl, token: str) -> None:
    """Sends count as "POST /{id}/messages" in /_sandbox/state."""
    post(sandbox, token)
    post(sandbox, token)
    assert sandbox.state()["calls"]["POST /{id}/messages"] == 2


# ---- tokens and Pages ------------------------------------------------------------------------------


def test_unknown_token_is_190(sandbox: SandboxControl, token: str) -> None:
    """A token the sandbox never issued is 190 and nothing is recorded."""
    assert (error(post(sandbox, "EAASnot-a-token"))[1], sent(sandbox)) == (190, [])


def test_expired_token_is_190_463(sandbox: SandboxControl, token: str) -> None:
    """A Page token past its expiry is 190/463."""
    (short,) = sandbox.mint(ALICE, "page", expires_in=60)
    sandbox.advance_clock(120)
    assert error(post(sandbox, short))[1:] == (190, 463)


def test_revoked_token_is_190_with_its_subcode(sandbox: SandboxControl, token: str) -> None:
    """A revoked Page token is 190 with the revoke subcode (460: password changed)."""
    sandbox.revoke(token, 460)
    assert error(post(sandbox, token))[1:] == (190, 460)


def test_user_token_is_210(sandbox: SandboxControl, token: str) -> None:
    """A user token cannot send: #210, a Page token is required."""
    (user_token,) = sandbox.mint(ALICE, "long")
    assert error(post(sandbox, user_token))[1] == 210


def test_another_pages_token_is_a_200_permission_error(sandbox: SandboxControl, token: str) -> None:
    """Bob's Page token on Alice's Page is the #200 permission error."""
    (bob_token,) = sandbox.mint(BOB, "page")
    assert error(post(sandbox, bob_token))[1:] == (200, None)


def test_token_without_instagram_manage_messages_is_200(sandbox: SandboxControl, token: str) -> None:
    """Frank declined instagram_manage_messages: his Page token gets #200."""
    (frank_token,) = sandbox.mint(FRANK, "page")
    assert error(post(sandbox, frank_token, node="101000000000601"))[1] == 200


# ---- the body --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "extra"),
    [
        pytest.param({"text": "ä" * 500 + "a"}, {}, id="text-1001-bytes"),
        pytest.param({}, {}, id="neither-text-nor-attachment"),
        pytest.param({"text": ""}, {}, id="empty-text"),
        pytest.param(
            {"attachment": {"type": "image", "payload": {"url": "http://cdn.test/a.png"}}}, {}, id="http-url"
        ),
        pytest.param({"attachment": {"type": "image", "payload": {}}}, {}, id="no-url"),
        pytest.param(
            {"attachment": {"type": "sticker", "payload": {"url": "https://cdn.test/a"}}}, {}, id="bad-type"
        ),
        pytest.param(
            {"attachments": [{"type": "video", "payload": {"url": "https://cdn.test/v.mp4"}}]},
            {},
            id="video-in-attachments",
        ),
        pytest.param(
            {"attachments": [{"type": "image", "payload": {"url": "https://cdn.test/i.png"}}] * 11},
            {},
            id="eleven-images",
        ),
        pytest.param(
            {"text": "both", "attachment": {"type": "image", "payload": {"url": "https://cdn.test/a.png"}}},
            {},
            id="text-and-attachment",
        ),
        pytest.param(None, {"tag": "HUMAN_AGENT"}, id="tag-without-message-tag"),
        pytest.param(None, {"messaging_type": "RESPONSE", "tag": "HUMAN_AGENT"}, id="tag-with-response"),
        pytest.param(None, {"messaging_type": "MESSAGE_TAG", "tag": "CUSTOMER_FEEDBACK"}, id="unknown-tag"),
        pytest.param(None, {"messaging_type": "MESSAGE_TAG"}, id="message-tag-without-tag"),
        pytest.param(None, {"messaging_type": "MESSAGE_TAG", "tag": "ACCOUNT_UPDATE"}, id="account-update"),
        pytest.param(
            None, {"messaging_type": "MESSAGE_TAG", "tag": "CONFIRMED_EVENT_UPDATE"}, id="confirmed-event"
        ),
        pytest.param(
            None, {"messaging_type": "MESSAGE_TAG", "tag": "POST_PURCHASE_UPDATE"}, id="post-purchase"
        ),
        pytest.param(None, {"messaging_type": "PROMOTION"}, id="unknown-messaging-type"),
    ],
)
def test_invalid_bodies_are_100_and_not_recorded(
    sandbox: SandboxControl, token: str, message: dict[str, Any] | None, extra: dict[str, Any]
) -> None:
    """Each body Meta refuses is HTTP 400 #100 without a subcode, and nothing is recorded."""
    assert (error(post(sandbox, token, message, **extra)), sent(sandbox)) == ((400, 100, None), [])


def test_missing_recipient_is_100(sandbox: SandboxControl, token: str) -> None:
    """A send without recipient is #100."""
    response = sandbox.http.post(
        f"/{V}/{ALICE_PAGE}/messages",
        params={"access_token": token, "appsecret_proof": proof(sandbox, token)},
        json={"message": {"text": "to nobody"}},
    )
    assert error(response)[1:] == (100, None)


def test_body_that_is_not_json_is_100(sandbox: SandboxControl, token: str) -> None:
    """A JSON content type with broken JSON is #100."""
    response = sandbox.http.post(
        f"/{V}/{ALICE_PAGE}/messages",
        params={"access_token": token, "appsecret_proof": proof(sandbox, token)},
        content=b'{"recipient":',
        headers={"content-type": "application/json"},
    )
    assert error(response)[1] == 100


def test_unknown_recipient_is_100_2534014(sandbox: SandboxControl, token: str) -> None:
    """A person who never wrote to the account is Meta's 100/2534014 "No matching user found"."""
    assert error(post(sandbox, token, recipient=igsid("sandbox", 99)))[1:] == (100, 2534014)


def test_person_known_to_another_account_is_unknown_here(sandbox: SandboxControl, token: str) -> None:
    """The window is per account: a person who wrote to Bob's account is unknown to Alice's."""
    other = igsid("sandbox", 5)
    sandbox.control("POST", "people", {"igsid": other, "account_id": BOB_IG, "last_message_at": "now"})
    assert error(post(sandbox, token, recipient=other))[1:] == (100, 2534014)


# ---- the window ------------------------------------------------------------------------------------


def test_send_23_hours_after_the_last_message_is_accepted(sandbox: SandboxControl, token: str) -> None:
    """Inside 24 hours of the person's last message an untagged send goes out."""
    wrote(sandbox, 23 * HOUR)
    assert post(sandbox, token).status_code == 200


def test_send_after_24_hours_is_10_2534022(sandbox: SandboxControl, token: str) -> None:
    """24 hours after the last message the window is closed: 10/2534022, nothing recorded."""
    wrote(sandbox, DAY)
    assert (error(post(sandbox, token, messaging_type="RESPONSE"))[1:], sent(sandbox)) == ((10, 2534022), [])


def test_human_agent_tag_sends_within_7_days(sandbox: SandboxControl, token: str) -> None:
    """Three days after the last message MESSAGE_TAG + HUMAN_AGENT is accepted."""
    wrote(sandbox, 3 * DAY)
    assert post(sandbox, token, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT").status_code == 200


def test_human_agent_tag_without_approval_is_10_2534022(sandbox: SandboxControl, token: str) -> None:
    """With human_agent_approved off, the tag does not extend the window: 10/2534022."""
    sandbox.configure(human_agent_approved=False)
    wrote(sandbox, 3 * DAY)
    assert error(post(sandbox, token, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT"))[1:] == (10, 2534022)


def test_human_agent_tag_after_7_days_is_10_2534022(sandbox: SandboxControl, token: str) -> None:
    """Seven days after the last message even HUMAN_AGENT is refused with 10/2534022."""
    wrote(sandbox, 7 * DAY)
    assert error(post(sandbox, token, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT"))[1:] == (10, 2534022)


def test_window_rule_boundaries() -> None:
    """window_failure: open before 24 h, tagged before 7 d when approved, closed at each boundary."""
    verdicts = [
        window_failure(0, now, tag=tag, human_agent_approved=approved) is None
        for now, tag, approved in [
            (DAY - 1, None, True),
            (DAY, None, True),
            (DAY, "HUMAN_AGENT", True),
            (DAY, "HUMAN_AGENT", False),
            (7 * DAY - 1, "HUMAN_AGENT", True),
            (7 * DAY, "HUMAN_AGENT", True),
        ]
    ]
    assert verdicts == [True, False, True, False, True, False]


def test_a_webhook_dm_opens_the_window(sandbox: SandboxControl, receiver: Receiver) -> None:
    """A DM sent through /_sandbox/webhooks/send makes its sender known and opens 24 hours."""
    (page_token,) = sandbox.mint(ALICE, "page")
    person = igsid("sandbox", 3)
    sandbox.control("POST", "webhooks/send", {"person": 3, "text": "hi"})
    first = post(sandbox, page_token, recipient=person).status_code
    sandbox.advance_clock(DAY)
    assert (first, error(post(sandbox, page_token, recipient=person))[1:]) == (200, (10, 2534022))


def test_last_message_at_takes_iso_and_null_forgets(sandbox: SandboxControl, token: str) -> None:
    """last_message_at accepts ISO 8601 (shown per account on the person); null makes the person
    unknown again."""
    person = sandbox.control("POST", "people", {"igsid": PERSON, "last_message_at": "2026-12-01T10:00:00Z"})
    sandbox.control("POST", "people", {"igsid": PERSON, "last_message_at": None})
    assert (person["last_message_at"], error(post(sandbox, token))[1:]) == (
        {ALICE_IG: 1796119200},
        (100, 2534014),
    )


# ---- echoes ----------------------------------------------------------------------------------------


def test_echo_has_the_same_mid_and_a_valid_signature(
    sandbox: SandboxControl, token: str, receiver: Receiver
) -> None:
    """After a send, the webhook gets the echo: signed with the app secret, from the account to the
    person, is_echo, the answered mid and the text."""
    answer = post(sandbox, token, {"text": "Grüße 😀"}).json()
    (delivery,) = receiver.wait_for(1)
    (event,) = delivery.events
    assert delivery.headers["x-hub-signature-256"] == sign(delivery.body, sandbox.app_secret)
    assert (event["sender"]["id"], event["recipient"]["id"], event["message"]) == (
        ALICE_IG,
        PERSON,
        {"mid": answer["message_id"], "text": "Grüße 😀", "is_echo": True},
    )


def test_echo_of_an_attachment_carries_it(sandbox: SandboxControl, token: str, receiver: Receiver) -> None:
    """An attachment send is echoed with attachments[{type, payload{url}}]."""
    attachment = {"type": "file", "payload": {"url": "https://cdn.test/terms.pdf"}}
    post(sandbox, token, {"attachment": attachment})
    (delivery,) = receiver.wait_for(1)
    assert delivery.events[0]["message"]["attachments"] == [attachment]


def test_delivered_echo_is_marked_on_the_record(
    sandbox: SandboxControl, token: str, receiver: Receiver
) -> None:
    """Once the echo is POSTed, the sent message shows echo "delivered" with the webhook's status."""
    post(sandbox, token)
    receiver.wait_for(1)
    deadline = time.monotonic() + 5
    while sent(sandbox)[0]["echo"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (sent(sandbox)[0]["echo"], sent(sandbox)[0]["echo_http_status"]) == ("delivered", 200)


def test_long_echo_delay_holds_the_echo(sandbox: SandboxControl, token: str, receiver: Receiver) -> None:
    """With echo_delay_ms 60000 no echo arrives within half a second and the record is pending."""
    sandbox.configure(echo_delay_ms=60_000)
    post(sandbox, token)
    time.sleep(0.5)
    assert (receiver.requests, sent(sandbox)[0]["echo"]) == ([], "pending")


@pytest.mark.parametrize(("mode", "recorded"), [("off", "off"), ("drop", "dropped")])
def test_echoes_off_or_dropped_never_arrive(
    sandbox: SandboxControl, token: str, receiver: Receiver, mode: str, recorded: str
) -> None:
    """echoes "off" and "drop" send no echo; the record says which."""
    sandbox.configure(echoes=mode, echo_delay_ms=0)
    post(sandbox, token)
    time.sleep(0.3)
    assert (receiver.requests, sent(sandbox)[0]["echo"]) == ([], recorded)


def test_reset_cancels_pending_echoes(sandbox: SandboxControl, token: str, receiver: Receiver) -> None:
    """An echo still waiting at a reset is never delivered."""
    sandbox.configure(echo_delay_ms=300)
    post(sandbox, token)
    sandbox.reset()
    time.sleep(0.6)
    assert receiver.requests == []


@pytest.mark.parametrize("kind", ["read", "reaction"])
def test_person_reads_or_reacts_to_a_sent_message(
    sandbox: SandboxControl, token: str, receiver: Receiver, kind: str
) -> None:
    """webhooks/send with target_mid = a sent mid comes from its recipient to its account."""
    sandbox.configure(echoes="off")
    message_id = post(sandbox, token).json()["message_id"]
    sandbox.control("POST", "webhooks/send", {"kind": kind, "target_mid": message_id})
    (event,) = receiver.wait_for(1)[0].events
    assert (event["sender"]["id"], event["recipient"]["id"], event[kind]["mid"]) == (
        PERSON,
        ALICE_IG,
        message_id,
    )


# ---- faults ----------------------------------------------------------------------------------------


def test_error_after_delivery_records_once(sandbox: SandboxControl, token: str, receiver: Receiver) -> None:
    """after_delivery 1/1357046: the client gets the error, yet one message is recorded and echoed."""
    sandbox.fault("/messages$", code=1, subcode=1357046, after_delivery=True)
    response = post(sandbox, token)
    (echo,) = receiver.wait_for(1)[0].events
    (row,) = sent(sandbox)
    assert (error(response), echo["message"]["mid"], row["answer_lost"]) == (
        (400, 1, 1357046),
        row["mid"],
        True,
    )


def test_5xx_after_delivery_records_once(sandbox: SandboxControl, token: str, receiver: Receiver) -> None:
    """after_delivery 502 with an HTML body: the client sees a 502, the message went out once."""
    sandbox.fault("/messages$", http_status=502, body="<html>Bad Gateway</html>", after_delivery=True)
    response = post(sandbox, token)
    receiver.wait_for(1)
    assert (response.status_code, len(sent(sandbox)), sent(sandbox)[0]["answer_http_status"]) == (502, 1, 502)


def test_hang_after_delivery_times_out_the_client(
    sandbox: SandboxControl, token: str, receiver: Receiver
) -> None:
    """after_delivery timeout: the client times out with no answer; the message is recorded once and
    echoed meanwhile."""
    sandbox.fault("/messages$", timeout_seconds=1.0, after_delivery=True)
    with pytest.raises(httpx.ReadTimeout):
        post(sandbox, token, timeout=0.3)
    (echo,) = receiver.wait_for(1)[0].events
    (row,) = sent(sandbox)
    assert echo["message"]["mid"] == row["mid"]


def test_after_delivery_fault_waits_for_an_accepted_send(sandbox: SandboxControl, token: str) -> None:
    """A refused send passes through untouched and leaves the after_delivery rule for the next
    accepted one."""
    sandbox.configure(echoes="off")
    sandbox.fault("/messages$", code=1, subcode=1357046, after_delivery=True, count=1)
    refused = post(sandbox, token, recipient=igsid("sandbox", 99))
    lost, clean = post(sandbox, token), post(sandbox, token)
    assert (error(refused)[1:], error(lost)[1:], clean.status_code, len(sent(sandbox))) == (
        (100, 2534014),
        (1, 1357046),
        200,
        2,
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"code": 613, "subcode": 2534040}, (400, 613, 2534040), id="613-2534040"),
        pytest.param({"code": 4}, (400, 4, None), id="4"),
        pytest.param({"code": 17}, (400, 17, None), id="17"),
        pytest.param({"code": 32}, (400, 32, None), id="32"),
        pytest.param({"code": 10, "subcode": 1893063}, (400, 10, 1893063), id="10-1893063"),
        pytest.param(
            {"code": 200, "subcode": 2534041, "http_status": 403}, (403, 200, 2534041), id="200-2534041"
        ),
        pytest.param({"code": 551}, (400, 551, None), id="551"),
        pytest.param({"code": 190, "subcode": 460}, (400, 190, 460), id="190"),
        pytest.param({"code": 2, "http_status": 500, "is_transient": True}, (500, 2, None), id="500"),
    ],
)
def test_pre_route_faults_answer_and_send_nothing(
    sandbox: SandboxControl, token: str, spec: dict[str, Any], expected: tuple[int, int, int | None]
) -> None:
    """A plain fault on the messages endpoint answers instead of the send; nothing is recorded."""
    sandbox.fault("/messages$", method="POST", **spec)
    assert (error(post(sandbox, token)), sent(sandbox)) == (expected, [])


def test_pre_route_timeout_sends_nothing(sandbox: SandboxControl, token: str) -> None:
    """A plain timeout fault hangs before the route: the client times out and nothing is recorded."""
    sandbox.fault("/messages$", timeout_seconds=0.6)
    with pytest.raises(httpx.ReadTimeout):
        post(sandbox, token, timeout=0.2)
    assert sent(sandbox) == []


# ---- rate limit ------------------------------------------------------------------------------------


def test_sends_above_the_rate_are_613_2534040(sandbox: SandboxControl, token: str) -> None:
    """At 5 sends/s, a burst of 8 in one sandbox second gets 5 accepted and 3 refused with 613/2534040."""
    sandbox.configure(send_rate_per_second=5, echoes="off")
    sandbox.control("POST", "clock", {"set": "2026-12-01T10:00:00Z"})
    sandbox.control("POST", "people", {"igsid": PERSON, "last_message_at": "now"})
    answers = [post(sandbox, token) for _ in range(8)]
    refused = [error(a) for a in answers if a.status_code != 200]
    assert (refused, len(sent(sandbox))) == ([(400, 613, 2534040)] * 3, 5)


def test_rate_limit_resets_in_the_next_second(sandbox: SandboxControl, token: str) -> None:
    """After a refused burst, the next sandbox second accepts sends again."""
    sandbox.configure(send_rate_per_second=1, echoes="off")
    sandbox.control("POST", "clock", {"set": "2026-12-01T10:00:00Z"})
    sandbox.control("POST", "people", {"igsid": PERSON, "last_message_at": "now"})
    first, second = post(sandbox, token), post(sandbox, token)
    sandbox.advance_clock(1)
    assert (first.status_code, error(second)[1], post(sandbox, token).status_code) == (200, 613, 200)


@pytest.mark.parametrize(
    "knob",
    [
        {"echoes": "sometimes"},
        {"echo_delay_ms": -1},
        {"send_rate_per_second": 0},
        {"human_agent_approved": "yes"},
        {"send_usage": {"calls": 5}},
    ],
)
def test_bad_send_knobs_are_400(sandbox: SandboxControl, knob: dict[str, Any]) -> None:
    """/_sandbox/config refuses a Send API knob out of range with a 400."""
    assert sandbox.http.post("/_sandbox/config", json=knob).status_code == 400


def test_default_rate_is_100_per_second(sandbox: SandboxControl) -> None:
    """After a reset the Send API allows 100 sends per second per account."""
    assert sandbox.state()["config"]["send_rate_per_second"] == 100
