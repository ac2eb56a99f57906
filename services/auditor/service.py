"""Auditor wiring: completion events in, one AUDIT record per request out.

A durable pull consumer shared by the replicas; the record is published with
``Nats-Msg-Id`` = the event's stream sequence so a redelivered event never writes twice.
The auditor is a micro service with no endpoints yet (feedback comes later),
so ``$SRV`` discovery still sees it.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import nats.errors
import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.auditor.handlers import record
from shared import jetstream
from shared.bus import encode
from shared.headers import MSG_ID
from shared.runtime import Env, Running
from shared.schemas.events import CompletionEvent
from shared.subjects import AUDITOR, EV_COMPLETION

log = structlog.get_logger("lockgate.auditor")


async def start(env: Env) -> Running:
    await jetstream.ensure_events(env.js, env.names)
    await jetstream.ensure_audit(env.js, env.names)
    stage = env.stage(AUDITOR, "writes one durable audit record per request")
    await stage.start()
    durable = env.names.consumer(AUDITOR, "audit")
    psub = await env.js.pull_subscribe(
        env.names.events_of(EV_COMPLETION),
        durable=durable,
        stream=env.names.events_stream,
        config=ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30
        ),
    )
    decoder = msgspec.json.Decoder(CompletionEvent)

    async def audit_loop() -> None:
        while True:
            try:
                msgs = await psub.fetch(256, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:
                log.warning("audit_fetch_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for m in msgs:
                try:
                    rec = record(decoder.decode(m.data))
                    # One record per event, also when it is redelivered: the event's stream sequence is
                    # its identity (request ids come from clients and may repeat).
                    msg_id = f"{env.names.events_stream}-{m.metadata.sequence.stream}"
                    await env.js.publish(env.names.audit(rec.tenant, rec.kind), encode(rec), headers={MSG_ID: msg_id})
                    await m.ack()
                except msgspec.DecodeError:
                    log.error("bad_completion_event", subject=m.subject)
                    await m.term()
                except Exception as exc:
                    log.warning("audit_write_failed", error=str(exc))
                    with contextlib.suppress(Exception):
                        await m.nak(delay=1.0)

    task = asyncio.create_task(audit_loop())
    return Running(AUDITOR, stage, tasks=[task], cleanups=[psub.unsubscribe])
