"""The sending RPCs and the send queue in SQL (no Meta here): the rules checked before queueing, the client id,
usage counting, pacing slots, echoes confirming sends, and what a claim does with a dead worker's send."""

from __future__ import annotations

import itertools
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

MEMBER = acting_user(DEMO_MEMBER)
OUTSIDER = acting_user(STARTER_ADMIN)
ANON = ActingUser(token="anon-key", claims={"role": "anon"})
CLIENT_ID = "6a1f2b9e-0a51-4a0e-9d3f-6c1c2f3e4d5a"


async def conversation(
    pg: asyncpg.Connection, *, imo_id: str = DEMO_IMO, inbound_ago: timedelta | None = timedelta(hours=1)
) -> str:
    """A conversation of a connected integration whose contact last wrote `inbound_ago` ago."""
    integration_id = await integration(pg, imo_id, status="connected", key="k" * 40)
    return str(
        await pg.fetchval(
            """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid, last_inbound_at)
               values ($1, $2, '4242', now() - $3::interval) returning id::text""",
            integration_id,
            imo_id,
            inbound_ago,
        )
    )


async def send(db: AsyncpgDatabase, conversation_id: str, user: ActingUser = MEMBER, **args: Any) -> Any:
    return await rpc.send_message(db, user, conversation_id=conversation_id, **({"text": "Hi there"} | args))


async def claim(db: AsyncpgDatabase, worker: str = "w1", limit: int = 10) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await db.rpc(
        "instagram_send_claim_v1", {"p_worker": worker, "p_limit": limit, "p_lease_seconds": 60}
    )
    return rows


async def complete(db: AsyncpgDatabase, *results: dict[str, Any], worker: str = "w1") -> Any:
    return await db.rpc("instagram_send_complete_v1", {"p_worker": worker, "p_results": list(results)})


async def settings(db: AsyncpgDatabase, **values: Any) -> None:
    await db.rpc("instagram_settings_apply_v1", {"p_settings": values})


async def usage(pg: asyncpg.Connection, imo_id: str = DEMO_IMO) -> dict[str, int]:
    row = await pg.fetchrow(
        "select messages_sent, sends_pending, api_calls from public.instagram_usage where imo_id = $1", imo_id
    )
    return dict(row) if row else {}


async def refused(db: AsyncpgDatabase, conversation_id: str, user: ActingUser = MEMBER, **args: Any) -> str:
    with pytest.raises(errors.InstagramDMError) as caught:
        await send(db, conversation_id, user, **args)
    return caught.value.code


# ---- queueing: the rules ---------------------------------------------------------------------------


async def test_a_member_queues_one_message_and_gets_it_back(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """send_message returns the message queued, sent by the member, with one send job and one pending send."""
    conv = await conversation(pg)
    message = await send(db, conv)
    assert (message["status"], message["direction"], message["text"]) == ("queued", "outbound", "Hi there")
    assert message["sent_by_user_id"] == DEMO_MEMBER
    assert await pg.fetchval("select count(*) from public.instagram_send_jobs where state = 'available'") == 1
    assert (await usage(pg))["sends_pending"] == 1


async def test_the_same_client_message_id_returns_the_first_message(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Sending with a client message id twice returns the first message and queues one send only."""
    conv = await conversation(pg)
    first = await send(db, conv, client_message_id=CLIENT_ID)
    second = await send(db, conv, client_message_id=CLIENT_ID, text="different")
    assert second["id"] == first["id"] and second["text"] == "Hi there"
    assert await pg.fetchval("select count(*) from public.instagram_send_jobs") == 1


async def test_outside_the_24_hour_window_is_refused_before_meta(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A contact who last wrote 25 hours ago: outside_messaging_window, nothing queued."""
    conv = await conversation(pg, inbound_ago=timedelta(hours=25))
    assert await refused(db, conv) == "outside_messaging_window"
    assert await pg.fetchval("select count(*) from public.instagram_messages") == 0


async def test_human_agent_allows_a_human_reply_up_to_seven_days_tagged(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """With HUMAN_AGENT enabled a reply 3 days after the contact's message is queued and claimed tagged."""
    await settings(db, human_agent_enabled=True)
    conv = await conversation(pg, inbound_ago=timedelta(days=3))
    await send(db, conv)
    [job] = await claim(db)
    assert (job["messaging_type"], job["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")


async def test_inside_the_window_a_send_is_never_tagged(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """Inside 24 hours the send is a RESPONSE without a tag, even with HUMAN_AGENT enabled."""
    await settings(db, human_agent_enabled=True)
    await send(db, await conversation(pg))
    [job] = await claim(db)
    assert (job["messaging_type"], job["tag"]) == ("RESPONSE", None)


async def test_without_human_agent_three_days_is_refused(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """With HUMAN_AGENT off (the default) a reply 3 days later is outside the window."""
    conv = await conversation(pg, inbound_ago=timedelta(days=3))
    assert await refused(db, conv) == "outside_messaging_window"


async def test_human_agent_never_covers_eight_days(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """Even with HUMAN_AGENT, 8 days after the contact's message cannot be answered."""
    await settings(db, human_agent_enabled=True)
    conv = await conversation(pg, inbound_ago=timedelta(days=8))
    assert await refused(db, conv) == "outside_messaging_window"


async def test_the_limit_is_1000_utf8_bytes_not_characters(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """500 two-byte characters (1,000 bytes) are queued; 501 (1,002 bytes) are message_too_long."""
    conv = await conversation(pg)
    assert (await send(db, conv, text="é" * 500))["status"] == "queued"
    assert await refused(db, conv, text="é" * 501) == "message_too_long"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"text": "   "}, "empty_message"),
        ({"text": None}, "empty_message"),
        (
            {"text": None, "attachment": {"type": "image", "url": "http://cdn.test/a.png"}},
            "invalid_attachment",
        ),
        (
            {"text": None, "attachment": {"type": "sticker", "url": "https://cdn.test/a.png"}},
            "invalid_attachment",
        ),
        (
            {"text": "and text", "attachment": {"type": "image", "url": "https://cdn.test/a.png"}},
            "invalid_attachment",
        ),
    ],
)
async def test_bad_messages_are_refused_with_their_code(
    pg: asyncpg.Connection, db: AsyncpgDatabase, args: dict[str, Any], code: str
) -> None:
    """Empty text, a non-https or unknown attachment, or text with an attachment: each its own refusal."""
    assert await refused(db, await conversation(pg), **args) == code


async def test_an_attachment_is_queued_as_its_type(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """An https image attachment is queued as an image message with Meta's attachment shape."""
    message = await send(
        db, await conversation(pg), text=None, attachment={"type": "image", "url": "https://cdn.test/a.png"}
    )
    assert message["message_type"] == "image"
    assert message["attachments"] == [{"type": "image", "payload": {"url": "https://cdn.test/a.png"}}]


async def test_another_imo_and_anon_cannot_send(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A user of another IMO gets not_found; anon may not call the RPC at all."""
    conv = await conversation(pg)
    assert await refused(db, conv, OUTSIDER) == "not_found"
    with pytest.raises(errors.ForbiddenError):
        await send(db, conv, ANON)
    assert await pg.fetchval("select count(*) from public.instagram_messages") == 0


async def test_a_disconnected_account_cannot_send(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """An integration that needs reauth: integration_not_connected."""
    conv = await conversation(pg)
    await pg.execute("update public.instagram_integrations set status = 'reauth_required'")
    assert await refused(db, conv) == "integration_not_connected"


async def test_a_plan_without_messaging_cannot_send(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """The Starter IMO's admin: feature_not_in_plan."""
    conv = await conversation(pg, imo_id=STARTER_IMO)
    assert await refused(db, conv, OUTSIDER) == "feature_not_in_plan"


async def test_the_monthly_limit_refuses_the_next_send(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """With a plan limit of 2, the third send of the month is monthly_limit_reached (sent + pending count)."""
    await pg.execute(
        """update public.subscription_plans set feature_limits = '{"instagram_messaging": {"monthly_sends": 2}}'
           where name = 'Team'"""
    )
    conv = await conversation(pg)
    await send(db, conv)
    await send(db, conv)
    assert await refused(db, conv) == "monthly_limit_reached"
    summary = await rpc.usage_summary(db, MEMBER, imo_id=DEMO_IMO)
    assert (summary["monthly_limit"], summary["remaining"], summary["sends_pending"]) == (2, 0, 2)


async def test_usage_summary_is_for_members_only(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """Another IMO's user asking for this IMO's usage gets not_found."""
    with pytest.raises(errors.NotFoundError):
        await rpc.usage_summary(db, OUTSIDER, imo_id=DEMO_IMO)


# ---- the queue ---------------------------------------------------------------------------------------


async def test_a_sent_outcome_stores_the_mid_and_counts_one_send(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Claim marks the message sending; a sent outcome stores Meta's mid, status sent, one send this month."""
    message = await send(db, await conversation(pg))
    [job] = await claim(db)
    assert await pg.fetchval("select status::text from public.instagram_messages") == "sending"
    assert await complete(db, {"job_id": job["id"], "outcome": "sent", "meta_message_id": "mid.1"}) == {
        "completed": 1,
        "stale": 0,
    }
    row = await pg.fetchrow(
        "select status::text, meta_message_id from public.instagram_messages where id = $1", message["id"]
    )
    assert (row["status"], row["meta_message_id"]) == ("sent", "mid.1")
    assert (await usage(pg))["messages_sent"] == 1 and (await usage(pg))["sends_pending"] == 0


async def echo(pg: asyncpg.Connection, conv: str, text: str, mid: str) -> None:
    """An echo stored the way webhook processing stores one (outbound, no sender, with Meta's mid)."""
    await pg.execute(
        """insert into public.instagram_messages (conversation_id, imo_id, meta_message_id, direction, text, status,
             metadata)
           select id, imo_id, $2, 'outbound', $3, 'sent', '{"origin": "echo"}' from public.instagram_conversations
           where id = $1
           on conflict (meta_message_id) do nothing""",
        conv,
        mid,
        text,
    )


async def test_an_unknown_outcome_waits_and_the_echo_confirms_it(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A send with no trustworthy answer waits as unknown; its echo makes it sent: one outbound row, job done."""
    conv = await conversation(pg)
    await send(db, conv)
    [job] = await claim(db)
    await complete(db, {"job_id": job["id"], "outcome": "unknown", "error_code": "timeout"})
    assert await pg.fetchval("select status::text from public.instagram_messages") == "unknown"
    await echo(pg, conv, "Hi there", "mid.echo")
    rows = await pg.fetch("select status::text, meta_message_id from public.instagram_messages")
    assert [(r["status"], r["meta_message_id"]) for r in rows] == [("sent", "mid.echo")]
    assert await pg.fetchval("select state from public.instagram_send_jobs") == "completed"


async def test_an_echo_of_another_text_is_stored_apart(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """An echo whose text differs from the waiting send (a reply from the phone) is its own message."""
    conv = await conversation(pg)
    await send(db, conv)
    await claim(db)
    await echo(pg, conv, "sent from the phone", "mid.phone")
    statuses = await pg.fetch("select status::text as s from public.instagram_messages order by created_at")
    assert sorted(r["s"] for r in statuses) == ["sending", "sent"]


async def test_a_dead_workers_send_is_not_sent_again_before_the_echo_wait(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A send whose lease expired while sending is parked unknown for the echo wait, not handed out again."""
    await settings(db, echo_wait_seconds=20)
    await send(db, await conversation(pg))
    await claim(db, worker="dead")
    await pg.execute("update public.instagram_send_jobs set lease_expires_at = now() - interval '1 second'")
    assert await claim(db, worker="alive") == []
    row = await pg.fetchrow(
        "select j.state, j.run_at - j.sending_since as wait, m.status::text as status "
        "from public.instagram_send_jobs j join public.instagram_messages m on m.id = j.message_id"
    )
    assert (row["state"], row["status"]) == ("retryable", "unknown")
    assert row["wait"] >= timedelta(seconds=20)


async def test_without_an_echo_the_send_goes_out_again_after_the_wait(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """An unknown send whose echo wait passed with no echo is claimed again, on its next attempt."""
    await send(db, await conversation(pg))
    [job] = await claim(db)
    await complete(db, {"job_id": job["id"], "outcome": "unknown", "error_code": "meta_1_1357046"})
    await pg.execute(
        "update public.instagram_send_jobs set run_at = now(), sending_since = now() - interval '1 hour'"
    )
    [again] = await claim(db)
    assert again["attempt"] == 2


async def test_a_window_that_closed_before_sending_fails_without_a_send(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A queued message whose window closed before its turn fails outside_messaging_window; nothing is claimed."""
    conv = await conversation(pg)
    await send(db, conv)
    await pg.execute(
        "update public.instagram_conversations set last_inbound_at = now() - interval '25 hours'"
    )
    assert await claim(db) == []
    row = await pg.fetchrow("select status::text, error_code from public.instagram_messages")
    assert (row["status"], row["error_code"]) == ("failed", "outside_messaging_window")
    assert (await usage(pg))["sends_pending"] == 0


async def test_reauth_marks_the_integration_and_fails_the_message(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A 190 outcome: the integration needs reauth (one notification), the message fails reauth_required."""
    await send(db, await conversation(pg))
    [job] = await claim(db)
    await complete(
        db, {"job_id": job["id"], "outcome": "reauth", "error_code": "meta_190", "error_message": "x"}
    )
    assert await pg.fetchval("select status::text from public.instagram_integrations") == "reauth_required"
    row = await pg.fetchrow("select status::text, error_code from public.instagram_messages")
    assert (row["status"], row["error_code"]) == ("failed", "reauth_required")
    kinds = await pg.fetch("select kind from public.notifications where imo_id = $1", DEMO_IMO)
    assert [k["kind"] for k in kinds] == ["instagram_reauth_required"]


async def test_a_failed_message_can_be_retried_and_a_sent_one_cannot(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """retry_message puts a failed message back to queued with a new job; a sent one is not_retryable."""
    message = await send(db, await conversation(pg))
    [job] = await claim(db)
    await complete(db, {"job_id": job["id"], "outcome": "failed", "error_code": "recipient_not_accepting"})
    again = await rpc.retry_message(db, MEMBER, message_id=message["id"])
    assert (again["status"], again["error_code"]) == ("queued", None)
    [job] = await claim(db)
    await complete(db, {"job_id": job["id"], "outcome": "sent", "meta_message_id": "mid.2"})
    with pytest.raises(errors.InstagramDMError) as caught:
        await rpc.retry_message(db, MEMBER, message_id=message["id"])
    assert caught.value.code == "not_retryable"


async def test_slots_are_paced_per_account_and_only_two_seconds_ahead(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """At 10 sends/s one claim of 50 due sends to one account takes 2 s of slots, 1.04 / 10 s apart (so any
    one-second window holds at most 10 even when a send leaves up to 40 ms after its slot)."""
    await settings(db, send_rate_per_second=10)
    conv = await conversation(pg)
    for _ in range(50):
        await send(db, conv)
    jobs = await claim(db, limit=50)
    assert 19 <= len(jobs) <= 20
    delays = [j["slot_at"] for j in jobs]
    assert all(abs((b - a) - 1.04 / 10) < 0.002 for a, b in itertools.pairwise(delays))


async def test_throttling_pauses_the_account_for_every_worker(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A throttled outcome puts the message back to queued and pauses the account until its run_at."""
    conv = await conversation(pg)
    await send(db, conv)
    await send(db, conv)
    [first] = await claim(db, limit=1)
    later = (await pg.fetchval("select now() + interval '10 minutes'")).isoformat()
    await complete(
        db, {"job_id": first["id"], "outcome": "throttled", "run_at": later, "error_code": "meta_613"}
    )
    await pg.execute("update public.instagram_send_jobs set run_at = now() where state = 'retryable'")
    assert await claim(db, worker="w2") == []
    assert await pg.fetchval("select count(*) from public.instagram_messages where status = 'queued'") == 2


async def test_a_busy_account_by_metas_usage_header_pauses(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A send answered with 96 % business-use-case usage pauses the account: the next due send waits."""
    conv = await conversation(pg)
    await send(db, conv)
    await send(db, conv)
    [first] = await claim(db, limit=1)
    await complete(
        db, {"job_id": first["id"], "outcome": "sent", "meta_message_id": "mid.b", "usage_percent": 96}
    )
    assert await claim(db) == []
    paused = await pg.fetchval("select paused_until - now() from public.instagram_send_pacing")
    assert paused > timedelta(seconds=50)


async def test_the_conversation_preview_follows_a_queued_reply(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Queueing a reply moves the conversation's preview and last_message_at to it."""
    conv = await conversation(pg)
    message = await send(db, conv, text="On my way")
    row = await pg.fetchrow(
        "select last_message_preview, last_message_at from public.instagram_conversations where id = $1", conv
    )
    assert row["last_message_preview"] == "On my way"
    assert row["last_message_at"] == datetime.fromisoformat(message["sent_at"])


async def test_a_send_that_woke_too_late_gets_the_next_free_slot(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Reslot gives a held send the account's next free slot, after every slot handed out before it."""
    await settings(db, send_rate_per_second=10)
    conv = await conversation(pg)
    for _ in range(3):
        await send(db, conv)
    jobs = await claim(db)
    fresh = await rpc.send_reslot(db, job_id=jobs[0]["id"], worker="w1")
    assert fresh.slot_at > max(j["slot_at"] for j in jobs)
    with pytest.raises(errors.NotFoundError):
        await rpc.send_reslot(db, job_id=jobs[0]["id"], worker="not-the-holder")


async def test_a_definite_answer_counts_even_after_the_lease_passed(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Meta's message_id from a worker whose lease expired meanwhile is still stored: the message is sent."""
    message = await send(db, await conversation(pg))
    [job] = await claim(db, worker="slow")
    await pg.execute("update public.instagram_send_jobs set lease_expires_at = now() - interval '1 second'")
    assert await claim(db, worker="other") == []  # parks it: unknown, waiting for an echo
    assert await complete(
        db, {"job_id": job["id"], "outcome": "sent", "meta_message_id": "mid.late"}, worker="slow"
    ) == {
        "completed": 0,
        "stale": 1,
    }
    row = await pg.fetchrow(
        "select status::text, meta_message_id from public.instagram_messages where id = $1", message["id"]
    )
    assert (row["status"], row["meta_message_id"]) == ("sent", "mid.late")
    assert await pg.fetchval("select state from public.instagram_send_jobs") == "completed"


async def test_deleted_pending_messages_leave_the_monthly_count(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Deleting a conversation with queued replies gives their pending count back."""
    conv = await conversation(pg)
    await send(db, conv)
    await send(db, conv)
    assert (await usage(pg))["sends_pending"] == 2
    await pg.execute("delete from public.instagram_conversations where id = $1", conv)
    assert (await usage(pg))["sends_pending"] == 0
