"""The HTTP door's pure parts: error mapping per API, and the Anthropic request translation."""

from __future__ import annotations

import json

import pytest

from services.http import errors as http_errors
from services.http.anthropic_api import to_chat
from shared import errors
from shared.errors import InvalidRequest


@pytest.mark.parametrize(
    ("err", "status", "openai_type", "anthropic_type"),
    [
        (errors.InvalidRequest("x"), 400, "invalid_request_error", "invalid_request_error"),
        (errors.Unauthorized("x"), 401, "authentication_error", "authentication_error"),
        (errors.Forbidden("x"), 403, "permission_error", "permission_error"),
        # 403, not 408/504: the SDKs retry those themselves, and each retry would ask the humans again.
        (errors.ApprovalDenied("x"), 403, "permission_error", "permission_error"),
        (errors.ApprovalExpired("x"), 403, "permission_error", "permission_error"),
        (errors.NotFound("x"), 404, "not_found_error", "not_found_error"),
        (http_errors.TooLarge("x"), 413, "invalid_request_error", "request_too_large"),
        (errors.InvalidOutput("x"), 422, "invalid_request_error", "invalid_request_error"),
        (errors.RateLimited("x", retry_after_ms=2500), 429, "rate_limit_error", "rate_limit_error"),
        (errors.BudgetExceeded("x"), 429, "rate_limit_error", "rate_limit_error"),
        (errors.UpstreamError("x"), 502, "server_error", "api_error"),
        (errors.StageUnavailable("x"), 503, "server_error", "overloaded_error"),
        (errors.DeadlineExceeded("x"), 504, "server_error", "api_error"),
    ],
)
def test_each_error_has_its_status_and_each_apis_type(
    err: errors.LockgateError, status: int, openai_type: str, anthropic_type: str
) -> None:
    o = http_errors.openai_response(err, "r1")
    a = http_errors.anthropic_response(err, "r1")
    assert o.status == a.status == status
    assert o.body is not None
    assert a.body is not None
    ob = json.loads(bytes(o.body))
    ab = json.loads(bytes(a.body))
    assert set(ob["error"]) == {"message", "type", "param", "code"}
    assert ob["error"]["type"] == openai_type
    assert ab["type"] == "error"
    assert ab["error"]["type"] == anthropic_type
    assert ob["lockgate"]["type"] == ab["lockgate"]["type"] == err.type
    assert o.headers["x-request-id"] == "r1"


def test_rate_limits_carry_retry_after_in_seconds_rounded_up() -> None:
    h = http_errors.error_headers(errors.RateLimited("slow down", retry_after_ms=2500), "r")
    assert h["Retry-After"] == "3"
    assert h["retry-after-ms"] == "2500"
    assert h["x-ratelimit-reset-requests"] == "3s"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert "Retry-After" not in http_errors.error_headers(errors.Forbidden("no"), "r")


def test_anthropic_request_becomes_a_chat_request() -> None:
    body = {
        "model": "claude-3-5-haiku", "max_tokens": 32, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                     {"role": "assistant", "content": "Hello"}],
        "stop_sequences": ["END"], "metadata": {"user_id": "u7"}, "stream": True, "top_k": 5,
    }  # fmt: skip
    req = to_chat(json.dumps(body).encode())
    assert [(m.role, m.text()) for m in req.messages] == [
        ("system", "Be brief."),
        ("user", "Hi there"),
        ("assistant", "Hello"),
    ]
    assert (req.model, req.max_tokens, req.stop, req.user, req.stream) == ("claude-3-5-haiku", 32, ["END"], "u7", True)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"model": "m", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "image"}]}]}, "content[0]"),
    ],
)
def test_bad_anthropic_requests_say_where(body: dict[str, object], where: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_chat(json.dumps(body).encode())
    assert where in info.value.message
