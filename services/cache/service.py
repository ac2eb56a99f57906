"""Cache wiring: mesh.v1.cache.lookup and .similar, and filling from completion events.

Every cache replica subscribes to completion events without a queue group, so
each replica's in-process tier learns every cacheable answer.
"""

from __future__ import annotations

import msgspec
import structlog
from nats.aio.msg import Msg

from services.cache.similar import SimilarIndex
from services.cache.store import MemoryTier
from shared.headers import RequestContext
from shared.runtime import Env, Running
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import CacheLookup, CacheResult, SimilarLookup
from shared.subjects import CACHE, EV_COMPLETION, OP_LOOKUP, OP_SIMILAR

log = structlog.get_logger("lockgate.cache")
_MISS = CacheResult()


async def start(env: Env) -> Running:
    tier = MemoryTier(ttl_s=env.config.cache.ttl_s, max_entries=env.config.cache.max_entries)
    stage = env.stage(CACHE, "exact-match answers for repeatable requests, per tenant")
    events = msgspec.json.Decoder(CompletionEvent)

    similar = SimilarIndex(ttl_s=env.config.cache.ttl_s, max_per_scope=min(1_000, env.config.cache.max_entries))

    async def lookup_similar(req: SimilarLookup, _: RequestContext) -> CacheResult:
        found = similar.best(req.tenant, req.route, req.fingerprint, req.min_similarity)
        return CacheResult(hit="semantic", completion=found[1]) if found is not None else _MISS

    async def lookup(req: CacheLookup, _: RequestContext) -> CacheResult:
        found = await tier.get(req.tenant, req.key)
        return CacheResult(hit="exact", completion=found) if found is not None else _MISS

    async def fill(msg: Msg) -> None:
        try:
            ev = events.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("bad_completion_event", subject=msg.subject)
            return
        if ev.outcome == "completed" and ev.cache_key and ev.completion is not None:
            await tier.put(ev.tenant, ev.cache_key, ev.completion)
            similar.put(ev.tenant, ev.route, ev.fingerprint, ev.completion)

    await stage.start()
    group = stage.group(env.names.mesh_group(CACHE))
    await stage.add_typed(group, name=OP_LOOKUP, req_type=CacheLookup, handler=lookup)
    await stage.add_typed(group, name=OP_SIMILAR, req_type=SimilarLookup, handler=lookup_similar)
    sub = await env.nc.subscribe(env.names.events_of(EV_COMPLETION), cb=fill)
    return Running(CACHE, stage, cleanups=[sub.unsubscribe])
