"""Events on the EVENTS stream and records on the AUDIT stream."""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.schemas.budget import BudgetHold
from shared.schemas.chat import Attempt, Usage
from shared.schemas.mesh import CachedCompletion

Outcome = Literal["completed", "cached", "refused", "failed"]


class ApprovalFacts(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A human decision the request waited for (``lockgate approvals``)."""

    id: str
    kind: str  # "request" (waited before it ran) or "answer" (its answer was held)
    outcome: str  # "approved", "denied" or "expired"
    by: str = ""  # who decided (the CLI's --by), "" when it expired
    wait_ms: int = 0


class RequestFacts(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What is known of one request once it is answered: shared by event and audit record."""

    request_id: str
    tenant: str
    ts_ms: int
    user: str = ""
    key_id: str = ""
    model: str = ""
    route: str = ""
    deployment: str = ""
    stream: bool = False
    error_type: str = ""
    error_stage: str = ""
    error_message: str = ""
    usage: Usage = Usage()
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    stage_latency_ms: dict[str, float] = {}
    attempts: list[Attempt] = []
    validation: str = ""
    metadata: dict[str, str] = {}
    degraded: str = ""  # "", "cheaper_model", "template": the answer was a degraded one
    security: list[str] = []  # safety findings: signal and kind names only, never the text that matched
    approvals: list[ApprovalFacts] = []  # human decisions waited for (a request and then its answer: two)


FACT_FIELDS: tuple[str, ...] = RequestFacts.__struct_fields__


class CompletionEvent(RequestFacts, kw_only=True, frozen=True, omit_defaults=True):
    """One per request, published by the guard once the client has its answer.

    The budgeter settles from it, the cache fills from it, the auditor logs it.
    """

    outcome: Outcome
    reservation_id: str = ""
    hold: BudgetHold | None = None  # what the budgeter settles: release the hold, book cost_usd
    cache_key: str = ""
    completion: CachedCompletion | None = None  # set when the answer may be cached
    fingerprint: list[int] = []  # shared.similarity.fingerprint, with completion (never the prompt text)


class AuditRecord(RequestFacts, kw_only=True, frozen=True, omit_defaults=True):
    """The durable record of one decision. Never holds prompt or completion text."""

    kind: Literal["admitted", "refused", "cached", "failed"]
