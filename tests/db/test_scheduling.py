"""Scheduled messages in SQL (no Meta here): scheduling, cancelling and rescheduling as the user, and the
dispatch that turns due rows into sends, rendering templates and checking the window at that moment."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.db.port import ActingUser
from tests.db.factories import DEMO_ADMIN, DEMO_IMO, DEMO_MEMBER, STARTER_ADMIN, STARTER_IMO, integration
from tests.fixtures.api import acting_user

MEMBER = acting_user(DEMO_MEMBER)
ADMIN = acting_user(DEMO_ADMIN)
OUTSIDER = acting_user(STARTER_ADMIN)


async def conversation(
    pg: asyncpg.Connection, *, imo_id: str = DEMO_IMO, inbound_ago: timedelta = timedelta(hours=1)
) -> str:
    """A conversation of a connected integration with Dana, who last wrote `inbound_ago` ago."""
    integration_id = await integration(pg, imo_id, status="connected", key="k" * 40)
    return str(
        await pg.fetchval(
            """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid,
                 participant_name, last_inbound_at)
               values ($1, $2, '4242', 'Dana Scully', now() - $3::interval) returning id::text""",
            integration_id,
            imo_id,
            inbound_ago,
        )
    )


def soon(seconds: float = 60) -> datetime:
    return datetime.now().astimezone() + timedelta(seconds=seconds)


async def schedule(db: AsyncpgDatabase, conv: str, user: ActingUser = MEMBER, **args: Any) -> Any:
    values: dict[str, Any] = {"send_at": soon(), "text": "See you tomorrow"} | args
    return await rpc.schedule_message(db, user, conversation_id=conv, **values)


async def refusal(call: Any) -> str:
    with pytest.raises(errors.InstagramDMError) as caught:
        await call
    return caught.value.code


async def make_due(pg: asyncpg.Connection) -> None:
    """Every waiting scheduled message is due now (as if its time had come)."""
    await pg.execute(
        "update public.instagram_scheduled_messages set scheduled_for = now() - interval '1 second' "
        "where status = 'scheduled'"
    )


async def dispatch(db: AsyncpgDatabase, limit: int = 200) -> rpc.Dispatched:
    return await rpc.scheduled_dispatch(db, limit=limit)


async def row(pg: asyncpg.Connection, scheduled_id: str) -> asyncpg.Record:
    found = await pg.fetchrow(
        "select status::text, last_error_code, sent_message_id, attempts from public.instagram_scheduled_messages "
        "where id = $1",
        scheduled_id,
    )
    assert found is not None
    return found


async def sends(pg: asyncpg.Connection) -> tuple[int, int]:
    """(outbound messages, send jobs)."""
    messages = await pg.fetchval(
        "select count(*) from public.instagram_messages where direction = 'outbound'"
    )
    jobs = await pg.fetchval("select count(*) from public.instagram_send_jobs")
    return messages, jobs


async def template(db: AsyncpgDatabase, body: str = "Hi {{first_name}}, {{topic}}?") -> str:
    made = await rpc.upsert_template(
        db, ADMIN, imo_id=DEMO_IMO, name="Follow-up", body=body, category="follow_up"
    )
    return str(made["id"])


# ---- scheduling, as the user -------------------------------------------------------------------------


async def test_a_member_schedules_a_text_and_gets_it_back(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """The scheduled message comes back waiting, with its time and text, and nothing is sent yet."""
    conv = await conversation(pg)
    at = soon(120)
    scheduled = await schedule(db, conv, send_at=at)
    assert (scheduled["status"], scheduled["text"], scheduled["conversation_id"]) == (
        "scheduled",
        "See you tomorrow",
        conv,
    )
    assert datetime.fromisoformat(scheduled["send_at"]) == at.replace(microsecond=at.microsecond)
    assert scheduled["created_by"] == DEMO_MEMBER
    assert await sends(pg) == (0, 0)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"send_at": soon(2)}, "invalid_send_at"),
        ({"send_at": soon(-60)}, "invalid_send_at"),
        ({"send_at": soon(31 * 86400)}, "invalid_send_at"),
        ({"text": "   "}, "empty_message"),
        ({"text": "x" * 1001}, "message_too_long"),
    ],
    ids=["too-soon", "past", "beyond-30-days", "blank", "too-long"],
)
async def test_bad_schedules_are_refused_with_their_code(
    pg: asyncpg.Connection, db: AsyncpgDatabase, args: dict[str, Any], code: str
) -> None:
    """Times outside 5 s to 30 days, a blank or too long text and non-object variables are refused by code."""
    conv = await conversation(pg)
    assert await refusal(schedule(db, conv, **args)) == code
    assert await pg.fetchval("select count(*) from public.instagram_scheduled_messages") == 0


async def test_variables_that_are_not_an_object_are_refused(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """p_variables as a JSON array (as a raw supabase-js call could send): invalid_variables."""
    conv = await conversation(pg)
    call = db.rpc_as_user(
        MEMBER,
        "instagram_schedule_message",
        {"p_conversation_id": conv, "p_send_at": soon(), "p_text": "hi", "p_variables": ["a", "b"]},
    )
    assert await refusal(call) == "invalid_variables"


async def test_a_text_and_a_template_together_are_refused(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Both a text and a template: text_or_template."""
    conv = await conversation(pg)
    assert await refusal(schedule(db, conv, template_id=await template(db))) == "text_or_template"


async def test_another_imo_cannot_schedule_or_use_a_foreign_template(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Another IMO's user gets not_found for the conversation; a template of another IMO is not_found too."""
    conv = await conversation(pg)
    assert await refusal(schedule(db, conv, OUTSIDER)) == "not_found"
    starter_conv = await conversation(pg, imo_id=STARTER_IMO)
    foreign = await template(db)
    assert await refusal(schedule(db, starter_conv, OUTSIDER, text=None, template_id=foreign)) == "not_found"


async def test_scheduling_refuses_early_when_the_monthly_limit_is_reached(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """With a limit of 1 and one send this month, scheduling is monthly_limit_reached; the plan's gate too."""
    await pg.execute(
        """update public.subscription_plans set feature_limits = '{"instagram_messaging": {"monthly_sends": 1}}'
           where name = 'Team'"""
    )
    conv = await conversation(pg)
    await rpc.send_message(db, MEMBER, conversation_id=conv, text="now")
    assert await refusal(schedule(db, conv)) == "monthly_limit_reached"
    assert (
        await refusal(schedule(db, await conversation(pg, imo_id=STARTER_IMO), OUTSIDER))
        == "feature_not_in_plan"
    )


async def test_a_closed_window_does_not_stop_scheduling(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """The window is checked when the message goes out: a contact silent for 3 days can be scheduled for."""
    conv = await conversation(pg, inbound_ago=timedelta(days=3))
    assert (await schedule(db, conv))["status"] == "scheduled"


async def test_a_template_with_a_missing_variable_is_refused_naming_it(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A template needing {{topic}} without it: missing_variables, whose message names topic."""
    conv = await conversation(pg)
    with pytest.raises(errors.InstagramDMError) as caught:
        await schedule(db, conv, text=None, template_id=await template(db))
    assert caught.value.code == "missing_variables" and "topic" in caught.value.message


async def test_cancel_before_due_then_never_dispatched(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A cancelled message stays cancelled when its time comes: no message, no send job; cancelling again is
    not_cancellable."""
    conv = await conversation(pg)
    scheduled = await schedule(db, conv)
    cancelled = await rpc.cancel_scheduled_message(db, MEMBER, id=scheduled["id"])
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
    await pg.execute(
        "update public.instagram_scheduled_messages set scheduled_for = now() - interval '1 second'"
    )
    assert (await dispatch(db)).dispatched == 0
    assert await sends(pg) == (0, 0)
    assert await refusal(rpc.cancel_scheduled_message(db, MEMBER, id=scheduled["id"])) == "not_cancellable"


async def test_another_imo_cannot_cancel_reschedule_or_list(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Another IMO's user gets not_found for cancel, reschedule and list; the row stays scheduled."""
    conv = await conversation(pg)
    scheduled = await schedule(db, conv)
    assert await refusal(rpc.cancel_scheduled_message(db, OUTSIDER, id=scheduled["id"])) == "not_found"
    assert (
        await refusal(rpc.reschedule_message(db, OUTSIDER, id=scheduled["id"], send_at=soon())) == "not_found"
    )
    assert await refusal(rpc.list_scheduled_messages(db, OUTSIDER, conversation_id=conv)) == "not_found"
    assert (await row(pg, scheduled["id"]))["status"] == "scheduled"


async def test_reschedule_moves_the_time_and_cancelled_or_sent_cannot_move(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A waiting message moves to its new time; a cancelled one and a sent one are not_reschedulable."""
    conv = await conversation(pg)
    first = await schedule(db, conv)
    later = soon(3600)
    moved = await rpc.reschedule_message(db, MEMBER, id=first["id"], send_at=later)
    assert datetime.fromisoformat(moved["send_at"]) == later
    assert (
        await refusal(rpc.reschedule_message(db, MEMBER, id=first["id"], send_at=soon(1)))
        == "invalid_send_at"
    )
    await rpc.cancel_scheduled_message(db, MEMBER, id=first["id"])
    assert (
        await refusal(rpc.reschedule_message(db, MEMBER, id=first["id"], send_at=soon()))
        == "not_reschedulable"
    )
    second = await schedule(db, conv)
    await make_due(pg)
    await dispatch(db)
    await pg.execute("update public.instagram_messages set status = 'sent', meta_message_id = 'mid.s1'")
    assert (await row(pg, second["id"]))["status"] == "sent"
    assert (
        await refusal(rpc.reschedule_message(db, MEMBER, id=second["id"], send_at=soon()))
        == "not_reschedulable"
    )


async def test_the_list_shows_waiting_ones_soonest_first(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """Members list the conversation's waiting messages soonest first; cancelled ones only with finished."""
    conv = await conversation(pg)
    late = await schedule(db, conv, send_at=soon(600), text="late")
    early = await schedule(db, conv, send_at=soon(300), text="early")
    gone = await schedule(db, conv, send_at=soon(100), text="gone")
    await rpc.cancel_scheduled_message(db, MEMBER, id=gone["id"])
    listed = await rpc.list_scheduled_messages(db, ADMIN, conversation_id=conv)
    assert [m["id"] for m in listed] == [early["id"], late["id"]]
    everything = await rpc.list_scheduled_messages(db, ADMIN, conversation_id=conv, include_finished=True)
    assert [m["text"] for m in everything] == ["gone", "early", "late"]


# ---- the dispatch ---------------------------------------------------------------------------------------


async def test_a_due_message_becomes_one_queued_send_once(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Due: one outbound message by its author and one send job, the row sending and linked; a second
    dispatch adds nothing."""
    conv = await conversation(pg)
    scheduled = await schedule(db, conv)
    await make_due(pg)
    assert (await dispatch(db)).dispatched == 1
    assert (await dispatch(db)).dispatched == 0
    assert await sends(pg) == (1, 1)
    message = await pg.fetchrow(
        "select id, status::text, text, sent_by_user_id::text from public.instagram_messages "
        "where direction = 'outbound'"
    )
    assert (message["status"], message["text"], message["sent_by_user_id"]) == (
        "queued",
        "See you tomorrow",
        DEMO_MEMBER,
    )
    linked = await row(pg, scheduled["id"])
    assert (linked["status"], linked["sent_message_id"], linked["attempts"]) == ("sending", message["id"], 1)


async def test_a_message_not_yet_due_waits_and_the_next_time_is_reported(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Before its time nothing is dispatched, and the dispatch answers when the next one is due."""
    conv = await conversation(pg)
    scheduled = await schedule(db, conv, send_at=soon(90))
    result = await dispatch(db)
    assert (result.dispatched, result.failed) == (0, 0)
    assert result.next_due_at == datetime.fromisoformat(scheduled["send_at"])
    assert await sends(pg) == (0, 0)


async def test_the_template_is_rendered_when_it_goes_out(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A template edited after scheduling sends its new body, with the contact's name and the caller's values."""
    conv = await conversation(pg)
    template_id = await template(db)
    await schedule(db, conv, text=None, template_id=template_id, variables={"topic": "still interested"})
    await rpc.upsert_template(
        db, ADMIN, imo_id=DEMO_IMO, name="Follow-up", body="Hey {{first_name}}, {{topic}}?", id=template_id
    )
    await make_due(pg)
    await dispatch(db)
    text = await pg.fetchval("select text from public.instagram_messages where direction = 'outbound'")
    assert text == "Hey Dana, still interested?"


async def test_a_deleted_template_fails_the_message_with_a_reason(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Its template deleted before the time: failed with template_deleted, nothing sent."""
    conv = await conversation(pg)
    template_id = await template(db, body="Hi {{first_name}}")
    scheduled = await schedule(db, conv, text=None, template_id=template_id)
    await rpc.delete_template(db, ADMIN, id=template_id)
    await make_due(pg)
    assert (await dispatch(db)).failed == 1
    assert (await row(pg, scheduled["id"]))["last_error_code"] == "template_deleted"
    assert await sends(pg) == (0, 0)


async def test_a_window_closed_at_send_time_fails_and_sends_nothing(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Scheduled while the window was open, due after it closed: failed outside_messaging_window with a
    readable message, no message, no send job."""
    conv = await conversation(pg, inbound_ago=timedelta(hours=23))
    scheduled = await schedule(db, conv)
    await pg.execute(
        "update public.instagram_conversations set last_inbound_at = now() - interval '25 hours'"
    )
    await make_due(pg)
    assert (await dispatch(db)).failed == 1
    failed = await pg.fetchrow(
        "select status::text, last_error_code, last_error_message from public.instagram_scheduled_messages "
        "where id = $1",
        scheduled["id"],
    )
    assert (failed["status"], failed["last_error_code"]) == ("failed", "outside_messaging_window")
    assert "24 hours" in failed["last_error_message"]
    assert await sends(pg) == (0, 0)


async def test_human_agent_covers_a_persons_message_but_not_an_authorless_one(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """HUMAN_AGENT on, contact silent 3 days: a member's scheduled message goes out; one whose author was
    deleted fails outside_messaging_window."""
    await db.rpc("instagram_settings_apply_v1", {"p_settings": {"human_agent_enabled": True}})
    conv = await conversation(pg, inbound_ago=timedelta(days=3))
    by_member = await schedule(db, conv, text="from a person")
    orphan = await schedule(db, conv, text="author gone")
    await pg.execute(
        "update public.instagram_scheduled_messages set created_by = null where id = $1", orphan["id"]
    )
    await make_due(pg)
    result = await dispatch(db)
    assert (result.dispatched, result.failed) == (1, 1)
    assert (await row(pg, by_member["id"]))["status"] == "sending"
    assert (await row(pg, orphan["id"]))["last_error_code"] == "outside_messaging_window"


async def test_the_monthly_limit_is_checked_when_it_goes_out(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Limit 1: of two messages due, the first goes out and the second fails monthly_limit_reached."""
    conv = await conversation(pg)
    first = await schedule(db, conv, send_at=soon(60), text="one")
    second = await schedule(db, conv, send_at=soon(120), text="two")
    await pg.execute(
        """update public.subscription_plans set feature_limits = '{"instagram_messaging": {"monthly_sends": 1}}'
           where name = 'Team'"""
    )
    await pg.execute(
        "update public.instagram_scheduled_messages set scheduled_for = scheduled_for - interval '1 day'"
    )
    await dispatch(db)
    assert (await row(pg, first["id"]))["status"] == "sending"
    assert (await row(pg, second["id"]))["last_error_code"] == "monthly_limit_reached"
    assert (await rpc.usage_summary(db, MEMBER, imo_id=DEMO_IMO))["sends_pending"] == 1


async def test_the_outcome_of_the_send_flows_back(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """The message failing fails the row with its code; retried, the row is sending again; sent, it is sent."""
    conv = await conversation(pg)
    scheduled = await schedule(db, conv)
    await make_due(pg)
    await dispatch(db)
    message_id = (await row(pg, scheduled["id"]))["sent_message_id"]
    await pg.execute(
        "update public.instagram_messages set status = 'failed', error_code = 'meta_10', error_message = 'x' "
        "where id = $1",
        message_id,
    )
    failed = await row(pg, scheduled["id"])
    assert (failed["status"], failed["last_error_code"]) == ("failed", "meta_10")
    await pg.execute("update public.instagram_send_jobs set state = 'discarded', finalized_at = now()")
    await rpc.retry_message(db, MEMBER, message_id=str(message_id))
    assert (await row(pg, scheduled["id"]))["status"] == "sending"
    await pg.execute(
        "update public.instagram_messages set status = 'sent', meta_message_id = 'mid.9' where id = $1",
        message_id,
    )
    assert (await row(pg, scheduled["id"]))["status"] == "sent"


async def test_a_failed_one_rescheduled_goes_out_as_a_new_message(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A row failed at send time, rescheduled and due again, becomes a second message (attempt 2)."""
    conv = await conversation(pg, inbound_ago=timedelta(hours=23))
    scheduled = await schedule(db, conv)
    await pg.execute(
        "update public.instagram_conversations set last_inbound_at = now() - interval '25 hours'"
    )
    await make_due(pg)
    await dispatch(db)
    await pg.execute("update public.instagram_conversations set last_inbound_at = now()")
    again = await rpc.reschedule_message(db, MEMBER, id=scheduled["id"], send_at=soon())
    assert (again["status"], again["error_code"]) == ("scheduled", None)
    await make_due(pg)
    assert (await dispatch(db)).dispatched == 1
    assert (await row(pg, scheduled["id"]))["attempts"] == 1
    assert await sends(pg) == (1, 1)


async def test_two_dispatches_racing_on_200_due_hand_each_over_once(
    pg: asyncpg.Connection, db: AsyncpgDatabase, database_url: str
) -> None:
    """Two connections dispatching 200 due rows at once, 25 at a time: 200 messages, one per row."""
    convs = [await conversation(pg) for _ in range(4)]
    for i in range(200):
        await schedule(db, convs[i % 4], text=f"due {i}")
    await make_due(pg)

    async def drain() -> int:
        conn = await asyncpg.connect(database_url)
        total = 0
        try:
            while True:
                result = await conn.fetchval("select public.instagram_scheduled_dispatch_v1(25)")
                n = int(json.loads(result)["dispatched"])
                total += n
                if n == 0:
                    return total
        finally:
            await conn.close()

    first, second = await asyncio.gather(drain(), drain())
    assert first + second == 200 and first > 0 and second > 0
    assert await sends(pg) == (200, 200)
    assert (
        await pg.fetchval(
            "select count(distinct text) from public.instagram_messages where direction = 'outbound'"
        )
        == 200
    )
    assert (
        await pg.fetchval("select count(*) from public.instagram_scheduled_messages where status = 'sending'")
        == 200
    )


async def test_a_dispatch_that_dies_mid_batch_hands_nothing_over(
    pg: asyncpg.Connection, db: AsyncpgDatabase, database_url: str
) -> None:
    """A dispatch whose backend is killed before commit leaves every row scheduled and no message; the next
    dispatch hands each over once."""
    conv = await conversation(pg)
    for i in range(20):
        await schedule(db, conv, text=f"batch {i}")
    await make_due(pg)
    victim = await asyncpg.connect(database_url)
    pid = victim.get_server_pid()
    tx = victim.transaction()
    await tx.start()
    await victim.fetchval("select public.instagram_scheduled_dispatch_v1(200)")
    await pg.execute("select pg_terminate_backend($1)", pid)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        await tx.commit()
    await victim.close(timeout=1)
    assert await sends(pg) == (0, 0)
    assert (await dispatch(db)).dispatched == 20
    assert await sends(pg) == (20, 20)
