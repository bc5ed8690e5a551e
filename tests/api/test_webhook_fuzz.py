"""A seeded, bounded fuzzer for the webhook receiver and the SQL processing behind it.

10,000 bodies (Meta-shaped deliveries with mutated fields, structural oddities, deep nesting, escaped
surrogates and NULs, very long strings, random bytes, invalid UTF-8, empty bodies), about half correctly
signed, go through the real app in-process, 50 at a time. Then every stored row is processed with the
worker's SQL (``instagram_webhook_claim_v1`` / ``instagram_webhook_complete_v1``) until nothing is left to
claim, with one connected integration so that part of the fuzz reaches the message paths.

The campaign runs once per module (a module-scoped fixture records what happened); the tests assert on
the record. A failure names the seed and the smallest bodies involved, so it can be replayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.settings import Settings
from instagram_dm.webhooks import MAX_DELIVERY_BYTES
from tests.db.factories import DEMO_IMO, integration
from tests.fixtures.api import in_process_client, settings_env
from tests.fixtures.database import reset_to_seed
from tests.webhook_payloads import (
    ACCOUNT,
    APP_SECRET,
    T0,
    WEBHOOK,
    action,
    delivery,
    echo,
    encode,
    message,
    sign,
)

SEED = 20261202
TOTAL = 10_000
CHUNK = 50
WORKER = "fuzz"
TERMINAL = {"completed", "failed", "unroutable"}

# The participants and accounts the deliveries mention: the connected account (routable), accounts no
# integration has (unroutable), and ids that are wrong on purpose.
PEOPLE = ["900", "901", "902", "903", "904", ACCOUNT, "", " ", "0", "x" * 129]
ACCOUNTS = [ACCOUNT] * 6 + ["17841400000000002", "17841499999999999", "", "0", "-1"]
DEEP = "@@deep:{}@@"  # a string value replaced by [[[...]]] after encoding (json.dumps cannot nest that deep)


# ---- bodies ---------------------------------------------------------------------------------------


class Fuzz:
    """Makes the bodies, all from one `random.Random`: the same seed, the same 10,000 bodies."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # -- values

    def text(self) -> str:
        r = self.rng
        pieces = [
            "hi",
            "Grüße / 你好 😀",
            "\ud800",  # lone high surrogate: json.dumps escapes it as \ud800
            "\udfff\ud800",  # surrogates in the wrong order
            "\ud83d\ude00",  # a valid pair, escaped
            "\u0000",
            "\u202e\u200b\ufeff",
            "\U0010ffff",
            "e\u0301" * 3,
            '"\\/\n\t',
            "<script>alert(1)</script>",
            "' or 1=1 --",
            "%s%n{0}${x}",
        ]
        return "".join(r.choice(pieces) for _ in range(r.randint(1, 4)))

    def long_string(self) -> str:
        r = self.rng
        n = r.choices([129, 200, 513, 2_000, 3_000, 10_000, 100_000], [4, 2, 4, 2, 2, 2, 1])[0]
        if r.random() < 0.5:
            return "x" * n
        return "".join(r.choices("abcdefghijklmnopqrstuvwxyz0123456789é你😀", k=n))

    def junk(self, depth: int = 0) -> Any:
        """A value of the wrong JSON type (or a wrong value of the right one)."""
        r = self.rng
        choice = r.randrange(22 if depth < 3 else 16)
        match choice:
            case 0:
                return ""
            case 1:
                return self.text()
            case 2:
                return r.choice([10**30, -(10**30), 2**63, 2**64 + 1, -(2**63) - 1, 10**400])
            case 3:
                return r.choice([-1, 0, 1, -T0, T0 * 1000, 999_999_999_999_999, 10**16])
            case 4:
                return r.choice([1.5, -0.0, 1e308, -1e-308, 1764547200000.5, 1e20])
            case 5:
                return r.choice([str(T0), "-1", "1.5e3", " 1764547200000", "NaN", "1764547200000x"])
            case 6:
                return r.choice([True, False])
            case 7:
                return None
            case 8:
                return []
            case 9:
                return {}
            case 10:
                return self.long_string()
            case 11:
                return DEEP.format(r.choice([10, 100, 1_000, 10_000]))
            case 12:
                return r.choice(["instagram", "page", "messages", "react", "unreact", "true", "null"])
            case 13:
                return r.choice(PEOPLE)
            case 14:
                return {"id": r.choice([*PEOPLE, None, 5, [], {}])}
            case 15:
                return f"m{r.randrange(400)}"
            case 16 | 17:
                return [self.junk(depth + 1) for _ in range(r.randint(1, 3))]
            case _:
                return {self.key(): self.junk(depth + 1) for _ in range(r.randint(1, 3))}

    def key(self) -> str:
        return self.rng.choice(
            [
                "id",
                "mid",
                "text",
                "time",
                "timestamp",
                "sender",
                "recipient",
                "message",
                "entry",
                "object",
                "messaging",
                "standby",
                "changes",
                "field",
                "value",
                "attachments",
                "type",
                "payload",
                "url",
                "is_echo",
                "is_deleted",
                "reaction",
                "read",
                "postback",
                "referral",
                "reply_to",
                "story",
                "quick_reply",
                "num_edit",
                "message_edit",
                "action",
                "emoji",
                "title",
                "zzz_unknown",
                "",
                "\u0000",
                "\ud800",
                "__proto__",
            ]
        )

    # -- Meta-shaped deliveries

    def mid(self) -> Any:
        r = self.rng
        if r.random() < 0.9:
            return f"m{r.randrange(400)}"
        return r.choice(["", self.long_string(), "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx"])

    def when(self) -> int:
        return T0 + self.rng.randrange(10**7)

    def item(self, account: str) -> dict[str, Any]:
        r = self.rng
        person = r.choice(PEOPLE[:5]) if r.random() < 0.9 else r.choice(PEOPLE)
        outbound = r.random() < 0.15
        sender, recipient = (account, person) if outbound else (person, account)
        base: dict[str, Any] = {
            "sender": {"id": sender},
            "recipient": {"id": recipient},
            "timestamp": self.when(),
        }
        kind = r.choices(
            ["message", "echo", "attachment", "reaction", "unsend", "edit", "read", "postback", "referral"],
            [30, 8, 12, 10, 6, 6, 8, 8, 4],
        )[0]
        match kind:
            case "message":
                message: dict[str, Any] = {"mid": self.mid(), "text": self.text()}
                if r.random() < 0.2:
                    message["reply_to"] = r.choice(
                        [{"mid": self.mid()}, {"story": {"url": "https://x", "id": "1"}}]
                    )
                if r.random() < 0.1:
                    message["quick_reply"] = {"payload": "YES"}
                if r.random() < 0.1:
                    message["referral"] = {"ref": "ad", "source": "ADS", "type": "OPEN_THREAD"}
                if r.random() < 0.05:
                    message["is_unsupported"] = True
                base["message"] = message
            case "echo":
                base["message"] = {"mid": self.mid(), "text": self.text(), "is_echo": True}
            case "attachment":
                kinds = ["image", "video", "audio", "file", "share", "story_mention", "ig_reel", "reel", "x"]
                attachments = [
                    {"type": r.choice(kinds), "payload": {"url": "https:\\/\\/cdn.example\\/a.jpg"}}
                    for _ in range(r.randint(1, 3))
                ]
                base["message"] = {"mid": self.mid(), "attachments": attachments}
            case "reaction":
                base["reaction"] = {
                    "mid": self.mid(),
                    "action": r.choice(["react", "unreact", "other"]),
                    "reaction": "love",
                    "emoji": "\u2764",
                }
            case "unsend":
                base["message"] = {"mid": self.mid(), "is_deleted": True}
            case "edit":
                base["message_edit"] = {"mid": self.mid(), "text": self.text(), "num_edit": r.randint(0, 5)}
            case "read":
                base["read"] = {"mid": self.mid()}
            case "postback":
                postback: dict[str, Any] = {"title": "Start", "payload": "GET_STARTED"}
                if r.random() < 0.5:
                    postback["mid"] = self.mid()
                base["postback"] = postback
            case _:
                base["referral"] = {"ref": "link", "source": "SHORTLINK", "type": "OPEN_THREAD"}
        return base

    def entry(self) -> dict[str, Any]:
        r = self.rng
        account = r.choice(ACCOUNTS)
        entry: dict[str, Any] = {"id": account, "time": self.when()}
        where = r.choices(["messaging", "standby", "changes", "both"], [70, 10, 10, 10])[0]
        items = [self.item(account) for _ in range(r.randint(1, 4))]
        if where in ("messaging", "both"):
            entry["messaging"] = items
        if where in ("standby", "both"):
            entry["standby"] = [self.item(account) for _ in range(r.randint(1, 2))]
        if where == "changes":
            fields = ["messages", "comments", "mentions", "story_insights", "", "messaging_seen"]
            entry["changes"] = [{"field": r.choice(fields), "value": item} for item in items]
        return entry

    def delivery(self) -> dict[str, Any]:
        return {"object": "instagram", "entry": [self.entry() for _ in range(self.rng.randint(1, 3))]}

    # -- mutations

    def mutate(self, doc: Any, times: int) -> Any:
        """`times` random edits anywhere in the tree: a value replaced by junk, a key removed, an unknown
        key added, a value wrapped in an array or stringified."""
        r = self.rng
        for _ in range(times):
            slots: list[tuple[Any, Any]] = []
            stack = [doc]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    for k, v in node.items():
                        slots.append((node, k))
                        stack.append(v)
                elif isinstance(node, list):
                    for i, v in enumerate(node):
                        slots.append((node, i))
                        stack.append(v)
            if not slots:
                return self.junk()
            parent, k = r.choice(slots)
            op = r.randrange(6)
            if op <= 1:
                parent[k] = self.junk()
            elif op == 2 and isinstance(parent, dict):
                del parent[k]
            elif op == 3 and isinstance(parent, dict):
                parent[self.key()] = self.junk()
            elif op == 4:
                parent[k] = [parent[k]]
            else:
                parent[k] = json.dumps(parent[k]) if r.random() < 0.5 else {"value": parent[k]}
        return doc

    def structural(self) -> Any:
        r = self.rng
        d = self.delivery()
        options: list[Callable[[], Any]] = [
            lambda: {"object": "instagram", "entry": []},
            lambda: {"object": "instagram", "entry": {}},
            lambda: {"object": "instagram", "entry": d["entry"][0]},
            lambda: {"object": "instagram", "entry": "[]"},
            lambda: {"object": "instagram", "entry": [None, 1, "x", [], {}, True]},
            lambda: {"object": "instagram", "entry": [{"id": ACCOUNT, "time": T0}]},
            lambda: {"object": "instagram", "entry": [{"id": ACCOUNT, "messaging": []}]},
            lambda: {"object": "instagram", "entry": [{"id": ACCOUNT, "messaging": {}}]},
            lambda: {"object": "instagram", "entry": [{"id": ACCOUNT, "messaging": [None, 1, [], "x"]}]},
            lambda: {
                "object": "instagram",
                "entry": [
                    {
                        "id": ACCOUNT,
                        "changes": [
                            {"field": "comments", "value": {"id": "1", "text": "c"}},
                            {"field": 5},
                            "x",
                            None,
                            {"value": None},
                        ],
                    }
                ],
            },
            lambda: {
                "object": "instagram",
                "entry": [{"id": ACCOUNT, "standby": d["entry"][0].get("messaging")}],
            },
            lambda: {"object": "page", "entry": d["entry"]},
            lambda: {"object": None, "entry": d["entry"]},
            lambda: {"entry": d["entry"]},
            lambda: {"object": "instagram"},
            lambda: {**d, "zzz": {"nested": [1, {"a": None}]}, "": "", "entry_": []},
            lambda: [d],
            lambda: d["entry"],
            lambda: r.choice([None, 0, "instagram", True, [], {}]),
            lambda: {
                "object": "instagram",
                "entry": [{**e, "id": int(e["id"]) if e["id"].isdigit() else e["id"]} for e in d["entry"]],
            },
            lambda: {"object": "instagram", "entry": [d["entry"][0]] * 50},
        ]
        return r.choice(options)()

    # -- encodings

    def encode(self, doc: Any) -> bytes:
        r = self.rng
        style = r.random()
        if style < 0.7:
            raw = encode(doc)  # as Meta does: ASCII with \u escapes and \/
        elif style < 0.9:
            raw = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")  # lone surrogates raw
        else:
            raw = json.dumps(doc, indent=r.choice([1, 4])).encode()
        for n in (10, 100, 1_000, 10_000):
            raw = raw.replace(json.dumps(DEEP.format(n)).encode(), b"[" * n + b"]" * n)
        return raw

    def bytes_mutation(self, raw: bytes) -> bytes:
        r = self.rng
        data = bytearray(raw)
        for _ in range(r.randint(1, 5)):
            if not data:
                break
            at = r.randrange(len(data))
            op = r.randrange(4)
            if op == 0:
                data[at] = r.randrange(256)
            elif op == 1:
                del data[at]
            elif op == 2:
                data[at:at] = r.choice(
                    [
                        b"\xff",
                        b"\xc3\x28",
                        b"\xc0\xaf",
                        b"\xed\xa0\x80",
                        b"\x00",
                        b"\\u0000",
                        b"\\ud800",
                        b"\\",
                        b'"',
                        b"{",
                        b"]",
                        b"\xef\xbb\xbf",
                    ]
                )
            else:
                del data[at:]
        return bytes(data)

    def body(self) -> bytes:
        r = self.rng
        category = r.choices(
            ["meta", "mutated", "structural", "bytes", "random", "deep", "unicode", "long"],
            [15, 35, 10, 12, 8, 6, 8, 6],
        )[0]
        match category:
            case "meta":
                return self.encode(self.delivery())
            case "mutated":
                return self.encode(self.mutate(self.delivery(), r.choice([1, 1, 2, 3, 5, 8])))
            case "structural":
                return self.encode(self.structural())
            case "bytes":
                return self.bytes_mutation(self.encode(self.delivery()))
            case "random":
                return r.choice(
                    [
                        b"",
                        b" ",
                        b"\n",
                        b"\xef\xbb\xbf{}",
                        b"\x00" * 16,
                        b"\xff\xfe\xfd",
                        r.randbytes(r.randint(1, 2_000)),
                        bytes(r.randrange(0x80, 0x100) for _ in range(r.randint(1, 64))),
                    ]
                )
            case "deep":
                n = r.choice([1_000, 10_000, 20_000])
                nest = b"[" * n + b"]" * n
                where = r.randrange(4)
                if where == 0:
                    return nest
                if where == 1:
                    return b'{"object":"instagram","entry":' + nest + b"}"
                if where == 2:
                    return b'{"object":"instagram","entry":[' + b'{"a":' * n + b"1" + b"}" * n + b"]}"
                doc = self.delivery()
                doc["entry"][0].setdefault("messaging", [self.item(ACCOUNT)])
                first = doc["entry"][0]["messaging"][0]
                slot = r.choice(["attachments", "quick_reply", "reply_to", "text"])
                first.setdefault("message", {"mid": self.mid()})[slot] = DEEP.format(10_000)
                return self.encode(doc)
            case "unicode":
                doc = self.delivery()
                for _ in range(r.randint(1, 3)):
                    entry = doc["entry"][0]
                    items = entry.get("messaging") or entry.get("standby") or [{}]
                    target = items[0].setdefault("message", {"mid": self.mid()})
                    odd = [
                        "\ud800",
                        "\u0000",
                        "a\u0000b",
                        "\udc00",
                        "\ud83d\ude00",
                        "\ufffe\uffff",
                        self.text(),
                    ]
                    target[r.choice(["text", "mid"])] = r.choice(odd)
                    if r.random() < 0.3:
                        items[0]["sender"] = {"id": r.choice(["\u0000", "\ud800", "9\u00000"])}
                return self.encode(doc)
            case _:
                doc = self.delivery()
                entry = doc["entry"][0]
                items = entry.get("messaging") or entry.get("standby") or []
                if items:
                    item = items[0]
                    where = r.choice(["text", "mid", "sender", "postback_mid", "account", "url"])
                    value = self.long_string()
                    if where == "text":
                        item.setdefault("message", {"mid": self.mid()})["text"] = value
                    elif where == "mid":
                        item.setdefault("message", {})["mid"] = value
                    elif where == "sender":
                        item["sender"] = {"id": value}
                    elif where == "postback_mid":
                        item["postback"] = {"mid": value, "title": "t"}
                        item.pop("message", None)
                    elif where == "account":
                        entry["id"] = value
                    else:
                        item["message"] = {
                            "mid": self.mid(),
                            "attachments": [{"type": "image", "payload": {"url": value}}],
                        }
                return self.encode(doc)


class Signing:
    """How a body is presented: correctly signed (about half), or unsigned / badly signed in some way."""

    GOOD = ("signed", "signed-uppercase-hex")
    BAD = (
        "none",
        "empty",
        "wrong-secret",
        "other-body",
        "truncated",
        "no-prefix",
        "sha1-only",
        "not-hex",
        "random-hex",
        "secret-as-signature",
        "padded",
    )

    @staticmethod
    def headers(mode: str, body: bytes, rng: random.Random) -> dict[str, str]:
        good = sign(body)
        value = {
            "signed": good,
            "signed-uppercase-hex": "sha256=" + good[7:].upper(),
            "none": None,
            "empty": "",
            "wrong-secret": sign(body, "another-secret"),
            "other-body": sign(body + b" "),
            "truncated": good[:-1],
            "no-prefix": good[7:],
            "sha1-only": None,
            "not-hex": "sha256=" + "g" * 64,
            "random-hex": "sha256=" + rng.randbytes(32).hex(),
            "secret-as-signature": "sha256=" + APP_SECRET,
            "padded": " " + good,
        }[mode]
        headers = {"content-type": rng.choice(["application/json", "text/plain", "application/octet-stream"])}
        if value is not None:
            headers["x-hub-signature-256"] = value
        if mode == "sha1-only":
            headers["x-hub-signature"] = "sha1=" + hmac.new(APP_SECRET.encode(), body, "sha1").hexdigest()
        return headers


@dataclass(frozen=True)
class Sent:
    body: bytes
    signed: bool
    status: int
    response: bytes
    response_headers: str


@dataclass
class Campaign:
    """What the fuzz run did: every request and its answer, the table after the requests, and the
    processing afterwards."""

    sent: list[Sent] = field(default_factory=list)
    rows_after_receive: int = 0
    stored_shas: set[bytes] = field(default_factory=set)
    complete_calls: int = 0
    complete_errors: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    failed_without_reason: int = 0
    messages: int = 0
    conversations: int = 0

    @property
    def signed_shas(self) -> set[bytes]:
        return {
            hashlib.sha256(s.body).digest()
            for s in self.sent
            if s.signed and len(s.body) <= MAX_DELIVERY_BYTES
        }


def bodies(seed: int = SEED, total: int = TOTAL) -> list[tuple[bytes, str]]:
    """The campaign's bodies and signing modes; a few are over the size cap."""
    rng = random.Random(seed)
    fuzz = Fuzz(rng)
    out = []
    for n in range(total):
        if n % 2000 == 1999:  # 5 oversized bodies, signed or not
            body = b'{"object":"instagram","entry":[],"pad":"' + b"x" * MAX_DELIVERY_BYTES + b'"}'
        else:
            body = fuzz.body()
        mode = rng.choice(Signing.GOOD) if rng.random() < 0.5 else rng.choice(Signing.BAD)
        out.append((body, mode))
    return out


def shortest(items: list[bytes], limit: int = 3) -> list[bytes]:
    return [b[:300] for b in sorted(items, key=len)[:limit]]


# ---- the run ---------------------------------------------------------------------------------------


async def process_all(db: AsyncpgDatabase, pg: asyncpg.Connection, campaign: Campaign) -> None:
    """Claim and complete as the worker does until nothing is claimable; a retryable delivery (an action
    whose message is not there yet) is made due at once, as if its back-off had passed."""
    for _ in range(100):
        jobs = await db.rpc(
            "instagram_webhook_claim_v1", {"p_worker": WORKER, "p_limit": 1000, "p_lease_seconds": 60}
        )
        if not jobs:
            waiting = await pg.execute(
                "update public.instagram_webhook_events set run_at = now() where state = 'retryable'"
            )
            if waiting == "UPDATE 0":
                return
            continue
        ids = [int(j["id"]) for j in jobs]
        campaign.complete_calls += 1
        try:
            await db.rpc(
                "instagram_webhook_complete_v1",
                {"p_worker": WORKER, "p_results": [{"job_id": i} for i in ids]},
            )
        except errors.InstagramDMError:
            await isolate(pg, ids, campaign)
    raise AssertionError("the processing did not settle in 100 rounds")


async def isolate(pg: asyncpg.Connection, ids: list[int], campaign: Campaign) -> None:
    """A refused batch: complete its deliveries one at a time (as service_role, to see the database's own
    message), record each one that raises with its body, and discard it so the run can go on."""
    for job_id in ids:
        try:
            async with pg.transaction():
                await pg.execute("set local role service_role")
                await pg.fetchval(
                    "select public.instagram_webhook_complete_v1($1, $2::jsonb)",
                    WORKER,
                    json.dumps([{"job_id": job_id}]),
                )
        except asyncpg.PostgresError as exc:
            body = bytes(
                await pg.fetchval("select body from public.instagram_webhook_events where id = $1", job_id)
            )
            campaign.complete_errors.append(f"{type(exc).__name__}: {exc} -- body[:300]={body[:300]!r}")
            await pg.execute(
                "select public.instagram_webhook_fail_v1($1, $2, 'discard', null, 'fuzz', 'raised')",
                job_id,
                WORKER,
            )


@pytest.fixture(scope="module")
async def campaign(
    admin_pool: asyncpg.Pool, sandbox_server: str, database_url: str
) -> AsyncIterator[Campaign]:
    """The whole fuzz run, once per module, on a database reset to the seed plus one connected integration
    for account 17841400000000001."""
    result = Campaign()
    async with admin_pool.acquire() as pg:
        await reset_to_seed(pg)
        await integration(pg, DEMO_IMO, status="connected", ig_account_id=ACCOUNT)
        settings = Settings.from_environ(settings_env(sandbox_server, database_url), env_file=None)
        rng = random.Random(SEED + 1)
        planned = bodies()
        async with in_process_client(settings, raise_app_exceptions=False) as client:
            for start in range(0, len(planned), CHUNK):
                chunk = planned[start : start + CHUNK]
                responses = await asyncio.gather(
                    *(client.post(WEBHOOK, content=b, headers=Signing.headers(m, b, rng)) for b, m in chunk)
                )
                result.sent += [
                    Sent(b, m in Signing.GOOD, r.status_code, r.content, str(r.headers))
                    for (b, m), r in zip(chunk, responses, strict=True)
                ]
        result.rows_after_receive = int(
            await pg.fetchval("select count(*) from public.instagram_webhook_events")
        )
        result.stored_shas = {
            bytes(r["body_sha256"])
            for r in await pg.fetch("select body_sha256 from public.instagram_webhook_events")
        }
        db = await AsyncpgDatabase.connect(database_url, min_size=1, max_size=2)
        try:
            await process_all(db, pg, result)
        finally:
            await db.close()
        rows = await pg.fetch(
            "select state, count(*) as n from public.instagram_webhook_events group by state"
        )
        result.states = {r["state"]: int(r["n"]) for r in rows}
        result.failed_without_reason = int(
            await pg.fetchval(
                """select count(*) from public.instagram_webhook_events
                   where state = 'failed' and (last_error_code is null or last_error_message is null)"""
            )
        )
        result.messages = int(await pg.fetchval("select count(*) from public.instagram_messages"))
        result.conversations = int(await pg.fetchval("select count(*) from public.instagram_conversations"))
    yield result


# ---- the receiver ----------------------------------------------------------------------------------


def test_the_bodies_are_the_same_for_the_same_seed() -> None:
    """The fuzz is reproducible: the same seed gives byte-identical bodies and signing modes."""
    assert bodies(total=200) == bodies(total=200)
    assert bodies(total=200) != bodies(seed=SEED + 7, total=300)


def test_no_fuzzed_request_gets_a_server_error(campaign: Campaign) -> None:
    """None of the 10,000 fuzzed requests is answered with a status of 500 or more."""
    assert len(campaign.sent) == TOTAL
    errors_5xx = [s for s in campaign.sent if s.status >= 500]
    assert errors_5xx == [], shortest([s.body for s in errors_5xx])


def test_every_unverified_request_is_refused(campaign: Campaign) -> None:
    """Each unsigned or badly signed body is 401 invalid_signature (413 body_too_large when over 1 MiB)."""
    unsigned = [s for s in campaign.sent if not s.signed]
    assert len(unsigned) > TOTAL // 3
    wrong = [
        s
        for s in unsigned
        if (s.status, json.loads(s.response)["error"]["code"])
        != ((413, "body_too_large") if len(s.body) > MAX_DELIVERY_BYTES else (401, "invalid_signature"))
    ]
    assert wrong == [], [(s.status, s.body[:100]) for s in wrong[:3]]


def test_every_signed_request_within_the_cap_is_acknowledged(campaign: Campaign) -> None:
    """Each correctly signed body of at most 1 MiB is 200 {"received": true}, whatever it contains."""
    signed = [s for s in campaign.sent if s.signed and len(s.body) <= MAX_DELIVERY_BYTES]
    assert len(signed) > TOTAL // 3
    wrong = [s for s in signed if s.status != 200 or json.loads(s.response) != {"received": True}]
    assert wrong == [], shortest([s.body for s in wrong])
    oversized = [s for s in campaign.sent if s.signed and len(s.body) > MAX_DELIVERY_BYTES]
    assert oversized and {s.status for s in oversized} == {413}


def test_one_row_per_distinct_signed_body_and_none_from_unsigned_ones(campaign: Campaign) -> None:
    """The table holds exactly the distinct signed bodies (by SHA-256): no duplicate, no unsigned body."""
    assert campaign.rows_after_receive == len(campaign.signed_shas)
    assert campaign.stored_shas == campaign.signed_shas
    unsigned_only = {
        hashlib.sha256(s.body).digest() for s in campaign.sent if not s.signed
    } - campaign.signed_shas
    assert unsigned_only and not unsigned_only & campaign.stored_shas


def test_responses_never_carry_a_traceback_or_the_app_secret(campaign: Campaign) -> None:
    """No answer to fuzzed input (body or headers) contains a Python traceback, a file path or the app secret."""
    leaks = [
        s
        for s in campaign.sent
        if any(
            marker in (s.response + s.response_headers.encode())
            for marker in (
                b"Traceback",
                b'File "',
                b".py",
                APP_SECRET.encode(),
                b"asyncpg",
                b"psycopg",
                b"SQL",
            )
        )
    ]
    assert leaks == [], [(s.status, s.response[:200]) for s in leaks[:3]]


# ---- the processing --------------------------------------------------------------------------------


def test_processing_fuzzed_deliveries_never_raises(campaign: Campaign) -> None:
    """instagram_webhook_complete_v1 never raises on any stored fuzzed delivery (batches of up to 1,000)."""
    assert campaign.complete_calls >= len(campaign.stored_shas) // 1000
    assert campaign.complete_errors == []


def test_every_fuzzed_delivery_ends_in_a_terminal_state(campaign: Campaign) -> None:
    """After processing, every row is completed, failed or unroutable, and each failed one says why."""
    assert sum(campaign.states.values()) == len(campaign.stored_shas)
    assert set(campaign.states) <= TERMINAL, campaign.states
    assert campaign.failed_without_reason == 0


def test_the_fuzz_reaches_every_outcome_and_the_message_paths(campaign: Campaign) -> None:
    """The campaign is not vacuous: some deliveries completed, failed and were unroutable, and messages and
    conversations were created for the connected account."""
    assert all(campaign.states.get(state, 0) > 0 for state in TERMINAL), campaign.states
    assert campaign.messages > 100
    assert campaign.conversations > 0


# ---- regressions the fuzz found ------------------------------------------------------------------


def incompressible(n: int) -> str:
    """`n` characters Postgres cannot compress (an index entry stays as long as the text)."""
    return random.Random(n).randbytes(n // 2 + 1).hex()[:n]


async def process_one(db: AsyncpgDatabase, pg: asyncpg.Connection, payload: Any) -> asyncpg.Record:
    """Store one signed delivery and run it through claim and complete as the worker does; its row after."""
    await rpc.webhook_ingest(db, bodies=[encode(payload)])
    jobs = await db.rpc(
        "instagram_webhook_claim_v1", {"p_worker": WORKER, "p_limit": 10, "p_lease_seconds": 60}
    )
    assert len(jobs) == 1
    await db.rpc(
        "instagram_webhook_complete_v1", {"p_worker": WORKER, "p_results": [{"job_id": jobs[0]["id"]}]}
    )
    return await pg.fetchrow(
        "select state, outcome::text, last_error_code from public.instagram_webhook_events"
    )


@pytest.fixture
async def connected(pg: asyncpg.Connection) -> str:
    return await integration(pg, DEMO_IMO, status="connected", ig_account_id=ACCOUNT)


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(message("m-1", sender=""), id="empty-sender"),
        pytest.param(echo("m-2", "hi", to=""), id="echo-to-empty-recipient"),
        pytest.param(
            action("postback", {"title": "Start", "payload": "GO"}, sender=""), id="postback-empty-sender"
        ),
    ],
)
async def test_an_empty_participant_id_is_an_ignored_item_not_a_failed_batch(
    db: AsyncpgDatabase, pg: asyncpg.Connection, connected: str, item: dict[str, Any]
) -> None:
    """A sender or recipient id of "" is an invalid item (completed, ignored); it used to make the conversation
    insert violate instagram_conversations_participant_igsid_check and refuse the whole batch."""
    row = await process_one(db, pg, delivery(item))
    assert row["state"] == "completed"
    assert '"invalid_item"' in row["outcome"]
    assert await pg.fetchval("select count(*) from public.instagram_conversations") == 0


async def test_a_postback_mid_too_long_for_the_unique_index_is_ignored(
    db: AsyncpgDatabase, pg: asyncpg.Connection, connected: str
) -> None:
    """A postback whose mid is over 512 characters is an invalid item; it used to exceed the btree maximum of
    instagram_messages_meta_message_id_key and refuse the whole batch."""
    row = await process_one(
        db, pg, delivery(action("postback", {"mid": incompressible(3_000), "title": "t"}))
    )
    assert row["state"] == "completed"
    assert '"invalid_item"' in row["outcome"]
    assert await pg.fetchval("select count(*) from public.instagram_messages") == 0


async def test_a_postback_with_a_mid_of_512_characters_is_kept(
    db: AsyncpgDatabase, pg: asyncpg.Connection, connected: str
) -> None:
    """The longest mid allowed (512 characters) still stores the postback under that mid."""
    mid = incompressible(512)
    row = await process_one(db, pg, delivery(action("postback", {"mid": mid, "title": "Start"})))
    assert row["state"] == "completed"
    assert await pg.fetchval("select meta_message_id from public.instagram_messages") == mid


async def test_an_account_id_too_long_to_index_is_invalid_not_unroutable(
    db: AsyncpgDatabase, pg: asyncpg.Connection
) -> None:
    """An entry id over 128 characters makes its items invalid (completed); it used to be kept as an unroutable
    account and exceed the GIN maximum of instagram_webhook_events_unroutable_idx, refusing the batch."""
    row = await process_one(db, pg, delivery(message("m-3"), account=incompressible(3_000)))
    assert row["state"] == "completed"
    assert '"invalid_item"' in row["outcome"]


async def test_processing_is_not_jit_compiled(pg: asyncpg.Connection) -> None:
    """webhook_process runs with jit off: the planner's estimates for any jsonb array are in the millions, so
    with JIT every batch (even of one delivery) spent seconds compiling."""
    config = await pg.fetchval(
        "select proconfig from pg_proc where oid = 'instagram_private.webhook_process(text, bigint[])'::regprocedure"
    )
    assert "jit=off" in config
