"""The Messages page as a person uses it, in Chromium: sign in, connect through the sandbox's consent page,
receive a DM live, open it, reply and watch it go queued → sent → read, schedule a reply, meet the 24-hour
window, disconnect;
what a member and a Starter-plan admin see instead."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.browser.conftest import PHONE, PageFactory, shot
from tests.worker.conftest import create_integrations

# Every outbound status the page shows, in the order it shows them (a MutationObserver in the page).
RECORD_STATUSES = """() => {
  window.__statuses = [];
  const note = () => document.querySelectorAll('li.msg.outbound').forEach((li) => {
    const s = li.dataset.status;
    if (window.__statuses[window.__statuses.length - 1] !== s) window.__statuses.push(s);
  });
  new MutationObserver(note).observe(document.getElementById('messages'),
    {childList: true, subtree: true, attributes: true});
}"""


async def sign_in(page: Any, url: str, user: str) -> None:
    await page.goto(f"{url}/dev")
    await page.click(f"button[data-user={user}]")


async def test_admin_walks_connect_receive_reply_window_disconnect(live: str, page_for: PageFactory) -> None:
    """The demo admin connects, sees a DM arrive with its badge, opens it (badge clears), replies with a template
    (queued → sent → read, then a reaction), sees a refused reply's reason and retries it, schedules one that
    goes out by itself, is refused outside the 24-hour window with the reason, and disconnects — with no
    console error."""
    page, console = await page_for()
    await sign_in(page, live, "admin")
    await page.wait_for_selector("#connect")
    await shot(page, "01-signed-in")

    await page.click("#connect")
    await page.wait_for_selector("button.approve")  # the sandbox's consent page (Meta's dialog)
    await shot(page, "02-consent")
    await page.click("button.approve")
    await page.wait_for_selector("[data-account] [data-status=connected]")
    assert "token expires in" in await page.inner_text("[data-account] [data-expiry]")
    await shot(page, "03-connected")

    await page.select_option("#sb-person", "1")
    await page.fill("#sb-text", "Hi! Is the recruiting call still on? 😀")
    await page.click("#sb-dm")
    badge = page.locator("li.conversation .badge")
    await badge.wait_for()
    assert await badge.inner_text() == "1"
    await shot(page, "04-dm-arrived")

    await page.click("li.conversation")
    await page.wait_for_selector("li.conversation.selected:not(.unread)")
    assert await badge.count() == 0
    await page.wait_for_selector("li.msg.inbound >> text=Is the recruiting call still on?")
    assert (await page.inner_text("#window-note")).startswith("You can reply for ")
    await shot(page, "05-opened")

    await page.click(
        "#add-templates"
    )  # instagram_upsert_template, then rendered by instagram_render_template
    await page.wait_for_selector("#template option:text('Welcome')", state="attached")
    await page.select_option("#template", label="Welcome")
    await page.wait_for_function(
        "document.getElementById('reply').value.includes('reaching out to Demo Agency')"
    )
    await page.evaluate(RECORD_STATUSES)
    await page.click("#send")
    await page.wait_for_selector("li.msg.outbound[data-status=sent]")
    await shot(page, "06-reply-sent")
    await page.click("#sb-read")
    await page.wait_for_selector("li.msg.outbound[data-status=read]")
    await page.click("#sb-react")
    await page.wait_for_selector("li.msg.outbound .reactions >> text=❤️")
    await shot(page, "07-reply-read")
    seen = await page.evaluate("window.__statuses")
    assert seen[0] == "queued" and seen[-1] == "read" and "sent" in seen, seen

    await page.click("#sb-refuse")  # the Send API refuses the next send (Meta 551): the reply fails
    await page.wait_for_selector("#sb-out >> text=will be refused")
    await page.fill("#reply", "Are you there?")
    await page.click("#send")
    await page.wait_for_selector("li.msg.outbound [data-failure] >> text=not accepting messages")
    await shot(page, "08-failed")
    await page.click("[data-retry]")  # instagram_retry_message: queued again, and this time it goes
    await page.wait_for_selector("li.msg.outbound[data-status=sent] >> text=Are you there?")

    await page.fill("#reply", "See you at 3 pm!")
    await page.select_option("#schedule-when", "10")
    await page.click("#schedule")  # instagram_schedule_message; the worker sends it at its time
    await page.wait_for_selector("#scheduled li[data-status=scheduled] >> text=See you at 3 pm")
    await shot(page, "09-scheduled")

    await page.select_option("#sb-person", "2")
    await page.select_option("#sb-ago", "48")
    await page.fill("#sb-text", "Sorry for the late reply, still interested?")
    await page.click("#sb-dm")
    older = page.locator("li.conversation:not(.selected)")
    await older.wait_for()
    await older.click()
    await page.wait_for_selector("#window-note[data-window=human]")
    assert "Outside the 24-hour window" in await page.inner_text("#window-note")
    await page.fill("#reply", "Hello again!")
    await page.click("#send")
    await page.wait_for_selector("#composer-error[data-code=outside_messaging_window]")
    assert "24 hours" in await page.inner_text("#composer-error")
    console.expect_refusal(400)  # the refused send's answer, logged by the browser
    await shot(page, "10-outside-window")

    await page.click("li.conversation:not(.selected)")  # back to the first one: the scheduled reply went out
    await page.wait_for_selector("li.msg.outbound[data-status=sent] >> text=See you at 3 pm", timeout=25_000)
    await page.wait_for_selector("#scheduled", state="hidden")
    await shot(page, "11-scheduled-sent")

    await page.click("[data-disconnect]")
    await page.click("[data-disconnect][data-confirm]")
    await page.wait_for_selector("#accounts >> text=No Instagram account connected")
    await shot(page, "12-disconnected")


async def test_member_sees_the_inbox_without_connect_or_disconnect(
    live: str, page_for: PageFactory, pg: asyncpg.Connection, sandbox: Any
) -> None:
    """A member (not an admin) sees the connected account and an image DM, on a phone, but no connect or
    disconnect button."""
    await create_integrations(pg, sandbox, 1, webhook_subscribed=True)
    page, _ = await page_for(PHONE)
    await sign_in(page, live, "member")
    await page.wait_for_selector("[data-account] [data-status=connected]")
    await page.select_option("#sb-kind", "image")
    await page.click("#sb-dm")
    await page.click("li.conversation")
    image = page.locator("li.msg.inbound .attachment img")
    await image.wait_for()
    await page.wait_for_function("document.querySelector('li.msg.inbound .attachment img').naturalWidth > 0")
    assert await page.locator("#connect, [data-disconnect]").count() == 0
    assert await page.inner_text("#who-role") == "member"
    await shot(page, "13-member-phone")


async def test_starter_admin_sees_the_upgrade_message(live: str, page_for: PageFactory) -> None:
    """The Starter-plan admin gets the upgrade message instead of the inbox."""
    page, _ = await page_for()
    await sign_in(page, live, "starter")
    await page.wait_for_selector("#upgrade >> text=part of the Team plan")
    assert await page.locator("#app").is_hidden()
    assert await page.inner_text("#upgrade-plan") == "Starter"
    await shot(page, "14-starter-upgrade")
