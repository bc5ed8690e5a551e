"""The inbox RPCs (instagram_list_conversations, instagram_list_messages, instagram_mark_conversation_read),
called the way the app calls them: as the user, through the adapter's ``rpc_as_user`` (role and JWT claims
in one transaction, as PostgREST does). Rows are arranged with plain SQL; the triggers on instagram_messages
keep each conversation's last_message_at, preview, unread_count and last_inbound_at."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.db.port import ActingUser
from tests.db.factories import DEMO_IMO, DEMO_MEMBER, STARTER_ADMIN, STARTER_IMO, integration
from tests.fixtures.api import acting_user
from tests.fixtures.database import acting_as, reset_to_seed

T0 = datetime.fromisoformat("2025-12-01T12:00:00+00:00")
CONVERSATION_FIELDS = {
    "id", "integration_id", "participant", "last_message_preview", "last_message_at", "last_inbound_at",
    "unread_count", "window_closes_at", "human_agent_until", "recruiting_lead_id",
}  # fmt: skip
MESSAGE_FIELDS = {
    "id", "meta_message_id", "direction", "message_type", "text", "attachments", "status", "reactions",
    "reply_to", "sent_by_user_id", "error_code", "error_message", "sent_at", "delivered_at", "read_at",
    "deleted", "edit_count",
}  # fmt: skip
MEMBER = acting_user(DEMO_MEMBER)
OUTSIDER = acting_user(STARTER_ADMIN)  # an admin, but of another IMO
ANON = ActingUser(token="anon-key", claims={"role": "anon"})
BIG_ACCOUNT = "17841400000099999"


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


async def conversation(
    pg: asyncpg.Connection,
    integration_id: str,
    igsid: str,
    *,
    imo_id: str = DEMO_IMO,
    username: str | None = None,
    name: str | None = None,
    picture: str | None = None,
    lead_id: str | None = None,
) -> str:
    return str(
        await pg.fetchval(
            """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid,
                 participant_username, participant_name, participant_profile_picture_url, recruiting_lead_id)
               values ($1, $2, $3, $4, $5, $6, $7) returning id::text""",
            integration_id,
            imo_id,
            igsid,
            username,
            name,
            picture,
            lead_id,
        )
    )


async def messages(
    pg: asyncpg.Connection,
    conversation_id: str,
    sent: Sequence[datetime],
    *,
    direction: str = "inbound",
    text: str = "hello",
    **columns: Any,
) -> list[str]:
    """One message per time in `sent`, in one statement (so the statement-level trigger sees them together);
    `columns` sets deleted_at, reactions, attachments or message_type on all of them."""
    extra = "".join(f", {name}" for name in columns)
    values = "".join(f", ${i + 5}" for i in range(len(columns)))
    rows = await pg.fetch(
        f"""insert into public.instagram_messages (conversation_id, imo_id, meta_message_id, direction, text,
              sent_at{extra})
            select c.id, c.imo_id, 'mid.' || gen_random_uuid(), $2::public.instagram_message_direction,
              $3 || ' ' || t.ord, t.at{values}
            from public.instagram_conversations c, unnest($4::timestamptz[]) with ordinality t(at, ord)
            where c.id = $1
            order by t.ord
            returning id::text""",  # noqa: S608 - column names come from this module's callers
        conversation_id,
        direction,
        text,
        list(sent),
        *(json.dumps(v) if isinstance(v, list | dict) else v for v in columns.values()),
    )
    return [r["id"] for r in rows]


@pytest.fixture
async def integration_id(pg: asyncpg.Connection) -> str:
    return await integration(pg, DEMO_IMO, status="connected")


# ---- list_conversations ---------------------------------------------------------------------------


async def test_member_sees_the_imo_conversations_newest_first_with_the_design_fields(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """A member gets the IMO's conversations newest activity first, each with exactly DESIGN.md's fields:
    the participant object, the 24 h window and the 7 day human-agent tag counted from the last inbound."""
    lead = await pg.fetchval(
        "insert into public.recruiting_leads (imo_id, first_name) values ($1, 'Ana') returning id::text",
        DEMO_IMO,
    )
    old = await conversation(
        pg, integration_id, "900", username="ana", name="Ana B", picture="https://p/a", lead_id=lead
    )
    new = await conversation(pg, integration_id, "901")
    await messages(pg, old, [T0, T0 + timedelta(minutes=1)])
    await messages(pg, old, [T0 + timedelta(minutes=2)], direction="outbound", text="reply")
    await messages(pg, new, [T0 + timedelta(hours=1)])

    listed = await rpc.list_conversations(db, MEMBER, imo_id=DEMO_IMO)

    assert [c["id"] for c in listed] == [new, old]
    assert all(set(c) == CONVERSATION_FIELDS for c in listed)
    first = listed[1]
    assert first["integration_id"] == integration_id
    assert first["participant"] == {
        "igsid": "900", "username": "ana", "name": "Ana B", "profile_picture_url": "https://p/a",
    }  # fmt: skip
    assert first["recruiting_lead_id"] == lead
    assert first["last_message_preview"] == "reply 1"
    assert at(first["last_message_at"]) == T0 + timedelta(minutes=2)
    assert at(first["last_inbound_at"]) == T0 + timedelta(minutes=1)
    assert at(first["window_closes_at"]) == T0 + timedelta(minutes=1, hours=24)
    assert at(first["human_agent_until"]) == T0 + timedelta(minutes=1, days=7)
    assert first["unread_count"] == 2
    assert listed[0]["participant"] == {
        "igsid": "901",
        "username": None,
        "name": None,
        "profile_picture_url": None,
    }


async def test_a_conversation_without_inbound_messages_has_no_window(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """Only outbound messages: last_inbound_at, window_closes_at and human_agent_until are null, unread is 0."""
    c = await conversation(pg, integration_id, "900")
    await messages(pg, c, [T0], direction="outbound")
    [listed] = await rpc.list_conversations(db, MEMBER, imo_id=DEMO_IMO)
    assert (listed["last_inbound_at"], listed["window_closes_at"], listed["human_agent_until"]) == (
        None,
        None,
        None,
    )
    assert listed["unread_count"] == 0


async def test_a_member_of_another_imo_sees_no_conversations_or_messages(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """Someone outside the IMO gets [] from list_conversations and list_messages (RLS, not an error)."""
    c = await conversation(pg, integration_id, "900")
    await messages(pg, c, [T0])
    assert await rpc.list_conversations(db, OUTSIDER, imo_id=DEMO_IMO) == []
    assert await rpc.list_messages(db, OUTSIDER, conversation_id=c) == []
    assert len(await rpc.list_messages(db, MEMBER, conversation_id=c)) == 1


async def test_a_member_of_another_imo_cannot_mark_a_conversation_read(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """mark_conversation_read by someone outside the IMO is NotFoundError not_found, and nothing changes."""
    c = await conversation(pg, integration_id, "900")
    await messages(pg, c, [T0, T0 + timedelta(seconds=1)])
    with pytest.raises(errors.NotFoundError) as caught:
        await rpc.mark_conversation_read(db, OUTSIDER, conversation_id=c)
    assert caught.value.code == "not_found"
    row = await pg.fetchrow(
        "select unread_count, last_read_at from public.instagram_conversations where id = $1", c
    )
    assert (row["unread_count"], row["last_read_at"]) == (2, None)


async def test_an_unknown_conversation_cannot_be_marked_read(
    db: AsyncpgDatabase, pg: asyncpg.Connection
) -> None:
    """mark_conversation_read of an id that does not exist is not_found for a member too."""
    with pytest.raises(errors.NotFoundError):
        await rpc.mark_conversation_read(db, MEMBER, conversation_id="00000000-0000-4000-8000-00000000ffff")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda db, c: rpc.list_conversations(db, ANON, imo_id=DEMO_IMO), id="list_conversations"
        ),
        pytest.param(lambda db, c: rpc.list_messages(db, ANON, conversation_id=c), id="list_messages"),
        pytest.param(lambda db, c: rpc.mark_conversation_read(db, ANON, conversation_id=c), id="mark_read"),
    ],
)
async def test_anon_cannot_execute_the_inbox_functions(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str, call: Any
) -> None:
    """The anon role has no EXECUTE on the inbox functions: permission denied, raised as ForbiddenError."""
    c = await conversation(pg, integration_id, "900")
    await messages(pg, c, [T0])
    with pytest.raises(errors.ForbiddenError):
        await call(db, c)


async def test_conversations_page_with_p_before_without_overlap_or_gap(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """Paging with p_before = the last row's last_message_at walks every conversation exactly once, in order."""
    ids = [await conversation(pg, integration_id, str(1000 + i)) for i in range(23)]
    for i, c in enumerate(ids):
        await messages(pg, c, [T0 + timedelta(minutes=i)])
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        page = await rpc.list_conversations(db, MEMBER, imo_id=DEMO_IMO, limit=5, before=before)
        if not page:
            break
        pages += 1
        assert len(page) <= 5
        seen += [c["id"] for c in page]
        before = at(page[-1]["last_message_at"])
    assert pages == 5
    assert seen == list(reversed(ids))


async def test_messages_page_with_p_before_without_overlap_or_gap(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """Paging a conversation's messages with p_before = the last one's sent_at returns each once, newest first."""
    c = await conversation(pg, integration_id, "900")
    ids = await messages(pg, c, [T0 + timedelta(seconds=i) for i in range(17)])
    seen: list[str] = []
    before = None
    while page := await rpc.list_messages(db, MEMBER, conversation_id=c, limit=4, before=before):
        assert all(set(m) == MESSAGE_FIELDS for m in page)
        seen += [m["id"] for m in page]
        before = at(page[-1]["sent_at"])
    assert seen == list(reversed(ids))


async def test_p_integration_id_keeps_only_that_integrations_conversations(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """p_integration_id lists the conversations of that integration only."""
    other = await integration(pg, DEMO_IMO, status="connected")
    mine = await conversation(pg, integration_id, "900")
    theirs = await conversation(pg, other, "900")
    await messages(pg, mine, [T0])
    await messages(pg, theirs, [T0 + timedelta(seconds=1)])
    only = await rpc.list_conversations(db, MEMBER, imo_id=DEMO_IMO, integration_id=other)
    assert [c["id"] for c in only] == [theirs]
    assert len(await rpc.list_conversations(db, MEMBER, imo_id=DEMO_IMO)) == 2


async def test_p_unread_only_keeps_conversations_with_unread_messages(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """p_unread_only lists only conversations whose unread_count is above 0."""
    unread = await conversation(pg, integration_id, "900")
    read = await conversation(pg, integration_id, "901")
    answered = await conversation(pg, integration_id, "902")
    await messages(pg, unread, [T0])
    await messages(pg, read, [T0])
    await messages(pg, answered, [T0], direction="outbound")
    await rpc.mark_conversation_read(db, MEMBER, conversation_id=read)
    listed = await rpc.list_conversations(db, MEMBER, imo_id=DEMO_IMO, unread_only=True)
    assert [c["id"] for c in listed] == [unread]


async def test_the_other_imos_conversations_are_never_listed_for_this_imo(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """A member of both sees, for p_imo_id, only that IMO's conversations."""
    await pg.execute(
        "insert into public.imo_members (imo_id, user_id, role) values ($1, $2, 'member')",
        STARTER_IMO,
        DEMO_MEMBER,
    )
    starter = await integration(pg, STARTER_IMO, status="connected")
    ours = await conversation(pg, integration_id, "900")
    theirs = await conversation(pg, starter, "900", imo_id=STARTER_IMO)
    await messages(pg, ours, [T0])
    await messages(pg, theirs, [T0])
    assert [c["id"] for c in await rpc.list_conversations(db, MEMBER, imo_id=DEMO_IMO)] == [ours]
    assert [c["id"] for c in await rpc.list_conversations(db, MEMBER, imo_id=STARTER_IMO)] == [theirs]


# ---- mark_conversation_read -------------------------------------------------------------------------


async def test_mark_read_sets_unread_to_zero_and_only_newer_inbound_counts_again(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """After mark_conversation_read unread is 0; an inbound message timestamped before the read leaves it at 0,
    one timestamped after it makes it 1."""
    c = await conversation(pg, integration_id, "900")
    await messages(pg, c, [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)])

    async def unread() -> int:
        [listed] = await rpc.list_conversations(db, MEMBER, imo_id=DEMO_IMO)
        return int(listed["unread_count"])

    assert await unread() == 3
    await rpc.mark_conversation_read(db, MEMBER, conversation_id=c)
    assert await unread() == 0
    read_at = await pg.fetchval("select last_read_at from public.instagram_conversations where id = $1", c)
    await messages(pg, c, [read_at - timedelta(minutes=5)])  # Meta's timestamp is older: a late delivery
    assert await unread() == 0
    await messages(pg, c, [read_at + timedelta(seconds=1)])
    assert await unread() == 1


# ---- list_messages ----------------------------------------------------------------------------------


async def test_an_unsent_message_is_listed_without_text_and_marked_deleted(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """A message with deleted_at set comes back with text null, no attachments and deleted true."""
    c = await conversation(pg, integration_id, "900")
    attachments = [{"type": "image", "payload": {"url": "https://cdn/x.jpg"}}]
    [kept] = await messages(pg, c, [T0])
    [unsent] = await messages(pg, c, [T0 + timedelta(seconds=1)], attachments=attachments)
    await pg.execute("update public.instagram_messages set deleted_at = $2 where id = $1", unsent, T0)
    listed = {m["id"]: m for m in await rpc.list_messages(db, MEMBER, conversation_id=c)}
    assert (listed[unsent]["text"], listed[unsent]["attachments"], listed[unsent]["deleted"]) == (
        None,
        [],
        True,
    )
    assert (listed[kept]["text"], listed[kept]["deleted"]) == ("hello 1", False)


async def test_unreact_entries_are_not_listed_as_reactions(
    pg: asyncpg.Connection, db: AsyncpgDatabase, integration_id: str
) -> None:
    """Of a message's reactions only those whose action is react are listed (without the action key)."""
    c = await conversation(pg, integration_id, "900")
    reactions = [
        {
            "igsid": "900",
            "reaction": "love",
            "emoji": "\u2764",
            "action": "react",
            "at": "2025-12-01T12:00:01Z",
        },
        {
            "igsid": "901",
            "reaction": "like",
            "emoji": "\U0001f44d",
            "action": "unreact",
            "at": "2025-12-01T12:00:02Z",
        },
    ]
    await messages(pg, c, [T0], direction="outbound", reactions=reactions)
    [listed] = await rpc.list_messages(db, MEMBER, conversation_id=c)
    assert listed["reactions"] == [
        {"igsid": "900", "reaction": "love", "emoji": "\u2764", "at": "2025-12-01T12:00:01Z"}
    ]


# ---- plans at scale ---------------------------------------------------------------------------------


def literal(value: Any) -> str:
    """An EXECUTE argument as SQL text (EXPLAIN EXECUTE takes no protocol parameters); our own values only."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    assert "'" not in text
    return f"'{text}'"


async def explain_generic(pg: asyncpg.Connection, sql: str, types: str, *args: Any) -> dict[str, Any]:
    """The generic plan of `sql` (a SQL function's statements are planned without their arguments' values),
    run as the member (role authenticated, their claims: RLS applies)."""
    async with acting_as(pg, DEMO_MEMBER):
        await pg.execute("set local plan_cache_mode = force_generic_plan")
        await pg.execute(f"prepare inbox_plan ({types}) as {sql}")
        try:
            arguments = ", ".join(literal(a) for a in args)
            [row] = await pg.fetch(f"explain (format json) execute inbox_plan ({arguments})")
        finally:
            await pg.execute("deallocate inbox_plan")
    plan: dict[str, Any] = json.loads(row[0])[0]["Plan"]
    return plan


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


# The statements inside the two functions, with the same predicates (see the migration; the scalar subquery
# keeps the keyset bound an index condition under RLS, where coalesce() alone is not provably leakproof).
CONVERSATIONS_SQL = """
    select * from public.instagram_conversations c
    where c.imo_id = $1
      and c.last_message_at < (select coalesce($2, 'infinity'::timestamptz))
      and ($3::uuid is null or c.integration_id = $3)
      and (not coalesce($4, false) or c.unread_count > 0)
    order by c.last_message_at desc
    limit least(greatest(coalesce($5, 50), 1), 200)"""
MESSAGES_SQL = """
    select * from public.instagram_messages m
    where m.conversation_id = $1
      and m.sent_at < (select coalesce($2, 'infinity'::timestamptz))
    order by m.sent_at desc, m.id desc
    limit least(greatest(coalesce($3, 50), 1), 200)"""


BIG_CONVERSATIONS = 100_000
BIG_MESSAGES = 1_000_000


async def arrange_big_inbox(pg: asyncpg.Connection) -> None:
    """100,000 conversations and 1,000,000 messages (10 each) in the demo IMO, one statement each, analysed.
    The rows carry what the triggers would have set; the messages go in with session_replication_role =
    replica (no triggers, no FK checks), which keeps the arrangement to about 20 s."""
    await reset_to_seed(pg)
    integration_id = await integration(pg, DEMO_IMO, status="connected", ig_account_id=BIG_ACCOUNT)
    await pg.execute(
        """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid, last_message_at,
             last_inbound_at, unread_count, last_message_preview)
           select $1, $2, g::text, $3::timestamptz - g * interval '1 minute', $3::timestamptz - g * interval '1 minute',
             g % 3, 'hello'
           from generate_series(1, $4::integer) g""",
        integration_id,
        DEMO_IMO,
        T0,
        BIG_CONVERSATIONS,
    )
    await pg.execute("set session_replication_role = replica")
    try:
        await pg.execute(
            """insert into public.instagram_messages (conversation_id, imo_id, meta_message_id, direction, text,
                 sent_at)
               select c.id, c.imo_id, 'mid.' || c.participant_igsid || '.' || k, 'inbound', 'hello',
                 c.last_message_at - k * interval '1 second'
               from public.instagram_conversations c cross join generate_series(0, $2::integer - 1) k
               where c.integration_id = $1""",
            integration_id,
            BIG_MESSAGES // BIG_CONVERSATIONS,
        )
    finally:
        await pg.execute("set session_replication_role = origin")
    await pg.execute("analyze public.instagram_conversations, public.instagram_messages")


@pytest.fixture
async def big_inbox(admin_pool: asyncpg.Pool) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A connection and the busiest conversation of the big inbox: arranged once, and again only when a test
    in between reset the database (the rows are checked, not assumed)."""
    async with admin_pool.acquire() as pg:
        counts = await pg.fetchrow(
            """select (select count(*) from public.instagram_conversations) as conversations,
                      (select count(*) from public.instagram_messages) as messages"""
        )
        if (counts["conversations"], counts["messages"]) != (BIG_CONVERSATIONS, BIG_MESSAGES):
            await arrange_big_inbox(pg)
        busiest = await pg.fetchval(
            """select c.id::text from public.instagram_conversations c
               join public.instagram_integrations i on i.id = c.integration_id
               where i.instagram_business_account_id = $1 and c.participant_igsid = '1'""",
            BIG_ACCOUNT,
        )
        yield pg, str(busiest)


@pytest.mark.slow
async def test_list_conversations_reads_an_index_not_the_whole_table_at_scale(
    big_inbox: tuple[asyncpg.Connection, str],
) -> None:
    """With 100,000 conversations in the IMO, list_conversations' query (as the member) is an index scan on
    instagram_conversations, never a Seq Scan of it, also for the next page and the unread filter."""
    pg, _ = big_inbox
    for args in [(None, None, False, 50), (T0 - timedelta(days=7), None, False, 50), (None, None, True, 200)]:
        plan = await explain_generic(
            pg, CONVERSATIONS_SQL, "uuid, timestamptz, uuid, boolean, integer", DEMO_IMO, *args
        )
        scans = [n for n in nodes(plan) if n.get("Relation Name") == "instagram_conversations"]
        assert scans, plan
        assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in scans), scans
        assert {n["Index Name"] for n in scans} == {"instagram_conversations_imo_recent_idx"}
        # the keyset bound is where the scan starts, not a filter over every newer row (RLS can force that)
        assert all("last_message_at" in n.get("Index Cond", "") for n in scans), scans


@pytest.mark.slow
async def test_list_messages_reads_the_conversation_time_index_at_scale(
    big_inbox: tuple[asyncpg.Connection, str],
) -> None:
    """With 1,000,000 messages, list_messages' query (as the member) reads instagram_messages_conversation_time_idx."""
    pg, busiest = big_inbox
    for before in (None, T0 - timedelta(seconds=3)):
        plan = await explain_generic(pg, MESSAGES_SQL, "uuid, timestamptz, integer", busiest, before, 50)
        scans = [n for n in nodes(plan) if n.get("Relation Name") == "instagram_messages"]
        assert [n.get("Index Name") for n in scans] == ["instagram_messages_conversation_time_idx"], scans
        assert all("sent_at" in n.get("Index Cond", "") for n in scans), scans
        assert all(n["Node Type"] != "Seq Scan" for n in nodes(plan))
