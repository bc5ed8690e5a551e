"""instagram_dm.logs: every secret shape redact() claims to mask, redaction of records at creation and in
`extra`, and the JSON line configure() writes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from instagram_dm import logs
from instagram_dm.logs import MASK, SECRET_KEYS, SECRET_PARAMS, JsonFormatter, RedactingFilter, redact

TOKEN = "EAAStok3nVALUE0123456789abcdefXYZ"  # shaped like a sandbox/Meta user token
OPAQUE = "opaque-0f9e8d7c6b5a"  # a secret with no recognisable shape of its own
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwMDAwMDAwMC0wMDAwIiwiYXVkIjoiYXV0aGVudGljYXRlZCJ9"
    ".c2lnbmF0dXJlLXBhcnQtb2YtdGhlLWp3dA"
)
NAMES_IN_TEXT = sorted(SECRET_PARAMS)
NAMES_AS_KEYS = sorted(SECRET_KEYS)


class ListHandler(logging.Handler):
    """Keeps the records it handles, as they reach it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def clean_logging() -> Iterator[None]:
    """Restore the record factory, the root logger and the noisy loggers' levels after the test."""
    factory = logging.getLogRecordFactory()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "uvicorn.access", "hpack")}
    yield
    logging.setLogRecordFactory(factory)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)


@pytest.fixture
def captured(clean_logging: None) -> Iterator[ListHandler]:
    """A plain handler (no filter, no formatter of ours) on a test logger, with redaction installed."""
    logs.install_redaction()
    handler = ListHandler()
    logger = logging.getLogger("tests.logs")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def record(
    msg: str = "test.event", *args: Any, exc: BaseException | None = None, **extra: Any
) -> logging.LogRecord:
    """A record built the way Logger.makeRecord builds one: message, args, then extras set as attributes."""
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    rec = logging.LogRecord("tests.logs", logging.INFO, __file__, 1, msg, args, exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


# ---- redact(): query strings and form bodies ------------------------------------------------------


@pytest.mark.parametrize("name", NAMES_IN_TEXT)
def test_secret_query_parameter_is_masked(name: str) -> None:
    """Each secret parameter's value is masked in a URL; the other parameters are kept."""
    url = f"https://graph.facebook.com/v25.0/me?fields=id,name&{name}={OPAQUE}&limit=25"
    assert redact(url) == f"https://graph.facebook.com/v25.0/me?fields=id,name&{name}={MASK}&limit=25"


@pytest.mark.parametrize("name", NAMES_IN_TEXT)
def test_secret_form_field_is_masked(name: str) -> None:
    """Each secret parameter's value is masked in a form-encoded body, whatever the case of its name."""
    assert redact(f"grant_type=x&{name.upper()}={OPAQUE}") == f"grant_type=x&{name.upper()}={MASK}"


def test_parameter_names_only_match_whole_words() -> None:
    """error_code=190 or my_state=x are not the secret parameters code and state, and stay readable."""
    text = "error_code=190 job_state=running meta_code=4"
    assert redact(text) == text


def test_pkce_verifier_is_masked_and_the_challenge_kept() -> None:
    """In a code exchange URL the code_verifier is masked; a dialog URL's public code_challenge stays."""
    url = f"https://www.facebook.com/v25.0/dialog/oauth?code_challenge={OPAQUE}&code_challenge_method=S256"
    assert redact(url) == url
    assert (
        redact(f"/oauth/access_token?code_verifier={OPAQUE}&x=1")
        == f"/oauth/access_token?code_verifier={MASK}&x=1"
    )


def test_hub_verify_token_is_masked() -> None:
    """The webhook verification's hub.verify_token is masked in the request URL."""
    url = f"/webhook?hub.mode=subscribe&hub.verify_token={OPAQUE}&hub.challenge=42"
    assert redact(url) == f"/webhook?hub.mode=subscribe&hub.verify_token={MASK}&hub.challenge=42"


# ---- redact(): JSON bodies and dict reprs ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES_AS_KEYS)
def test_secret_json_field_is_masked(name: str) -> None:
    """A JSON body's string value under each secret key is masked; the other fields are kept."""
    body = json.dumps({"id": "17841400000000001", name: OPAQUE, "expires_in": 5183944})
    assert json.loads(redact(body)) == {"id": "17841400000000001", name: MASK, "expires_in": 5183944}


@pytest.mark.parametrize(
    "text",
    [
        f'{{"access_token":"{OPAQUE}"}}',
        f'{{ "Access_Token" :  "{OPAQUE}" }}',
        f"{{'client_secret': '{OPAQUE}', 'id': 1}}",
        f'{{"p_key": "quote \\" then {OPAQUE}"}}',
        f'error body: {{"error": {{"message": "bad"}}, "input_token": "{OPAQUE}"}} (HTTP 400)',
    ],
    ids=["compact", "spaced-any-case", "python-repr", "escaped-quote", "embedded"],
)
def test_json_and_dict_shapes(text: str) -> None:
    """Compact or spaced JSON, any key case, Python dict reprs and escaped quotes all lose the value."""
    assert OPAQUE not in redact(text)
    assert MASK in redact(text)


def test_meta_error_envelope_stays_readable() -> None:
    """Meta's error envelope keeps its numeric code, subcode, type and trace id."""
    envelope = json.dumps(
        {
            "error": {
                "message": "Invalid OAuth access token.",
                "type": "OAuthException",
                "code": 190,
                "error_subcode": 463,
                "fbtrace_id": "AbC123",
            }
        }
    )
    assert redact(envelope) == envelope


# ---- redact(): headers, bearer tokens, JWTs, Meta tokens, DSNs ------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Authorization: Bearer {OPAQUE}", f"Authorization: Bearer {MASK}"),
        (f"authorization: Basic {OPAQUE}", f"authorization: Basic {MASK}"),
        (f"Authorization: OAuth {OPAQUE}", f"Authorization: OAuth {MASK}"),
        (f"Authorization: {OPAQUE}", f"Authorization: {MASK}"),
        (f"{{'Authorization': 'Bearer {OPAQUE}'}}", f"{{'Authorization': '{MASK}'}}"),
        (f"apikey: {OPAQUE}", f"apikey: {MASK}"),
        (f"X-Api-Key={OPAQUE}; next", f"X-Api-Key={MASK}; next"),
    ],
    ids=["bearer", "basic", "oauth", "bare", "dict", "apikey", "x-api-key"],
)
def test_authorization_headers_are_masked(text: str, expected: str) -> None:
    """Authorization (any scheme) and API-key headers keep their name and scheme and lose the credential."""
    assert redact(text) == expected


def test_bearer_token_in_free_text_is_masked() -> None:
    """'Bearer <token>' anywhere in a message is masked."""
    assert redact(f"retrying with bearer {OPAQUE} now") == f"retrying with bearer {MASK} now"


@pytest.mark.parametrize(
    "message",
    [f"could not decode {JWT}", f"token {TOKEN} is invalid", f"page token IGQV{'x' * 40} expired"],
    ids=["jwt", "meta-user-token", "instagram-token"],
)
def test_recognisable_tokens_are_masked_anywhere(message: str) -> None:
    """JWTs and Meta/Instagram access tokens are masked even without a parameter name (exception texts)."""
    redacted = redact(message)
    assert MASK in redacted
    assert JWT not in redacted and TOKEN not in redacted and "IGQV" not in redacted


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_dsn_password_is_masked(scheme: str) -> None:
    """A database URL keeps user, host and database and loses its password."""
    dsn = f"{scheme}://postgres:{OPAQUE}@db.example.supabase.co:5432/postgres"
    assert redact(f"connect to {dsn} failed") == (
        f"connect to {scheme}://postgres:{MASK}@db.example.supabase.co:5432/postgres failed"
    )


@pytest.mark.parametrize(
    "text",
    [
        "refresh.completed",
        "worker.stopped exit_code=0 in_flight=3",
        "GET https://graph.facebook.com/v25.0/me/accounts?fields=id,name&limit=25",
        "oauth.callback reason=user_denied imo_id=00000000-0000-4000-8000-0000000000a1",
        "postgresql://127.0.0.1:54322/postgres",
        "authorization failed for user",
        "",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    """Messages, ids and URLs without a secret pass through untouched."""
    assert redact(text) == text


# ---- redact(): properties -------------------------------------------------------------------------

_TOKENS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=", min_size=12
)
_TEXT = st.text(max_size=80)


@st.composite
def secret_in_text(draw: st.DrawFn) -> tuple[str, str]:
    """A random token placed in one of the shapes redact() masks, between arbitrary texts."""
    token = draw(_TOKENS)
    shape = draw(
        st.sampled_from(
            [
                "https://graph.facebook.com/v25.0/oauth/access_token?{name}={token}",
                "&{name}={token}",
                '{{"{key}": "{token}"}}',
                "{{'{key}': '{token}'}}",
                "Authorization: Bearer {token}",
                "apikey: {token}",
                "postgresql://user:{token}@host/db",
            ]
        )
    )
    body = shape.format(
        name=draw(st.sampled_from(NAMES_IN_TEXT)), key=draw(st.sampled_from(NAMES_AS_KEYS)), token=token
    )
    before, after = draw(_TEXT), draw(_TEXT)
    # Separators keep the shape a shape: a URL or header glued to the previous word is another word.
    return token, f"{before} {body} {after}"


@given(case=secret_in_text())
def test_random_token_never_survives_redaction(case: tuple[str, str]) -> None:
    """Whatever text surrounds it, a token in a masked shape does not appear in redact()'s output."""
    token, text = case
    assume(token not in text.replace(token, "", 1))  # the surrounding text does not repeat it by chance
    assume(token not in MASK)
    assert token not in redact(text)


@given(text=st.text(max_size=200))
def test_redaction_is_idempotent(text: str) -> None:
    """Redacting twice gives what redacting once gave."""
    once = redact(text)
    assert redact(once) == once


# ---- records: redacted at creation ---------------------------------------------------------------


def test_record_message_is_redacted_at_creation(captured: ListHandler) -> None:
    """After install_redaction(), any handler (not only ours) receives the rendered message already masked."""
    logging.getLogger("tests.logs").info("calling %s", f"https://graph.facebook.com/me?access_token={OPAQUE}")
    (rec,) = captured.records
    assert rec.getMessage() == f"calling https://graph.facebook.com/me?access_token={MASK}"
    assert rec.args == ()
    assert OPAQUE not in repr(vars(rec))


def test_install_redaction_wraps_the_factory_once(clean_logging: None) -> None:
    """Installing twice leaves one redacting factory, not a chain of them."""
    logs.install_redaction()
    factory = logging.getLogRecordFactory()
    logs.install_redaction()
    assert logging.getLogRecordFactory() is factory


def test_unrenderable_message_is_still_redacted(captured: ListHandler) -> None:
    """A message whose arguments do not fit its format is kept as its raw text, masked, not raised."""
    message = f"access_token={OPAQUE} %d"
    logging.getLogger("tests.logs").info(message, "not-a-number")
    (rec,) = captured.records
    assert rec.getMessage() == f"access_token={MASK} %d"


def test_httpx_request_log_line_is_redacted(captured: ListHandler) -> None:
    """httpx's own 'HTTP Request: GET <url>' line reaches handlers with the token in the URL masked."""
    httpx_logger = logging.getLogger("httpx")
    httpx_logger.setLevel(logging.INFO)
    httpx_logger.addHandler(captured)
    try:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
        with httpx.Client(transport=transport) as client:
            client.get("https://graph.facebook.com/v25.0/me", params={"access_token": OPAQUE, "fields": "id"})
    finally:
        httpx_logger.removeHandler(captured)
    lines = [r.getMessage() for r in captured.records if r.name == "httpx"]
    assert lines and lines[0].startswith("HTTP Request: GET https://graph.facebook.com/v25.0/me?")
    assert all(OPAQUE not in line for line in lines)
    assert f"access_token={MASK}" in lines[0]


# ---- RedactingFilter: extra fields ---------------------------------------------------------------


def test_filter_masks_extra_fields_of_every_shape() -> None:
    """Strings, secret-named keys, nested dicts and lists, and objects such as an httpx URL lose their secrets."""
    params = {"client_secret": OPAQUE, "fields": "id"}
    rec = record(
        "graph.request",
        url=f"https://graph.facebook.com/oauth/access_token?client_secret={OPAQUE}",
        access_token=OPAQUE,
        params=params,
        urls=[f"/me?code={OPAQUE}", "/me"],
        request_url=httpx.URL("https://graph.facebook.com/me", params={"access_token": OPAQUE}),
    )
    assert RedactingFilter().filter(rec) is True
    assert rec.url == f"https://graph.facebook.com/oauth/access_token?client_secret={MASK}"  # type: ignore[attr-defined]
    assert rec.access_token == MASK  # type: ignore[attr-defined]
    assert rec.params == {"client_secret": MASK, "fields": "id"}  # type: ignore[attr-defined]
    assert rec.urls == [f"/me?code={MASK}", "/me"]  # type: ignore[attr-defined]
    assert rec.request_url == f"https://graph.facebook.com/me?access_token={MASK}"  # type: ignore[attr-defined]
    assert params["client_secret"] == OPAQUE  # the caller's own dict is left alone


def test_filter_keeps_ids_and_counts() -> None:
    """Ids, counts, statuses and error codes in extra are kept as they were."""
    extra = {
        "job_id": 7,
        "integration_id": "7f8e",
        "state": "running",
        "error_code": "token_expired",
        "delay_s": 1.5,
        "webhook_subscribed": False,
        "fbtrace_id": None,
    }
    rec = record("refresh.completed", **extra)
    RedactingFilter().filter(rec)
    assert {key: getattr(rec, key) for key in extra} == extra


def test_filter_redacts_message_and_arguments() -> None:
    """The filter also renders and masks the message, for records created before redaction was installed."""
    rec = record("GET %s", f"/me?access_token={OPAQUE}")
    RedactingFilter().filter(rec)
    assert rec.getMessage() == f"GET /me?access_token={MASK}"


# ---- JsonFormatter and configure() ---------------------------------------------------------------


def test_json_line_has_fixed_fields_event_and_extras() -> None:
    """One JSON object: ts, level, logger, the fixed event name as message, then the extra ids."""
    rec = record("refresh.completed", job_id=7, integration_id="7f8e", _private="hidden")
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    payload = json.loads(line)
    assert payload.pop("ts").endswith("+00:00")
    assert payload == {
        "level": "info",
        "logger": "tests.logs",
        "event": "refresh.completed",
        "job_id": 7,
        "integration_id": "7f8e",
    }


def test_json_line_shows_the_exception_type_and_masked_text_only() -> None:
    """An exception adds exc_type and its masked message; no traceback (frames could hold secrets)."""

    def fail() -> None:
        raise ValueError(f"Meta refused access_token={OPAQUE}")

    try:
        fail()
    except ValueError as exc:
        rec = record("graph.failed", exc=exc)
    payload = json.loads(JsonFormatter().format(rec))
    assert payload["exc_type"] == "ValueError"
    assert payload["exc"] == f"Meta refused access_token={MASK}"
    assert "Traceback" not in json.dumps(payload)


def test_json_formatter_masks_without_the_filter() -> None:
    """The formatter masks the event and extras itself, so a handler without the filter leaks nothing."""
    rec = record(f"bad {JWT}", params={"access_token": OPAQUE})
    line = JsonFormatter().format(rec)
    assert OPAQUE not in line and JWT not in line


def test_json_formatter_renders_other_objects_as_text() -> None:
    """Values json cannot encode are written as their (masked) text rather than failing."""
    payload = json.loads(
        JsonFormatter().format(record("x", when=object(), url=httpx.URL(f"/me?code={OPAQUE}")))
    )
    assert payload["when"].startswith("<object object")
    assert payload["url"] == f"/me?code={MASK}"


def test_configure_writes_masked_json_lines_to_stderr(
    clean_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configure() sends every logger's records to stderr as masked JSON lines at the given level."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("INFO")
    log = logging.getLogger("tests.configured")
    log.debug("not.shown")
    log.info("oauth.started", extra={"imo_id": "a1", "url": f"/cb?code={OPAQUE}&state={OPAQUE}"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert (payload["event"], payload["imo_id"], payload["url"]) == (
        "oauth.started",
        "a1",
        f"/cb?code={MASK}&state={MASK}",
    )


def test_configure_is_idempotent_and_quiets_noisy_loggers(
    clean_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configure() twice installs one handler (the second call only changes the level); httpx logs warnings only."""
    monkeypatch.setattr("sys.stderr", io.StringIO())
    before = len(logging.getLogger().handlers)
    logs.configure("INFO")
    logs.configure("DEBUG")
    root = logging.getLogger()
    assert len(root.handlers) == before + 1
    assert root.level == logging.DEBUG
    assert logging.getLogger("httpx").level == logging.WARNING
