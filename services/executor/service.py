"""Executor wiring: mesh.v1.executor.execute, the shared breaker state, the idempotency bucket."""

from __future__ import annotations

from services.executor.breaker import Breakers
from services.executor.handlers import Executor
from services.executor.idempotency import IdempotencyStore
from services.executor.providers import Clients
from shared import breakers as shared_breakers
from shared import bus, headers, jetstream
from shared.breakers import BreakerView
from shared.errors import LockgateError
from shared.headers import RequestContext
from shared.runtime import Env, Running
from shared.schemas.breaker import BreakerEvent, BreakerState, BreakerStateName
from shared.schemas.mesh import CacheResult, ExecuteRequest, ExecuteResult, SimilarLookup
from shared.subjects import CACHE, EV_BREAKER, EXECUTOR, OP_EXECUTE, OP_SIMILAR


async def start(env: Env) -> Running:
    res = env.config.resilience
    clients = Clients()
    kv = await shared_breakers.bucket(env.js, env.names)
    await jetstream.ensure_events(env.js, env.names)
    replica = headers.new_id()

    async def publish(st: BreakerState, previous: BreakerStateName) -> None:
        await kv.put(shared_breakers.kv_key(st.deployment), bus.encode(st))
        ev = BreakerEvent(
            deployment=st.deployment, state=st.state, previous=previous, ts_ms=st.since_ms, until_ms=st.until_ms,
            reason=st.reason, replica=st.replica,
        )  # fmt: skip
        await env.js.publish(
            env.names.event(EV_BREAKER, st.deployment),
            bus.encode(ev),
            headers={headers.MSG_ID: f"{st.deployment}-{st.state}-{st.since_ms}-{replica}"},
        )

    breakers = Breakers(res.breaker, replica=replica, publish=publish)
    view = BreakerView(kv, on_change=breakers.adopt)
    watch = await view.start()
    idem_kv = await jetstream.ensure_bucket(env.js, env.names.idempotency_bucket, ttl_s=float(res.idempotency_ttl_s))
    similar_subject = env.names.mesh(CACHE, OP_SIMILAR)
    cache_policy = env.config.stages.cache

    async def find_similar(lookup: SimilarLookup, ctx: RequestContext) -> CacheResult | None:
        try:
            return await bus.call(env.nc, similar_subject, lookup, CacheResult, ctx, stage=CACHE,
                                  timeout_s=cache_policy.timeout_ms / 1000.0)  # fmt: skip
        except LockgateError:  # the similar-answer tier fails open: on to the next degradation step
            return None

    executor = Executor(env.nc, clients, res, breakers, IdempotencyStore(idem_kv), similar=find_similar)
    stage = env.stage(EXECUTOR, "calls providers through the official SDKs, streaming to the client")

    async def execute(req: ExecuteRequest, ctx: RequestContext) -> ExecuteResult:
        return await executor.execute(req, ctx)

    await stage.start()
    await stage.add_typed(
        stage.group(env.names.mesh_group(EXECUTOR)), name=OP_EXECUTE, req_type=ExecuteRequest, handler=execute
    )
    return Running(EXECUTOR, stage, tasks=[watch], cleanups=[clients.close, breakers.drain])
