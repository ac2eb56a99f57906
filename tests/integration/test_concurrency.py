"""Endpoints serve requests concurrently: a slow provider call never holds up the next request.

nats-py awaits a subscription's callback one message at a time; ``shared.bus.Stage``
runs each request in its own task. Fifty requests to a model with 1 s of provider
latency would take 50 s one after the other; concurrently they take about 1 s.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from services.simulator.server import SimulatorServer
from shared import bus, headers
from tests.conftest import MeshFactory
from tests.integration.test_mesh_basic import ask

N = 50
TIMEOUT_S = 30.0  # generous: the point is that they do not need it


@pytest.mark.slow
async def test_fifty_slow_requests_run_concurrently(mesh_factory: MeshFactory, simulator: SimulatorServer) -> None:
    mesh = await mesh_factory()
    before = simulator.stats["by_profile"].get("slow", 0)
    t0 = time.monotonic()
    replies = await asyncio.gather(
        *(mesh.client.chat(ask(f"Slow request {i}", model="slow-gpt"), timeout_s=TIMEOUT_S) for i in range(N))
    )
    elapsed = time.monotonic() - t0
    assert len(replies) == N
    assert all(r.choices[0].message.content for r in replies)
    assert all(r.lockgate.deployment == "sim-gpt-slow" for r in replies)
    assert len({r.lockgate.request_id for r in replies}) == N
    assert simulator.stats["by_profile"].get("slow", 0) - before == N  # each one reached the provider
    assert elapsed >= 1.0  # the provider's latency is real ...
    assert elapsed < 6.0, f"{N} requests took {elapsed:.1f} s: endpoints are not concurrent"


@pytest.mark.slow
async def test_fifty_slow_streams_run_concurrently(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()

    async def one(i: int) -> str:
        stream = await mesh.client.stream(ask(f"Slow stream {i}", model="slow-gpt"), timeout_s=TIMEOUT_S)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert stream.done is not None
        assert stream.done.chunks > 0
        return text

    t0 = time.monotonic()
    texts = await asyncio.gather(*(one(i) for i in range(N)))
    elapsed = time.monotonic() - t0
    assert all(t.startswith("Simulated reply:") for t in texts)
    assert elapsed < 6.0, f"{N} streams took {elapsed:.1f} s"


@pytest.mark.slow
async def test_a_burst_from_one_budgeted_tenant_is_all_admitted(mesh_factory: MeshFactory) -> None:
    """Every request reserves on the same budget key; contention must not turn into refusals."""
    mesh = await mesh_factory()
    assert mesh.config.tenants["dev"].daily_budget_usd is not None
    msgs = await asyncio.gather(
        *(
            mesh.client.chat_raw(bus.encode(ask(f"Burst {i}", model="gpt-4o-mini")), timeout_s=TIMEOUT_S)
            for i in range(300)
        )
    )
    refused = [m.data[:300] for m in msgs if m.headers and headers.SERVICE_ERROR_CODE in m.headers]
    assert refused == []
