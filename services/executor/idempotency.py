"""One provider call per Idempotency-Key (across replicas) and per identical in-flight request (per replica).

Idempotency keys: the first request with a key claims it in the idempotency
bucket (a KV ``create``, which only one writer wins), runs, and stores its
result for ``idempotency_ttl_s``; a repeat gets that result without calling
a provider. A repeat that arrives while the first is still running waits for
it (in the same replica on a future, in another replica by polling the
bucket). A failed first attempt removes its claim: the client's retry runs
again. Keys are scoped by tenant.

Coalescing: identical cacheable requests in flight in one replica share one
provider call (a single-flight map keyed by tenant and cache key). Replicas
do not coalesce with each other: that would need a round trip to the bucket
on every cacheable request; the cache answers repeats once the first is done.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
import nats.js.errors
import structlog
from nats.js.kv import KeyValue

from shared.errors import DeadlineExceeded
from shared.headers import RequestContext, now_ms
from shared.schemas.chat import Attempt
from shared.schemas.mesh import ExecuteResult
from shared.subjects import token

log = structlog.get_logger("lockgate.idempotency")
POLL_S = 0.05
STALE_GRACE_MS = 1_000


class Record(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    state: Literal["pending", "done"]
    owner_deadline_ms: int  # a pending claim older than this (plus grace) was abandoned
    result: ExecuteResult | None = None


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Record)


def replay(result: ExecuteResult, outcome: str) -> ExecuteResult:
    """The first result, marked as served without a provider call (and costing nothing again)."""
    return msgspec.structs.replace(
        result,
        attempts=[Attempt(deployment=result.deployment, outcome=outcome, latency_ms=0.0)],
        cost_usd=0.0,
    )


class _LeaderGone(Exception):
    """The call others were waiting on ended without a verdict for them (cancelled, out of time)."""


class SingleFlight:
    """Identical in-flight calls in this process share the first one's result."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[ExecuteResult]] = {}

    async def run(self, key: str, fn: Callable[[], Awaitable[ExecuteResult]]) -> tuple[ExecuteResult, bool]:
        """(result, whether it was shared from another call)."""
        fut = self._inflight.get(key)
        if fut is not None:
            try:
                return await asyncio.shield(fut), True
            except _LeaderGone:
                pass  # the first caller ran out of its own time: try on ours
            return await self.run(key, fn)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await fn()
        except BaseException as exc:
            gone = isinstance(exc, DeadlineExceeded | TimeoutError) or not isinstance(exc, Exception)
            fut.set_exception(_LeaderGone() if gone else exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        else:
            fut.set_result(result)
            return result, False
        finally:
            if self._inflight.get(key) is fut:
                del self._inflight[key]


class IdempotencyStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.local = SingleFlight()

    @staticmethod
    def kv_key(tenant: str, key: str) -> str:
        return f"{token(tenant)}.{hashlib.sha256(key.encode()).hexdigest()[:40]}"

    async def run(
        self, tenant: str, key: str, ctx: RequestContext, fn: Callable[[], Awaitable[ExecuteResult]]
    ) -> ExecuteResult:
        k = self.kv_key(tenant, key)
        result, shared = await self.local.run(k, lambda: self._claim_or_wait(k, ctx, fn))
        return replay(result, "idempotent_replay") if shared else result

    async def _claim_or_wait(
        self, k: str, ctx: RequestContext, fn: Callable[[], Awaitable[ExecuteResult]]
    ) -> ExecuteResult:
        """Our own result (marked as such by the caller) or the stored first one (marked here)."""
        pending = _enc.encode(Record(state="pending", owner_deadline_ms=ctx.deadline_ms))
        while True:
            try:
                entry = await self.kv.get(k)
            except nats.js.errors.KeyNotFoundError:
                entry = None
            if entry is None or not entry.value:
                try:
                    await self.kv.create(k, pending)
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue  # another replica claimed it first
                return await self._own(k, fn)
            rec = _dec.decode(entry.value)
            if rec.state == "done" and rec.result is not None:
                return replay(rec.result, "idempotent_replay")
            if now_ms() > rec.owner_deadline_ms + STALE_GRACE_MS:
                try:  # the first request's replica went away: take the claim over
                    await self.kv.update(k, pending, last=entry.revision)
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
                return await self._own(k, fn)
            if ctx.remaining_s() <= POLL_S:
                raise TimeoutError
            await asyncio.sleep(POLL_S)

    async def _own(self, k: str, fn: Callable[[], Awaitable[ExecuteResult]]) -> ExecuteResult:
        try:
            result = await fn()
        except BaseException:
            try:
                await self.kv.delete(k)  # a retry of a failed request runs again
            except Exception as exc:
                log.warning("idempotency_release_failed", error=str(exc))
            raise
        try:
            await self.kv.put(k, _enc.encode(Record(state="done", owner_deadline_ms=0, result=result)))
        except Exception as exc:  # the client has its answer; a repeat will call the provider again
            log.warning("idempotency_store_failed", error=str(exc))
        return result
