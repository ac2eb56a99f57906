"""The approval rules without NATS: who waits, what the person sees, and the one decision."""

from __future__ import annotations

from typing import Any

import pytest

from services.guard.approvals import Gate
from shared import approvals
from shared.approvals import ApprovalConflict, ApprovalStore
from shared.config import ApprovalsConfig
from shared.headers import now_ms
from shared.schemas.approvals import ApprovalRecord
from shared.schemas.chat import ChatRequest, FunctionCall, LockgateOptions, Message, ToolCall

PAY: dict[str, Any] = {"type": "function", "function": {"name": "send_payment", "parameters": {}}}
LOOKUP: dict[str, Any] = {"type": "function", "function": {"name": "lookup"}}


def gate() -> Gate:
    # The store is not used by the rules under test.
    return Gate(ApprovalsConfig(irreversible_tools=["send_payment"], timeout_s=60), ApprovalStore(None))  # type: ignore[arg-type]


def req(*, stream: bool = False, tools: list[dict[str, Any]] | None = None, approval: bool = False) -> ChatRequest:
    return ChatRequest(
        messages=[Message(role="user", content="hi")],
        stream=stream,
        tools=tools,
        lockgate=LockgateOptions(requires_approval=approval),
    )


def record(**kw: Any) -> ApprovalRecord:
    now = now_ms()
    base: dict[str, Any] = dict(
        id="ap_0123456789ab", tenant="t", request_id="r", kind="request", reason="requires_approval",
        created_ms=now, expires_ms=now + 60_000,
    )  # fmt: skip
    return ApprovalRecord(**{**base, **kw})


def test_offered_tool_names_in_openai_and_bare_shapes() -> None:
    tools = [PAY, {"name": "bare_tool"}, {"type": "function", "function": {}}, {"function": "odd"}, PAY]
    assert approvals.offered_tools(tools) == ["send_payment", "bare_tool"]
    assert approvals.offered_tools(None) == []


def test_called_tools_and_the_irreversible_ones() -> None:
    calls = [
        ToolCall(id="1", function=FunctionCall(name="lookup")),
        ToolCall(id="2", function=FunctionCall(name="send_payment", arguments="{}")),
        ToolCall(id="3", function=FunctionCall(name="send_payment")),
    ]
    assert approvals.called_tools(calls) == ["lookup", "send_payment"]
    assert approvals.irreversible(approvals.called_tools(calls), {"send_payment"}) == ["send_payment"]
    assert approvals.irreversible(["Send_Payment"], {"send_payment"}) == []  # exact names only


@pytest.mark.parametrize(
    ("request_", "before", "may_wait"),
    [
        (req(), None, False),
        (req(approval=True), "requires_approval", True),
        (req(tools=[LOOKUP]), None, False),
        (req(tools=[PAY]), None, True),  # non-streamed: only an answer that calls it is held
        (req(tools=[PAY], stream=True), "irreversible_tools", True),  # a stream cannot be held back
        (req(tools=[LOOKUP], stream=True), None, False),
        (req(tools=[PAY], approval=True, stream=True), "requires_approval", True),
    ],
)
def test_who_waits_before_running(request_: ChatRequest, before: str | None, may_wait: bool) -> None:
    assert gate().before(request_) == before
    assert gate().may_wait(request_) is may_wait


def test_an_answer_is_held_only_for_a_listed_tool_call() -> None:
    g = gate()
    assert g.held(None) == []
    assert g.held([ToolCall(id="1", function=FunctionCall(name="lookup"))]) == []
    assert g.held([ToolCall(id="1", function=FunctionCall(name="send_payment"))]) == ["send_payment"]


def test_a_gated_request_gets_the_deadline_it_asks_for_within_the_wait_plus_the_usual_cap() -> None:
    g = gate()  # timeout_s = 60
    now = now_ms()
    asked = now + 30 * 60_000
    capped = g.deadline_ms(asked, request_timeout_ms=10_000, max_timeout_ms=600_000)
    assert now + 660_000 <= capped <= now_ms() + 660_000  # wait + max_timeout_ms
    short = now + 5_000
    assert g.deadline_ms(short, 10_000, 600_000) == short  # a shorter deadline is the client's to choose
    none = g.deadline_ms(None, 10_000, 600_000)  # no deadline sent: the wait plus the default
    assert now + 70_000 <= none <= now_ms() + 70_000


def test_preview_redacts_pii_and_secrets_and_stays_short() -> None:
    text = "Pay   jane@example.com\nwith card 4111 1111 1111 1111 and key sk-" + "a" * 40 + " " + "x" * 500
    p = approvals.preview(text)
    assert "jane@example.com" not in p
    assert "4111" not in p
    assert "sk-aaaa" not in p
    assert "[REDACTED:email]" in p
    assert "\n" not in p
    assert "  " not in p
    assert len(p) <= approvals.PREVIEW_CHARS
    assert p.endswith("…")


def test_ids_are_short_and_checked() -> None:
    a, b = approvals.new_id(), approvals.new_id()
    assert a != b
    assert approvals.valid_id(a)
    assert not approvals.valid_id("ap_../../x")
    assert not approvals.valid_id("")


def test_one_decision_then_conflicts_that_say_why() -> None:
    now = now_ms()
    rec = record()
    approved = approvals.decide(rec, "approved", "alice", "", now)
    assert (approved.status, approved.decided_by, approved.decided_ms) == ("approved", "alice", now)
    with pytest.raises(ApprovalConflict, match="already approved by alice"):
        approvals.decide(approved, "denied", "bob", "", now)
    late = record(expires_ms=now - 1)
    assert approvals.effective_status(late, now) == "expired"
    with pytest.raises(ApprovalConflict, match="expired"):
        approvals.decide(late, "approved", "alice", "", now)
    denied = approvals.decide(rec, "denied", "bob", "wrong account", now)
    assert (denied.status, denied.note) == ("denied", "wrong account")


@pytest.mark.parametrize(
    ("ms", "text"), [(0, "0s"), (42_000, "42s"), (300_000, "5m"), (7_800_000, "2h10m"), (7_200_000, "2h"),
                     (3 * 86_400_000, "3d"), (-5, "0s")]
)  # fmt: skip
def test_age(ms: int, text: str) -> None:
    assert approvals.age(ms) == text
