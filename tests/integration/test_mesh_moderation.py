"""Output moderation through a provider's /v1/moderations, end to end through the mesh.

The simulator's moderation endpoint flags a small word list (docs/simulator.md);
``[sim:output=echo]`` makes the simulated model say the user's words back.
"""

from __future__ import annotations

import msgspec
import pytest

from services.simulator.server import SimulatorServer
from shared import bus
from shared.schemas.chat import ChatRequest, LockgateOptions, Message
from tests.conftest import Mesh, MeshFactory
from tests.integration.test_mesh_audit import audit_records
from tests.integration.test_mesh_basic import error_of, eventually, raw_chat

FLAGGED = "[sim:output=echo] You idiot, I will hurt you."
POLICY = """
[routes.checked]
models = ["gpt-4o-mini"]

[security.routes.checked]
moderation = "sim-openai"

[routes.checked-down]
models = ["gpt-4o-mini"]

[security.routes.checked-down]
moderation = "sim-down"

[routes.checked-hang]
models = ["gpt-4o-mini"]

[security.routes.checked-hang]
moderation = "sim-hang"
moderation_timeout_ms = 300
"""


def _on(route: str, text: str, **kw: object) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], lockgate=LockgateOptions(route=route), **kw)  # type: ignore[arg-type]


async def test_a_flagged_answer_is_blocked_output_naming_the_categories_not_the_text(
    mesh_factory: MeshFactory,
) -> None:
    mesh = await mesh_factory(extra_toml=POLICY)
    body = error_of(await raw_chat(mesh, bus.encode(_on("checked", FLAGGED))), "blocked_output")
    assert "harassment" in body.message
    assert "violence" in body.message
    assert "idiot" not in body.message.casefold()
    assert not body.retryable
    [(_, rec)] = await audit_records(mesh, 1)
    assert rec.error_type == "blocked_output"
    assert {"moderation:harassment", "moderation:violence"} <= set(rec.security)
    assert "idiot" not in rec.error_message.casefold()


async def test_the_same_words_pass_on_a_route_without_moderation(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=POLICY)
    reply = await mesh.client.chat(_on("cheap", FLAGGED))
    assert reply.choices[0].message.content == "You idiot, I will hurt you."
    assert "moderation" not in reply.lockgate.latency_ms


async def test_a_clean_answer_passes_moderation(mesh_factory: MeshFactory, simulator: SimulatorServer) -> None:
    mesh = await mesh_factory(extra_toml=POLICY)
    before = simulator.stats["by_endpoint"].get("moderations", 0)
    reply = await mesh.client.chat(_on("checked", "Say something nice"))
    assert (reply.choices[0].message.content or "").startswith("Simulated reply:")
    assert not [f for f in reply.lockgate.security if f.startswith("moderation:")]
    assert "moderation" in reply.lockgate.latency_ms
    assert simulator.stats["by_endpoint"].get("moderations", 0) > before


@pytest.mark.parametrize(
    ("route", "provider", "why"),
    [("checked-down", "sim-down", "answered HTTP 503"), ("checked-hang", "sim-hang", "did not answer within 300 ms")],
)
async def test_a_failing_moderation_endpoint_refuses_the_answer(
    mesh_factory: MeshFactory, route: str, provider: str, why: str
) -> None:
    """Fail closed: stage_unavailable naming the moderation provider; the unjudged answer never goes out."""
    mesh = await mesh_factory(extra_toml=POLICY)
    msg = await raw_chat(mesh, bus.encode(_on(route, "Say something")))
    body = error_of(msg, "stage_unavailable")
    assert provider in body.message
    assert why in body.message
    assert body.retryable
    assert b"Simulated reply" not in msg.data
    [(_, rec)] = await audit_records(mesh, 1)
    assert rec.error_type == "stage_unavailable"


async def test_a_cached_answer_is_moderated_too(mesh_factory: MeshFactory, simulator: SimulatorServer) -> None:
    mesh = await mesh_factory(extra_toml=POLICY)
    req = _on("checked", "A cacheable question", temperature=0)
    first = await mesh.client.chat(req)
    assert not first.lockgate.cached

    async def cached() -> bool:
        before = simulator.stats["by_endpoint"].get("moderations", 0)
        reply = await mesh.client.chat(req)
        if not reply.lockgate.cached:
            return False
        assert reply.choices[0].message.content == first.choices[0].message.content
        assert "moderation" in reply.lockgate.latency_ms
        assert simulator.stats["by_endpoint"].get("moderations", 0) == before + 1  # judged again on the way out
        return True

    await eventually(cached, timeout_s=5.0)


async def test_a_stream_on_a_moderated_route_is_refused_before_any_provider_call(
    mesh_factory: MeshFactory, simulator: SimulatorServer
) -> None:
    mesh = await mesh_factory(extra_toml=POLICY)
    before = simulator.stats["by_endpoint"].get("chat.completions", 0)
    req = msgspec.structs.replace(_on("checked", FLAGGED), stream=True)
    body = error_of(await raw_chat(mesh, bus.encode(req)), "invalid_request")
    assert "stream=false" in body.message
    assert "sim-openai" in body.message
    assert simulator.stats["by_endpoint"].get("chat.completions", 0) == before


async def test_streams_on_routes_without_moderation_still_stream(mesh: Mesh) -> None:
    stream = await mesh.client.stream(msgspec.structs.replace(_on("cheap", FLAGGED), stream=True))
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "You idiot, I will hurt you."
