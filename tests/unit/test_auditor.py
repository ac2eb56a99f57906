"""The audit record: one per completion event, kind by outcome, never any text."""

from __future__ import annotations

import msgspec
import pytest

from services.auditor.handlers import record
from shared.schemas.budget import BudgetHold
from shared.schemas.chat import Attempt, Usage
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import CachedCompletion


def event(outcome: str, **kw: object) -> CompletionEvent:
    return CompletionEvent(request_id="r1", tenant="acme", ts_ms=123, outcome=outcome, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [("completed", "admitted"), ("cached", "cached"), ("refused", "refused"), ("failed", "failed")],
)
def test_kind_by_outcome(outcome: str, kind: str) -> None:
    assert record(event(outcome)).kind == kind


def test_record_keeps_the_decision_and_drops_the_text() -> None:
    ev = event(
        "completed",
        user="u1",
        key_id="k1",
        model="gpt-4o-mini",
        route="default",
        deployment="sim-gpt",
        stream=True,
        usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
        cost_usd=0.25,
        latency_ms=12.5,
        stage_latency_ms={"executor": 10.0},
        attempts=[Attempt(deployment="sim-gpt", outcome="ok", latency_ms=9.0)],
        validation="valid",
        cache_key="abc",
        completion=CachedCompletion(content="THE SECRET ANSWER", model="gpt-4o-mini"),
        metadata={"feature": "search"},
        reservation_id="res",
        hold=BudgetHold(id="res", keys=["t.acme"], day="d20260101", expires_s=1, amount_usd=1.0),
    )
    rec = record(ev)
    assert (rec.request_id, rec.tenant, rec.ts_ms, rec.user, rec.key_id) == ("r1", "acme", 123, "u1", "k1")
    assert (rec.model, rec.route, rec.deployment, rec.stream) == ("gpt-4o-mini", "default", "sim-gpt", True)
    assert rec.usage.total_tokens == 7
    assert rec.cost_usd == 0.25
    assert rec.attempts[0].deployment == "sim-gpt"
    assert rec.validation == "valid"
    assert rec.metadata == {"feature": "search"}
    wire = msgspec.json.encode(rec)
    assert b"THE SECRET ANSWER" not in wire
    assert b"abc" not in wire  # the cache key is derived from the prompt
    assert b"reserv" not in wire


def test_refusal_keeps_the_error() -> None:
    rec = record(event("refused", error_type="invalid_request", error_stage="guard", error_message="temperature: 9"))
    assert (rec.error_type, rec.error_stage, rec.error_message) == ("invalid_request", "guard", "temperature: 9")
