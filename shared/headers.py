"""Header names and the request context that travels in them.

Every message in the mesh carries the request id, tenant, absolute deadline
(Unix ms) and a W3C ``traceparent``. ``RequestContext`` is built from the
inbound headers at each hop and written back into outbound headers.
"""

from __future__ import annotations

import os
import time
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Final

REQUEST_ID: Final = "Lockgate-Request-Id"
TENANT: Final = "Lockgate-Tenant"
DEADLINE: Final = "Lockgate-Deadline"
TRACEPARENT: Final = "traceparent"
EVENT: Final = "Lockgate-Event"  # chunk | done | error, on streamed replies
SEQ: Final = "Lockgate-Seq"  # chunk number, from 0
AUTHORIZATION: Final = "Authorization"
IDEMPOTENCY_KEY: Final = "Idempotency-Key"
MSG_ID: Final = "Nats-Msg-Id"  # JetStream de-duplication
SERVICE_ERROR: Final = "Nats-Service-Error"
SERVICE_ERROR_CODE: Final = "Nats-Service-Error-Code"

EVENT_CHUNK: Final = "chunk"
EVENT_DONE: Final = "done"
EVENT_ERROR: Final = "error"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A 24-hex-char random id (request ids, reservation ids)."""
    return os.urandom(12).hex()


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def child_traceparent(parent: str) -> str:
    """Same trace, new span id; a malformed parent starts a new trace."""
    parts = parent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return new_traceparent()
    return f"{parts[0]}-{parts[1]}-{os.urandom(8).hex()}-{parts[3]}"


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    tenant: str
    deadline_ms: int
    traceparent: str

    @classmethod
    def new(cls, *, timeout_ms: int, tenant: str = "", request_id: str | None = None) -> RequestContext:
        return cls(
            request_id=request_id or new_id(),
            tenant=tenant,
            deadline_ms=now_ms() + timeout_ms,
            traceparent=new_traceparent(),
        )

    @classmethod
    def from_headers(cls, headers: dict[str, str] | None, *, default_timeout_ms: int) -> RequestContext:
        """Read the context; missing or malformed values get safe defaults."""
        h = headers or {}
        deadline = 0
        raw = h.get(DEADLINE)
        if raw:
            try:
                deadline = int(raw)
            except ValueError:
                deadline = 0
        if deadline <= 0:
            deadline = now_ms() + default_timeout_ms
        rid = h.get(REQUEST_ID) or new_id()
        tp = h.get(TRACEPARENT)
        return cls(
            request_id=rid[:128],
            tenant=h.get(TENANT, "")[:128],
            deadline_ms=deadline,
            traceparent=child_traceparent(tp) if tp else new_traceparent(),
        )

    def with_tenant(self, tenant: str) -> RequestContext:
        return replace(self, tenant=tenant)

    def with_deadline(self, deadline_ms: int) -> RequestContext:
        return replace(self, deadline_ms=deadline_ms)

    def remaining_ms(self) -> int:
        return self.deadline_ms - now_ms()

    def remaining_s(self) -> float:
        return (self.deadline_ms - now_ms()) / 1000.0

    def expired(self) -> bool:
        return self.deadline_ms <= now_ms()

    def to_headers(self) -> dict[str, str]:
        return {
            REQUEST_ID: self.request_id,
            TENANT: self.tenant,
            DEADLINE: str(self.deadline_ms),
            TRACEPARENT: self.traceparent,
        }


current: ContextVar[RequestContext | None] = ContextVar("lockgate_request_context", default=None)
