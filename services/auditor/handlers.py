"""Turn a completion event into the durable audit record (no prompt or output text)."""

from __future__ import annotations

from typing import Literal

from shared.schemas.events import AuditRecord, CompletionEvent

_KIND: dict[str, Literal["admitted", "refused", "cached", "failed"]] = {
    "completed": "admitted",
    "cached": "cached",
    "refused": "refused",
    "failed": "failed",
}


def record(ev: CompletionEvent) -> AuditRecord:
    return AuditRecord(
        request_id=ev.request_id,
        tenant=ev.tenant,
        ts_ms=ev.ts_ms,
        kind=_KIND[ev.outcome],
        user=ev.user,
        key_id=ev.key_id,
        model=ev.model,
        route=ev.route,
        deployment=ev.deployment,
        stream=ev.stream,
        error_type=ev.error_type,
        error_stage=ev.error_stage,
        error_message=ev.error_message,
        usage=ev.usage,
        cost_usd=ev.cost_usd,
        latency_ms=ev.latency_ms,
        stage_latency_ms=ev.stage_latency_ms,
        attempts=ev.attempts,
        validation=ev.validation,
        metadata=ev.metadata,
    )
