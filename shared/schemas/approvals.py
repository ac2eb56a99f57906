"""A parked approval: what a human is asked to release or refuse, and the one decision taken.

Kept in the KV bucket ``LOCKGATE_APPROVALS`` under its id. It never holds the prompt or
the answer: ``preview`` is a short, PII-redacted excerpt for the person deciding.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ApprovalStatus = Literal["pending", "approved", "denied", "expired"]
# "request": the request waits before it runs; "answer": the model's answer waits before delivery.
ApprovalKind = Literal["request", "answer"]


class ApprovalRecord(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    id: str
    tenant: str
    request_id: str
    kind: ApprovalKind
    # Why it waits: "requires_approval" (the request asked), "irreversible_tools" (a streamed
    # request offers one), "irreversible_call" (the answer calls one).
    reason: str
    created_ms: int
    expires_ms: int
    model: str = ""
    route: str = ""
    tools: list[str] = []  # kind "request": the tools offered; kind "answer": the tools called
    preview: str = ""  # at most ~120 characters, PII and secrets redacted
    status: ApprovalStatus = "pending"
    decided_by: str = ""
    decided_ms: int = 0
    note: str = ""  # the reason a person gave when denying
