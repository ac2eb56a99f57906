"""The exact cache: repeatable requests are answered once per tenant, never across tenants."""

from __future__ import annotations

import asyncio
import uuid

from services.simulator.server import SimulatorServer
from shared import bus
from shared.client import LockgateClient
from shared.schemas.chat import ChatRequest, ChatResponse
from tests.conftest import Mesh
from tests.integration.test_mesh_basic import ask, eventually


def provider_calls(sim: SimulatorServer) -> int:
    return int(sim.stats["by_endpoint"].get("chat.completions", 0)) + int(sim.stats["by_endpoint"].get("messages", 0))


def unique(text: str, **kw: object) -> ChatRequest:
    """A prompt no other test sends (the simulator and the mesh are shared per session)."""
    return ask(f"{text} {uuid.uuid4().hex}", **kw)


async def cached_reply(client: LockgateClient, req: ChatRequest) -> ChatResponse | None:
    """The cache fills from the completion event asynchronously: ask until it answers."""
    reply = await client.chat(req)
    return reply if reply.lockgate.cached == "exact" else None


async def test_identical_deterministic_request_is_answered_from_the_cache(
    mesh: Mesh, simulator: SimulatorServer
) -> None:
    req = unique("Cache me", model="gpt-4o-mini", temperature=0)
    first = await mesh.client.chat(req)
    assert first.lockgate.cached == ""
    calls = provider_calls(simulator)
    second = await eventually(lambda: cached_reply(mesh.client, req))
    assert provider_calls(simulator) == calls  # the provider was not asked again
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage == first.usage
    assert second.lockgate.deployment == first.lockgate.deployment
    assert second.lockgate.cost_usd == 0
    assert second.lockgate.attempts == []
    assert second.lockgate.request_id != first.lockgate.request_id


async def test_cached_answer_streams_too(mesh: Mesh) -> None:
    req = unique("Cache me for a stream", model="claude-3-5-haiku", temperature=0)
    first = await mesh.client.chat(req)
    await eventually(lambda: cached_reply(mesh.client, req))
    stream = await mesh.client.stream(req)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert stream.done is not None
    assert stream.done.lockgate.cached == "exact"
    assert text == first.choices[0].message.content


async def test_another_tenant_does_not_see_the_cached_answer(mesh: Mesh, simulator: SimulatorServer) -> None:
    req = unique("Tenant scoped", model="gpt-4o-mini", temperature=0)
    await mesh.client.chat(req)
    await eventually(lambda: cached_reply(mesh.client, req))  # dev's cache now holds it
    acme = LockgateClient(mesh.client.nc, await mesh.add_key("acme", ["*"]), names=mesh.names)
    calls = provider_calls(simulator)
    reply = await acme.chat(req)
    assert reply.lockgate.cached == ""
    assert provider_calls(simulator) == calls + 1
    # ... and acme's own repeat is then cached for acme.
    again = await eventually(lambda: cached_reply(acme, req))
    assert again.choices[0].message.content == reply.choices[0].message.content


async def settle_events(mesh: Mesh) -> None:
    """A cacheable request after the ones under test: once it is cached, earlier events were seen too."""
    marker = unique("marker", model="gpt-4o-mini", temperature=0)
    await mesh.client.chat(marker)
    await eventually(lambda: cached_reply(mesh.client, marker))


async def test_non_zero_temperature_is_never_cached(mesh: Mesh, simulator: SimulatorServer) -> None:
    req = unique("Be creative", model="gpt-4o-mini", temperature=0.7)
    await mesh.client.chat(req)
    await settle_events(mesh)
    calls = provider_calls(simulator)
    for _ in range(3):
        reply = await mesh.client.chat(req)
        assert reply.lockgate.cached == ""
    assert provider_calls(simulator) == calls + 3


async def test_no_temperature_is_not_cached(mesh: Mesh) -> None:
    req = unique("Default temperature", model="gpt-4o-mini")
    await mesh.client.chat(req)
    await settle_events(mesh)
    assert (await mesh.client.chat(req)).lockgate.cached == ""


async def test_cache_off_is_not_cached(mesh: Mesh, simulator: SimulatorServer) -> None:
    req = unique("Fresh please", model="gpt-4o-mini", temperature=0, lockgate={"cache": "off"})
    await mesh.client.chat(req)
    await settle_events(mesh)
    calls = provider_calls(simulator)
    reply = await mesh.client.chat(req)
    assert reply.lockgate.cached == ""
    assert provider_calls(simulator) == calls + 1


async def test_failed_request_is_not_cached(mesh: Mesh) -> None:
    req = unique("Dead end", model="dead-gpt", temperature=0)
    for _ in range(2):
        msg = await mesh.client.chat_raw(bus.encode(req))
        assert b"upstream_unavailable" in msg.data
    await settle_events(mesh)
    msg = await mesh.client.chat_raw(bus.encode(req))
    assert b"upstream_unavailable" in msg.data


async def test_concurrent_identical_requests_all_answer(mesh: Mesh) -> None:
    req = unique("Together", model="gpt-4o-mini", temperature=0)
    replies = await asyncio.gather(*(mesh.client.chat(req) for _ in range(5)))
    assert len({r.choices[0].message.content for r in replies}) == 1
