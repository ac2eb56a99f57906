"""`lockgate serve NAME`: one service against an existing NATS (what compose runs)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import msgspec
import structlog

from services import host
from services.simulator.server import SimulatorServer
from shared import config as cfgmod
from shared import logging as lglog
from shared.runtime import connect

log = structlog.get_logger("lockgate.serve")


async def run(name: str, nats_url: str | None, config_path: Path | None, host_: str, port: int | None) -> int:
    config = cfgmod.load(config_path)
    lglog.configure(config.gateway.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    if name == "simulator":
        sim_cfg = config.simulator
        sim_cfg = msgspec.structs.replace(sim_cfg, host=host_, port=port if port is not None else sim_cfg.port)
        sim = SimulatorServer(sim_cfg)
        url = await sim.start()
        print(f"simulator {url}", flush=True)
        await stop.wait()
        await sim.stop()
        return 0

    url = nats_url or config.nats.url
    nc = await connect(url, f"lockgate-{name}")
    running = await host.start(nc, config, [name])
    ids = [r.stage.service.id for r in running if r.stage is not None]
    log.info("service_started", service=name, nats=url.split("@")[-1], instance=",".join(ids))
    await stop.wait()
    log.info("service_stopping", service=name)
    await host.stop(running)
    with contextlib.suppress(Exception):
        await nc.drain()
    return 0
