"""The test harness: one real nats-server and one simulated provider per session.

Each integration test gets its own mesh (all seven services, in this process,
on their own connection) in a unique namespace, so tests share the server but
never each other's subjects, streams or buckets.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from services import host
from services.simulator.server import SimulatorServer
from shared import config as cfgmod
from shared import jetstream, keys
from shared.client import LockgateClient
from shared.config import LockgateConfig
from shared.nats_server import NatsServer
from shared.runtime import Running
from shared.schemas.simulator import FaultConfig, SimulatorConfig
from shared.subjects import Names

# Real provider keys must never leak into tests: everything is simulated.
for _var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
    os.environ.pop(_var, None)

ALL = ["guard", "router", "budgeter", "cache", "executor", "validator", "auditor"]

SIM_PROFILES = {
    "slow": FaultConfig(latency_ms=1000),
    "down": FaultConfig(status=503),
    "limited": FaultConfig(status=429, retry_after_s=1),
    "hang": FaultConfig(hang=True),
    "broken": FaultConfig(malformed=True),
    "bad-json": FaultConfig(output="bad-json"),
}

# The test mesh: the default config's shape, simulated providers only, plus
# deployments that point at the simulator's fault profiles.
BASE_TOML = """
[gateway]
default_route = "default"
request_timeout_ms = 10000
simulate = "always"

[http]
port = 0

[providers.sim-openai]
kind = "openai"
simulated = true

[providers.sim-anthropic]
kind = "anthropic"
simulated = true

[providers.sim-slow]
kind = "openai"
simulated = true
profile = "slow"

[providers.sim-down]
kind = "openai"
simulated = true
profile = "down"

[providers.sim-hang]
kind = "openai"
simulated = true
profile = "hang"

[deployments.sim-gpt]
provider = "sim-openai"
model = "gpt-4o-mini"

[deployments.sim-claude]
provider = "sim-anthropic"
model = "claude-3-5-haiku-latest"

[deployments.sim-gpt-slow]
provider = "sim-slow"
model = "gpt-4o-mini"

[deployments.sim-gpt-down]
provider = "sim-down"
model = "gpt-4o-mini"

[deployments.sim-gpt-hang]
provider = "sim-hang"
model = "gpt-4o-mini"
timeout_ms = 500

[models.gpt-4o-mini]
deployments = ["sim-gpt"]
price_in_per_mtok = 0.15
price_out_per_mtok = 0.60
max_output_tokens = 16384

[models.claude-3-5-haiku]
deployments = ["sim-claude"]
price_in_per_mtok = 0.80
price_out_per_mtok = 4.00
max_output_tokens = 8192

[models.slow-gpt]
deployments = ["sim-gpt-slow"]

[models.flaky-gpt]
deployments = ["sim-gpt-down", "sim-gpt"]

[models.dead-gpt]
deployments = ["sim-gpt-down"]

[models.hanging-gpt]
deployments = ["sim-gpt-hang", "sim-gpt"]

[routes.default]
models = ["gpt-4o-mini", "claude-3-5-haiku"]

[routes.cheap]
models = ["gpt-4o-mini"]

[tenants.dev]
daily_budget_usd = 100.0

[tenants.acme]
"""

_counter = itertools.count()


@pytest.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    server = NatsServer(Path(tmp_path_factory.mktemp("nats")))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def simulator() -> AsyncIterator[SimulatorServer]:
    sim = SimulatorServer(SimulatorConfig(profiles=SIM_PROFILES))
    await sim.start()
    yield sim
    await sim.stop()


@dataclass
class Mesh:
    nc: Client
    config: LockgateConfig
    names: Names
    running: list[Running]
    dev_key: str
    client: LockgateClient
    url: str

    async def stop_service(self, name: str) -> None:
        for r in list(self.running):
            if r.name == name:
                await r.stop()
                self.running.remove(r)

    async def add_key(self, tenant: str, routes: list[str]) -> str:
        key = keys.generate()
        bucket = await jetstream.ensure_bucket(self.nc.jetstream(), self.names.keys_bucket)
        await keys.register(bucket, key, keys.Principal(key_id=f"k-{tenant}", tenant=tenant, routes=routes))
        return key


MeshFactory = Callable[..., Awaitable[Mesh]]


def make_config(sim_url: str, namespace: str, extra_toml: str = "") -> LockgateConfig:
    cfg = cfgmod.parse(BASE_TOML + extra_toml, "test config")
    cfg = cfgmod.with_simulator_url(cfg, sim_url)
    import msgspec  # noqa: PLC0415

    return msgspec.structs.replace(cfg, nats=msgspec.structs.replace(cfg.nats, namespace=namespace))


@pytest.fixture
async def mesh_factory(nats_server: NatsServer, simulator: SimulatorServer) -> AsyncIterator[MeshFactory]:
    made: list[Mesh] = []

    async def make(services: list[str] | None = None, extra_toml: str = "") -> Mesh:
        namespace = f"t{next(_counter)}{uuid.uuid4().hex[:6]}"
        config = make_config(simulator.url, namespace, extra_toml)
        nc = await nats.connect(nats_server.url, name=f"mesh-{namespace}")
        running = await host.start(nc, config, services or ALL)
        names = Names(namespace)
        dev_key = keys.generate()
        bucket = await jetstream.ensure_bucket(nc.jetstream(), names.keys_bucket)
        await keys.register(bucket, dev_key, keys.Principal(key_id="dev", tenant="dev"))
        client_nc = await nats.connect(nats_server.url, name=f"client-{namespace}")
        client = LockgateClient(client_nc, dev_key, names=names)
        m = Mesh(nc=nc, config=config, names=names, running=running, dev_key=dev_key, client=client,
                 url=nats_server.url)  # fmt: skip
        made.append(m)
        return m

    yield make
    for m in made:
        await host.stop(m.running)
        await m.client.nc.drain()
        await m.nc.drain()


@pytest.fixture
async def mesh(mesh_factory: MeshFactory) -> Mesh:
    return await mesh_factory()
