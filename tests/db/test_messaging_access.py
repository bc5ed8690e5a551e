"""The Messages page's two reads: the caller's access in an IMO and the IMO's templates, called as the user."""

from __future__ import annotations

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from tests.db.factories import DEMO_ADMIN, DEMO_IMO, DEMO_MEMBER, STARTER_ADMIN, STARTER_IMO
from tests.fixtures.api import acting_user

ADMIN = acting_user(DEMO_ADMIN)
MEMBER = acting_user(DEMO_MEMBER)
STARTER = acting_user(STARTER_ADMIN)


async def test_access_of_the_demo_admin(db: AsyncpgDatabase) -> None:
    """The Team-plan admin is an admin whose plan has Instagram messaging."""
    access = await rpc.messaging_access(db, ADMIN, imo_id=DEMO_IMO)
    assert access == rpc.MessagingAccess(
        imo_id=DEMO_IMO,
        imo_name="Demo Agency",
        role="admin",
        is_admin=True,
        plan="Team",
        instagram_messaging=True,
    )


async def test_access_of_a_member_is_not_admin(db: AsyncpgDatabase) -> None:
    """A plain member reads their role as member, not admin."""
    access = await rpc.messaging_access(db, MEMBER, imo_id=DEMO_IMO)
    assert (access.role, access.is_admin, access.instagram_messaging) == ("member", False, True)


async def test_access_on_the_starter_plan_has_no_messaging(db: AsyncpgDatabase) -> None:
    """The Starter admin's plan lacks instagram_messaging."""
    access = await rpc.messaging_access(db, STARTER, imo_id=STARTER_IMO)
    assert (access.is_admin, access.plan, access.instagram_messaging) == (True, "Starter", False)


async def test_access_to_another_imo_is_not_found(db: AsyncpgDatabase) -> None:
    """Asking about an IMO one does not belong to is not_found, revealing nothing of it."""
    with pytest.raises(errors.NotFoundError) as caught:
        await rpc.messaging_access(db, STARTER, imo_id=DEMO_IMO)
    assert caught.value.code == "not_found"


async def test_access_ends_with_the_subscription(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A cancelled subscription leaves the role but no plan and no messaging."""
    await pg.execute("update public.imo_subscriptions set status = 'canceled' where imo_id = $1", DEMO_IMO)
    access = await rpc.messaging_access(db, ADMIN, imo_id=DEMO_IMO)
    assert (access.is_admin, access.plan, access.instagram_messaging) == (True, None, False)


async def test_templates_are_listed_for_members_only(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A member lists the IMO's active templates by name; an inactive one and other IMOs' callers see none."""
    for name in ("Welcome", "Follow-up"):
        await rpc.upsert_template(db, ADMIN, imo_id=DEMO_IMO, name=name, body=f"{name} {{{{first_name}}}}")
    await rpc.upsert_template(db, ADMIN, imo_id=DEMO_IMO, name="Old", body="old")
    await pg.execute("update public.instagram_message_templates set is_active = false where name = 'Old'")
    listed = await rpc.list_templates(db, MEMBER, imo_id=DEMO_IMO)
    assert [(t["name"], t["variables"]) for t in listed] == [
        ("Follow-up", ["first_name"]),
        ("Welcome", ["first_name"]),
    ]
    assert await rpc.list_templates(db, STARTER, imo_id=DEMO_IMO) == []
