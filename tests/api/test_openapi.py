"""The OpenAPI document: it describes every route the app mounts in production (and nothing else), and the
live API, served over real HTTP, answers as it says (schemathesis, bounded in examples and time)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from api import openapi, webhook
from api.app import create_app
from instagram_dm.settings import Settings
from tests.fixtures.api import settings_env, user_token
from tests.fixtures.servers import serve_in_thread

EXAMPLES_PER_OPERATION = 12
TIME_BUDGET_SECONDS = 30.0


def app_for(environment: str) -> Starlette:
    env = settings_env(
        "http://sandbox.invalid", "postgresql://u:p@127.0.0.1:1/db", INSTAGRAM_DM_ENV=environment
    )
    return create_app(Settings.from_environ(env, env_file=None))


def mounted(app: Starlette) -> set[tuple[str, str]]:
    """Every (path, method) the app answers: its routes (HEAD left out, Starlette adds it to each GET) and
    the webhook POST its receiver middleware answers ahead of routing."""
    out: set[tuple[str, str]] = set()
    if any(m.cls is webhook.WebhookReceiver for m in app.user_middleware):
        path, method = webhook.WebhookReceiver.operation
        out.add((path, method.lower()))

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(list(route.routes), prefix + route.path)
            elif isinstance(route, Route):
                out.update((prefix + route.path, m.lower()) for m in (route.methods or ()) if m != "HEAD")
            else:
                raise TypeError(f"a route of a kind this test cannot read: {route!r}")

    walk(list(app.routes), "")
    return out


def described() -> set[tuple[str, str]]:
    return {(path, method) for path, item in openapi.DOCUMENT["paths"].items() for method in item}


def test_every_production_route_and_method_is_described() -> None:
    """Each route and method the production app mounts has an operation in the document, and the document
    describes no route the app does not mount."""
    assert mounted(app_for("production")) == described()


def test_development_only_routes_are_exactly_the_excluded_ones() -> None:
    """What the development app mounts beyond production is all under the excluded /dev paths, and no
    production route falls under that rule (so it can hide nothing of the contract)."""
    production = mounted(app_for("production"))
    development_only = mounted(app_for("development")) - production
    assert development_only
    assert {path for path, _ in development_only if not openapi.is_development_path(path)} == set()
    assert {path for path, _ in production if openapi.is_development_path(path)} == set()


def test_every_operation_documents_its_refusals_in_the_error_shape() -> None:
    """Every 4xx of every operation (but the callback's HTML page and readiness) is the error envelope with
    the codes it can carry listed."""
    missing = []
    for path, item in openapi.DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith("4") or "text/html" in response.get("content", {}):
                    continue
                schema = response["content"]["application/json"]["schema"]
                codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
                if schema["allOf"][0] != {"$ref": "#/components/schemas/Error"} or not codes:
                    missing.append((path, method, status))
    assert missing == []


def test_the_served_document_is_the_module_one(api_client: Any) -> None:
    """GET /openapi.json answers the document, as JSON, and schemathesis reads every operation of it."""
    response = api_client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == openapi.DOCUMENT
    schema = schemathesis.openapi.from_dict(response.json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.path, op.method.lower()) for op in operations} == described()


@pytest.fixture
def live_api(sandbox: Any, database_url: str, pg: Any) -> Iterator[str]:
    """The production API on a real port (uvicorn, lifespan on), talking to the sandbox and the test database."""
    app = create_app(Settings.from_environ(settings_env(sandbox.url, database_url), env_file=None))
    with serve_in_thread(app, lifespan="on") as url:
        yield url


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(live_api: str) -> None:
    """Generated requests to every operation of the served document (a signed-in admin's token on each) get
    no 5xx, and every answer has a documented status, content type, headers and body."""
    # The document as served (from_url would leave out the operation that serves it).
    schema = schemathesis.openapi.from_dict(httpx.get(f"{live_api}/openapi.json").json())
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    headers = {"Authorization": f"Bearer {user_token()}"}
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            assert time.monotonic() < deadline, "the schemathesis run went over its time budget"
            response = case.call(base_url=live_api, headers=headers, allow_redirects=False, timeout=10)
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            case.validate_response(response, checks=checks)

        call()
    assert len(calls) == len(described())
