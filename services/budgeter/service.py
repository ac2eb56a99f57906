"""Budgeter wiring: mesh.v1.budgeter.reserve, settling from completion events, alerts.

Settlement reads completion events through one durable consumer shared by all replicas
(shared.consumers): each event is settled once, an unacked one is redelivered (and a
redelivered settlement finds its hold gone: nothing is released twice). Every replica
watches the runtime limits bucket (services.budgeter.limits).

A tenant's budget keys are written by one replica at a time where possible
(shared.owners): the guard sends a reservation to the tenant's owner
(``mesh.v1.budgeter.own.<id>.reserve``), and a replica that receives the completion
event of a tenant it does not own forwards the settlement to the owner
(``...own.<id>.settle``), settling it itself when the owner does not answer. Any
replica still serves ``mesh.v1.budgeter.reserve`` (the queue group).
"""

from __future__ import annotations

import structlog

from services.budgeter.handlers import Budgeter
from services.budgeter.limits import LimitsView
from services.budgeter.store import BudgetStore
from shared import bus, jetstream
from shared.bus import encode
from shared.consumers import consume
from shared.errors import StageUnavailable
from shared.headers import MSG_ID, RequestContext
from shared.owners import Members, Owners
from shared.runtime import Env, Running
from shared.schemas.budget import BudgetAlert
from shared.schemas.mesh import Reservation, ReserveRequest, Settled, SettleRequest
from shared.subjects import BUDGETER, EV_ALERT, EV_COMPLETION, OP_MEMBERS, OP_RESERVE, OP_SETTLE

log = structlog.get_logger("lockgate.budgeter")
SETTLE_FORWARD_MS = 2_000  # a forwarded settlement the owner does not confirm in time is settled here
SETTLE_CONCURRENCY = 256  # settlements commute (holds by id); serial ones cap a replica at one per KV round trip


async def start(env: Env) -> Running:
    kv = await jetstream.ensure_bucket(env.js, env.names.budgets_bucket, ttl_s=jetstream.BUDGETS_TTL_S)
    limits_kv = await jetstream.ensure_bucket(env.js, env.names.budget_limits_bucket)
    await jetstream.ensure_events(env.js, env.names)
    limits = LimitsView(env.config, limits_kv)
    await limits.start()

    async def alert(a: BudgetAlert) -> None:
        # Once per entity, window and kind: the flag that says so is in the state already written;
        # the message id makes a retried publish land once too.
        msg_id = f"alert-{a.scope}-{a.entity}-{a.window}-{a.kind}"
        await env.js.publish(env.names.event(EV_ALERT, a.tenant), encode(a), headers={MSG_ID: msg_id})

    budgeter = Budgeter(env.config, BudgetStore(kv), limits, alert=alert)
    stage = env.stage(BUDGETER, "reserve-then-settle budgets per tenant, user and key (daily, monthly)")

    async def reserve(req: ReserveRequest, ctx: RequestContext) -> Reservation:
        return await budgeter.reserve(req, ctx.deadline_ms)

    async def settle_owned(req: SettleRequest, _: RequestContext) -> Settled:
        await budgeter.settle(req)
        return Settled()

    service = await stage.start()
    me = service.id
    group = stage.group(env.names.mesh_group(BUDGETER))
    await stage.add_typed(group, name=OP_RESERVE, req_type=ReserveRequest, handler=reserve)
    # This replica's own subjects (the tenants it owns), counted in $SRV.STATS like any endpoint.
    own = {op: env.names.owned(BUDGETER, me, op) for op in (OP_RESERVE, OP_SETTLE)}
    await stage.add_typed(
        service, name="reserve-owned", subject=own[OP_RESERVE], req_type=ReserveRequest, handler=reserve
    )
    await stage.add_typed(
        service, name="settle-owned", subject=own[OP_SETTLE], req_type=SettleRequest, handler=settle_owned
    )
    members = Members(env.nc, env.names.mesh(BUDGETER, OP_MEMBERS), me)
    await members.start()
    owners = Owners(env.nc, env.names.mesh(BUDGETER, OP_MEMBERS))
    await owners.start()

    async def settle(req: SettleRequest, _: int) -> None:
        if req.hold is None:
            return
        owner = owners.owner(req.tenant)
        if owner is not None and owner != me:
            ctx = RequestContext.new(timeout_ms=SETTLE_FORWARD_MS, tenant=req.tenant, request_id=req.hold.id)
            try:
                await bus.call(
                    env.nc, env.names.owned(BUDGETER, owner, OP_SETTLE), req, Settled, ctx,
                    stage=BUDGETER, timeout_s=SETTLE_FORWARD_MS / 1000,
                )  # fmt: skip
                return
            except StageUnavailable:  # gone or slow: settle here (the compare-and-set keeps it right)
                owners.forget(owner)
            except Exception as exc:  # the owner failed: settling here is still right (idempotent by hold id)
                log.warning("settle_forward_failed", owner=owner, error=str(exc))
        await budgeter.settle(req)

    stop = await consume(
        env.js,
        stream=env.names.events_stream,
        subject=env.names.events_of(EV_COMPLETION),
        durable=env.names.consumer(BUDGETER, "settle"),
        event_type=SettleRequest,  # the event's settlement fields only (the answer is not decoded)
        handle=settle,
        from_start=False,
        concurrency=SETTLE_CONCURRENCY,
    )
    return Running(BUDGETER, stage, cleanups=[limits.stop, members.stop, owners.stop, stop])
