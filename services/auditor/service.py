"""Auditor wiring: completion events in, one AUDIT record per request out; budget alerts too.

A durable consumer shared by the replicas (shared.consumers); the record is published with
``Nats-Msg-Id`` = the event's stream sequence so a redelivered event never writes twice.
The auditor is a micro service with no endpoints yet (feedback comes later),
so ``$SRV`` discovery still sees it.
"""

from __future__ import annotations

import structlog

from services.auditor.handlers import record
from shared import jetstream
from shared.bus import encode
from shared.consumers import consume
from shared.headers import MSG_ID
from shared.runtime import Env, Running
from shared.schemas.budget import BudgetAlert
from shared.schemas.events import CompletionEvent
from shared.subjects import AUDITOR, EV_ALERT, EV_COMPLETION

log = structlog.get_logger("lockgate.auditor")


async def start(env: Env) -> Running:
    await jetstream.ensure_events(env.js, env.names)
    await jetstream.ensure_audit(env.js, env.names)
    stage = env.stage(AUDITOR, "writes one durable audit record per request")
    await stage.start()

    async def write(event: CompletionEvent, seq: int) -> None:
        rec = record(event)
        # One record per event, also when it is redelivered: the event's stream sequence is its
        # identity (request ids come from clients and may repeat).
        msg_id = f"{env.names.events_stream}-{seq}"
        await env.js.publish(env.names.audit(rec.tenant, rec.kind), encode(rec), headers={MSG_ID: msg_id})

    stop = await consume(
        env.js,
        stream=env.names.events_stream,
        subject=env.names.events_of(EV_COMPLETION),
        durable=env.names.consumer(AUDITOR, "audit"),
        event_type=CompletionEvent,
        handle=write,
        from_start=True,
    )

    async def write_alert(alert: BudgetAlert, seq: int) -> None:
        # A budget alert (the budgeter's events.v1.alert.<tenant>) is a decision worth keeping too.
        msg_id = f"{env.names.events_stream}-{seq}"
        await env.js.publish(env.names.audit(alert.tenant, "alert"), encode(alert), headers={MSG_ID: msg_id})

    stop_alerts = await consume(
        env.js,
        stream=env.names.events_stream,
        subject=env.names.events_of(EV_ALERT),
        durable=env.names.consumer(AUDITOR, "alerts"),
        event_type=BudgetAlert,
        handle=write_alert,
        from_start=True,
    )
    return Running(AUDITOR, stage, cleanups=[stop, stop_alerts])
