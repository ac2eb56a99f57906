"""`lockgate up`: the whole mesh on the embedded default.

Starts a nats-server with JetStream (data under ``--data-dir``), the simulated
provider when simulation is active, and all services incl. the HTTP door (in this process,
or one process each with ``--split``). Prints ``KEY=value`` lines a script can
read, then ``READY`` once every service answers ``$SRV.PING``. SIGINT/SIGTERM
drain and stop everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import nats
import structlog

from services import host
from services.cli.discovery import wait_for
from services.registry import SERVICES
from services.simulator.server import SimulatorServer
from shared import config as cfgmod
from shared import jetstream, keys
from shared import logging as lglog
from shared.nats_server import NatsServer
from shared.runtime import Running
from shared.subjects import Names

log = structlog.get_logger("lockgate.up")


@dataclass(frozen=True)
class UpOptions:
    config_path: Path | None
    dev_key: str | None
    split: bool
    data_dir: Path
    nats_port: int
    simulator_url: str | None  # use a simulator that is already running
    http_port: int = -1  # the HTTP door's port; -1: pick a free one
    ready_timeout_s: float = 30.0


def say(key: str, value: str) -> None:
    print(f"{key}={value}", flush=True)


async def run(opts: UpOptions) -> int:
    config = cfgmod.load(opts.config_path)
    lglog.configure(config.gateway.log_level, stream=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    server = NatsServer(opts.data_dir / "nats", port=opts.nats_port)
    sim: SimulatorServer | None = None
    children: list[asyncio.subprocess.Process] = []
    running: list[Running] = []
    nc = None
    try:
        url = await server.start()
        config = _with_nats(config, url)
        sim_url = opts.simulator_url
        if cfgmod.simulation_active(config) and sim_url is None:
            sim = SimulatorServer(config.simulator)
            sim_url = await sim.start()
        if sim_url:
            config = cfgmod.with_simulator_url(config, sim_url)
        config = _with_http_port(config, opts.http_port)
        effective = opts.data_dir / "effective.toml"
        effective.write_bytes(cfgmod.encode(config))

        nc = await nats.connect(url, name="lockgate-up", max_reconnect_attempts=-1)
        names = Names(config.nats.namespace)
        await jetstream.ensure_all(nc.jetstream(), names)
        dev_key = opts.dev_key or keys.generate()
        bucket = await jetstream.ensure_bucket(nc.jetstream(), names.keys_bucket)
        await keys.register(bucket, dev_key, keys.Principal(key_id="dev", tenant="dev"))

        say("NATS_URL", url)
        say("SIMULATOR_URL", sim_url or "")
        say("LOCKGATE_API_KEY", dev_key)
        say("HTTP_URL", f"http://{config.http.host}:{config.http.port}")
        if opts.split:
            for name in SERVICES:
                children.append(await _spawn(name, url, effective))
        else:
            running = await host.start(nc, config, list(SERVICES))
        await wait_for(nc, set(SERVICES), opts.ready_timeout_s)
        say("READY", f"{len(SERVICES)} services" + (" (split)" if opts.split else ""))
        if opts.split:
            waiters = [asyncio.create_task(c.wait()) for c in children]
            stopper = asyncio.create_task(stop.wait())
            _done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not stop.is_set():
                log.error("service_process_exited", pids=[c.pid for c in children if c.returncode is not None])
                return 1
        else:
            await stop.wait()
        return 0
    finally:
        log.info("stopping")
        await host.stop(running)
        await _stop_children(children)
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.drain()
        if sim is not None:
            await sim.stop()
        await server.stop()
        print("STOPPED", flush=True)


def _with_nats(config: cfgmod.LockgateConfig, url: str) -> cfgmod.LockgateConfig:
    import msgspec  # noqa: PLC0415

    return msgspec.structs.replace(config, nats=msgspec.structs.replace(config.nats, url=url))


def _with_http_port(config: cfgmod.LockgateConfig, port: int) -> cfgmod.LockgateConfig:
    """A fixed port, or (-1) a free one chosen now so that --split children and HTTP_URL agree."""
    import msgspec  # noqa: PLC0415

    if port < 0:
        with socket.socket() as s:
            s.bind((config.http.host, 0))
            port = s.getsockname()[1]
    return msgspec.structs.replace(config, http=msgspec.structs.replace(config.http, port=port))


async def _spawn(name: str, url: str, config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", name, "--nats", url, "--config", str(config),
        stdout=sys.stderr.fileno(),  # service logs go to our stderr; stdout stays script-readable
    )  # fmt: skip


async def _stop_children(children: list[asyncio.subprocess.Process], timeout_s: float = 10.0) -> None:
    for c in children:
        if c.returncode is None:
            c.send_signal(signal.SIGTERM)
    for c in children:
        try:
            await asyncio.wait_for(c.wait(), timeout_s)
        except TimeoutError:
            c.kill()
            await c.wait()
