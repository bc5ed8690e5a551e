"""The Meta sandbox: Facebook's OAuth dialog and the Graph API at one origin, plus `/_sandbox/` control.

``create_app(config)`` assembles the app; each part lives in its own module:

    core.py     the state holder (`Sandbox`) and the Graph envelope every Graph route shares
    oauth.py    the Login dialog and ``/oauth/access_token``   (consent.py: the dialog's HTML)
    instagram_login.py  Instagram Login's hosts under /instagram/www, /instagram/api, /instagram/graph
    graph.py    Graph nodes and edges (``/me/accounts``, ``/{id}``, ``subscribed_apps``, ``debug_token``)
    send.py     the Send API ``/{page-id}/messages``: checks, 24-hour window, rate, record, echo
    fields.py   the ``fields=`` parser, nested expansion included
    faults.py   injected faults (before the route, or after an accepted send) and latency (ASGI)
    people.py   IGSIDs: made on first use, ``GET /{igsid}`` profiles, forced profile failures
    control.py  ``/_sandbox/`` (reset, state, users, tokens, faults, latency, clock, dialog, config,
                webhooks, people, messages)
    webhooks.py webhook deliveries built, encoded and signed like Meta's (pure; tests import it)
    emitter.py  ``/_sandbox/webhooks/send``: plans deliveries and POSTs them to the webhook URL

The state lives in memory (one uvicorn worker). See docs/sandbox.md.
"""

from __future__ import annotations

from starlette.applications import Starlette

from sandbox.cdn import cdn_routes
from sandbox.control import control_routes
from sandbox.core import Sandbox
from sandbox.faults import FaultsAndLatency
from sandbox.graph import graph_routes
from sandbox.instagram_login import instagram_login_routes
from sandbox.oauth import oauth_routes
from sandbox.state import SandboxConfig

__all__ = ["Sandbox", "SandboxConfig", "create_app"]


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """The sandbox as a Starlette app; state is per app instance."""
    sandbox = Sandbox(config or SandboxConfig())
    # Graph routes come last: `/{version}/{node_id}` matches any id.
    app = Starlette(
        routes=[*control_routes(), *instagram_login_routes(), *cdn_routes(), *oauth_routes(), *graph_routes()]
    )
    app.state.sandbox = sandbox
    app.add_middleware(FaultsAndLatency, sandbox=sandbox)
    return app
