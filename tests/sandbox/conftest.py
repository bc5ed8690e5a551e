"""A webhook receiver on a real port for the sandbox's deliveries (webhooks/send and the Send API's echoes).

receiver_server  (session)  the receiver (tests/fixtures/receiver.py): `.url`, `.requests`, `.status`,
                            `.wait_for(n)`
receiver         (function) the same, emptied, answering 200 and set as the sandbox's webhook URL
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from tests.fixtures.receiver import Receiver
from tests.fixtures.sandbox import SandboxControl
from tests.fixtures.servers import serve_in_thread


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    with serve_in_thread(app) as url:
        receiver.url = f"{url}/hook"
        yield receiver


@pytest.fixture
def receiver(receiver_server: Receiver, sandbox: SandboxControl) -> Receiver:
    """The session's receiver, emptied, answering 200, and set as the sandbox's webhook URL."""
    receiver_server.requests.clear()
    receiver_server.status = 200
    sandbox.configure(webhook_url=receiver_server.url)
    return receiver_server
