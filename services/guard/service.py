"""Guard wiring: llm.v1.chat."""

from __future__ import annotations

from services.guard.handlers import Guard
from shared import jetstream
from shared.keys import KeyStore
from shared.runtime import Env, Running
from shared.subjects import GUARD


async def start(env: Env) -> Running:
    bucket = await jetstream.ensure_bucket(env.js, env.names.keys_bucket)
    await jetstream.ensure_events(env.js, env.names)
    stage = env.stage(GUARD, "admits chat requests and drives the stages")
    guard = Guard(env.nc, env.js, env.config, env.names, KeyStore(env.config, bucket), on_error=stage.record_error)
    await stage.start()
    await stage.add_raw(stage.service, name="chat", subject=env.names.chat, handler=guard.chat)
    return Running(GUARD, stage)
