"""The one error envelope, used on every reply of every stage."""

from __future__ import annotations

import msgspec

from shared.schemas.ratelimit import RateLimitInfo


class ErrorBody(msgspec.Struct, kw_only=True, frozen=True):
    """Every field is always on the wire (``retryable: false``, ``retry_after_ms: null``):
    clients in any language branch on them without guessing what a missing key means."""

    type: str
    message: str
    retryable: bool = False
    retry_after_ms: int | None = None
    request_id: str = ""
    stage: str = ""
    rate_limit: RateLimitInfo | None = None  # the request's rate-limit figures, once the guard counted it


class ErrorEnvelope(msgspec.Struct, kw_only=True, frozen=True):
    error: ErrorBody
