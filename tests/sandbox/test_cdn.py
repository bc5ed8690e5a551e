"""The sandbox's attachment CDN: webhook attachments carry its signed URLs, which serve real bytes until the
sandbox clock passes their expiry and then answer 403 "URL signature expired", as Meta's CDN does."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from instagram_dm.media import sniff
from sandbox.emitter import plan_send
from sandbox.state import SandboxConfig, State

pytest_plugins = ["tests.fixtures.sandbox"]


def test_emitted_attachments_point_at_the_sandbox_cdn() -> None:
    """With its origin, the emitter gives every attachment type a CDN URL of the sandbox holding real bytes
    of that type, expiring after media_ttl_seconds."""
    state = State(SandboxConfig())
    plan = plan_send(
        state,
        state.config,
        {"kind": "attachment", "attachment_type": "all", "media_ttl_seconds": 30},
        origin="http://sb.test",
    )
    [delivery] = plan.deliveries
    items = delivery.payload["entry"][0]["messaging"]
    urls = {
        i["message"]["attachments"][0]["type"]: i["message"]["attachments"][0]["payload"]["url"]
        for i in items
    }
    assert all(u.startswith("http://sb.test/_cdn/ig_messaging/") for u in urls.values())
    assets = {t: state.media_assets[u.split("/")[-1].split("?")[0]] for t, u in urls.items()}
    assert {
        t: sniff.sniff(a.body[:64]) for t, a in assets.items() if t in {"image", "video", "audio", "file"}
    } == {
        "image": "image/png",
        "video": "video/mp4",
        "audio": "audio/mp4",
        "file": "application/pdf",
    }
    assert {a.expires_at for a in assets.values()} == {state.now() + 30}


def test_a_url_is_served_until_it_expires(sandbox: Any) -> None:
    """The CDN serves the bytes, and once the sandbox clock passes the TTL answers 403 URL signature expired."""
    url = sandbox.control("POST", "media", {"type": "video", "ttl_seconds": 60})["url"]
    assert sniff.sniff(httpx.get(url).content[:64]) == "video/mp4"
    sandbox.advance_clock(61)
    expired = httpx.get(url)
    assert (expired.status_code, expired.text) == (403, "URL signature expired")


def test_a_changed_expiry_is_a_bad_hash(sandbox: Any) -> None:
    """Moving the oe parameter later does not extend a URL: 403 Bad URL hash."""
    url = sandbox.control("POST", "media", {"type": "image", "ttl_seconds": 5})["url"]
    forged = url.replace("oe=", "oe=f")
    answer = httpx.get(forged)
    assert (answer.status_code, answer.text) == (403, "Bad URL hash")


def test_given_bytes_and_a_lying_header_are_served_as_given(sandbox: Any) -> None:
    """media.base64 and media.content_type are what the CDN serves; size pads the body."""
    body = b"%PDF-1.4 hello"
    url = sandbox.control(
        "POST",
        "media",
        {
            "type": "file",
            "media": {"base64": base64.b64encode(body).decode(), "content_type": "image/gif", "size": 100},
        },
    )["url"]
    answer = httpx.get(url)
    assert answer.headers["content-type"] == "image/gif"
    assert answer.content == body + b"\x00" * (100 - len(body))
