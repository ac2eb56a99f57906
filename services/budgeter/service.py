"""Budgeter wiring: mesh.v1.budgeter.reserve, and settling from completion events.

Settlement reads completion events through one durable consumer shared
by all replicas (shared.consumers) (each event is settled once; unacked events are redelivered).
"""

from __future__ import annotations

import structlog

from services.budgeter.handlers import Budgeter
from services.budgeter.store import BudgetStore
from shared import jetstream
from shared.consumers import consume
from shared.headers import RequestContext
from shared.runtime import Env, Running
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import Reservation, ReserveRequest
from shared.subjects import BUDGETER, EV_COMPLETION, OP_RESERVE

log = structlog.get_logger("lockgate.budgeter")


async def start(env: Env) -> Running:
    kv = await jetstream.ensure_bucket(env.js, env.names.budgets_bucket, ttl_s=40 * jetstream.DAY_S)
    await jetstream.ensure_events(env.js, env.names)
    budgeter = Budgeter(env.config, BudgetStore(kv))
    stage = env.stage(BUDGETER, "reserve-then-settle budget accounting per tenant")

    async def reserve(req: ReserveRequest, _: RequestContext) -> Reservation:
        return await budgeter.reserve(req)

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
    return Running(BUDGETER, stage, cleanups=[stop])
