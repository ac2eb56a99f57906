"""The one error envelope, used on every reply of every stage."""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    type: str
    message: str
    retryable: bool = False
    retry_after_ms: int | None = None
    request_id: str = ""
    stage: str = ""


class ErrorEnvelope(msgspec.Struct, kw_only=True, frozen=True):
    error: ErrorBody
