"""Budgeter wiring: mesh.v1.budgeter.reserve, and settling from completion events.

Settlement reads completion events through one durable pull consumer shared
by all replicas (each event is settled once; unacked events are redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import nats.errors
import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.budgeter.handlers import Budgeter
from services.budgeter.store import BudgetStore
from shared import jetstream
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
    durable = env.names.consumer(BUDGETER, "settle")
    psub = await env.js.pull_subscribe(
        env.names.events_of(EV_COMPLETION),
        durable=durable,
        stream=env.names.events_stream,
        config=ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW, ack_wait=30
        ),
    )
    decoder = msgspec.json.Decoder(CompletionEvent)

    async def settle_loop() -> None:
        while True:
            try:
                msgs = await psub.fetch(128, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:  # JetStream briefly unavailable: back off, keep going
                log.warning("settle_fetch_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for m in msgs:
                try:
                    await budgeter.settle(decoder.decode(m.data))
                    await m.ack()
                except msgspec.DecodeError:
                    log.error("bad_completion_event", subject=m.subject)
                    await m.term()
                except Exception as exc:
                    log.warning("settle_failed", error=str(exc))
                    with contextlib.suppress(Exception):
                        await m.nak(delay=1.0)

    task = asyncio.create_task(settle_loop())
    return Running(BUDGETER, stage, tasks=[task], cleanups=[psub.unsubscribe])
