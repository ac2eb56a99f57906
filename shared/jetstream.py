"""Create (idempotently) the streams and buckets the mesh keeps its state in."""

from __future__ import annotations

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.kv import KeyValue

from shared.subjects import Names

DAY_S = 86_400.0
BUDGETS_TTL_S = 40 * DAY_S  # an entity idle this long has no current window left to keep


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # Exists with other settings: bring it to ours (subjects, limits).
        await js.update_stream(config)


async def _ensure_log(js: JetStreamContext, name: str, subject: str, max_age_s: float, replicas: int) -> None:
    """A file-backed stream that keeps messages for ``max_age_s`` and de-duplicates by Nats-Msg-Id."""
    await ensure_stream(
        js,
        StreamConfig(
            name=name,
            subjects=[subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=max_age_s,
            duplicate_window=120.0,
            discard=DiscardPolicy.OLD,
            num_replicas=replicas,
        ),
    )


async def ensure_events(js: JetStreamContext, names: Names, replicas: int = 1) -> None:
    await _ensure_log(js, names.events_stream, names.events_all, 7 * DAY_S, replicas)


async def ensure_audit(js: JetStreamContext, names: Names, replicas: int = 1) -> None:
    await _ensure_log(js, names.audit_stream, names.audit_of(), 30 * DAY_S, replicas)


async def ensure_bucket(js: JetStreamContext, bucket: str, *, ttl_s: float | None = None, history: int = 1) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(KeyValueConfig(bucket=bucket, history=history, ttl=ttl_s))
    except nats.js.errors.BadRequestError:
        return await js.key_value(bucket)  # created concurrently by a replica


async def ensure_all(js: JetStreamContext, names: Names) -> None:
    """Everything the mesh needs; services also ensure what they use themselves."""
    await ensure_events(js, names)
    await ensure_audit(js, names)
    await ensure_bucket(js, names.keys_bucket)
    await ensure_bucket(js, names.budgets_bucket, ttl_s=BUDGETS_TTL_S)
    await ensure_bucket(js, names.budget_limits_bucket)
