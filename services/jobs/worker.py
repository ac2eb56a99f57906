"""Run one work item: through the guard with the job's key, then record, announce, ack.

- success: the result is recorded (KV create: once), announced on
  ``llm.v1.jobs.done.<job>``, and the message acked;
- a retryable failure (rate limited, upstream down, stage unavailable, deadline):
  ``nak`` with exponential backoff, until the item has been delivered
  ``max_deliver`` times; then it is dead-lettered (JOBS_DEAD), recorded as
  failed, announced and terminated;
- a failure retrying cannot fix (invalid request, forbidden, budget exceeded...):
  recorded as failed at once, announced, terminated;
- a worker that dies mid-item never acks: JetStream redelivers the item after
  ``ack_wait`` to another worker. An item whose result was already recorded (the
  first worker finished but died before its ack) is only acked, not run again.
"""

from __future__ import annotations

import contextlib

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import bus, headers
from shared.client import LockgateClient
from shared.config import JobsConfig
from shared.errors import LockgateError
from shared.jobstore import JobStore
from shared.schemas.jobs import JobItem, JobWork
from shared.subjects import Names

log = structlog.get_logger("lockgate.jobs")
_work = msgspec.json.Decoder(JobWork)


def backoff_s(cfg: JobsConfig, delivery: int) -> float:
    return min(cfg.backoff_max_ms, cfg.backoff_base_ms * (1 << min(20, max(0, delivery - 1)))) / 1000.0


class Worker:
    def __init__(self, nc: Client, js: JetStreamContext, names: Names, cfg: JobsConfig, store: JobStore) -> None:
        self.nc = nc
        self.js = js
        self.names = names
        self.cfg = cfg
        self.store = store

    async def handle(self, msg: Msg) -> None:
        try:
            work = _work.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("undecodable_job_item", subject=msg.subject, error=str(exc))
            await msg.term()
            return
        delivery = msg.metadata.num_delivered
        if await self.store.item(work.job_id, work.index) is not None:
            await msg.ack()  # finished before a redelivery: nothing to run twice
            return
        client = LockgateClient(self.nc, work.token, names=self.names)
        try:
            response = await client.chat(work.request, request_id=f"{work.job_id}.{work.index}.{delivery}")
        except LockgateError as err:
            if err.retryable and delivery < self.cfg.max_deliver:
                log.info("job_item_retry", job_id=work.job_id, index=work.index, delivery=delivery, error=err.type)
                await msg.nak(delay=backoff_s(self.cfg, delivery))
                return
            if err.retryable:  # out of deliveries: dead-letter it
                await self.js.publish(
                    self.names.jobs_dead(work.job_id, work.index), msg.data,
                    headers={headers.MSG_ID: f"{work.job_id}.{work.index}", "Lockgate-Error": err.header_line()},
                )  # fmt: skip
            item = JobItem(
                job_id=work.job_id, index=work.index, state="failed", deliveries=delivery,
                error=err.body(f"{work.job_id}.{work.index}"),
            )  # fmt: skip
            await self._finish(item)
            await msg.term()
            return
        await self._finish(
            JobItem(job_id=work.job_id, index=work.index, state="completed", deliveries=delivery, response=response)
        )
        await msg.ack()

    async def _finish(self, item: JobItem) -> None:
        if await self.store.record(item):
            with contextlib.suppress(Exception):  # a lost announcement is only a missed wake-up: status has it
                await self.nc.publish(self.names.jobs_done(item.job_id), bus.encode(item))
