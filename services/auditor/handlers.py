"""Turn a completion event into the durable audit record (no prompt or output text)."""

from __future__ import annotations

from typing import Literal

from shared.schemas.events import FACT_FIELDS, AuditRecord, CompletionEvent

_KIND: dict[str, Literal["admitted", "refused", "cached", "failed"]] = {
    "completed": "admitted",
    "cached": "cached",
    "refused": "refused",
    "failed": "failed",
}


def record(ev: CompletionEvent) -> AuditRecord:
    """The event's request facts (never its cached completion text) plus the audit kind."""
    return AuditRecord(kind=_KIND[ev.outcome], **{f: getattr(ev, f) for f in FACT_FIELDS})
