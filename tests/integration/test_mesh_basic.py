"""The whole path over a real nats-server, through the real SDKs, to the simulator.

Also the small helpers the other ``test_mesh_*`` modules share: building a
request, sending raw bytes with any ``Authorization`` header, reading the
error envelope and its micro headers, and polling for an asynchronous effect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from nats.aio.msg import Msg

from shared import headers
from shared.errors import ERROR_TYPES
from shared.schemas.chat import ChatRequest, Message
from shared.schemas.errors import ErrorBody, ErrorEnvelope
from tests.conftest import Mesh

T = TypeVar("T")


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kw)


_UNSET = object()


async def raw_chat(mesh: Mesh, body: bytes, *, auth: str | object | None = _UNSET, timeout_s: float = 10.0) -> Msg:
    """A plain nats-py request to ``llm.v1.chat``; ``auth=None`` sends no Authorization header."""
    h = {
        headers.REQUEST_ID: f"raw-{time.monotonic_ns()}",
        headers.DEADLINE: str(headers.now_ms() + int(timeout_s * 1000)),
    }
    value = f"Bearer {mesh.dev_key}" if auth is _UNSET else auth
    if value is not None:
        h[headers.AUTHORIZATION] = str(value)
    return await mesh.nc.request(mesh.names.chat, body, timeout=timeout_s + 1.0, headers=h)


def error_of(msg: Msg, expected_type: str) -> ErrorBody:
    """Check the envelope and the micro headers agree, and return the body."""
    h = msg.headers or {}
    assert headers.SERVICE_ERROR_CODE in h, f"not an error reply: {msg.data[:200]!r}"
    body = msgspec.json.decode(msg.data, type=ErrorEnvelope).error
    raw = msgspec.json.decode(msg.data)
    assert set(raw) == {"error"}
    # A stable shape for clients in any language: every field is always present.
    assert {"type", "message", "retryable", "retry_after_ms", "request_id", "stage"} <= set(raw["error"])
    assert isinstance(raw["error"]["retryable"], bool)
    assert body.type in ERROR_TYPES
    assert body.type == expected_type, body
    assert body.message
    assert body.stage
    assert body.request_id == h.get(headers.REQUEST_ID, body.request_id)
    code = h[headers.SERVICE_ERROR_CODE]
    assert code.isdigit()
    assert 400 <= int(code) < 600
    line = h[headers.SERVICE_ERROR]
    assert line.startswith(f"{body.type}: ")
    assert line.isascii()
    assert "\n" not in line
    assert len(line) <= 200
    return body


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout_s: float = 5.0, interval_s: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout_s} s (last: {last!r})")
        await asyncio.sleep(interval_s)


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
