"""Message templates: admins manage them, members read and preview them, rendering substitutes values and
evaluates nothing. Called as the user, the way the app calls them."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from instagram_dm import errors
from instagram_dm.db import rpc
from instagram_dm.db.asyncpg_adapter import AsyncpgDatabase
from instagram_dm.db.port import ActingUser
from tests.db.factories import DEMO_ADMIN, DEMO_IMO, DEMO_MEMBER, STARTER_ADMIN, integration
from tests.fixtures.api import acting_user

ADMIN = acting_user(DEMO_ADMIN)
MEMBER = acting_user(DEMO_MEMBER)
OUTSIDER = acting_user(STARTER_ADMIN)


async def upsert(db: AsyncpgDatabase, user: ActingUser = ADMIN, **args: Any) -> Any:
    values = {
        "imo_id": DEMO_IMO,
        "name": "Welcome",
        "body": "Hi {{first_name}}!",
        "category": "greeting",
    } | args
    return await rpc.upsert_template(db, user, **values)


async def refusal(call: Any) -> str:
    with pytest.raises(errors.InstagramDMError) as caught:
        await call
    return caught.value.code


async def conversation(pg: asyncpg.Connection, *, name: str | None = "Dana Scully", lead: bool = True) -> str:
    integration_id = await integration(pg, DEMO_IMO, status="connected", key="k" * 40)
    lead_id = None
    if lead:
        lead_id = await pg.fetchval(
            "insert into public.recruiting_leads (imo_id, first_name, last_name) values ($1, 'Dana', 'Scully') "
            "returning id",
            DEMO_IMO,
        )
    return str(
        await pg.fetchval(
            """insert into public.instagram_conversations (integration_id, imo_id, participant_igsid,
                 participant_username, participant_name, recruiting_lead_id)
               values ($1, $2, '5150', 'dana.s', $3, $4) returning id::text""",
            integration_id,
            DEMO_IMO,
            name,
            lead_id,
        )
    )


async def render(
    db: AsyncpgDatabase, template_id: str, conv: str, user: ActingUser = MEMBER, **variables: str
) -> Any:
    return await rpc.render_template(
        db, user, template_id=template_id, conversation_id=conv, variables=variables
    )


async def test_an_admin_creates_a_template_with_its_variables_derived(db: AsyncpgDatabase) -> None:
    """The admin's template comes back with the variables its body uses, each once, sorted."""
    template = await upsert(
        db, body="Hi {{first_name}}, I'm {{agent_name}} from {{agency_name}}. {{first_name|there}}"
    )
    assert template["variables"] == ["agency_name", "agent_name", "first_name"]
    assert (template["name"], template["category"]) == ("Welcome", "greeting")


async def test_an_update_keeps_the_id_and_derives_again(db: AsyncpgDatabase) -> None:
    """Updating a template by id changes its body and its variables."""
    first = await upsert(db)
    second = await upsert(db, id=first["id"], body="Hello {{username}}")
    assert second["id"] == first["id"] and second["variables"] == ["username"]


async def test_a_member_cannot_manage_templates_but_reads_them(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A member gets forbidden for create and delete; they still read the IMO's templates (RLS)."""
    template = await upsert(db)
    assert await refusal(upsert(db, MEMBER, name="Other")) == "forbidden"
    assert await refusal(rpc.delete_template(db, MEMBER, id=template["id"])) == "forbidden"
    async with pg.transaction():
        await pg.execute("set local role authenticated")
        await pg.execute(
            "select set_config('request.jwt.claims', $1, true)",
            f'{{"sub": "{DEMO_MEMBER}", "role": "authenticated"}}',
        )
        assert await pg.fetchval("select count(*) from public.instagram_message_templates") == 1


async def test_another_imo_sees_nothing(db: AsyncpgDatabase) -> None:
    """Another IMO's admin gets not_found for create in this IMO, delete and render."""
    template = await upsert(db)
    assert await refusal(upsert(db, OUTSIDER)) == "not_found"
    assert await refusal(rpc.delete_template(db, OUTSIDER, id=template["id"])) == "not_found"


async def test_names_are_unique_per_imo(db: AsyncpgDatabase) -> None:
    """A second template of the same name in the IMO is name_taken."""
    await upsert(db)
    assert await refusal(upsert(db, body="Other body")) == "name_taken"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"category": "spam"}, "invalid_category"),
        ({"name": "  "}, "invalid_name"),
        ({"body": "é" * 501}, "invalid_body"),
    ],
)
async def test_bad_templates_are_refused(db: AsyncpgDatabase, args: dict[str, str], code: str) -> None:
    """An unknown category, an empty name or a body over 1,000 bytes: each its own refusal."""
    assert await refusal(upsert(db, **args)) == code


async def test_an_admin_deletes_a_template(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """Delete by an admin removes the template."""
    template = await upsert(db)
    assert (await rpc.delete_template(db, ADMIN, id=template["id"]))["deleted"] is True
    assert await pg.fetchval("select count(*) from public.instagram_message_templates") == 0


async def test_render_fills_in_profile_lead_agent_and_agency(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """A preview has the lead's names, the username, the agent's and the agency's names filled in."""
    conv = await conversation(pg)
    template = await upsert(
        db,
        body="Hi {{first_name}} {{last_name}} (@{{username}}), {{full_name}}: {{agent_name}} at {{agency_name}}",
    )
    agency = await pg.fetchval("select name from public.imos where id = $1", DEMO_IMO)
    agent = await pg.fetchval(
        "select coalesce(raw_user_meta_data->>'full_name', raw_user_meta_data->>'name', split_part(email, '@', 1)) "
        "from auth.users where id = $1",
        DEMO_MEMBER,
    )
    rendered = await render(db, template["id"], conv)
    assert rendered["text"] == f"Hi Dana Scully (@dana.s), Dana Scully: {agent} at {agency}"


async def test_missing_variables_are_named_and_defaults_fill_in(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """Unknown variables refuse with missing_variables naming each; a default fills an empty one."""
    conv = await conversation(pg, name=None, lead=False)
    template = await upsert(db, body="Hi {{first_name|there}}, your {{policy}} on {{date}}")
    with pytest.raises(errors.InstagramDMError) as caught:
        await render(db, template["id"], conv)
    assert caught.value.code == "missing_variables" and "policy" in caught.value.message
    assert "date" in caught.value.message and "first_name" not in caught.value.message
    rendered = await render(db, template["id"], conv, policy="IUL", date="Friday")
    assert rendered["text"] == "Hi there, your IUL on Friday"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{{ first_name }}}", "{{ first_name }}}"),
        ("{{#each leads}}x{{/each}}", "{{#each leads}}x{{/each}}"),
        ("{{first_name.__class__}}", "{{first_name.__class__}}"),
        ("{{first_name}}{{", "Dana{{"),
    ],
)
async def test_what_is_not_a_variable_renders_literally(
    pg: asyncpg.Connection, db: AsyncpgDatabase, body: str, expected: str
) -> None:
    """Spaces, block helpers and attribute access are not variables: they stay as written, never evaluated."""
    conv = await conversation(pg)
    template = await upsert(db, body=body)
    assert (await render(db, template["id"], conv))["text"] == expected


async def test_dunder_names_are_plain_names_that_must_be_given(
    pg: asyncpg.Connection, db: AsyncpgDatabase
) -> None:
    """{{__class__}} is only a name: without a value it is missing, with one it is that text."""
    conv = await conversation(pg)
    template = await upsert(db, body="x{{__class__}}y")
    assert await refusal(render(db, template["id"], conv)) == "missing_variables"
    assert (await render(db, template["id"], conv, __class__="z"))["text"] == "xzy"


async def test_values_are_never_expanded_again(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A value holding {{agency_name}} is sent as that text: rendering is one pass."""
    conv = await conversation(pg)
    template = await upsert(db, body="{{note}} / {{first_name}}")
    rendered = await render(db, template["id"], conv, note="{{agency_name}}")
    assert rendered["text"] == "{{agency_name}} / Dana"


async def test_a_rendering_over_1000_bytes_is_refused(pg: asyncpg.Connection, db: AsyncpgDatabase) -> None:
    """A template whose rendering passes 1,000 bytes is message_too_long."""
    conv = await conversation(pg)
    template = await upsert(db, body="{{note}}")
    assert await refusal(render(db, template["id"], conv, note="ü" * 501)) == "message_too_long"
