"""Jobs wiring: a push consumer on the JOBS work queue, shared by every replica (queue group).

Each delivery runs in its own task, at most ``jobs.concurrency`` per replica
(``max_ack_pending`` bounds what the server hands out beyond that).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.jobs.worker import Worker
from shared import jobstore
from shared.runtime import Env, Running
from shared.subjects import JOBS

log = structlog.get_logger("lockgate.jobs")


async def start(env: Env) -> Running:
    cfg = env.config.jobs
    store = jobstore.JobStore(await jobstore.ensure(env.js, env.names, cfg))
    worker = Worker(env.nc, env.js, env.names, cfg, store)
    sem = asyncio.Semaphore(cfg.concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def run(msg: Msg) -> None:
        try:
            await worker.handle(msg)
        except Exception as exc:  # KV or NATS trouble: let JetStream redeliver it
            log.warning("job_item_failed", subject=msg.subject, error=str(exc))
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
        finally:
            sem.release()

    async def on_msg(msg: Msg) -> None:
        await sem.acquire()
        task = asyncio.create_task(run(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    durable = env.names.consumer(JOBS, "work")
    sub = await env.js.subscribe(
        env.names.jobs_work_all, queue=durable, durable=durable, stream=env.names.jobs_stream, cb=on_msg,
        manual_ack=True,
        config=ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            ack_wait=cfg.ack_wait_s, max_deliver=cfg.max_deliver, max_ack_pending=cfg.concurrency * 4,
        ),
    )  # fmt: skip
    stage = env.stage(JOBS, "runs background jobs from the JOBS work queue")
    await stage.start()

    async def stop_consuming() -> None:
        await sub.unsubscribe()
        if tasks:
            await asyncio.wait(set(tasks), timeout=5.0)

    return Running(JOBS, stage, cleanups=[stop_consuming])
