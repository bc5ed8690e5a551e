"""Processing stored webhook deliveries (kind `webhooks`, SQL in the receive migration): what each kind of
event does, routing, idempotency, crashes; and profile fetches (kind `profiles`) giving each new person
one lead."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.graph import GraphClient
from tests.db import factories
from tests.webhook_payloads import ACCOUNT, T0, action, delivery, echo, encode, message
from tests.worker.conftest import FAST_BACKOFF, KEY, make_worker, run_until
from worker.kinds.profiles import ProfileKind
from worker.kinds.webhooks import WebhookKind
from worker.queue import JobKind

pytest_plugins = ["tests.fixtures.sandbox"]


async def integration(
    pg: asyncpg.Connection,
    *,
    status: str = "reauth_required",
    account: str = ACCOUNT,
    imo_id: str = factories.DEMO_IMO,
) -> str:
    """An integration of the IMO for `account` in `status` (reauth_required needs no tokens)."""
    return str(
        await pg.fetchval(
            """insert into public.instagram_integrations (imo_id, facebook_page_id, instagram_business_account_id,
                 instagram_username, status)
               values ($1, '1' || $2, $2, 'demo_agency', $3::public.instagram_connection_status) returning id""",
            imo_id,
            account,
            status,
        )
    )


async def ingest(db: AsyncpgDatabase, *payloads: Any) -> None:
    await rpc.webhook_ingest(db, bodies=[p if isinstance(p, bytes) else encode(p) for p in payloads])


def webhook_kinds() -> list[JobKind[Any]]:
    return [WebhookKind(backoff=FAST_BACKOFF)]


async def events(pg: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await pg.fetch("select * from public.instagram_webhook_events order by id"))


def no_work_left(pg: asyncpg.Connection) -> Any:
    async def check() -> bool:
        busy = await pg.fetchval(
            "select count(*) from public.instagram_webhook_events where state in ('available', 'running')"
        )
        return busy == 0

    return check


async def process(db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, **options: Any) -> None:
    """Run a worker with the webhooks kind until no delivery is waiting."""
    worker = make_worker(db, graph, kinds=webhook_kinds(), **options)
    await run_until([worker], no_work_left(pg))


async def counts(pg: asyncpg.Connection) -> dict[str, int]:
    row = await pg.fetchrow(
        """select (select count(*) from public.instagram_messages) as messages,
                  (select count(*) from public.instagram_conversations) as conversations,
                  (select count(*) from public.recruiting_leads where lead_source::text = 'instagram') as leads,
                  (select coalesce(sum(messages_received), 0) from public.instagram_usage) as received,
                  (select coalesce(sum(unread_count), 0) from public.instagram_conversations) as unread"""
    )
    return {k: int(v) for k, v in dict(row).items()}


@pytest.fixture
async def routed(pg: asyncpg.Connection) -> str:
    return await integration(pg)


async def test_thousand_events_from_fifty_people(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """One delivery of 1,000 messages from 50 people: 1,000 messages, 50 conversations, usage 1,000."""
    items = [message(f"m-{i}", f"hello {i}", sender=f"90{i % 50:03d}", at=i) for i in range(1000)]
    await ingest(db, delivery(*items))
    await process(db, graph, pg)
    assert (await counts(pg))["messages"] == 1000
    assert (await counts(pg))["conversations"] == 50
    assert (await counts(pg))["received"] == 1000
    assert (await counts(pg))["unread"] == 1000
    assert [e["state"] for e in await events(pg)] == ["completed"]


async def test_conversation_keeps_the_newest_message_when_deliveries_arrive_out_of_order(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """A later message delivered first stays the preview and last_message_at after the older one arrives."""
    await ingest(db, delivery(message("m-new", "second", at=5000)))
    await process(db, graph, pg)
    await ingest(db, delivery(message("m-old", "first", at=1000)))
    await process(db, graph, pg)
    conv = await pg.fetchrow("select * from public.instagram_conversations")
    assert conv["last_message_preview"] == "second"
    assert conv["last_message_at"].timestamp() == pytest.approx((T0 + 5000) / 1000)
    assert conv["last_inbound_at"].timestamp() == pytest.approx((T0 + 5000) / 1000)


async def test_echo_of_a_phone_reply_is_stored_as_outbound(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """An echo with no row of ours is an outbound message sent from another client; it is not unread."""
    await ingest(db, delivery(message("m-in", "hi"), echo("m-phone", "replied from my phone", at=10)))
    await process(db, graph, pg)
    row = await pg.fetchrow("select * from public.instagram_messages where meta_message_id = 'm-phone'")
    assert row["direction"] == "outbound"
    assert row["sent_by_user_id"] is None
    assert json.loads(row["metadata"]) == {"origin": "echo"}
    conv = await pg.fetchrow("select * from public.instagram_conversations")
    assert (conv["unread_count"], conv["last_message_preview"]) == (1, "replied from my phone")


async def test_echo_of_our_own_send_reconciles_by_mid(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """An echo whose mid is already stored (our send) adds no second row."""
    await ingest(db, delivery(message("m-in", "hi")))
    await process(db, graph, pg)
    await pg.execute(
        """insert into public.instagram_messages (conversation_id, imo_id, meta_message_id, direction, text,
             sent_by_user_id)
           select id, imo_id, 'm-ours', 'outbound', 'from the CRM', $1 from public.instagram_conversations""",
        factories.DEMO_ADMIN,
    )
    await ingest(db, delivery(echo("m-ours", "from the CRM", at=20)))
    await process(db, graph, pg)
    rows = await pg.fetch(
        "select sent_by_user_id from public.instagram_messages where meta_message_id = 'm-ours'"
    )
    assert [str(r["sent_by_user_id"]) for r in rows] == [factories.DEMO_ADMIN]


async def test_reaction_and_unreact_on_a_message(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """A react adds the person's reaction; a later unreact replaces it (the newest action wins)."""
    react = {"mid": "m-1", "action": "react", "reaction": "love", "emoji": "\u2764"}
    await ingest(db, delivery(message("m-1"), action("reaction", react, at=10)))
    await process(db, graph, pg)
    reactions = json.loads(await pg.fetchval("select reactions from public.instagram_messages"))
    assert [(r["igsid"], r["reaction"], r["action"]) for r in reactions] == [("900", "love", "react")]
    await ingest(db, delivery(action("reaction", {"mid": "m-1", "action": "unreact"}, at=20)))
    await process(db, graph, pg)
    reactions = json.loads(await pg.fetchval("select reactions from public.instagram_messages"))
    assert [r["action"] for r in reactions] == ["unreact"]


async def test_an_older_reaction_does_not_override_a_newer_one(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """Reactions delivered out of order: the one with the later timestamp stays."""
    await ingest(db, delivery(message("m-1")))
    await process(db, graph, pg)
    await ingest(db, delivery(action("reaction", {"mid": "m-1", "action": "unreact"}, at=50)))
    await ingest(
        db, delivery(action("reaction", {"mid": "m-1", "action": "react", "reaction": "like"}, at=10))
    )
    await process(db, graph, pg)
    reactions = json.loads(await pg.fetchval("select reactions from public.instagram_messages"))
    assert [r["action"] for r in reactions] == ["unreact"]


async def test_read_marks_our_messages_up_to_the_read_one(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """read.mid: our outbound messages up to that one become read; a later one stays sent."""
    await ingest(
        db,
        delivery(
            message("m-in"), echo("m-a", "one", at=10), echo("m-b", "two", at=20), echo("m-c", "three", at=30)
        ),
    )
    await process(db, graph, pg)
    await ingest(db, delivery(action("read", {"mid": "m-b"}, at=25)))
    await process(db, graph, pg)
    rows = await pg.fetch(
        "select meta_message_id, status::text from public.instagram_messages where direction = 'outbound' "
        "order by sent_at"
    )
    assert [(r["meta_message_id"], r["status"]) for r in rows] == [
        ("m-a", "read"),
        ("m-b", "read"),
        ("m-c", "sent"),
    ]


async def test_unsend_marks_the_message_deleted_and_out_of_the_preview(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """is_deleted: the message is marked deleted, the preview falls back to the previous message and the
    unread count drops."""
    await ingest(db, delivery(message("m-1", "first"), message("m-2", "regret this", at=10)))
    await process(db, graph, pg)
    await ingest(db, delivery(message("m-2", None, is_deleted=True, at=20)))
    await process(db, graph, pg)
    assert await pg.fetchval(
        "select deleted_at is not null from public.instagram_messages where meta_message_id = 'm-2'"
    )
    conv = await pg.fetchrow("select * from public.instagram_conversations")
    assert (conv["last_message_preview"], conv["unread_count"]) == ("first", 1)


async def test_edit_replaces_the_text_and_counts_edits(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """message_edit replaces the text (and the preview); a stale edit (lower num_edit) changes nothing."""
    await ingest(db, delivery(message("m-1", "helo")))
    await process(db, graph, pg)
    await ingest(db, delivery(action("message_edit", {"mid": "m-1", "text": "hello!", "num_edit": 2}, at=30)))
    await ingest(db, delivery(action("message_edit", {"mid": "m-1", "text": "hello", "num_edit": 1}, at=20)))
    await process(db, graph, pg)
    row = await pg.fetchrow("select text, edit_count from public.instagram_messages")
    assert (row["text"], row["edit_count"]) == ("hello!", 2)
    assert await pg.fetchval("select last_message_preview from public.instagram_conversations") == "hello!"


async def test_an_action_that_overtakes_its_message_waits_for_it(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """A reaction delivered before its message is retried, and applied once the message is there."""
    await ingest(
        db, delivery(action("reaction", {"mid": "m-late", "action": "react", "reaction": "wow"}, at=10))
    )
    await pg.execute("update public.instagram_webhook_events set max_attempts = 3")
    worker = make_worker(db, graph, kinds=webhook_kinds())

    async def waiting() -> bool:
        return await pg.fetchval("select state from public.instagram_webhook_events") == "retryable"

    await run_until([worker], waiting)
    await ingest(db, delivery(message("m-late", "here I am")))
    await pg.execute("update public.instagram_webhook_events set run_at = now() where state = 'retryable'")
    await process(db, graph, pg)
    reactions = json.loads(await pg.fetchval("select reactions from public.instagram_messages"))
    assert [r["reaction"] for r in reactions] == ["wow"]


async def test_unknown_account_is_kept_unroutable_and_processed_when_it_connects(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """No integration for entry.id: kept as unroutable with the account; connecting it later processes it."""
    await ingest(db, delivery(message("m-early", "anyone there?")))
    await process(db, graph, pg)
    [event] = await events(pg)
    assert (event["state"], event["unroutable_accounts"]) == ("unroutable", [ACCOUNT])
    assert (await counts(pg))["messages"] == 0
    await integration(pg, status="error")
    await process(db, graph, pg)
    assert (await counts(pg))["messages"] == 1
    assert [e["state"] for e in await events(pg)] == ["completed"]


@pytest.mark.parametrize("status", ["reauth_required", "error"])
async def test_integration_needing_attention_still_receives(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, status: str
) -> None:
    """An integration in reauth_required or error still receives its DMs."""
    await integration(pg, status=status)
    await ingest(db, delivery(message("m-1")))
    await process(db, graph, pg)
    assert (await counts(pg))["messages"] == 1


async def test_disconnected_integration_keeps_deliveries_unroutable(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection
) -> None:
    """A disconnected integration does not receive: its deliveries wait as unroutable."""
    await integration(pg, status="disconnected")
    await ingest(db, delivery(message("m-1")))
    await process(db, graph, pg)
    assert (await counts(pg))["messages"] == 0
    assert [e["state"] for e in await events(pg)] == ["unroutable"]


async def test_bodies_that_are_not_deliveries_are_kept_as_failed_with_a_reason(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """Not JSON, another object, no entry array: failed with a reason, never lost; a good one beside them
    completes."""
    await ingest(
        db,
        b"\xff not json",
        encode({"object": "page", "entry": []}),
        encode({"object": "instagram"}),
        delivery(message("m-ok")),
    )
    await process(db, graph, pg)
    rows = [(e["state"], e["last_error_code"]) for e in await events(pg)]
    assert rows == [
        ("failed", "invalid_json"),
        ("failed", "unsupported_object"),
        ("failed", "unknown_shape"),
        ("completed", None),
    ]


async def test_unknown_kinds_are_ignored_with_the_reason(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """An item of a kind we do not know is recorded in the outcome as ignored; its siblings are processed."""
    await ingest(
        db, delivery(message("m-1"), action("optin", {"ref": "x"}), action("message", {"text": "no mid"}))
    )
    await process(db, graph, pg)
    [event] = await events(pg)
    ignored = json.loads(event["outcome"])["ignored"]
    assert [i["reason"] for i in ignored] == ["unknown_kind", "invalid_item"]
    assert (await counts(pg))["messages"] == 1


async def test_dashboard_test_shape_and_standby_are_processed(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """entry[].changes[{field: messages}] and entry[].standby[] carry messages too."""
    changes = {
        "object": "instagram",
        "entry": [
            {
                "id": ACCOUNT,
                "time": T0,
                "changes": [{"field": "messages", "value": message("m-test", "from the dashboard")}],
            }
        ],
    }
    standby = {
        "object": "instagram",
        "entry": [{"id": ACCOUNT, "time": T0, "standby": [message("m-standby", at=5)]}],
    }
    await ingest(db, changes, standby)
    await process(db, graph, pg)
    mids = {
        r["meta_message_id"] for r in await pg.fetch("select meta_message_id from public.instagram_messages")
    }
    assert mids == {"m-test", "m-standby"}


async def test_attachments_and_metadata_are_kept(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """Attachment types map to message types; reply_to, quick_reply and is_unsupported are kept."""
    url = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"
    await ingest(
        db,
        delivery(
            message("m-img", None, attachments=[{"type": "image", "payload": {"url": url}}]),
            message("m-reel", None, attachments=[{"type": "ig_reel", "payload": {"url": url}}], at=1),
            message("m-story", None, attachments=[{"type": "story_mention", "payload": {"url": url}}], at=2),
            message("m-reply", "nice", reply_to={"story": {"url": url, "id": "1"}}, at=3),
            message("m-qr", "Yes", quick_reply={"payload": "YES"}, at=4),
            message("m-unsup", None, is_unsupported=True, at=5),
        ),
    )
    await process(db, graph, pg)
    rows = {r["meta_message_id"]: r for r in await pg.fetch("select * from public.instagram_messages")}
    assert {k: r["message_type"] for k, r in rows.items()} == {
        "m-img": "image",
        "m-reel": "reel",
        "m-story": "story_mention",
        "m-reply": "story_reply",
        "m-qr": "text",
        "m-unsup": "unsupported",
    }
    assert json.loads(rows["m-img"]["attachments"])[0]["payload"]["url"] == url
    assert json.loads(rows["m-qr"]["metadata"]) == {"quick_reply": {"payload": "YES"}}


async def test_processing_twice_changes_nothing(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """A replay of every delivery leaves messages, conversations, unread counts and usage as they were."""
    await ingest(
        db,
        delivery(
            *(message(f"m-{i}", sender=f"9{i % 3}", at=i) for i in range(30)),
            action("reaction", {"mid": "m-1", "action": "react", "reaction": "love"}, sender="91", at=100),
        ),
    )
    await process(db, graph, pg)
    before = await counts(pg)
    reactions = await pg.fetchval(
        "select reactions from public.instagram_messages where meta_message_id = 'm-1'"
    )
    assert await rpc.webhook_replay(db, failed_only=False, since=None) == 1
    await process(db, graph, pg)
    assert await counts(pg) == before
    assert (
        await pg.fetchval("select reactions from public.instagram_messages where meta_message_id = 'm-1'")
        == reactions
    )


async def test_same_mids_in_different_bodies_are_stored_once_by_concurrent_workers(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """Meta's retries with new bytes (another entry time) processed by three workers at once: one row per mid."""
    items = [message(f"m-{i}", sender=f"8{i % 7}", at=i) for i in range(200)]
    await ingest(
        db,
        *(
            {"object": "instagram", "entry": [{"id": ACCOUNT, "time": T0 + k, "messaging": items}]}
            for k in range(6)
        ),
    )
    workers = [make_worker(db, graph, kinds=webhook_kinds(), concurrency=2) for _ in range(3)]
    await run_until(workers, no_work_left(pg))
    assert (await counts(pg))["messages"] == 200
    assert (await counts(pg))["received"] == 200
    assert (await counts(pg))["conversations"] == 7


async def test_worker_killed_mid_batch_loses_nothing_and_does_nothing_twice(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """A worker that claimed deliveries and died: after the lease expires another one processes each once."""
    await ingest(db, *(delivery(message(f"m-{i}", sender=f"7{i % 5}", at=i)) for i in range(40)))
    claimed = await db.rpc(
        "instagram_webhook_claim_v1", {"p_worker": "dead", "p_limit": 25, "p_lease_seconds": 1}
    )
    assert len(claimed) == 25
    await asyncio.sleep(1.1)
    await process(db, graph, pg)
    assert (await counts(pg))["messages"] == 40
    assert (await counts(pg))["received"] == 40
    assert {e["state"] for e in await events(pg)} == {"completed"}
    stale = await db.rpc("instagram_webhook_complete_v1", {"p_worker": "dead", "p_results": [{"job_id": 1}]})
    assert stale == {"completed": 0, "stale": 1}


@pytest.fixture
async def poison_trigger(pg: asyncpg.Connection) -> AsyncIterator[None]:
    """A bug in processing for one message: inserting text 'poison' raises (test-only trigger)."""
    await pg.execute(
        """create function public.test_poison() returns trigger language plpgsql as $$
           begin if new.text = 'poison' then raise exception 'boom'; end if; return new; end $$;
           create trigger test_poison before insert on public.instagram_messages
             for each row execute function public.test_poison();"""
    )
    yield
    await pg.execute(
        "drop trigger test_poison on public.instagram_messages; drop function public.test_poison();"
    )


async def test_a_poison_delivery_fails_alone(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str, poison_trigger: None
) -> None:
    """One delivery the database refuses is retried alone and discarded (kept); the others of its batch land."""
    await ingest(db, *(delivery(message(f"m-{i}", "poison" if i == 3 else "fine", at=i)) for i in range(10)))
    await pg.execute("update public.instagram_webhook_events set max_attempts = 2")
    await process(db, graph, pg)

    async def settled() -> bool:
        return (
            await pg.fetchval(
                "select count(*) from public.instagram_webhook_events"
                " where state in ('available', 'running', 'retryable')"
            )
            == 0
        )

    await run_until([make_worker(db, graph, kinds=webhook_kinds())], settled)
    states = [e["state"] for e in await events(pg)]
    assert states.count("discarded") == 1 and states.count("completed") == 9
    assert (await counts(pg))["messages"] == 9


async def test_prune_deletes_old_processed_deliveries_only(
    db: AsyncpgDatabase, pg: asyncpg.Connection
) -> None:
    """Retention: processed deliveries older than the setting go, failed ones of any age stay."""
    await ingest(db, delivery(message("m-1")), b"not json", delivery(message("m-2")))
    await pg.execute(
        """update public.instagram_webhook_events set
             state = case when id = (select min(id) from public.instagram_webhook_events) + 1 then 'failed'
                          else 'completed' end,
             finalized_at = now() - case when id = (select max(id) from public.instagram_webhook_events)
                                         then interval '1 day' else interval '40 days' end"""
    )
    assert (await db.rpc("instagram_webhook_prune_v1", {"p_keep_days": None}))["deleted"] == 1
    assert [e["state"] for e in await events(pg)] == ["failed", "completed"]
    assert (await db.rpc("instagram_webhook_prune_v1", {"p_keep_days": 2}))["deleted"] == 0
    await pg.execute("update public.instagram_webhook_events set finalized_at = now() - interval '3 days'")
    async with pg.transaction():
        await pg.execute("set local instagram_dm.webhook_retention_days = '2'")
        assert json.loads(await pg.fetchval("select public.instagram_webhook_prune_v1()"))["deleted"] == 1


async def test_conversations_and_messages_are_published_for_realtime(pg: asyncpg.Connection) -> None:
    """instagram_conversations and instagram_messages are on the supabase_realtime publication."""
    tables = {
        r["tablename"]
        for r in await pg.fetch(
            "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
        )
    }
    assert {"instagram_conversations", "instagram_messages"} <= tables


# ---- profiles and leads ----------------------------------------------------------------------------


@pytest.fixture
async def connected(pg: asyncpg.Connection, sandbox: Any) -> Any:
    """A connected integration backed by a sandbox user (its Page token reads profiles)."""
    from tests.worker.conftest import create_integrations

    [one] = await create_integrations(pg, sandbox, 1)
    account = await pg.fetchval(
        "select instagram_business_account_id from public.instagram_integrations where id = $1", one.id
    )
    return one, account


def all_kinds(db: AsyncpgDatabase, graph: GraphClient) -> list[JobKind[Any]]:
    return [WebhookKind(backoff=FAST_BACKOFF), ProfileKind(db, graph, key=KEY, backoff=FAST_BACKOFF)]


def leads_settled(pg: asyncpg.Connection) -> Any:
    async def check() -> bool:
        return (
            await pg.fetchval(
                """select (select count(*) from public.instagram_webhook_events where state in ('available', 'running'))
                    + (select count(*) from public.instagram_profile_fetches
                       where state in ('available', 'running', 'retryable'))
                    + (select count(*) from public.instagram_conversations where recruiting_lead_id is null)"""
            )
            == 0
        )

    return check


async def test_each_new_person_becomes_one_lead(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, connected: Any
) -> None:
    """50 people, 1,000 messages, delivered twice: 50 leads with lead_source instagram, linked both ways."""
    _, account = connected
    items = [message(f"m-{i}", sender=f"99{i % 50:014d}", at=i, account=account) for i in range(1000)]
    await ingest(db, delivery(*items, account=account))
    await ingest(db, {"object": "instagram", "entry": [{"id": account, "time": T0 + 1, "messaging": items}]})
    worker = make_worker(db, graph, kinds=all_kinds(db, graph))
    await run_until([worker], leads_settled(pg), timeout=30)
    assert (await counts(pg))["leads"] == 50
    unlinked = await pg.fetchval(
        """select count(*) from public.instagram_conversations c join public.recruiting_leads l
             on l.id = c.recruiting_lead_id where l.instagram_conversation_id is distinct from c.id"""
    )
    assert unlinked == 0


async def test_lead_is_named_from_the_profile(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, connected: Any
) -> None:
    """The participant's profile (name, username, picture) names the conversation and the new lead."""
    _, account = connected
    await ingest(db, delivery(message("m-1", sender="9900000000006100", account=account), account=account))
    await run_until([make_worker(db, graph, kinds=all_kinds(db, graph))], leads_settled(pg))
    conv = await pg.fetchrow("select * from public.instagram_conversations")
    assert conv["participant_username"] and conv["participant_checked_at"] is not None
    lead = await pg.fetchrow(
        "select * from public.recruiting_leads where id = $1", conv["recruiting_lead_id"]
    )
    assert lead["instagram_username"] == conv["participant_username"]
    assert lead["first_name"]


async def test_existing_lead_with_the_username_is_linked_not_duplicated(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, connected: Any
) -> None:
    """A lead of the IMO with the person's Instagram username gets the conversation; no second lead."""
    _, account = connected
    await ingest(db, delivery(message("m-1", sender="9900000000006200", account=account), account=account))
    await run_until([make_worker(db, graph, kinds=all_kinds(db, graph))], leads_settled(pg))
    username = await pg.fetchval("select participant_username from public.instagram_conversations")
    await pg.execute("delete from public.recruiting_leads")
    await pg.execute(
        "update public.instagram_conversations set recruiting_lead_id = null, participant_checked_at = null"
    )
    existing = await pg.fetchval(
        """insert into public.recruiting_leads (imo_id, first_name, instagram_username, lead_source)
           values ($1, 'Known', upper($2), 'referral') returning id""",
        factories.DEMO_IMO,
        username,
    )
    await pg.execute(
        """insert into public.instagram_profile_fetches (conversation_id, imo_id, integration_id, igsid)
           select id, imo_id, integration_id, participant_igsid from public.instagram_conversations"""
    )
    await run_until([make_worker(db, graph, kinds=all_kinds(db, graph))], leads_settled(pg))
    assert await pg.fetchval("select count(*) from public.recruiting_leads") == 1
    assert await pg.fetchval("select recruiting_lead_id from public.instagram_conversations") == existing


async def test_profile_is_fetched_once_and_again_after_a_day(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """A new conversation queues one profile fetch; news within a day queue none; news after a day one more."""
    fetches = "select count(*) from public.instagram_profile_fetches"
    await ingest(db, delivery(message("m-1"), message("m-2", at=1)))
    await process(db, graph, pg)
    assert await pg.fetchval(fetches) == 1
    await pg.execute(
        """update public.instagram_profile_fetches set state = 'completed', finalized_at = now();
           update public.instagram_conversations set participant_checked_at = now() - interval '2 hours'"""
    )
    await ingest(db, delivery(message("m-3", at=2)))
    await process(db, graph, pg)
    assert await pg.fetchval(fetches) == 1
    await pg.execute(
        "update public.instagram_conversations set participant_checked_at = now() - interval '25 hours'"
    )
    await ingest(db, delivery(message("m-4", at=3)))
    await process(db, graph, pg)
    assert await pg.fetchval(fetches) == 2


async def test_a_profile_meta_refuses_still_gives_the_person_a_lead(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, connected: Any, sandbox: Any
) -> None:
    """Meta refuses the profile (100/2534014): the message is stored, the lead is made without a name."""
    _, account = connected
    sandbox.control("POST", "people", {"igsid": "9900000000006300", "fail": {}})
    await ingest(
        db, delivery(message("m-1", "hello", sender="9900000000006300", account=account), account=account)
    )
    await run_until([make_worker(db, graph, kinds=all_kinds(db, graph))], leads_settled(pg))
    fetch = await pg.fetchrow("select state, last_error_code from public.instagram_profile_fetches")
    assert (fetch["state"], fetch["last_error_code"]) == ("completed", "meta_invalid_request")
    lead = await pg.fetchrow("select * from public.recruiting_leads where lead_source::text = 'instagram'")
    assert (lead["first_name"], lead["instagram_username"]) == ("Instagram contact", None)
    assert (await counts(pg))["messages"] == 1


async def test_the_same_delivery_stored_ten_times_at_once_is_one_message(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """Ten concurrent stores of the same bytes: one row, one message, counted once."""
    body = encode(delivery(message("m-ten", "only once")))
    await asyncio.gather(*(rpc.webhook_ingest(db, bodies=[body]) for _ in range(10)))
    await process(db, graph, pg)
    assert len(await events(pg)) == 1
    assert (await counts(pg))["messages"] == 1
    assert (await counts(pg))["received"] == 1


async def test_timestamps_in_seconds_are_read_as_seconds(
    db: AsyncpgDatabase, graph: GraphClient, pg: asyncpg.Connection, routed: str
) -> None:
    """The dashboard's test sample sends the timestamp in seconds, as a string: it is not read as milliseconds."""
    item = message("m-test")
    item["timestamp"] = str(T0 // 1000)
    changes = {
        "object": "instagram",
        "entry": [{"id": ACCOUNT, "time": T0, "changes": [{"field": "messages", "value": item}]}],
    }
    await ingest(db, changes)
    await process(db, graph, pg)
    sent_at = await pg.fetchval("select sent_at from public.instagram_messages")
    assert sent_at.timestamp() == T0 / 1000
