"""The error hierarchy and its mapping to the one envelope.

A stage raises a ``LockgateError`` subclass; ``shared.bus`` turns it into the
envelope plus micro's ``Nats-Service-Error``/``-Code`` headers, and the caller's
``bus.call`` turns it back into the same exception class.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from shared.schemas.errors import ErrorBody, ErrorEnvelope
from shared.schemas.ratelimit import RateLimitInfo


class LockgateError(Exception):
    """Base class: every error a client can see."""

    type: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        stage: str = "",
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after_ms = retry_after_ms
        self.rate_limit: RateLimitInfo | None = None  # set by the guard once the request was counted

    def body(self, request_id: str = "") -> ErrorBody:
        return ErrorBody(
            type=self.type,
            message=self.message,
            retryable=self.retryable,
            retry_after_ms=self.retry_after_ms,
            request_id=request_id,
            stage=self.stage,
            rate_limit=self.rate_limit,
        )

    def envelope(self, request_id: str = "") -> ErrorEnvelope:
        return ErrorEnvelope(error=self.body(request_id))

    def header_line(self) -> str:
        """One short ASCII line for ``Nats-Service-Error``."""
        line = f"{self.type}: {self.message}".encode("ascii", "replace").decode("ascii")
        line = line.replace("\r", " ").replace("\n", " ")
        return line if len(line) <= 200 else line[:197] + "..."

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, stage={self.stage!r})"


class InvalidRequest(LockgateError):
    type = "invalid_request"
    status = 400


class Unauthorized(LockgateError):
    type = "unauthorized"
    status = 401


class BudgetExceeded(LockgateError):
    type = "budget_exceeded"
    status = 402


class Forbidden(LockgateError):
    type = "forbidden"
    status = 403


class NotFound(InvalidRequest):
    """A model or route that does not exist (an invalid request, 404-class).

    A subclass of ``InvalidRequest`` so that ``except InvalidRequest`` catches
    every error whose ``type`` is ``invalid_request``.
    """

    type = "invalid_request"
    status = 404


class ContextTooLong(LockgateError):
    type = "context_too_long"
    status = 400


class BlockedInput(LockgateError):
    type = "blocked_input"
    status = 400


class BlockedOutput(LockgateError):
    type = "blocked_output"
    status = 422


class ApprovalDenied(LockgateError):
    """A human refused the request (or its held answer) in ``lockgate approvals deny``."""

    type = "approval_denied"
    status = 403


class ApprovalExpired(LockgateError):
    """Nobody decided within ``approvals.timeout_s`` (or before the request's deadline).

    403, not 408/504: the OpenAI and Anthropic SDKs retry 408, 409 and 5xx on their own, and
    every retry would park a new approval in front of the humans.
    """

    type = "approval_expired"
    status = 403


class InvalidOutput(LockgateError):
    type = "invalid_output"
    status = 422


class RateLimited(LockgateError):
    type = "rate_limited"
    status = 429
    default_retryable = True


class UpstreamError(LockgateError):
    type = "upstream_error"
    status = 502
    default_retryable = True


class UpstreamUnavailable(LockgateError):
    type = "upstream_unavailable"
    status = 503
    default_retryable = True


class StageUnavailable(LockgateError):
    type = "stage_unavailable"
    status = 503
    default_retryable = True


class NoResponders(StageUnavailable):
    """Nobody listens on the subject (NATS "no responders"): the request was never delivered."""


class DeadlineExceeded(LockgateError):
    type = "deadline_exceeded"
    status = 504
    default_retryable = True


class Cancelled(DeadlineExceeded):
    """The client stopped waiting (an HTTP client disconnected mid-stream): 499, as nginx says it.

    Of the ``deadline_exceeded`` type (the documented vocabulary has no other word for a
    client that gave up), told apart by its status, like ``NotFound``; not retryable.
    """

    status = 499
    default_retryable = False


class Internal(LockgateError):
    type = "internal"
    status = 500


_BY_TYPE: dict[str, type[LockgateError]] = {
    cls.type: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        BudgetExceeded,
        Forbidden,
        ApprovalDenied,
        ApprovalExpired,
        ContextTooLong,
        BlockedInput,
        BlockedOutput,
        InvalidOutput,
        RateLimited,
        UpstreamError,
        UpstreamUnavailable,
        StageUnavailable,
        DeadlineExceeded,
        Internal,
    )
}
ERROR_TYPES: tuple[str, ...] = tuple(_BY_TYPE)


def from_body(body: ErrorBody, status: int | None = None) -> LockgateError:
    """Rebuild the typed exception a stage raised (unknown types become Internal)."""
    cls = _BY_TYPE.get(body.type, Internal)
    if cls is InvalidRequest and status == 404:
        cls = NotFound
    elif cls is DeadlineExceeded and status == 499:
        cls = Cancelled
    err = cls(
        body.message,
        stage=body.stage,
        retryable=body.retryable,
        retry_after_ms=body.retry_after_ms,
    )
    err.rate_limit = body.rate_limit
    return err


_envelope_decoder = msgspec.json.Decoder(ErrorEnvelope)


def from_reply(data: bytes, code: str | None, line: str | None, stage: str) -> LockgateError:
    """Decode an error reply; a reply without our envelope still yields an error."""
    status = int(code) if code and code.isdigit() else None
    try:
        return from_body(_envelope_decoder.decode(data).error, status)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Internal(line or f"stage replied with error code {code}", stage=stage)


# What decoding a client's JSON can raise: msgspec's errors, and RecursionError for a document
# nested deeper than the decoder's stack (thousands of levels; shallower ones are checked against
# limits.max_json_depth after decoding).
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)


def validation_message(exc: msgspec.ValidationError | msgspec.DecodeError | RecursionError) -> str:
    """msgspec's message with its JSON path, e.g. ``Expected `str`... - at `$.messages[0]```."""
    if isinstance(exc, RecursionError):
        return "body is nested too deeply to decode"
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return f"body is not valid JSON: {text}"
    return text
