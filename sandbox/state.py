"""The sandbox's in-memory world: users, Pages, Instagram accounts, codes, tokens, subscriptions,
faults, latency rules and a movable clock. One instance per app; plain dicts, O(1) per Graph call.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sandbox.fixtures import load_defaults

ALL_SCOPES: tuple[str, ...] = (
    "instagram_basic",
    "instagram_manage_messages",
    "pages_manage_metadata",
    "pages_show_list",
    "pages_read_engagement",
    "business_management",
    "pages_messaging",
)
# Page-level webhook fields `subscribed_apps` accepts (Messenger Platform Page fields).
PAGE_WEBHOOK_FIELDS: frozenset[str] = frozenset(
    {
        "messages",
        "messaging_postbacks",
        "messaging_optins",
        "message_deliveries",
        "message_reads",
        "messaging_referrals",
        "message_echoes",
        "message_reactions",
        "messaging_handovers",
        "standby",
        "messaging_policy_enforcement",
        "feed",
        "inbox_labels",
    }
)
DEFAULT_TASKS: tuple[str, ...] = ("ANALYZE", "ADVERTISE", "MESSAGING", "MODERATE", "CREATE_CONTENT", "MANAGE")
ReexchangeMode = Literal["extend", "keep_expiry"]
DialogMode = Literal["approve", "deny", "interactive"]
EchoMode = Literal["on", "off", "drop"]

DAY = 86_400
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:54330/functions/v1/instagram-webhook"
WEBHOOK_LOG_LIMIT = 500  # deliveries kept for `GET /_sandbox/webhooks`; older ones are dropped


@dataclass
class SandboxConfig:
    """How the sandbox behaves; `POST /_sandbox/config` changes the mutable knobs at run time."""

    app_id: str = "sandbox-app-id"
    app_secret: str = "sandbox-app-secret"
    app_name: str = "Sandbox CRM"
    require_appsecret_proof: bool = True
    # Meta's PKCE for Facebook Login is "in testing": optional by default; on, the dialog wants a challenge.
    require_pkce: bool = False
    page_size: int = 25
    code_ttl: int = 600
    short_lived_ttl: int = 3_600
    long_lived_ttl: int = 60 * DAY
    data_access_ttl: int = 90 * DAY
    long_lived_reexchange: ReexchangeMode = "extend"
    allowed_redirect_uris: tuple[str, ...] = ()  # empty: any http(s) URI
    timeout_seconds: float = 30.0
    default_fixtures: bool = True
    # Where `POST /_sandbox/webhooks/send` delivers (the CRM's webhook Edge Function under `make run`).
    webhook_url: str = DEFAULT_WEBHOOK_URL
    webhook_timeout_seconds: float = 10.0
    # The Send API (sandbox/send.py): approval of the HUMAN_AGENT tag, sends per second per Instagram
    # account before 613/2534040, and the echo webhook of each accepted send.
    human_agent_approved: bool = True
    send_rate_per_second: int = 100
    echoes: EchoMode = "on"
    echo_delay_ms: float = 200.0
    # The Instagram app of Instagram Login (sandbox/instagram_login.py): its id and secret (which signs its
    # deliveries and echoes).
    ig_app_id: str = "sandbox-ig-app-id"
    ig_app_secret: str = "sandbox-ig-app-secret"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SandboxConfig:
        """App id/secret from INSTAGRAM_APP_ID / INSTAGRAM_APP_SECRET when set (so `.env` works as is),
        the webhook URL from SANDBOX_WEBHOOK_URL."""
        env = dict(os.environ if environ is None else environ)
        base = cls()
        return cls(
            app_id=env.get("INSTAGRAM_APP_ID", "").strip() or base.app_id,
            app_secret=env.get("INSTAGRAM_APP_SECRET", "").strip() or base.app_secret,
            webhook_url=env.get("SANDBOX_WEBHOOK_URL", "").strip() or base.webhook_url,
            ig_app_id=env.get("INSTAGRAM_LOGIN_APP_ID", "").strip() or base.ig_app_id,
            ig_app_secret=env.get("INSTAGRAM_LOGIN_APP_SECRET", "").strip() or base.ig_app_secret,
        )

    @property
    def app_token(self) -> str:
        return f"{self.app_id}|{self.app_secret}"


class GraphFailure(Exception):  # a Graph answer, not a Python failure
    """An error answer in Meta's envelope."""

    def __init__(
        self,
        message: str,
        *,
        code: int,
        subcode: int | None = None,
        type: str = "OAuthException",  # Meta's field name
        status: int = 400,
        is_transient: bool | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.subcode = subcode
        self.type = type
        self.status = status
        self.is_transient = is_transient
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.is_transient is not None:
            error["is_transient"] = self.is_transient
        error["fbtrace_id"] = trace_id()
        return {"error": error}


def trace_id() -> str:
    return "A" + secrets.token_urlsafe(15)


def new_token() -> str:
    return "EAAS" + secrets.token_urlsafe(48).replace("-", "x").replace("_", "y")


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sbx:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        return None
    if not raw.startswith("sbx:") or not raw[4:].isdigit():
        return None
    return int(raw[4:])


@dataclass
class InstagramAccountRec:
    id: str
    username: str
    name: str
    profile_picture_url: str
    page_id: str


@dataclass
class ProfileFailure:
    """How the profile lookup of one person fails (`POST /_sandbox/people`); `remaining` -1 = always."""

    http_status: int
    code: int
    subcode: int | None
    message: str
    is_transient: bool | None
    remaining: int = -1

    def public(self) -> dict[str, Any]:
        return {
            "http_status": self.http_status,
            "code": self.code,
            "subcode": self.subcode,
            "message": self.message,
            "remaining": self.remaining,
        }


@dataclass
class InstagramUserRec:
    """A person (IGSID) whose profile `GET /{igsid}` answers."""

    id: str
    username: str
    name: str
    profile_pic: str
    failure: ProfileFailure | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "name": self.name,
            "profile_pic": self.profile_pic,
            "failure": None if self.failure is None else self.failure.public(),
        }


@dataclass
class PageRec:
    id: str
    name: str
    category: str
    tasks: tuple[str, ...]
    hidden: bool = False
    ig_account_id: str | None = None


@dataclass
class UserRec:
    id: str
    name: str
    page_ids: list[str]
    declined_scopes: frozenset[str]
    data_access_expires_at: int


@dataclass
class TokenRec:
    value: str
    kind: Literal["user_short", "user_long", "page", "ig_short", "ig_long"]
    user_id: str  # for an Instagram Login token (ig_*): the Instagram account it belongs to
    scopes: tuple[str, ...]
    issued_at: int
    expires_at: int | None  # None: never
    page_id: str | None = None
    revoked_subcode: int | None = None
    ig_account_id: str | None = None  # set on Instagram Login tokens only

    @property
    def meta_type(self) -> str:
        return "PAGE" if self.kind == "page" else "USER"

    def public(self) -> dict[str, Any]:
        return {
            "token": self.value,
            "kind": self.kind,
            "user_id": self.user_id,
            "page_id": self.page_id,
            "scopes": list(self.scopes),
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "revoked_subcode": self.revoked_subcode,
        }


@dataclass
class CodeRec:
    value: str
    user_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    issued_at: int
    used: bool = False
    code_challenge: str | None = None  # PKCE, S256 only (the dialog refuses any other method)


@dataclass
class Fault:
    pattern: re.Pattern[str]
    method: str | None
    remaining: int
    http_status: int
    code: int | None
    subcode: int | None
    type: str
    message: str
    body: str | None
    headers: dict[str, str]
    timeout: bool
    is_transient: bool | None
    hang_seconds: float | None = None
    query: re.Pattern[str] | None = None
    # False: answer instead of the route. True: let the route run and, when it answered 2xx (a send
    # accepted, recorded and echoed), replace its answer with this one: the client never learns.
    after_delivery: bool = False
    hits: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "path": self.pattern.pattern,
            "query": None if self.query is None else self.query.pattern,
            "method": self.method,
            "remaining": self.remaining,
            "hits": self.hits,
            "http_status": self.http_status,
            "code": self.code,
            "subcode": self.subcode,
            "timeout": self.timeout,
            "after_delivery": self.after_delivery,
        }


@dataclass
class LatencyRule:
    pattern: re.Pattern[str]
    ms: float
    jitter_ms: float

    def delay(self) -> float:
        jitter = random.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        return max(0.0, self.ms + jitter) / 1000.0


@dataclass
class SentMessage:
    """One message the Send API accepted (what reached "Meta"), and what became of its echo."""

    seq: int
    mid: str
    page_id: str
    account_id: str  # the Page's Instagram account: the echo's sender
    recipient_id: str
    text: str | None
    attachments: list[dict[str, Any]]
    messaging_type: str | None
    tag: str | None
    at: int  # sandbox time, seconds
    at_ms: int  # the echo's timestamp
    # pending (echo scheduled) · delivered (POSTed; see echo_http_status) · failed (no HTTP answer) ·
    # dropped (echoes "drop") · off (echoes "off")
    echo: str = "pending"
    echo_http_status: int | None = None
    # What the client was told: 200 unless a fault with after_delivery replaced the answer.
    answer_http_status: int = 200
    answer_lost: bool = False
    provider: str = "facebook_login"  # instagram_login: sent on graph.instagram.com (no Page)

    def public(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "mid": self.mid,
            "page_id": self.page_id,
            "account_id": self.account_id,
            "recipient_id": self.recipient_id,
            "text": self.text,
            "attachments": self.attachments,
            "messaging_type": self.messaging_type,
            "tag": self.tag,
            "at": self.at,
            "at_ms": self.at_ms,
            "echo": self.echo,
            "echo_http_status": self.echo_http_status,
            "answer_http_status": self.answer_http_status,
            "answer_lost": self.answer_lost,
            "provider": self.provider,
        }


@dataclass
class DialogScript:
    mode: DialogMode = "interactive"
    user_id: str | None = None
    declined_scopes: frozenset[str] = frozenset()


_EXPIRY_FMT = "%A, %d-%b-%y %H:%M:%S UTC"
_SUBCODE_MESSAGES = {
    458: "Error validating access token: User {user} has not authorized application {app}.",
    459: "Error validating access token: You cannot access the app till you log in to www.facebook.com "
    "and follow the instructions given.",
    460: "Error validating access token: The session has been invalidated because the user changed their "
    "password or Facebook has changed the session for security reasons.",
    464: "Error validating access token: Sessions for the user  are not allowed because the user is not "
    "a confirmed user.",
    467: "Error validating access token: The session is invalid because the user logged out.",
    492: "Error validating access token: The session is invalid because the user is no longer an admin "
    "of the Page.",
}


@dataclass
class State:
    """Everything the sandbox remembers; `reset()` restores the configured start."""

    config: SandboxConfig
    clock_offset: float = 0.0
    users: dict[str, UserRec] = field(default_factory=dict)
    pages: dict[str, PageRec] = field(default_factory=dict)
    ig_accounts: dict[str, InstagramAccountRec] = field(default_factory=dict)
    ig_users: dict[str, InstagramUserRec] = field(default_factory=dict)
    codes: dict[str, CodeRec] = field(default_factory=dict)
    ig_codes: dict[str, CodeRec] = field(default_factory=dict)  # Instagram Login's (user_id: the account)
    ig_subscriptions: dict[str, list[str]] = field(default_factory=dict)  # account -> fields (Instagram app)
    refreshes: Counter[str] = field(default_factory=Counter)  # ig_refresh_token per account
    ig_token_shape: str = "data"  # api.instagram.com's answer: "data" ({"data": [...]}) or "flat"
    tokens: dict[str, TokenRec] = field(default_factory=dict)
    tokens_by_user: dict[str, list[str]] = field(default_factory=dict)
    page_token_cache: dict[tuple[str, str], str] = field(default_factory=dict)
    subscriptions: dict[str, list[str]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    exchanges: Counter[str] = field(default_factory=Counter)
    code_exchanges: Counter[str] = field(default_factory=Counter)
    issued: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    latency: list[LatencyRule] = field(default_factory=list)
    dialog: DialogScript = field(default_factory=DialogScript)
    next_id: int = 1
    page_size: int = 25
    long_lived_reexchange: ReexchangeMode = "extend"
    long_lived_ttl: int = 60 * DAY
    require_appsecret_proof: bool = True
    require_pkce: bool = False
    webhook_url: str = DEFAULT_WEBHOOK_URL
    webhook_log: list[dict[str, Any]] = field(default_factory=list)
    webhooks_sent: int = 0
    webhook_counters: Counter[str] = field(default_factory=Counter)  # mids used per seed
    # The Send API: when each person last wrote to each Instagram account ({igsid: {account: epoch s}};
    # a person with no entry for an account is unknown to it), the accepted sends (by seq and by mid),
    # mids used per account, the per-second and per-minute send counters, and the knobs.
    last_message_at: dict[str, dict[str, int]] = field(default_factory=dict)
    sent: list[SentMessage] = field(default_factory=list)
    sent_by_mid: dict[str, SentMessage] = field(default_factory=dict)
    sent_counters: Counter[str] = field(default_factory=Counter)
    send_second: dict[str, tuple[int, int]] = field(default_factory=dict)  # account -> (second, calls)
    send_minute: dict[str, tuple[int, int]] = field(default_factory=dict)  # account -> (minute, sends)
    pending_echoes: set[asyncio.Task[None]] = field(default_factory=set)
    human_agent_approved: bool = True
    send_rate_per_second: int = 100
    echoes: EchoMode = "on"
    echo_delay_ms: float = 200.0
    send_usage: dict[str, int] | None = None  # forced X-Business-Use-Case-Usage values
    # The attachment CDN (sandbox/cdn.py): bytes by asset id, and how long a new attachment URL works.
    media_assets: dict[str, Any] = field(default_factory=dict)
    media_ttl_seconds: int = 600

    def __post_init__(self) -> None:
        self.reset()

    # ---- lifecycle ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything; reload the default fixtures (when configured) and the config's knobs."""
        self.clock_offset = 0.0
        for table in (
            self.users,
            self.pages,
            self.ig_accounts,
            self.ig_users,
            self.codes,
            self.ig_codes,
            self.ig_subscriptions,
            self.tokens,
            self.tokens_by_user,
            self.page_token_cache,
            self.subscriptions,
            self.last_message_at,
            self.sent_by_mid,
            self.send_second,
            self.send_minute,
            self.media_assets,
        ):
            table.clear()
        self.media_ttl_seconds = 600
        for counter in (
            self.calls,
            self.exchanges,
            self.code_exchanges,
            self.refreshes,
            self.issued,
            self.webhook_counters,
            self.sent_counters,
        ):
            counter.clear()
        self.sent.clear()
        for task in self.pending_echoes:  # an echo of a send before the reset never arrives after it
            task.cancel()
        self.pending_echoes.clear()
        self.human_agent_approved = self.config.human_agent_approved
        self.send_rate_per_second = self.config.send_rate_per_second
        self.echoes = self.config.echoes
        self.echo_delay_ms = self.config.echo_delay_ms
        self.send_usage = None
        self.webhook_log.clear()
        self.webhooks_sent = 0
        self.webhook_url = self.config.webhook_url
        self.faults.clear()
        self.latency.clear()
        self.dialog = DialogScript()
        self.next_id = 1
        self.page_size = self.config.page_size
        self.long_lived_reexchange = self.config.long_lived_reexchange
        self.long_lived_ttl = self.config.long_lived_ttl
        self.require_appsecret_proof = self.config.require_appsecret_proof
        self.require_pkce = self.config.require_pkce
        self.ig_token_shape = "data"
        if self.config.default_fixtures:
            load_defaults(self)

    def now(self) -> int:
        return int(time.time() + self.clock_offset)

    def now_ms(self) -> int:
        return int((time.time() + self.clock_offset) * 1000)

    def set_now(self, when: datetime) -> None:
        self.clock_offset = when.timestamp() - time.time()

    def fresh_id(self, prefix: str, width: int) -> str:
        self.next_id += 1
        return f"{prefix}{self.next_id:0{width - len(prefix)}d}"

    # ---- world -----------------------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, declined_scopes: frozenset[str] = frozenset()) -> UserRec:
        if user_id in self.users:
            raise ValueError(f"user {user_id} already exists")
        user = UserRec(user_id, name, [], declined_scopes, self.now() + self.config.data_access_ttl)
        self.users[user_id] = user
        return user

    def add_page(
        self,
        user: UserRec,
        page_id: str,
        name: str,
        *,
        category: str = "Insurance Agent",
        tasks: tuple[str, ...] = DEFAULT_TASKS,
        hidden: bool = False,
    ) -> PageRec:
        page = self.pages.get(page_id)
        if page is None:
            page = PageRec(page_id, name, category, tasks, hidden)
            self.pages[page_id] = page
        user.page_ids.append(page_id)
        return page

    def link_instagram(
        self, page: PageRec, ig_id: str, username: str, name: str | None = None, picture: str | None = None
    ) -> InstagramAccountRec:
        account = InstagramAccountRec(
            ig_id,
            username,
            name or username,
            picture or f"https://sandbox.invalid/ig/{ig_id}.jpg",
            page.id,
        )
        self.ig_accounts[ig_id] = account
        page.ig_account_id = ig_id
        return account

    def note_inbound(self, account_id: str, igsid: str, at: int) -> None:
        """The person wrote to the account at `at` (epoch seconds): the 24-hour window runs from the
        latest such time."""
        seen = self.last_message_at.setdefault(igsid, {})
        seen[account_id] = max(at, seen.get(account_id, at))

    def add_instagram_user(self, igsid: str, username: str, name: str) -> InstagramUserRec:
        rec = InstagramUserRec(igsid, username, name, f"https://sandbox.invalid/igsid/{igsid}.jpg")
        self.ig_users[igsid] = rec
        return rec

    # ---- tokens ----------------------------------------------------------------------------------

    def granted_scopes(self, user: UserRec, requested: tuple[str, ...] | None = None) -> tuple[str, ...]:
        scopes = ALL_SCOPES if requested is None else requested
        return tuple(s for s in scopes if s not in user.declined_scopes)

    def issue(
        self,
        user_id: str,
        kind: Literal["user_short", "user_long", "page"],
        scopes: tuple[str, ...],
        *,
        expires_at: int | None,
        page_id: str | None = None,
    ) -> TokenRec:
        rec = TokenRec(new_token(), kind, user_id, scopes, self.now(), expires_at, page_id)
        self.tokens[rec.value] = rec
        self.tokens_by_user.setdefault(user_id, []).append(rec.value)
        self.issued[kind] += 1
        return rec

    def page_token_for(self, user_token: TokenRec, page: PageRec) -> TokenRec:
        """The Page token seen through `user_token`: stable per (user token, Page); never expires
        when the user token is long-lived, else expires with it."""
        key = (user_token.value, page.id)
        cached = self.page_token_cache.get(key)
        if cached is not None:
            return self.tokens[cached]
        if user_token.kind == "page":
            return user_token
        expires_at = None if user_token.kind == "user_long" else user_token.expires_at
        rec = self.issue(
            user_token.user_id, "page", user_token.scopes, expires_at=expires_at, page_id=page.id
        )
        self.page_token_cache[key] = rec.value
        return rec

    def invalid_reason(self, rec: TokenRec) -> tuple[int, str] | None:
        """(subcode, message) when the token no longer works, else None."""
        if rec.revoked_subcode is not None:
            template = _SUBCODE_MESSAGES.get(
                rec.revoked_subcode, "Error validating access token: The session is invalid."
            )
            return rec.revoked_subcode, template.format(user=rec.user_id, app=self.config.app_id)
        now = self.now()
        if rec.expires_at is not None and now >= rec.expires_at:
            expired = datetime.fromtimestamp(rec.expires_at, UTC).strftime(_EXPIRY_FMT)
            current = datetime.fromtimestamp(now, UTC).strftime(_EXPIRY_FMT)
            return (
                463,
                f"Error validating access token: Session has expired on {expired}. "
                f"The current time is {current}.",
            )
        return None

    def check(self, value: str | None) -> TokenRec:
        """The live token record for `value`, or the Graph error Meta would answer with."""
        if not value:
            raise GraphFailure(
                "An active access token must be used to query information about the current user.", code=2500
            )
        rec = self.tokens.get(value)
        if rec is None:
            if "|" in value:
                raise GraphFailure("Invalid OAuth access token signature.", code=190)
            raise GraphFailure("Invalid OAuth access token - Cannot parse access token", code=190)
        reason = self.invalid_reason(rec)
        if reason is not None:
            raise GraphFailure(reason[1], code=190, subcode=reason[0])
        return rec

    def revoke(self, value: str, subcode: int = 460) -> bool:
        rec = self.tokens.get(value)
        if rec is None:
            return False
        rec.revoked_subcode = subcode
        return True

    def revoke_user(self, user_id: str, subcode: int = 460) -> int:
        values = self.tokens_by_user.get(user_id, [])
        for value in values:
            self.tokens[value].revoked_subcode = subcode
        return len(values)
