"""The whole path over a real nats-server, through the real SDKs, to the simulator."""

from __future__ import annotations

from shared.schemas.chat import ChatRequest, Message
from tests.conftest import Mesh


def ask(text: str, **kw: object) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kw)  # type: ignore[arg-type]


async def test_non_streaming_openai_reply_carries_lockgate_block(mesh: Mesh) -> None:
    reply = await mesh.client.chat(ask("Hello there", model="gpt-4o-mini"))
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content.startswith("Simulated reply")
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0
    info = reply.lockgate
    assert info.deployment == "sim-gpt"
    assert info.provider == "sim-openai"
    assert info.cost_usd > 0
    assert info.attempts[0].outcome == "ok"
    assert {"router", "budgeter", "executor", "total"} <= set(info.latency_ms)
