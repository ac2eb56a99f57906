"""Guard wiring: llm.v1.chat, llm.v1.jobs.submit and llm.v1.jobs.status; the approvals bucket."""

from __future__ import annotations

from services.guard.approvals import Gate
from services.guard.handlers import Guard
from services.guard.jobs import JobDesk
from services.guard.rates import BUCKET_TTL_S, RateLimiter
from shared import approvals, jetstream, jobstore
from shared.keys import KeyStore
from shared.owners import Owners
from shared.runtime import Env, Running
from shared.subjects import BUDGETER, GUARD, OP_MEMBERS


async def start(env: Env) -> Running:
    bucket = await jetstream.ensure_bucket(env.js, env.names.keys_bucket)
    await jetstream.ensure_events(env.js, env.names)
    rates = RateLimiter(await jetstream.ensure_bucket(env.js, env.names.rates_bucket, ttl_s=BUCKET_TTL_S), env.config)
    stage = env.stage(GUARD, "admits chat requests and drives the stages")
    budget_owners = Owners(env.nc, env.names.mesh(BUDGETER, OP_MEMBERS))  # a tenant's reservations go to one replica
    await budget_owners.start()
    gate = Gate(env.config.approvals, approvals.ApprovalStore(await approvals.ensure(env.js, env.names)))
    guard = Guard(
        env.nc,
        env.js,
        env.config,
        env.names,
        KeyStore(env.config, bucket),
        gate,
        on_error=stage.record_error,
        rates=rates,
        budget_owners=budget_owners,
    )
    await stage.start()
    await stage.add_raw(stage.service, name="chat", subject=env.names.chat, handler=guard.chat)
    store = jobstore.JobStore(await jobstore.ensure(env.js, env.names, env.config.jobs))
    desk = JobDesk(stage, env.js, env.config, env.names, guard.keys, bucket, store)
    await stage.add_raw(stage.service, name="jobs-submit", subject=env.names.jobs_submit, handler=desk.submit)
    await stage.add_raw(stage.service, name="jobs-status", subject=env.names.jobs_status, handler=desk.status)
    return Running(GUARD, stage, cleanups=[guard.moderation.close, budget_owners.stop])
