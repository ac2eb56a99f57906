"""Start a set of mesh services on one connection and stop them in reverse order."""

from __future__ import annotations

from nats.aio.client import Client

from services.registry import SERVICES
from shared import jetstream
from shared.config import LockgateConfig
from shared.runtime import Env, Running
from shared.subjects import EXECUTOR, OP_CANCEL, Names


class UnknownService(ValueError):
    pass


async def start(nc: Client, config: LockgateConfig, names: list[str]) -> list[Running]:
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise UnknownService(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    env = Env(nc=nc, js=nc.jetstream(), config=config, names=Names(config.nats.namespace))
    await jetstream.ensure_all(env.js, env.names)
    started: list[Running] = []
    try:
        for name in SERVICES:  # registry order, whatever order they were asked in
            if name in names:
                started.append(await SERVICES[name](env))
                running = started[-1]
                if name == EXECUTOR and running.stage is not None:  # the stage holding the provider call
                    await running.stage.cancel_on(env.names.mesh(EXECUTOR, OP_CANCEL))
    except BaseException:
        await stop(started)
        raise
    return started


async def stop(running: list[Running]) -> None:
    # The guard first (stop taking requests), then the stages it calls.
    for r in reversed(running):
        await r.stop()
