"""classify(): one typed error per Meta answer, from real envelopes and from garbage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instagram_dm.errors import MetaError
from instagram_dm.graph import (
    GraphError,
    MetaInvalidRequestError,
    MetaOtherError,
    MetaPermissionError,
    MetaRateLimitedError,
    MetaTokenInvalidError,
    MetaTransientError,
    RetryPolicy,
    classify,
)


def envelope(code: int, subcode: int | None = None, message: str = "boom", **extra: object) -> bytes:
    error: dict[str, object] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbC123",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    error.update(extra)
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(
    ("code", "status", "cls", "error_code"),
    [
        (190, 400, MetaTokenInvalidError, "meta_token_invalid"),
        (102, 400, MetaTokenInvalidError, "meta_token_invalid"),
        (4, 403, MetaRateLimitedError, "meta_rate_limited"),
        (17, 400, MetaRateLimitedError, "meta_rate_limited"),
        (32, 400, MetaRateLimitedError, "meta_rate_limited"),
        (613, 400, MetaRateLimitedError, "meta_rate_limited"),
        (80006, 400, MetaRateLimitedError, "meta_rate_limited"),
        (341, 400, MetaRateLimitedError, "meta_rate_limited"),
        (10, 403, MetaPermissionError, "meta_permission"),
        (200, 403, MetaPermissionError, "meta_permission"),
        (210, 400, MetaPermissionError, "meta_permission"),
        (299, 400, MetaPermissionError, "meta_permission"),
        (1, 500, MetaTransientError, "meta_unavailable"),
        (2, 503, MetaTransientError, "meta_unavailable"),
        (100, 400, MetaInvalidRequestError, "meta_invalid_request"),
        (368, 400, MetaOtherError, "meta_error"),
        (2500, 400, MetaOtherError, "meta_error"),
        (300, 400, MetaOtherError, "meta_error"),
    ],
)
def test_each_code_maps_to_its_class(code: int, status: int, cls: type[MetaError], error_code: str) -> None:
    """Meta's error code decides the class and our stable snake_case code."""
    error = classify(status, envelope(code), {})
    assert type(error) is cls
    assert isinstance(error, MetaError)
    assert error.code == error_code
    assert error.meta_code == code
    assert error.meta_http_status == status
    assert error.fbtrace_id == "AbC123"
    assert error.meta_type == "OAuthException"


def test_subcode_is_kept_on_token_errors() -> None:
    """190/463 keeps the subcode so callers can tell expiry from revocation."""
    error = classify(400, envelope(190, 463, "Error validating access token: Session has expired"), {})
    assert isinstance(error, MetaTokenInvalidError)
    assert error.meta_subcode == 463
    assert "190/463" in str(error)
    assert "AbC123" in str(error)


def test_code_beats_http_status() -> None:
    """A 500 carrying code 190 is a token error, not a transient one."""
    assert isinstance(classify(500, envelope(190), {}), MetaTokenInvalidError)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_html_5xx_is_transient(status: int) -> None:
    """An HTML gateway page with a 5xx status is still a typed, transient error."""
    error = classify(status, b"<html><body>Bad Gateway</body></html>", {"content-type": "text/html"})
    assert isinstance(error, MetaTransientError)
    assert error.meta_code is None
    assert error.meta_http_status == status
    assert "non-JSON" in str(error)


def test_html_4xx_is_other() -> None:
    """A non-JSON 4xx body maps to MetaOtherError."""
    assert isinstance(classify(404, b"<html>Not Found</html>", {}), MetaOtherError)


def test_empty_429_is_rate_limited_with_retry_after() -> None:
    """An empty 429 is rate limiting; Retry-After gives the wait."""
    error = classify(429, b"", {"Retry-After": "7"})
    assert isinstance(error, MetaRateLimitedError)
    assert error.retry_after == 7.0


def test_json_without_envelope_is_other() -> None:
    """JSON that is not Meta's envelope still classifies, by status."""
    assert isinstance(classify(400, b'{"oops": 1}', {}), MetaOtherError)
    assert isinstance(classify(502, b'["x"]', {}), MetaTransientError)


def test_string_codes_are_accepted() -> None:
    """Codes sent as strings are read as integers."""
    body = json.dumps({"error": {"code": "190", "error_subcode": "460", "message": "x"}}).encode()
    error = classify(400, body, {})
    assert isinstance(error, MetaTokenInvalidError)
    assert error.meta_subcode == 460


def test_is_transient_flag_promotes_unknown_codes() -> None:
    """An unknown code with Instagram's is_transient=true is transient."""
    error = classify(400, envelope(9999, is_transient=True), {})
    assert isinstance(error, MetaTransientError)
    assert error.is_transient is True


def test_retry_after_from_business_use_case_usage() -> None:
    """estimated_time_to_regain_access (minutes) becomes seconds; the largest entry wins."""
    usage = {
        "1234": [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 3}],
        "5678": [{"type": "instagram", "call_count": 90, "estimated_time_to_regain_access": 5}],
    }
    error = classify(400, envelope(80006), {"X-Business-Use-Case-Usage": json.dumps(usage)})
    assert isinstance(error, MetaRateLimitedError)
    assert error.retry_after == 300.0


def test_retry_after_from_app_usage_when_present() -> None:
    """X-App-Usage carrying estimated_time_to_regain_access also sets the wait."""
    headers = {"x-app-usage": json.dumps({"call_count": 100, "estimated_time_to_regain_access": 2})}
    assert classify(400, envelope(4), headers).retry_after == 120.0  # type: ignore[attr-defined]


def test_retry_after_unknown_without_headers_or_with_garbage() -> None:
    """No usable usage header leaves retry_after None."""
    assert classify(400, envelope(4), {}).retry_after is None  # type: ignore[attr-defined]
    assert classify(400, envelope(4), {"x-business-use-case-usage": "{not json"}).retry_after is None  # type: ignore[attr-defined]
    assert classify(400, envelope(4), {"x-app-usage": '{"call_count": 100}'}).retry_after is None  # type: ignore[attr-defined]


def test_tokens_in_meta_messages_are_masked() -> None:
    """Meta's message text is kept, but tokens in it never reach the exception text or repr."""
    token = "EAASabcdefghijklmnopqrstuvwxyz0123456789"
    message = f"Malformed access token {token} (access_token={token}, code=AQxyz)"
    error = classify(400, envelope(190, message=message), {}, secrets=["AQxyz"])
    for text in (str(error), repr(error), error.message):
        assert token not in text
        assert "AQxyz" not in text
    assert "Malformed access token" in str(error)


@given(st.integers(min_value=100, max_value=599), st.binary(max_size=200))
def test_classify_never_raises(status: int, body: bytes) -> None:
    """Any status and any bytes give a MetaError, never an exception from classify itself."""
    assert isinstance(classify(status, body, {}), MetaError)


@given(st.integers(min_value=1, max_value=20))
def test_backoff_is_bounded(retry_number: int) -> None:
    """Every delay is within [capped/2, capped] and never above max_delay."""
    policy = RetryPolicy(attempts=5, base_delay=0.2, max_delay=2.0, jitter=True)
    capped = min(2.0, 0.2 * 2 ** (retry_number - 1))
    assert capped / 2 <= policy.delay(retry_number) <= capped <= 2.0


def test_backoff_without_jitter_doubles() -> None:
    """Without jitter the delays are base, 2*base, 4*base, capped."""
    policy = RetryPolicy(base_delay=0.1, max_delay=0.3, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    assert RetryPolicy.disabled().attempts == 1
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


@pytest.mark.parametrize(
    ("cls", "edge"),
    [
        (MetaTransientError, 503),
        (MetaRateLimitedError, 503),
        (MetaTokenInvalidError, 502),
        (MetaPermissionError, 502),
        (MetaInvalidRequestError, 502),
        (MetaOtherError, 502),
    ],
)
def test_http_status_is_what_the_edge_answers_and_meta_status_is_separate(
    cls: type[GraphError], edge: int
) -> None:
    """http_status is our edge's answer (503 only when Meta is down or limiting), meta_http_status Meta's."""
    error = cls("x", meta_http_status=400)
    assert error.http_status == edge
    assert error.meta_http_status == 400


def test_classified_error_keeps_metas_status_apart_from_ours() -> None:
    """A classified 403 from Meta says meta_http_status 403 and http_status 502."""
    error = classify(403, envelope(200), {})
    assert (error.meta_http_status, error.http_status) == (403, 502)
