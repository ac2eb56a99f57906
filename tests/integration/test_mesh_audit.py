"""The AUDIT stream: one durable record per request, by tenant and kind, without prompt text."""

from __future__ import annotations

import uuid

import msgspec

from shared import bus
from shared.schemas.events import AuditRecord
from tests.conftest import Mesh
from tests.integration.test_mesh_basic import ask, error_of, eventually, raw_chat


async def audit_records(mesh: Mesh, at_least: int) -> list[tuple[str, AuditRecord]]:
    """All (subject, record) pairs in the mesh's AUDIT stream once it holds ``at_least`` of them."""
    js = mesh.nc.jetstream()

    async def enough() -> int | None:
        info = await js.stream_info(mesh.names.audit_stream)
        return info.state.messages if info.state.messages >= at_least else None

    await eventually(enough, timeout_s=8.0)
    info = await js.stream_info(mesh.names.audit_stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(mesh.names.audit_stream, seq)
        out.append((msg.subject, msgspec.json.decode(msg.data, type=AuditRecord)))
    return out


async def test_one_record_per_request_by_tenant_and_kind(mesh: Mesh) -> None:
    secret = f"the secret prompt {uuid.uuid4().hex}"
    completed = await mesh.client.chat(ask(secret, model="gpt-4o-mini", temperature=0))
    refused = error_of(
        await raw_chat(mesh, bus.encode(ask(secret, model="gpt-4o-mini", temperature=9))), "invalid_request"
    )

    # Misses before the cache fills are more admitted requests: count what was sent.
    admitted_ids = [completed.lockgate.request_id]
    cached_id = None
    for _ in range(100):  # bounded: the fill takes milliseconds
        reply = await mesh.client.chat(ask(secret, model="gpt-4o-mini", temperature=0))
        if reply.lockgate.cached == "exact":
            cached_id = reply.lockgate.request_id
            break
        admitted_ids.append(reply.lockgate.request_id)
    assert cached_id is not None

    records = await audit_records(mesh, len(admitted_ids) + 2)
    by_id = {r.request_id: (subject, r) for subject, r in records}
    assert len(by_id) == len(records), "one record per request"
    assert len(records) == len(admitted_ids) + 2

    for rid in admitted_ids:
        subject, rec = by_id[rid]
        assert subject == mesh.names.audit("dev", "admitted")
        assert rec.kind == "admitted"
        assert rec.tenant == "dev"
        assert rec.key_id == "dev"
        assert rec.model == "gpt-4o-mini"
        assert rec.deployment == "sim-gpt"
        assert rec.usage.total_tokens > 0
        assert rec.cost_usd > 0
        assert rec.attempts[0].outcome == "ok"
    subject, rec = by_id[refused.request_id]
    assert subject == mesh.names.audit("dev", "refused")
    assert rec.error_type == "invalid_request"
    assert rec.error_stage == "guard"
    assert "temperature" in rec.error_message
    subject, rec = by_id[cached_id]
    assert subject == mesh.names.audit("dev", "cached")
    assert rec.cost_usd == 0

    # Nothing the user wrote is kept.
    js = mesh.nc.jetstream()
    info = await js.stream_info(mesh.names.audit_stream)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = (await js.get_msg(mesh.names.audit_stream, seq)).data
        assert secret.encode() not in raw
        assert b"the secret prompt" not in raw


async def test_failed_request_is_audited_as_failed(mesh: Mesh) -> None:
    msg = await raw_chat(mesh, bus.encode(ask("Anyone?", model="dead-gpt")))
    err = error_of(msg, "upstream_unavailable")
    records = await audit_records(mesh, 1)
    [(subject, rec)] = [(s, r) for s, r in records if r.request_id == err.request_id]
    assert subject == mesh.names.audit("dev", "failed")
    assert rec.error_type == "upstream_unavailable"
    assert rec.error_stage == "executor"
    assert "sim-gpt-down" in rec.error_message


async def test_unauthenticated_request_is_audited_too(mesh: Mesh) -> None:
    """Refusals without a tenant are exactly what an operator wants to see in the audit."""
    msg = await raw_chat(mesh, bus.encode(ask("let me in")), auth="Bearer lg-stolen")
    err = error_of(msg, "unauthorized")
    records = await audit_records(mesh, 1)
    [(subject, rec)] = [(s, r) for s, r in records if r.request_id == err.request_id]
    assert rec.kind == "refused"
    assert rec.error_type == "unauthorized"
    assert rec.tenant == ""
    assert subject == mesh.names.audit("_anonymous", "refused")
    # ... and the auditor keeps going: a later request is recorded as well.
    ok = await mesh.client.chat(ask("after", model="gpt-4o-mini"))
    records = await audit_records(mesh, 2)
    assert ok.lockgate.request_id in {r.request_id for _, r in records}


async def test_stream_is_audited_with_its_flag(mesh: Mesh) -> None:
    stream = await mesh.client.stream(ask("stream me", model="claude-3-5-haiku"))
    _ = [c async for c in stream]
    assert stream.done is not None
    records = await audit_records(mesh, 1)
    [rec] = [r for _, r in records if r.request_id == stream.done.lockgate.request_id]
    assert rec.kind == "admitted"
    assert rec.stream is True
    assert rec.deployment == "sim-claude"


async def test_a_reused_request_id_gets_a_record_per_request(mesh: Mesh) -> None:
    for _ in range(3):
        await mesh.client.chat(ask("Same id", model="gpt-4o-mini"), request_id="client-retry-2")
    records = await audit_records(mesh, 3)
    assert [r.request_id for _, r in records] == ["client-retry-2"] * 3
