"""Lockgate's error envelope, as each API's own error JSON, status and headers.

Statuses follow ``LockgateError.status`` except ``budget_exceeded`` (402 in the
mesh), which both APIs express as 429 (OpenAI: ``insufficient_quota``). The
envelope's own fields (``type``, ``retryable``, ``retry_after_ms``, ``stage``,
``request_id``) ride in a ``lockgate`` object next to the official ``error``.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from shared import bus
from shared.errors import BudgetExceeded, InvalidRequest, LockgateError
from shared.schemas.ratelimit import RateLimitInfo

_OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class TooLarge(InvalidRequest):
    """A body over the door's limit (413; the mesh has no such status of its own)."""

    status = 413


def status_of(err: LockgateError) -> int:
    return 429 if isinstance(err, BudgetExceeded) else err.status


def duration(ms: int) -> str:
    """OpenAI's reset form: ``20ms``, ``1.5s``, ``1m0s``."""
    if ms < 1_000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{seconds}" if minutes else seconds


def rate_limit_headers(info: RateLimitInfo | None) -> dict[str, str]:
    """``x-ratelimit-*`` (OpenAI's names) of the most constraining scope; none for an unlimited metric."""
    h: dict[str, str] = {}
    if info is None:
        return h
    if info.limit_requests:
        h["x-ratelimit-limit-requests"] = str(info.limit_requests)
        h["x-ratelimit-remaining-requests"] = str(info.remaining_requests)
        h["x-ratelimit-reset-requests"] = duration(info.reset_requests_ms)
    if info.limit_tokens:
        h["x-ratelimit-limit-tokens"] = str(info.limit_tokens)
        h["x-ratelimit-remaining-tokens"] = str(info.remaining_tokens)
        h["x-ratelimit-reset-tokens"] = duration(info.reset_tokens_ms)
    return h


def error_headers(err: LockgateError, request_id: str) -> dict[str, str]:
    h = {
        "x-request-id": request_id,
        "x-lockgate-error-type": err.type,
    }
    if err.stage:
        h["x-lockgate-stage"] = err.stage
    if status_of(err) == 429 or err.retry_after_ms is not None:
        ms = err.retry_after_ms if err.retry_after_ms is not None else 1_000
        seconds = max(1, math.ceil(ms / 1000))
        h["Retry-After"] = str(seconds)
        h["retry-after-ms"] = str(ms)
        if err.rate_limit is None:  # a refusal without figures (a budget): say "none left until then"
            h["x-ratelimit-reset-requests"] = f"{seconds}s"
            h["x-ratelimit-remaining-requests"] = "0"
    h.update(rate_limit_headers(err.rate_limit))
    return h


def _ext(err: LockgateError, request_id: str) -> dict[str, Any]:
    return {
        "type": err.type,
        "retryable": err.retryable,
        "retry_after_ms": err.retry_after_ms,
        "stage": err.stage,
        "request_id": request_id,
    }


def openai_body(err: LockgateError, request_id: str) -> dict[str, Any]:
    status = status_of(err)
    code = "insufficient_quota" if isinstance(err, BudgetExceeded) else err.type
    return {
        "error": {
            "message": err.message,
            "type": _OPENAI_TYPE.get(status, "server_error"),
            "param": None,
            "code": code,
        },
        "lockgate": _ext(err, request_id),
    }


def anthropic_body(err: LockgateError, request_id: str) -> dict[str, Any]:
    status = status_of(err)
    return {
        "type": "error",
        "error": {"type": _ANTHROPIC_TYPE.get(status, "api_error"), "message": err.message},
        "request_id": request_id,
        "lockgate": _ext(err, request_id),
    }


def openai_response(err: LockgateError, request_id: str) -> web.Response:
    return web.Response(
        status=status_of(err),
        body=bus.encode(openai_body(err, request_id)),
        content_type="application/json",
        headers=error_headers(err, request_id),
    )


def anthropic_response(err: LockgateError, request_id: str) -> web.Response:
    return web.Response(
        status=status_of(err),
        body=bus.encode(anthropic_body(err, request_id)),
        content_type="application/json",
        headers=error_headers(err, request_id),
    )
