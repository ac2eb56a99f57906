"""Human in the loop: requests and answers that wait for a person, over the real nats-server.

The person is the approvals bucket's other writer: ``ApprovalStore.decide`` here (what
``lockgate approvals approve|deny`` calls), the command itself in ``test_approvals_cli.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest

from services import host
from shared import approvals, errors
from shared.approvals import ApprovalConflict, ApprovalStore
from shared.schemas.approvals import ApprovalRecord
from shared.schemas.chat import ChatResponse, LockgateOptions
from tests.conftest import Mesh, MeshFactory
from tests.integration.test_mesh_audit import audit_records
from tests.integration.test_mesh_basic import ask, eventually

APPROVALS = """
[approvals]
irreversible_tools = ["send_payment", "delete_account"]
timeout_s = {timeout}
"""
PAYMENT_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "send_payment",
            "parameters": {
                "type": "object",
                "properties": {"iban": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["iban", "amount"],
            },
        },
    }
]
BALANCE_TOOL: dict[str, Any] = {"type": "function", "function": {"name": "get_balance", "parameters": {}}}
TOOL_CALL = " [sim:output=tool-call]"  # the simulator answers with a call of the first offered tool


async def approval_mesh(mesh_factory: MeshFactory, timeout_s: float = 30) -> tuple[Mesh, ApprovalStore]:
    mesh = await mesh_factory(extra_toml=APPROVALS.format(timeout=timeout_s))
    return mesh, ApprovalStore(await approvals.ensure(mesh.nc.jetstream(), mesh.names))


async def pending(store: ApprovalStore, count: int = 1) -> list[ApprovalRecord]:
    async def probe() -> list[ApprovalRecord] | None:
        recs = [r for r in await store.all() if r.status == "pending"]
        return recs if len(recs) >= count else None

    return await eventually(probe, timeout_s=10.0)


def needs_approval(text: str, **kw: Any) -> Any:
    return ask(text, model="gpt-4o-mini", lockgate=LockgateOptions(requires_approval=True), **kw)


async def test_an_approved_request_runs_and_the_client_gets_its_answer(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    call = asyncio.create_task(mesh.client.chat(needs_approval("Wire the refund to jane@example.com"), timeout_s=30))
    [rec] = await pending(store)
    assert (rec.tenant, rec.kind, rec.reason, rec.model) == ("dev", "request", "requires_approval", "gpt-4o-mini")
    assert "jane@example.com" not in rec.preview  # the person sees a redacted excerpt, never raw PII
    assert "[REDACTED:email]" in rec.preview
    assert not call.done()  # nothing ran yet: the request waits

    decided = await store.decide(rec.id, "approved", "alice")
    reply: ChatResponse = await asyncio.wait_for(call, 20)
    assert decided.status == "approved"
    assert reply.choices[0].message.content.startswith("Simulated reply")
    assert reply.lockgate.latency_ms["approval"] > 0

    [(subject, audit)] = await audit_records(mesh, 1)
    assert subject == mesh.names.audit("dev", "admitted")
    [facts] = audit.approvals
    assert (facts.id, facts.kind, facts.outcome, facts.by) == (rec.id, "request", "approved", "alice")


async def test_a_denied_request_gets_approval_denied_and_never_runs(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    call = asyncio.create_task(mesh.client.chat(needs_approval("Close the account"), timeout_s=30))
    [rec] = await pending(store)
    await store.decide(rec.id, "denied", "bob", "not during the audit freeze")

    with pytest.raises(errors.ApprovalDenied) as denied:
        await asyncio.wait_for(call, 20)
    assert rec.id in denied.value.message
    assert "bob" in denied.value.message
    assert "not during the audit freeze" in denied.value.message
    assert denied.value.retryable is False

    [(subject, audit)] = await audit_records(mesh, 1)
    assert subject == mesh.names.audit("dev", "refused")
    assert audit.error_type == "approval_denied"
    assert audit.attempts == []  # no provider call was made
    assert [(f.outcome, f.by) for f in audit.approvals] == [("denied", "bob")]


async def test_an_undecided_request_expires_with_the_timeout_named(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory, timeout_s=1)
    with pytest.raises(errors.ApprovalExpired) as expired:
        await mesh.client.chat(needs_approval("Anyone there?"), timeout_s=30)
    assert "approvals.timeout_s = 1 s" in expired.value.message

    [rec] = await store.all()
    assert rec.status == "expired"
    with pytest.raises(ApprovalConflict, match="expired"):  # too late to approve
        await store.decide(rec.id, "approved", "alice")
    [(_, audit)] = await audit_records(mesh, 1)
    assert audit.error_type == "approval_expired"
    assert [f.outcome for f in audit.approvals] == ["expired"]


async def test_a_client_deadline_shorter_than_the_wait_ends_cleanly(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory, timeout_s=600)
    with pytest.raises(errors.ApprovalExpired) as expired:  # not a hang, not a client-side timeout
        await mesh.client.chat(needs_approval("Quick, please"), timeout_s=1.5)
    assert "before the request's deadline" in expired.value.message
    assert "approvals.timeout_s = 600 s" in expired.value.message
    [rec] = await store.all()
    assert rec.status == "expired"


async def test_an_answer_calling_an_irreversible_tool_is_held_until_approved(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    req = ask("Pay the invoice" + TOOL_CALL, model="gpt-4o-mini", tools=PAYMENT_TOOLS)
    call = asyncio.create_task(mesh.client.chat(req, timeout_s=30))
    [rec] = await pending(store)
    assert (rec.kind, rec.reason, rec.tools) == ("answer", "irreversible_call", ["send_payment"])
    assert rec.preview.startswith("send_payment(")
    assert not call.done()  # the model has answered; the client has not seen it

    await store.decide(rec.id, "approved", "alice")
    reply: ChatResponse = await asyncio.wait_for(call, 20)
    [tool_call] = reply.choices[0].message.tool_calls or []
    assert tool_call.function.name == "send_payment"
    assert "amount" in tool_call.function.arguments


async def test_a_denied_tool_call_never_reaches_the_client(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    req = ask("Pay it all" + TOOL_CALL, model="gpt-4o-mini", tools=PAYMENT_TOOLS)
    call = asyncio.create_task(mesh.client.chat(req, timeout_s=30))
    [rec] = await pending(store)
    await store.decide(rec.id, "denied", "bob")
    with pytest.raises(errors.ApprovalDenied, match="send_payment"):
        await asyncio.wait_for(call, 20)

    [(_, audit)] = await audit_records(mesh, 1)
    assert audit.kind == "refused"
    assert audit.cost_usd > 0  # the provider was paid: the budget settles the actual cost
    assert [(f.kind, f.outcome) for f in audit.approvals] == [("answer", "denied")]


async def test_offering_an_irreversible_tool_the_model_does_not_call_waits_for_nobody(
    mesh_factory: MeshFactory,
) -> None:
    mesh, store = await approval_mesh(mesh_factory, timeout_s=1)
    req = ask("What is my balance?" + TOOL_CALL, model="gpt-4o-mini", tools=[BALANCE_TOOL, *PAYMENT_TOOLS])
    reply = await mesh.client.chat(req, timeout_s=10)
    assert [c.function.name for c in reply.choices[0].message.tool_calls or []] == ["get_balance"]
    assert await store.all() == []


async def test_a_streamed_request_offering_an_irreversible_tool_is_approved_before_it_runs(
    mesh_factory: MeshFactory,
) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    stream = await mesh.client.stream(ask("Pay by stream", model="gpt-4o-mini", tools=PAYMENT_TOOLS), timeout_s=30)

    async def read() -> str:
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    reading = asyncio.create_task(read())
    [rec] = await pending(store)
    assert (rec.kind, rec.reason, rec.tools) == ("request", "irreversible_tools", ["send_payment"])
    await store.decide(rec.id, "approved", "alice")
    assert (await asyncio.wait_for(reading, 20)).startswith("Simulated reply")
    assert stream.done is not None


async def test_a_decision_is_taken_once(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    call = asyncio.create_task(mesh.client.chat(needs_approval("Once only"), timeout_s=30))
    [rec] = await pending(store)
    results = await asyncio.gather(
        store.decide(rec.id, "approved", "alice"), store.decide(rec.id, "denied", "bob"), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, ApprovalRecord)]
    losers = [r for r in results if isinstance(r, ApprovalConflict)]
    assert len(winners) == 1
    assert len(losers) == 1
    assert "already" in str(losers[0])
    if winners[0].status == "approved":
        await asyncio.wait_for(call, 20)
    else:
        with pytest.raises(errors.ApprovalDenied):
            await asyncio.wait_for(call, 20)
    with pytest.raises(ApprovalConflict, match="no approval"):
        await store.decide("ap_000000000000", "approved", "alice")


async def test_decisions_reach_whichever_guard_replica_holds_the_request(mesh_factory: MeshFactory) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    nc2 = await nats.connect(mesh.url, name="guard-replica-2")
    replica = await host.start(nc2, mesh.config, ["guard"])  # same namespace: two guards share the queue group
    try:
        calls = [asyncio.create_task(mesh.client.chat(needs_approval(f"request {i}"), timeout_s=30)) for i in range(6)]
        recs = await pending(store, 6)
        for rec in recs:
            await store.decide(rec.id, "approved", "alice")
        replies = await asyncio.wait_for(asyncio.gather(*calls), 20)
        assert all(r.choices[0].message.content for r in replies)
    finally:
        await host.stop(replica)
        await nc2.drain()


async def test_a_guard_that_stops_while_a_request_waits_answers_and_expires_the_approval(
    mesh_factory: MeshFactory,
) -> None:
    mesh, store = await approval_mesh(mesh_factory)
    call = asyncio.create_task(mesh.client.chat(needs_approval("Waiting through a restart"), timeout_s=60))
    [rec] = await pending(store)
    await mesh.stop_service("guard")  # its grace period passes, then the waiting request is cancelled
    with pytest.raises(errors.StageUnavailable, match="send it again"):
        await asyncio.wait_for(call, 20)
    found = await store.read(rec.id)
    assert found is not None
    assert found[0].status == "expired"  # nobody is left to act on a decision
