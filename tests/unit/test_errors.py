"""The error hierarchy, the one envelope and its micro headers."""

from __future__ import annotations

import msgspec
import pytest

from shared import bus, errors, headers
from shared.schemas.errors import ErrorEnvelope

ALL_CLASSES = [
    errors.InvalidRequest,
    errors.Unauthorized,
    errors.BudgetExceeded,
    errors.Forbidden,
    errors.ApprovalDenied,
    errors.ApprovalExpired,
    errors.NotFound,
    errors.ContextTooLong,
    errors.BlockedInput,
    errors.BlockedOutput,
    errors.InvalidOutput,
    errors.RateLimited,
    errors.UpstreamError,
    errors.UpstreamUnavailable,
    errors.StageUnavailable,
    errors.DeadlineExceeded,
    errors.Cancelled,
    errors.Internal,
]


def test_error_types_are_the_documented_vocabulary() -> None:
    assert set(errors.ERROR_TYPES) == {
        "invalid_request", "unauthorized", "forbidden", "rate_limited", "budget_exceeded", "blocked_input",
        "blocked_output", "context_too_long", "upstream_error", "upstream_unavailable", "deadline_exceeded",
        "invalid_output", "stage_unavailable", "internal", "approval_denied", "approval_expired",
    }  # fmt: skip


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_envelope_round_trip_through_reply_and_headers(cls: type[errors.LockgateError]) -> None:
    exc = cls("something went wrong", stage="router", retry_after_ms=1500)
    h = bus.error_headers(exc)
    data = bus.encode(exc.envelope("req-1"))
    back = errors.from_reply(data, h[headers.SERVICE_ERROR_CODE], h[headers.SERVICE_ERROR], "caller")
    assert type(back) is cls
    assert back.type == exc.type
    assert back.message == "something went wrong"
    assert back.stage == "router"
    assert back.retryable == exc.retryable
    assert back.retry_after_ms == 1500
    assert h[headers.SERVICE_ERROR_CODE] == str(cls.status)
    assert h[headers.EVENT] == headers.EVENT_ERROR


def test_envelope_always_carries_every_field() -> None:
    data = bus.encode(errors.Forbidden("no").envelope())
    assert msgspec.json.decode(data) == {
        "error": {
            "type": "forbidden",
            "message": "no",
            "retryable": False,
            "retry_after_ms": None,
            "request_id": "",
            "stage": "",
            "rate_limit": None,
        }
    }


def test_retryable_defaults_and_override() -> None:
    assert errors.RateLimited("x").retryable is True
    assert errors.UpstreamUnavailable("x").retryable is True
    assert errors.InvalidRequest("x").retryable is False
    assert errors.UpstreamUnavailable("x", retryable=False).retryable is False
    assert errors.BudgetExceeded("x", retryable=True).retryable is True


def test_not_found_is_an_invalid_request() -> None:
    exc = errors.NotFound("unknown model 'x'")
    assert isinstance(exc, errors.InvalidRequest)
    assert exc.type == "invalid_request"
    assert exc.status == 404
    # Without the 404 the same body is a plain InvalidRequest.
    back = errors.from_reply(bus.encode(exc.envelope()), "400", None, "guard")
    assert type(back) is errors.InvalidRequest


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"{}", b'{"error": "flat string"}', b'{"error": {"message": "no type"}}', b"[1,2]", b"\xff\xfe"],
)
def test_from_reply_on_garbage_is_internal_with_the_header_line(data: bytes) -> None:
    exc = errors.from_reply(data, "503", "stage_unavailable: boom", "cache")
    assert type(exc) is errors.Internal
    assert exc.message == "stage_unavailable: boom"
    assert exc.stage == "cache"


def test_from_reply_without_any_header_still_says_something() -> None:
    exc = errors.from_reply(b"???", "500", None, "executor")
    assert "500" in exc.message
    assert exc.stage == "executor"
    assert errors.from_reply(b"???", None, None, "x").message


def test_unknown_type_becomes_internal_keeping_the_message() -> None:
    data = b'{"error": {"type": "brand_new_type", "message": "from a newer stage", "stage": "router"}}'
    exc = errors.from_reply(data, "418", None, "router")
    assert type(exc) is errors.Internal
    assert exc.message == "from a newer stage"


def test_header_line_is_one_short_ascii_line() -> None:
    exc = errors.InvalidRequest("bad\r\nthing \u2013 with \u00fcn\u00efcode " + "x" * 500)
    line = exc.header_line()
    assert line.startswith("invalid_request: bad  thing ? with ?n?code")
    assert line.isascii()
    assert "\n" not in line
    assert "\r" not in line
    assert len(line) == 200
    assert line.endswith("...")


def test_validation_message_keeps_the_json_path() -> None:
    class T(msgspec.Struct):
        items: list[int]

    with pytest.raises(msgspec.ValidationError) as v:
        msgspec.json.decode(b'{"items": [1, "two"]}', type=T)
    assert "$.items[1]" in errors.validation_message(v.value)
    with pytest.raises(msgspec.DecodeError) as d:
        msgspec.json.decode(b"{nope", type=T)
    assert errors.validation_message(d.value).startswith("body is not valid JSON")


def test_as_lockgate_error_maps_everything_without_leaking_repr() -> None:
    own = errors.Forbidden("no")
    assert bus.as_lockgate_error(own, "guard") is own
    assert own.stage == "guard"  # filled in when the raiser left it empty
    kept = errors.Forbidden("no", stage="router")
    assert bus.as_lockgate_error(kept, "guard").stage == "router"
    try:
        msgspec.json.decode(b"[]", type=ErrorEnvelope)
    except msgspec.ValidationError as exc:
        mapped = bus.as_lockgate_error(exc, "budgeter")
        assert type(mapped) is errors.InvalidRequest
        assert mapped.stage == "budgeter"
    assert type(bus.as_lockgate_error(TimeoutError(), "cache")) is errors.DeadlineExceeded
    secret = bus.as_lockgate_error(KeyError("sk-secret-value"), "executor")
    assert type(secret) is errors.Internal
    assert "sk-secret" not in secret.message
    assert "KeyError" not in secret.message
