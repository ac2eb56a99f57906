"""Budgeter wiring: mesh.v1.budgeter.reserve, settling from completion events, alerts.

Settlement reads completion events through one durable consumer shared by all replicas
(shared.consumers): each event is settled once, an unacked one is redelivered (and a
redelivered settlement finds its hold gone: nothing is released twice). Every replica
watches the runtime limits bucket (services.budgeter.limits).
"""

from __future__ import annotations

import structlog

from services.budgeter.handlers import Budgeter
from services.budgeter.limits import LimitsView
from services.budgeter.store import BudgetStore
from shared import jetstream
from shared.bus import encode
from shared.consumers import consume
from shared.headers import MSG_ID, RequestContext
from shared.runtime import Env, Running
from shared.schemas.budget import BudgetAlert
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import Reservation, ReserveRequest
from shared.subjects import BUDGETER, EV_ALERT, EV_COMPLETION, OP_RESERVE

log = structlog.get_logger("lockgate.budgeter")


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

    await stage.start()
    await stage.add_typed(
        stage.group(env.names.mesh_group(BUDGETER)), name=OP_RESERVE, req_type=ReserveRequest, handler=reserve
    )

    async def settle(event: CompletionEvent, _: int) -> None:
        await budgeter.settle(event)

    stop = await consume(
        env.js,
        stream=env.names.events_stream,
        subject=env.names.events_of(EV_COMPLETION),
        durable=env.names.consumer(BUDGETER, "settle"),
        event_type=CompletionEvent,
        handle=settle,
        from_start=False,
    )
    return Running(BUDGETER, stage, cleanups=[limits.stop, stop])
