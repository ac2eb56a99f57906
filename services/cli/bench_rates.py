"""``python -m services.cli.bench_rates``: what the guard's rate check adds to a request.

One nats-server (JetStream) and the simulator at zero latency; the whole mesh in
this process, twice, in two namespaces: one without limits, one whose requests
fall under all three scopes (tenant, key of a tier, user of the tier: three KV
compare-and-sets per request, run beside the route lookup). Limits are set high
enough that nothing is refused. Prints p50/p99 of the whole request and of the
rate check alone (``lockgate.latency_ms.rates``) at each concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
import nats

from services import host
from services.simulator.server import SimulatorServer
from shared import config as cfgmod
from shared import jetstream, keys
from shared.client import LockgateClient
from shared.nats_server import NatsServer
from shared.schemas.chat import ChatRequest, Message
from shared.schemas.simulator import SimulatorConfig
from shared.subjects import Names

BASE = """
[gateway]
simulate = "always"
[providers.sim]
kind = "openai"
simulated = true
[deployments.sim-gpt]
provider = "sim"
model = "gpt-4o-mini"
[models.gpt-4o-mini]
deployments = ["sim-gpt"]
[routes.default]
models = ["gpt-4o-mini"]
"""
LIMITS = """
[tenants.bench]
rpm = 100000000
tpm = 100000000
[tiers.pro.key]
rpm = 100000000
tpm = 100000000
[tiers.pro.user]
rpm = 100000000
"""
SERVICES = ["guard", "router", "budgeter", "cache", "executor", "validator", "auditor"]


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _measure(client: LockgateClient, n: int, concurrency: int) -> tuple[list[float], list[float]]:
    total: list[float] = []
    rates: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            req = ChatRequest(messages=[Message(role="user", content=f"hello {i}")], max_tokens=16, user=f"u{i % 50}")
            t = time.perf_counter()
            resp = await client.chat(req)
            total.append((time.perf_counter() - t) * 1000)
            rates.append(resp.lockgate.latency_ms.get("rates", 0.0))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total, rates


async def run(n: int, levels: list[int]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp))
        await server.start()
        sim = SimulatorServer(SimulatorConfig())
        sim_url = await sim.start()
        started = []
        clients: dict[str, LockgateClient] = {}
        try:
            for label, extra in (("no limits", ""), ("3 scopes", LIMITS)):
                ns = "bench" + ("l" if extra else "n")
                cfg = cfgmod.with_simulator_url(cfgmod.parse(BASE + extra, "bench config"), sim_url)
                cfg = msgspec.structs.replace(cfg, nats=msgspec.structs.replace(cfg.nats, namespace=ns))
                nc = await nats.connect(server.url)
                started.append((nc, await host.start(nc, cfg, SERVICES)))
                key = keys.generate()
                bucket = await jetstream.ensure_bucket(nc.jetstream(), Names(ns).keys_bucket)
                await keys.register(bucket, key, keys.Principal(key_id="b", tenant="bench", tier="pro"))
                clients[label] = LockgateClient(await nats.connect(server.url), key, names=Names(ns))
            for c in clients.values():  # warm up connections, caches and KV keys
                await _measure(c, 50, 4)
            print(f"{'limits':<10} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'rate check p50':>15} {'p99':>7}")
            for conc in levels:
                for label, c in clients.items():
                    total, rates = await _measure(c, n, conc)
                    print(
                        f"{label:<10} {conc:>4} {statistics.median(total):>8.2f} {_pct(total, 99):>8.2f} "
                        f"{statistics.median(rates):>15.2f} {_pct(rates, 99):>7.2f}"
                    )
        finally:
            for c in clients.values():
                await c.nc.drain()
            for nc, running in started:
                await host.stop(running)
                await nc.drain()
            await sim.stop()
            await server.stop()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(args.requests, args.concurrency)))


if __name__ == "__main__":
    main()
