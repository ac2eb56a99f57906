"""Where background jobs live: the JOBS work queue, the JOBS_DEAD stream and the results bucket.

Results are keyed ``<job>`` (the job's meta) and ``<job>.<index>`` (one item). An item
result is written with a KV *create*, which fails when the key exists: a redelivered item
whose first run finished (the worker died before its ack) is recorded and announced once.
"""

from __future__ import annotations

import asyncio

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.kv import KeyValue

from shared.config import JobsConfig
from shared.jetstream import ensure_bucket, ensure_stream
from shared.schemas.jobs import JobItem, JobMeta, JobState, JobStatus
from shared.subjects import Names

_meta = msgspec.json.Decoder(JobMeta)
_item = msgspec.json.Decoder(JobItem)


async def ensure(js: JetStreamContext, names: Names, cfg: JobsConfig) -> KeyValue:
    await ensure_stream(
        js,
        StreamConfig(
            name=names.jobs_stream,
            subjects=[names.jobs_work_all],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=120.0,
        ),
    )
    await ensure_stream(
        js,
        StreamConfig(
            name=names.jobs_dead_stream,
            subjects=[names.jobs_dead_all],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=float(cfg.result_ttl_s),
            discard=DiscardPolicy.OLD,
        ),
    )
    return await ensure_bucket(js, names.jobs_bucket, ttl_s=float(cfg.result_ttl_s))


class JobStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def put_meta(self, meta: JobMeta) -> None:
        await self.kv.put(meta.job_id, msgspec.json.encode(meta))

    async def meta(self, job_id: str) -> JobMeta | None:
        try:
            entry = await self.kv.get(job_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        return _meta.decode(entry.value) if entry.value else None

    async def item(self, job_id: str, index: int) -> JobItem | None:
        try:
            entry = await self.kv.get(f"{job_id}.{index}")
        except nats.js.errors.KeyNotFoundError:
            return None
        return _item.decode(entry.value) if entry.value else None

    async def record(self, item: JobItem) -> bool:
        """Write an item's result once; False when it was already recorded."""
        try:
            await self.kv.create(f"{item.job_id}.{item.index}", msgspec.json.encode(item))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def status(self, meta: JobMeta, include_results: bool) -> JobStatus:
        items = await asyncio.gather(*(self.item(meta.job_id, i) for i in range(meta.total)))
        done = [i for i in items if i is not None]
        completed = sum(1 for i in done if i.state == "completed")
        failed = len(done) - completed
        state: JobState
        if len(done) == meta.total:
            state = "completed" if failed == 0 else "failed"
        else:
            state = "running" if done else "queued"
        return JobStatus(
            job_id=meta.job_id, state=state, total=meta.total, completed=completed, failed=failed,
            items=done if include_results else [],
        )  # fmt: skip
