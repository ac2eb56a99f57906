"""``POST /v1/messages`` in Anthropic's wire format, translated to and from ``llm.v1.chat``.

Request: ``system`` becomes a system message, text content blocks become text,
``stop_sequences`` become ``stop``, ``metadata.user_id`` becomes ``user``.
Streamed reply: ``message_start``, ``content_block_start``, ``ping``,
``content_block_delta``…, ``content_block_stop``, ``message_delta`` (stop
reason, usage), ``message_stop``; an error after the start is an ``error`` event.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec
from aiohttp import web

from services.http import errors as http_errors
from services.http.door import Door
from services.http.openai_api import DISCONNECTED
from shared import bus
from shared.errors import DECODE_ERRORS, InvalidRequest, LockgateError, validation_message
from shared.schemas.chat import ChatChunk, ChatRequest, ChatResponse, LockgateOptions, Message
from shared.subjects import HTTP

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


class TextBlock(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None


class AnthropicMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[TextBlock]


class AnthropicMetadata(msgspec.Struct, kw_only=True):
    user_id: str | None = None


class MessagesRequest(msgspec.Struct, kw_only=True):
    model: str
    max_tokens: int
    messages: list[AnthropicMessage]
    system: str | list[TextBlock] | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    metadata: AnthropicMetadata | None = None
    lockgate: LockgateOptions = LockgateOptions()


_decoder = msgspec.json.Decoder(MessagesRequest)
_reply = msgspec.json.Decoder(ChatResponse)


def _text(content: str | list[TextBlock], where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for i, block in enumerate(content):
        if block.type != "text" or block.text is None:
            raise InvalidRequest(
                f"{where}.content[{i}]: only text blocks are supported, not {block.type!r}", stage=HTTP
            )
        parts.append(block.text)
    return "".join(parts)


def to_chat(body: bytes) -> ChatRequest:
    try:
        req = _decoder.decode(body)
    except DECODE_ERRORS as exc:
        raise InvalidRequest(f"invalid request: {validation_message(exc)}", stage=HTTP) from None
    messages: list[Message] = []
    if req.system:
        messages.append(Message(role="system", content=_text(req.system, "system")))
    for i, m in enumerate(req.messages):
        if m.role not in ("user", "assistant"):
            raise InvalidRequest(f"messages[{i}].role: must be 'user' or 'assistant', not {m.role!r}", stage=HTTP)
        messages.append(Message(role=m.role, content=_text(m.content, f"messages[{i}]")))
    return ChatRequest(
        model=req.model,
        messages=messages,
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stop_sequences,
        stream=req.stream,
        user=req.metadata.user_id if req.metadata else None,
        lockgate=req.lockgate,
    )


def _msg_id(request_id: str) -> str:
    return f"msg_{request_id}"


async def messages(door: Door, request: web.Request) -> web.StreamResponse:
    rid = door.request_id(request)
    t0 = time.perf_counter()
    status = 200
    stream = False
    door.metrics.in_flight.inc()
    try:
        chat = to_chat(await door.body(request))
        stream = chat.stream
        key = door.api_key(request)
        if stream:
            return await _stream(door, request, chat, key, rid, t0)
        resp = _reply.decode(await door.bridge.chat(bus.encode(chat), key, rid, door.forward(request)))
        choice = resp.choices[0] if resp.choices else None
        out = {
            "id": _msg_id(rid),
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": choice.message.content or ""}] if choice else [],
            "model": resp.model,
            "stop_reason": _STOP.get((choice.finish_reason if choice else None) or "stop", "end_turn"),
            "stop_sequence": None,
            "usage": {"input_tokens": resp.usage.prompt_tokens, "output_tokens": resp.usage.completion_tokens},
            "lockgate": msgspec.to_builtins(resp.lockgate),
        }
        return web.Response(
            body=bus.encode(out), content_type="application/json", headers=door.info_headers(rid, resp.lockgate)
        )
    except LockgateError as err:
        status = http_errors.status_of(err)
        door.metrics.errors.labels(err.type).inc()
        return http_errors.anthropic_response(err, rid)
    finally:
        door.metrics.in_flight.dec()
        door.metrics.requests.labels("messages", str(status)).inc()
        door.metrics.latency.labels("messages", str(stream).lower()).observe(time.perf_counter() - t0)


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + bus.encode({"type": kind, **data}) + b"\n\n"


async def _stream(
    door: Door, request: web.Request, chat: ChatRequest, key: str | None, rid: str, t0: float
) -> web.StreamResponse:
    chat_stream, it, first, resp = await door.open_stream(bus.encode(chat), key, rid, door.forward(request))
    model = first.model if first is not None else (chat.model or "")
    try:
        await resp.prepare(request)
        start: dict[str, Any] = {
            "id": _msg_id(rid), "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        await resp.write(_event("message_start", {"message": start}))
        await resp.write(_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
        await resp.write(_event("ping", {}))
        if first is not None:
            await resp.write(_delta(first))
            door.metrics.ttft.labels("messages").observe(time.perf_counter() - t0)
            async for chunk in it:
                await resp.write(_delta(chunk))
        await resp.write(_event("content_block_stop", {"index": 0}))
        done = chat_stream.done
        stop = _STOP.get((done.finish_reason if done else None) or "stop", "end_turn")
        usage = {"input_tokens": done.usage.prompt_tokens, "output_tokens": done.usage.completion_tokens} if done else {
            "output_tokens": 0}  # fmt: skip
        extra = {"lockgate": msgspec.to_builtins(done.lockgate)} if done else {}
        await resp.write(
            _event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage, **extra})
        )
        await resp.write(_event("message_stop", {}))
    except LockgateError as err:
        door.metrics.errors.labels(err.type).inc()
        body = http_errors.anthropic_body(err, rid)
        with contextlib.suppress(DISCONNECTED):
            await resp.write(_event("error", {"error": body["error"]}))
    except DISCONNECTED:
        await door.disconnected("messages", rid)
    finally:
        await it.aclose()
    return resp


def _delta(chunk: ChatChunk) -> bytes:
    text = "".join(c.delta.content or "" for c in chunk.choices)
    return _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})
