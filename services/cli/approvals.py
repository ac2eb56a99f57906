"""`lockgate approvals list|approve|deny`: the people's side of the approvals bucket.

A decision is a revision-checked write to the approval's KV key; the guard that holds the
request watches that key and releases or refuses it at once, whichever replica it is.
"""

from __future__ import annotations

import sys

import msgspec
from nats.aio.client import Client

from shared import approvals
from shared.approvals import ApprovalConflict, ApprovalStore
from shared.headers import now_ms
from shared.runtime import connect_once
from shared.schemas.approvals import ApprovalRecord, ApprovalStatus
from shared.subjects import Names


async def _store(nats_url: str, namespace: str) -> tuple[ApprovalStore, Client]:
    nc = await connect_once(nats_url, "lockgate-approvals")
    kv = await approvals.ensure(nc.jetstream(), Names(namespace))
    return ApprovalStore(kv), nc


def line(rec: ApprovalRecord, now: int, *, with_status: bool) -> str:
    status = approvals.effective_status(rec, now)
    cols = [rec.id, f"tenant={rec.tenant}", f"age={approvals.age(now - rec.created_ms)}"]
    if with_status:
        who = f":{rec.decided_by}" if rec.decided_by else ""
        cols.append(f"status={status}{who}")
    elif status == "pending":
        cols.append(f"expires_in={approvals.age(rec.expires_ms - now)}")
    cols += [
        f"kind={rec.kind}",
        f"model={rec.model or '-'}",
        f"tools={','.join(rec.tools) or '-'}",
        f"preview={rec.preview!r}",
    ]
    return "\t".join(cols)


async def list_(nats_url: str, namespace: str, *, include_decided: bool, as_json: bool) -> int:
    store, nc = await _store(nats_url, namespace)
    try:
        records = await store.all()
    finally:
        await nc.drain()
    now = now_ms()
    shown = [r for r in records if include_decided or approvals.effective_status(r, now) == "pending"]
    for rec in shown:
        if as_json:
            status = approvals.effective_status(rec, now)
            print(msgspec.json.encode({**msgspec.to_builtins(rec), "status": status}).decode())
        else:
            print(line(rec, now, with_status=include_decided))
    if not shown and not as_json:
        print("no pending approvals" if not include_decided else "no approvals", file=sys.stderr)
    return 0


async def decide(nats_url: str, namespace: str, approval_id: str, status: ApprovalStatus, by: str, note: str) -> int:
    store, nc = await _store(nats_url, namespace)
    try:
        rec = await store.decide(approval_id.strip(), status, by, note)
    except ApprovalConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await nc.drain()
    what = "the request runs" if rec.kind == "request" else "the held answer is delivered"
    if status == "denied":
        what = "the client gets approval_denied"
    print(f"{status} {rec.id} (tenant {rec.tenant}, request {rec.request_id}): {what}")
    return 0
