"""Development-only pages and routes (INSTAGRAM_DM_ENV=development; never mounted in production).

``/dev`` is a Messages page a recruiter would recognise: sign in as a seeded demo user, connect an
Instagram account through the sandbox's consent page, see conversations arrive live, open one, reply,
watch queued → sent → read, insert templates, schedule for later; a sandbox panel makes the Meta
stand-in act as a prospect or as Meta. Modules: :mod:`~api.dev.session` (the demo sign-in and the user the RPCs run as),
:mod:`~api.dev.pages` (HTML and the static files), :mod:`~api.dev.data` (the JSON the page polls and its
actions, all through the app-facing RPCs as the user), :mod:`~api.dev.sandbox_panel` (the sandbox panel).
"""

from __future__ import annotations

from starlette.routing import Route

from api.dev import data, pages, sandbox_panel, session


def routes() -> list[Route]:
    return [
        Route("/", pages.home, methods=["GET"]),
        Route("/dev", pages.messages_page, methods=["GET"]),
        Route("/dev/static/{name}", pages.static, methods=["GET"]),
        Route("/dev/inbox", pages.inbox_redirect, methods=["GET"]),
        Route("/dev/status", pages.status_page, methods=["GET"]),
        Route("/dev/session", session.current, methods=["GET"]),
        Route("/dev/session", session.sign_in, methods=["POST"]),
        Route("/dev/session", session.sign_out, methods=["DELETE"]),
        Route("/dev/session/token", session.token, methods=["GET"]),
        Route("/dev/api/inbox", data.inbox, methods=["GET"]),
        Route("/dev/media/{message_id}", data.media, methods=["GET"]),
        Route("/dev/api/read", data.mark_read, methods=["POST"]),
        Route("/dev/api/send", data.send, methods=["POST"]),
        Route("/dev/api/retry", data.retry, methods=["POST"]),
        Route("/dev/api/render", data.render, methods=["POST"]),
        Route("/dev/api/templates/samples", data.sample_templates, methods=["POST"]),
        Route("/dev/api/schedule", data.schedule, methods=["POST"]),
        Route("/dev/api/scheduled/cancel", data.cancel_scheduled, methods=["POST"]),
        Route("/dev/api/scheduled/reschedule", data.reschedule, methods=["POST"]),
        Route("/dev/api/disconnect", data.disconnect, methods=["POST"]),
        Route("/dev/sandbox/dm", sandbox_panel.prospect_dm, methods=["POST"]),
        Route("/dev/sandbox/read", sandbox_panel.prospect_reads, methods=["POST"]),
        Route("/dev/sandbox/react", sandbox_panel.prospect_reacts, methods=["POST"]),
        Route("/dev/sandbox/refuse-next", sandbox_panel.refuse_next_reply, methods=["POST"]),
        Route("/dev/sandbox/outage", sandbox_panel.outage_state, methods=["GET"]),
        Route("/dev/sandbox/outage", sandbox_panel.outage, methods=["POST"]),
    ]
