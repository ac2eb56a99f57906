"""Chat through both wire formats (OpenAI and Anthropic SDKs), plain and streamed."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from nats.aio.msg import Msg

from shared import bus, headers
from shared.schemas.chat import ChatChunk, ChatRequest, Message, StreamDone
from tests.conftest import Mesh
from tests.integration.test_mesh_basic import ask

MODELS = [
    pytest.param("gpt-4o-mini", "sim-gpt", "sim-openai", id="openai"),
    pytest.param("claude-3-5-haiku", "sim-claude", "sim-anthropic", id="anthropic"),
]


async def stream_raw(mesh: Mesh, req: ChatRequest, timeout_s: float = 10.0) -> list[Msg]:
    """Publish with our own inbox and collect every message up to (and incl.) done/error, in arrival order."""
    inbox = mesh.client.nc.new_inbox()
    got: list[Msg] = []
    finished = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        got.append(msg)
        if (msg.headers or {}).get(headers.EVENT) in (headers.EVENT_DONE, headers.EVENT_ERROR):
            finished.set()

    sub = await mesh.client.nc.subscribe(inbox, cb=on_msg)
    h = {
        headers.AUTHORIZATION: f"Bearer {mesh.dev_key}",
        headers.DEADLINE: str(headers.now_ms() + int(timeout_s * 1000)),
    }
    await mesh.client.nc.publish(mesh.names.chat, bus.encode(req), reply=inbox, headers=h)
    try:
        await asyncio.wait_for(finished.wait(), timeout_s)
        await asyncio.sleep(0.05)  # anything after the end would be a bug: give it a moment to show
    finally:
        await sub.unsubscribe()
    return got


@pytest.mark.parametrize(("model", "deployment", "provider"), MODELS)
async def test_plain_reply_through_each_sdk(mesh: Mesh, model: str, deployment: str, provider: str) -> None:
    reply = await mesh.client.chat(ask("Tell me about canals", model=model))
    assert reply.model == model
    text = reply.choices[0].message.content
    assert text is not None
    assert text.startswith("Simulated reply:")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    assert reply.lockgate.deployment == deployment
    assert reply.lockgate.provider == provider
    assert reply.lockgate.fallbacks == 0
    assert reply.lockgate.cost_usd > 0
    assert reply.id == f"chatcmpl-{reply.lockgate.request_id}"


@pytest.mark.parametrize(("model", "deployment", "provider"), MODELS)
async def test_stream_matches_plain_reply(mesh: Mesh, model: str, deployment: str, provider: str) -> None:
    req = ask("Stream me a story about a lock keeper", model=model)
    plain = await mesh.client.chat(req)

    stream = await mesh.client.stream(req)
    chunks = [c async for c in stream]
    done = stream.done
    assert done is not None
    assert len(chunks) == done.chunks > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content
    assert done.usage == plain.usage
    assert done.finish_reason == "stop"
    assert done.model == model
    assert done.lockgate.deployment == deployment
    assert done.lockgate.provider == provider
    assert done.lockgate.cost_usd == pytest.approx(plain.lockgate.cost_usd)
    assert done.lockgate.attempts[0].outcome == "ok"


@pytest.mark.parametrize(("model", "deployment", "provider"), MODELS)
async def test_stream_chunks_arrive_numbered_in_order_then_one_done(
    mesh: Mesh, model: str, deployment: str, provider: str
) -> None:
    msgs = await stream_raw(mesh, ask("Count the locks on the canal", model=model, stream=True))
    kinds = [(m.headers or {}).get(headers.EVENT) for m in msgs]
    assert kinds[-1] == headers.EVENT_DONE
    assert kinds.count(headers.EVENT_DONE) == 1
    assert headers.EVENT_ERROR not in kinds
    chunk_msgs = msgs[:-1]
    assert chunk_msgs
    assert all(k == headers.EVENT_CHUNK for k in kinds[:-1])
    assert [int(m.headers[headers.SEQ]) for m in chunk_msgs] == list(range(len(chunk_msgs)))
    rid = {m.headers[headers.REQUEST_ID] for m in msgs}
    assert len(rid) == 1  # every event names the same request
    chunks = [msgspec.json.decode(m.data, type=ChatChunk) for m in chunk_msgs]
    assert {c.id for c in chunks} == {f"chatcmpl-{rid.pop()}"}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    done = msgspec.json.decode(msgs[-1].data, type=StreamDone)
    assert done.chunks == len(chunks)
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens > 0
    assert done.lockgate.deployment == deployment
    assert done.lockgate.cost_usd > 0


async def test_request_without_model_uses_the_default_route(mesh: Mesh) -> None:
    assert mesh.config.gateway.default_route == "default"
    reply = await mesh.client.chat(ChatRequest(messages=[Message(role="user", content="Which model are you?")]))
    assert reply.lockgate.route == "default"
    # The default route's first model answers.
    first_model = mesh.config.routes["default"].models[0]
    assert reply.model == first_model
    assert reply.lockgate.deployment in mesh.config.models[first_model].deployments


async def test_route_asked_for_by_name_in_model(mesh: Mesh) -> None:
    reply = await mesh.client.chat(ask("Hi", model="cheap"))
    assert reply.lockgate.route == "cheap"
    assert reply.model == "gpt-4o-mini"


async def test_system_message_is_passed_to_anthropic(mesh: Mesh) -> None:
    req = ChatRequest(
        model="claude-3-5-haiku",
        messages=[Message(role="system", content="Be brief."), Message(role="user", content="Hello")],
    )
    reply = await mesh.client.chat(req)
    assert reply.choices[0].message.content
    alone = await mesh.client.chat(ask("Hello", model="claude-3-5-haiku"))
    # The system prompt counts towards the prompt tokens the provider saw.
    assert reply.usage.prompt_tokens > alone.usage.prompt_tokens
