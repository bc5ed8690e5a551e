"""Meta Instagram webhook deliveries, built and signed like Meta does it. Pure: no I/O, no sandbox state.

    events = EventFactory("17841400000000101", seed="t1")
    first = events.message(events.person(1), "Grüße / 中文 😀")
    delivery = deliver(events.account_id, [first, events.reaction(events.person(1), mid_of(first))])
    delivery.body                      # the exact bytes: escaped unicode, ``\\/``, compact separators
    delivery.headers(app_secret)       # content-type, X-Hub-Signature-256 and X-Hub-Signature

Ids are deterministic: ``mid(seed, n)`` is the n-th message id and ``igsid(seed, n)`` the n-th person of
a seed, so a test can predict what a factory built with that seed will send. Timestamps start at
``start_ms`` and grow by one millisecond per event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "ATTACHMENT_TYPES",
    "CHANGE_FIELDS",
    "DEFAULT_START_MS",
    "MAX_EVENTS",
    "SAMPLE_TEXTS",
    "Container",
    "Delivery",
    "Event",
    "EventFactory",
    "dashboard_test",
    "deliver",
    "echo_event",
    "encode",
    "event_kind",
    "event_mid",
    "igsid",
    "mid",
    "mid_of",
    "out_of_order",
    "sign",
    "sign_sha1",
    "signature_headers",
]

Event = dict[str, Any]  # one item of ``entry[].messaging[]``
Container = Literal["messaging", "standby", "changes"]

ATTACHMENT_TYPES: Final = ("audio", "file", "image", "share", "story_mention", "video", "ig_reel", "reel")
MAX_EVENTS: Final = 1000  # Meta's ceiling per POST
DEFAULT_START_MS: Final = 1_700_000_000_000
# Texts that exercise the escaping: Latin-1, CJK, astral emoji (surrogate pairs), JSON metacharacters.
SAMPLE_TEXTS: Final = (
    "Grüße aus München: ä ö ü ß",
    "你好 我想了解保险 中文",
    "emoji 😀 👍🏽 ❤️",
    'slash / backslash \\ "quotes" <b>&amp;</b>',
)
# The webhook field of each event kind, for the dashboard's ``changes[{field, value}]`` shape.
CHANGE_FIELDS: Final = {
    "message": "messages",
    "reaction": "message_reactions",
    "read": "messaging_seen",
    "postback": "messaging_postbacks",
    "referral": "messaging_referral",
    "message_edit": "message_edit",
}
_KINDS: Final = ("message", "reaction", "read", "postback", "message_edit", "referral")


# ---- ids, bytes and signatures -------------------------------------------------------------------


def _seed_digits(seed: str | int) -> int:
    return int(hashlib.sha256(f"igsid:{seed}".encode()).hexdigest(), 16) % 10**7


def mid(seed: str | int, n: int) -> str:
    """The n-th message id of `seed`: Meta-looking (URL-safe base64, ``aWdf`` prefix), distinct per n."""
    raw = f"ig_message_item:sandbox:{seed}:{n}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def igsid(seed: str | int, n: int) -> str:
    """The n-th person of `seed`: 16 digits, ``6`` + 7 digits of the seed + n (1 ≤ n < 10**8)."""
    if not 0 < n < 10**8:
        raise ValueError("a person number is between 1 and 99999999")
    return f"6{_seed_digits(seed):07d}{n:08d}"


def encode(payload: Mapping[str, Any]) -> bytes:
    """Serialise like Meta: ASCII only (``ä`` → ``\\u00e4``, emoji as surrogate pairs), ``/`` → ``\\/``,
    no spaces. A ``/`` only ever occurs inside JSON strings, so the replacement is always valid."""
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def sign(body: bytes, app_secret: str) -> str:
    """``X-Hub-Signature-256``: ``sha256=`` + hex HMAC-SHA256 of the exact bytes."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def sign_sha1(body: bytes, app_secret: str) -> str:
    """The legacy ``X-Hub-Signature``: ``sha1=`` + hex HMAC-SHA1 of the exact bytes."""
    return "sha1=" + hmac.new(app_secret.encode(), body, hashlib.sha1).hexdigest()


def signature_headers(body: bytes, app_secret: str) -> dict[str, str]:
    """The headers Meta sends with a delivery."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "facebookexternalua",
        "X-Hub-Signature-256": sign(body, app_secret),
        "X-Hub-Signature": sign_sha1(body, app_secret),
    }


# ---- deliveries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One POST: the exact body bytes and the mids they carry (one per event, in order; for reactions,
    reads, edits and unsends the mid of the message they refer to)."""

    body: bytes
    mids: tuple[str, ...]

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the body (not a signature): a short name for the bytes in logs."""
        return hashlib.sha256(self.body).hexdigest()

    def headers(self, app_secret: str) -> dict[str, str]:
        return signature_headers(self.body, app_secret)


def event_kind(event: Mapping[str, Any]) -> str | None:
    """``message``, ``reaction``, ``read``, ``postback``, ``message_edit``, ``referral`` or None."""
    return next((k for k in _KINDS if k in event), None)


def event_mid(event: Mapping[str, Any]) -> str | None:
    """The mid an event carries, whichever key holds it."""
    kind = event_kind(event)
    value = event.get(kind) if kind else None
    found = value.get("mid") if isinstance(value, Mapping) else None
    return str(found) if found is not None else None


def mid_of(event: Mapping[str, Any]) -> str:
    """The mid of an event that must have one (a message): for building reactions to it."""
    found = event_mid(event)
    if found is None:
        raise ValueError("this event carries no mid")
    return found


def deliver(
    account_id: str,
    events: Sequence[Event],
    *,
    container: Container = "messaging",
    time_ms: int | None = None,
    entry_per_event: bool = False,
) -> Delivery:
    """Wrap events in ``{"object":"instagram","entry":[...]}``: ``messaging[]`` (default), ``standby[]``
    (handover), or ``changes[{field,value}]`` (the dashboard's test shape, one change per event).
    One entry for all events, or one entry per event (``entry_per_event``), as Meta does either way."""
    if not 0 < len(events) <= MAX_EVENTS:
        raise ValueError(f"a delivery carries 1..{MAX_EVENTS} events")
    when = time_ms if time_ms is not None else max(int(e.get("timestamp", 0)) for e in events) + 5

    def entry(items: Sequence[Event]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": account_id, "time": when}
        if container == "changes":
            out["changes"] = [
                {"field": CHANGE_FIELDS.get(event_kind(e) or "", "messages"), "value": e} for e in items
            ]
        else:
            out[container] = list(items)
        return out

    entries = [entry([e]) for e in events] if entry_per_event else [entry(events)]
    mids = tuple(m for m in (event_mid(e) for e in events) if m is not None)
    return Delivery(encode({"object": "instagram", "entry": entries}), mids)


def dashboard_test(field: str = "messages") -> Delivery:
    """What the App Dashboard's "Test" button sends: Meta's fixed sample, ``changes`` shape, entry id
    ``"0"`` and a *string* timestamp in seconds."""
    value = {
        "sender": {"id": "12334"},
        "recipient": {"id": "23245"},
        "timestamp": "1527459824",
        "message": {"mid": "random_mid", "text": "random_text"},
    }
    payload = {
        "object": "instagram",
        "entry": [{"id": "0", "time": 1527459824, "changes": [{"field": field, "value": value}]}],
    }
    return Delivery(encode(payload), ("random_mid",))


def echo_event(
    account_id: str,
    recipient: str,
    message_mid: str,
    *,
    text: str | None = None,
    attachments: Sequence[Mapping[str, Any]] = (),
    timestamp_ms: int,
) -> Event:
    """The echo of a message the account sent through the Send API: sender the account, recipient the
    person, the send's own mid, ``is_echo: true``."""
    message: dict[str, Any] = {"mid": message_mid}
    if text is not None:
        message["text"] = text
    if attachments:
        message["attachments"] = [dict(a) for a in attachments]
    message["is_echo"] = True
    return {
        "sender": {"id": account_id},
        "recipient": {"id": recipient},
        "timestamp": timestamp_ms,
        "message": message,
    }


def out_of_order(events: Iterable[Event]) -> list[Event]:
    """Swap each adjacent pair (``a b c d e`` → ``b a d c e``): every later event arrives first."""
    items = list(events)
    for i in range(0, len(items) - 1, 2):
        items[i], items[i + 1] = items[i + 1], items[i]
    return items


# ---- events --------------------------------------------------------------------------------------


class EventFactory:
    """Builds ``messaging[]`` events for one Instagram account with deterministic mids and timestamps:
    the k-th new message gets ``mid(seed, first_mid + k)``, the k-th event ``start_ms + k``."""

    def __init__(
        self,
        account_id: str,
        *,
        seed: str | int = 0,
        start_ms: int = DEFAULT_START_MS,
        first_mid: int = 1,
    ) -> None:
        self.account_id = account_id
        self.seed = seed
        self._next_mid = first_mid
        self._next_ms = start_ms

    @property
    def next_mid_number(self) -> int:
        """The number the next new message's mid will have."""
        return self._next_mid

    def person(self, n: int) -> str:
        """The IGSID of person n of this factory's seed."""
        return igsid(self.seed, n)

    def new_mid(self) -> str:
        value = mid(self.seed, self._next_mid)
        self._next_mid += 1
        return value

    def _base(self, sender: str, recipient: str) -> Event:
        stamp = self._next_ms
        self._next_ms += 1
        return {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": stamp}

    def _inbound(self, sender: str, key: str, value: dict[str, Any]) -> Event:
        event = self._base(sender, self.account_id)
        event[key] = value
        return event

    # -- messages from a person

    def message(
        self,
        sender: str,
        text: str | None = "hello",
        *,
        attachments: Sequence[Mapping[str, Any]] = (),
        reply_to: Mapping[str, Any] | None = None,
        quick_reply: str | None = None,
        referral: Mapping[str, Any] | None = None,
        is_unsupported: bool = False,
    ) -> Event:
        """An inbound message; any of text, attachments, reply_to, quick_reply, referral, is_unsupported."""
        body: dict[str, Any] = {"mid": self.new_mid()}
        if text is not None:
            body["text"] = text
        if attachments:
            body["attachments"] = [dict(a) for a in attachments]
        if quick_reply is not None:
            body["quick_reply"] = {"payload": quick_reply}
        if reply_to is not None:
            body["reply_to"] = dict(reply_to)
        if referral is not None:
            body["referral"] = dict(referral)
        if is_unsupported:
            body["is_unsupported"] = True
        return self._inbound(sender, "message", body)

    def attachment(self, sender: str, kind: str = "image", url: str | None = None) -> Event:
        """A message with one attachment ``{type, payload{url}}`` of a type in ATTACHMENT_TYPES."""
        if kind not in ATTACHMENT_TYPES:
            raise ValueError(f"attachment type must be one of {', '.join(ATTACHMENT_TYPES)}")
        link = url or f"https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id={self._next_mid}&type={kind}"
        return self.message(sender, None, attachments=[{"type": kind, "payload": {"url": link}}])

    def story_mention(self, sender: str, url: str | None = None) -> Event:
        """The person mentioned the account in a story (a ``story_mention`` attachment)."""
        return self.attachment(sender, "story_mention", url)

    def reply(self, sender: str, text: str, to_mid: str) -> Event:
        """A reply to an earlier message: ``reply_to{mid}``."""
        return self.message(sender, text, reply_to={"mid": to_mid})

    def story_reply(self, sender: str, text: str, story_url: str, story_id: str) -> Event:
        """A reply to the account's story: ``reply_to{story{url,id}}``."""
        return self.message(sender, text, reply_to={"story": {"url": story_url, "id": story_id}})

    def unsupported(self, sender: str) -> Event:
        """A message type the API cannot show: ``is_unsupported: true`` and no text."""
        return self.message(sender, None, is_unsupported=True)

    def non_ascii(self, sender: str) -> list[Event]:
        """One message per SAMPLE_TEXTS entry."""
        return [self.message(sender, text) for text in SAMPLE_TEXTS]

    # -- our own messages, echoed

    def echo(self, recipient: str, text: str | None = "thanks for writing", **options: Any) -> Event:
        """A message the account sent (``is_echo: true``, sender = the account, recipient = the person)."""
        event = self.message(self.account_id, text, **options)
        event["recipient"] = {"id": recipient}
        event["message"]["is_echo"] = True
        return event

    # -- events about earlier messages

    def unsend(self, sender: str, target_mid: str) -> Event:
        """The person deleted a message: ``message{mid, is_deleted: true}``."""
        return self._inbound(sender, "message", {"mid": target_mid, "is_deleted": True})

    def reaction(self, sender: str, target_mid: str, emoji: str = "❤️", reaction: str = "love") -> Event:
        """``reaction{mid, action: "react", reaction, emoji}``."""
        value = {"mid": target_mid, "action": "react", "reaction": reaction, "emoji": emoji}
        return self._inbound(sender, "reaction", value)

    def unreact(
        self, sender: str, target_mid: str, emoji: str | None = None, reaction: str | None = None
    ) -> Event:
        """``reaction{mid, action: "unreact"}``; a withdrawal may omit reaction and emoji (the default)."""
        value: dict[str, Any] = {"mid": target_mid, "action": "unreact"}
        if reaction is not None:
            value["reaction"] = reaction
        if emoji is not None:
            value["emoji"] = emoji
        return self._inbound(sender, "reaction", value)

    def read(self, sender: str, target_mid: str) -> Event:
        """The person saw everything up to `target_mid`: ``read{mid}``."""
        return self._inbound(sender, "read", {"mid": target_mid})

    def edit(self, sender: str, target_mid: str, text: str, num_edit: int = 1) -> Event:
        """``message_edit{mid, text, num_edit}``."""
        return self._inbound(sender, "message_edit", {"mid": target_mid, "text": text, "num_edit": num_edit})

    # -- other events

    def postback(self, sender: str, title: str = "Get started", payload: str = "GET_STARTED") -> Event:
        """An icebreaker or button tap: ``postback{mid, title, payload}`` (a new mid)."""
        return self._inbound(sender, "postback", {"mid": self.new_mid(), "title": title, "payload": payload})

    def referral(
        self, sender: str, ref: str = "sandbox", source: str = "ADS", kind: str = "OPEN_THREAD"
    ) -> Event:
        """A standalone ``referral{ref, source, type}`` (an ad or link opened the thread)."""
        return self._inbound(sender, "referral", {"ref": ref, "source": source, "type": kind})

    def unknown(self, sender: str, key: str = "sandbox_unknown_event") -> Event:
        """An event of a kind no handler knows (a field Meta may add tomorrow)."""
        return self._inbound(sender, key, {"note": "an event kind the receiver does not know"})

    # -- many events

    def batch(self, count: int, people: int = 1, text: str | None = None) -> list[Event]:
        """`count` text messages from `people` people in turn (person 1, 2, …, people, 1, …)."""
        if not 0 < count <= MAX_EVENTS:
            raise ValueError(f"count must be between 1 and {MAX_EVENTS}")
        if not 0 < people <= count:
            raise ValueError("people must be between 1 and count")
        return [
            self.message(self.person(i % people + 1), f"{text or 'message'} {i + 1}") for i in range(count)
        ]

    def out_of_order_pair(self, sender: str, first: str = "first", second: str = "second") -> list[Event]:
        """Two messages from one person, the later one first in the list."""
        return out_of_order([self.message(sender, first), self.message(sender, second)])
