"""Webhook deliveries (sandbox/webhooks.py), the sender control call and the IGSID profile route."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from typing import Any

import httpx
import pytest

from sandbox.fixtures import ALICE
from sandbox.state import SandboxConfig
from sandbox.webhooks import (
    ATTACHMENT_TYPES,
    SAMPLE_TEXTS,
    EventFactory,
    dashboard_test,
    deliver,
    encode,
    igsid,
    mid,
    mid_of,
    out_of_order,
    sign,
    sign_sha1,
)
from tests.fixtures.receiver import Receiver
from tests.fixtures.sandbox import SandboxControl

V = "v25.0"
ALICE_IG = "17841400000000101"
PROFILE_FIELDS = "name,username,profile_pic"


def send(sandbox: SandboxControl, **body: Any) -> dict[str, Any]:
    return sandbox.control("POST", "webhooks/send", body)  # type: ignore[no-any-return]


def profile(
    sandbox: SandboxControl, node_id: str, token: str, fields: str = PROFILE_FIELDS
) -> httpx.Response:
    proof = hmac.new(sandbox.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
    params = {"access_token": token, "appsecret_proof": proof, "fields": fields}
    return sandbox.http.get(f"/{V}/{node_id}", params=params)


# ---- the pure builder ------------------------------------------------------------------------------


def test_encode_escapes_unicode_and_slashes() -> None:
    """encode writes ASCII only (ä, 中, emoji as \\u escapes), slashes as \\/ and no spaces."""
    body = encode({"text": "ä/中 😀", "url": "https://x.test/a"})
    assert body == b'{"text":"\\u00e4\\/\\u4e2d \\ud83d\\ude00","url":"https:\\/\\/x.test\\/a"}'


def test_encode_round_trips_the_sample_texts() -> None:
    """Decoding encoded bytes gives back every sample text, backslashes and quotes included."""
    payload = {"texts": list(SAMPLE_TEXTS)}
    assert json.loads(encode(payload)) == payload


def test_sign_is_hmac_sha256_of_the_exact_bytes() -> None:
    """sign() is sha256= plus the hex HMAC-SHA256 of the bytes, keyed with the app secret."""
    body = encode({"text": "ä"})
    assert sign(body, "s3cret") == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()


def test_sign_sha1_is_the_legacy_header() -> None:
    """sign_sha1() is sha1= plus the hex HMAC-SHA1 of the bytes."""
    body = b'{"a":1}'
    assert sign_sha1(body, "k") == "sha1=" + hmac.new(b"k", body, hashlib.sha1).hexdigest()


def test_factory_ids_are_predictable_from_the_seed() -> None:
    """The factory's n-th message is mid(seed, n) and its person n is igsid(seed, n)."""
    events = EventFactory(ALICE_IG, seed="t1")
    first, second = events.message(events.person(1)), events.message(events.person(2))
    assert (mid_of(first), mid_of(second)) == (mid("t1", 1), mid("t1", 2))
    assert [first["sender"]["id"], second["sender"]["id"]] == [igsid("t1", 1), igsid("t1", 2)]


def test_echo_swaps_sender_and_recipient() -> None:
    """An echo comes from the account to the person and is marked is_echo."""
    events = EventFactory(ALICE_IG)
    echo = events.echo(events.person(1), "hi")
    assert (echo["sender"]["id"], echo["recipient"]["id"], echo["message"]["is_echo"]) == (
        ALICE_IG,
        events.person(1),
        True,
    )


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda f, p, m: f.unsend(p, m), {"message": {"mid": "M", "is_deleted": True}}),
        (
            lambda f, p, m: f.reaction(p, m, "😀", "smile"),
            {"reaction": {"mid": "M", "action": "react", "reaction": "smile", "emoji": "😀"}},
        ),
        (lambda f, p, m: f.unreact(p, m), {"reaction": {"mid": "M", "action": "unreact"}}),
        (lambda f, p, m: f.read(p, m), {"read": {"mid": "M"}}),
        (
            lambda f, p, m: f.edit(p, m, "new", 2),
            {"message_edit": {"mid": "M", "text": "new", "num_edit": 2}},
        ),
        (lambda f, p, m: f.reply(p, "re", m)["message"]["reply_to"], {"mid": "M"}),
    ],
)
def test_events_about_a_message_carry_its_mid(build: Any, expected: dict[str, Any]) -> None:
    """Unsend, reaction, unreact, read, edit and reply name the target mid in Meta's shape."""
    events = EventFactory(ALICE_IG)
    event = build(events, events.person(1), "M")
    assert {k: event[k] for k in expected} == expected


def test_every_attachment_type_has_a_payload_url() -> None:
    """Each reference attachment type builds attachments[{type, payload{url}}]."""
    events = EventFactory(ALICE_IG)
    built = [
        events.attachment(events.person(1), kind)["message"]["attachments"][0] for kind in ATTACHMENT_TYPES
    ]
    assert [(a["type"], a["payload"]["url"].startswith("https://")) for a in built] == [
        (kind, True) for kind in ATTACHMENT_TYPES
    ]


def test_standby_and_changes_containers() -> None:
    """deliver() puts events in standby[] or in the dashboard's changes[{field, value}]."""
    events = EventFactory(ALICE_IG)
    message = events.message(events.person(1), "hi")
    standby = deliver(ALICE_IG, [message], container="standby").payload["entry"][0]
    changes = deliver(ALICE_IG, [message], container="changes").payload["entry"][0]
    assert standby["standby"] == [message] and changes["changes"] == [{"field": "messages", "value": message}]


def test_dashboard_test_has_a_string_timestamp() -> None:
    """The dashboard's sample delivery uses changes, entry id "0" and a string timestamp."""
    change = dashboard_test().payload["entry"][0]["changes"][0]
    assert (change["field"], change["value"]["timestamp"]) == ("messages", "1527459824")


def test_out_of_order_swaps_pairs() -> None:
    """out_of_order puts each later event before its predecessor."""
    swapped = out_of_order([{"n": n} for n in range(1, 6)])
    assert [e["n"] for e in swapped] == [2, 1, 4, 3, 5]


# ---- the control call ------------------------------------------------------------------------------


def test_send_posts_bytes_signed_with_the_app_secret(sandbox: SandboxControl, receiver: Receiver) -> None:
    """The delivery arrives with X-Hub-Signature-256/X-Hub-Signature of its exact bytes and JSON type."""
    send(sandbox, text="Grüße / 中文 😀")
    (got,) = receiver.requests
    assert (
        got.headers["x-hub-signature-256"],
        got.headers["x-hub-signature"],
        got.headers["content-type"],
    ) == (sign(got.body, sandbox.app_secret), sign_sha1(got.body, sandbox.app_secret), "application/json")


def test_send_body_is_meta_encoded(sandbox: SandboxControl, receiver: Receiver) -> None:
    """The posted body is ASCII with \\u escapes and is exactly encode() of what it decodes to."""
    send(sandbox, text="ä / 中")
    body = receiver.requests[0].body
    assert b"\\u00e4 \\/ \\u4e2d" in body and encode(json.loads(body)) == body


def test_send_mids_and_sender_are_predictable(sandbox: SandboxControl, receiver: Receiver) -> None:
    """After a reset the first message is mid("sandbox", 1) from igsid("sandbox", 1) to Alice's account."""
    result = send(sandbox)
    (event,) = receiver.requests[0].events
    assert (result["mids"], event["sender"]["id"], event["recipient"]["id"]) == (
        [mid("sandbox", 1)],
        igsid("sandbox", 1),
        ALICE_IG,
    )


def test_duplicates_arrive_k_times_with_identical_bytes(sandbox: SandboxControl, receiver: Receiver) -> None:
    """duplicates=4 (concurrently) posts the same bytes four times, each answered 200."""
    result = send(sandbox, duplicates=4, concurrent=True)
    assert (len(receiver.requests), len({r.body for r in receiver.requests}), result["statuses"]) == (
        4,
        1,
        [200] * 4,
    )


def test_batch_of_1000_from_50_people(sandbox: SandboxControl, receiver: Receiver) -> None:
    """A batch of 1,000 events from 50 people is one POST with 1,000 distinct mids and 50 senders."""
    result = send(sandbox, kind="batch", count=1000, people=50)
    (got,) = receiver.requests
    assert (len(set(result["mids"])), len({e["sender"]["id"] for e in got.events}), len(got.events)) == (
        1000,
        50,
        1000,
    )


def test_reaction_defaults_to_the_last_message(sandbox: SandboxControl, receiver: Receiver) -> None:
    """A reaction without target_mid refers to the last message the sandbox sent to that account."""
    (sent,) = send(sandbox, text="react to me")["mids"]
    send(sandbox, kind="reaction", emoji="👍")
    assert receiver.requests[1].events[0]["reaction"]["mid"] == sent


def test_split_out_of_order_delivers_the_later_event_first(
    sandbox: SandboxControl, receiver: Receiver
) -> None:
    """out_of_order with split sends two POSTs, the later timestamp first."""
    send(sandbox, out_of_order=True, split=True)
    stamps = [r.events[0]["timestamp"] for r in receiver.requests]
    assert len(stamps) == 2 and stamps[0] > stamps[1]


def test_receiver_errors_are_reported_not_failed(sandbox: SandboxControl, receiver: Receiver) -> None:
    """A 403 from the webhook is listed in statuses; the control call itself answers 200."""
    receiver.status = 403
    assert send(sandbox, signature="wrong")["statuses"] == [403]


def test_log_lists_sent_mids_and_statuses(sandbox: SandboxControl, receiver: Receiver) -> None:
    """GET /_sandbox/webhooks lists each delivery's mids and statuses."""
    result = send(sandbox, kind="postback", duplicates=2)
    (entry,) = sandbox.control("GET", "webhooks")["deliveries"]
    assert (entry["mids"], entry["statuses"], entry["kind"]) == (result["mids"], [200, 200], "postback")


def test_unreachable_webhook_url_is_a_clean_502(sandbox: SandboxControl) -> None:
    """A URL nobody listens on makes the control call answer 502 JSON, not a traceback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    response = sandbox.http.post("/_sandbox/webhooks/send", json={"url": f"http://127.0.0.1:{port}/hook"})
    assert (response.status_code, response.json()["error"]["code"]) == (502, "webhook_unreachable")


def test_unknown_kind_is_a_400(sandbox: SandboxControl) -> None:
    """An unknown kind is refused with a message before anything is sent."""
    response = sandbox.http.post("/_sandbox/webhooks/send", json={"kind": "telepathy"})
    assert response.status_code == 400 and "kind" in response.json()["error"]["message"]


# ---- the profile route -----------------------------------------------------------------------------


def test_profile_of_a_new_person(sandbox: SandboxControl) -> None:
    """An unknown IGSID asked with a Page token is a person made on first use, with the asked fields."""
    (token,) = sandbox.mint(ALICE, "page")
    person = igsid("sandbox", 7)
    body = profile(sandbox, person, token).json()
    assert body == {
        "name": f"Person {person[-4:]}",
        "username": f"person_{person}",
        "profile_pic": f"{sandbox.url}/_sandbox/people/{person}/picture.png",
        "id": person,
    }


def test_profile_picture_is_served(sandbox: SandboxControl) -> None:
    """The profile_pic URL answers a PNG."""
    response = sandbox.http.get(f"/_sandbox/people/{igsid('sandbox', 1)}/picture.png")
    assert (response.headers["content-type"], response.content[:4]) == ("image/png", b"\x89PNG")


def test_people_control_sets_the_username(sandbox: SandboxControl) -> None:
    """POST /_sandbox/people renames a person (by seed and number) for the profile route."""
    (token,) = sandbox.mint(ALICE, "page")
    sandbox.control("POST", "people", {"person": 2, "username": "jane.doe", "name": "Jane Doe"})
    body = profile(sandbox, igsid("sandbox", 2), token).json()
    assert (body["username"], body["name"]) == ("jane.doe", "Jane Doe")


def test_forced_profile_failure_is_meta_100_2534014(sandbox: SandboxControl) -> None:
    """fail: {} makes the lookup Meta's 100/2534014 with HTTP 400."""
    (token,) = sandbox.mint(ALICE, "page")
    sandbox.control("POST", "people", {"igsid": "6100000000000001", "fail": {}})
    response = profile(sandbox, "6100000000000001", token)
    error = response.json()["error"]
    assert (response.status_code, error["code"], error["error_subcode"]) == (400, 100, 2534014)


def test_forced_profile_500_is_transient(sandbox: SandboxControl) -> None:
    """fail: {http_status: 500, count: 1} fails once with a transient code 2, then the profile answers."""
    (token,) = sandbox.mint(ALICE, "page")
    person = igsid("sandbox", 3)
    sandbox.control("POST", "people", {"igsid": person, "fail": {"http_status": 500, "count": 1}})
    first, second = profile(sandbox, person, token), profile(sandbox, person, token)
    assert (first.status_code, first.json()["error"]["is_transient"], second.status_code) == (500, True, 200)


def test_unknown_id_with_a_user_token_is_still_100_33(sandbox: SandboxControl) -> None:
    """With a user token an unknown id stays Meta's 100/33: only Page tokens look up people."""
    (token,) = sandbox.mint(ALICE, "long")
    assert profile(sandbox, igsid("sandbox", 4), token).json()["error"]["error_subcode"] == 33


def test_profile_honours_injected_faults(sandbox: SandboxControl) -> None:
    """A fault on the IGSID's path answers instead of the profile."""
    (token,) = sandbox.mint(ALICE, "page")
    person = igsid("sandbox", 5)
    sandbox.fault(f"/{person}$", code=613, subcode=2534040, http_status=400)
    assert profile(sandbox, person, token).json()["error"]["code"] == 613


def test_profile_unknown_field_is_100(sandbox: SandboxControl) -> None:
    """A field the IGSID node does not have is Meta's #100, as fields.py has it."""
    (token,) = sandbox.mint(ALICE, "page")
    assert profile(sandbox, igsid("sandbox", 6), token, "name,email").json()["error"]["code"] == 100


def test_webhook_url_comes_from_the_environment() -> None:
    """SandboxConfig.from_env reads SANDBOX_WEBHOOK_URL, else the local Edge Function's URL."""
    configured = SandboxConfig.from_env({"SANDBOX_WEBHOOK_URL": "http://127.0.0.1:9999/hook"}).webhook_url
    assert (configured, SandboxConfig.from_env({}).webhook_url) == (
        "http://127.0.0.1:9999/hook",
        "http://127.0.0.1:54330/functions/v1/instagram-webhook",
    )
