"""``POST /v1/chat/completions`` and ``GET /v1/models`` in OpenAI's wire format.

Non-streamed: the guard's reply already is a ``chat.completion`` (plus the
``lockgate`` block the SDK ignores), so its bytes are the response body.
Streamed: ``data: <chat.completion.chunk>`` events as the mesh's chunks arrive,
then a chunk with the finish reason, then (``stream_options.include_usage``) a
chunk with empty ``choices`` and the usage, then ``data: [DONE]``. An error
before the first chunk is an ordinary HTTP error; after it, an ``error`` event.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec
from aiohttp import web

from services.http import errors as http_errors
from services.http.bridge import INFO, PEEK
from services.http.door import Door
from shared import bus
from shared.errors import DECODE_ERRORS, InvalidRequest, LockgateError, validation_message
from shared.schemas.chat import ChatChunk, StreamDone
from shared.subjects import HTTP

_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
DISCONNECTED = ConnectionError  # aiohttp raises ClientConnectionResetError, a ConnectionResetError


def _sse(obj: Any) -> bytes:
    return b"data: " + bus.encode(obj) + b"\n\n"


async def chat_completions(door: Door, request: web.Request) -> web.StreamResponse:
    rid = door.request_id(request)
    t0 = time.perf_counter()
    stream = False
    door.metrics.in_flight.inc()
    status = 200
    try:
        body = await door.body(request)
        try:
            peek = PEEK.decode(body)
        except DECODE_ERRORS as exc:
            raise InvalidRequest(f"invalid request: {validation_message(exc)}", stage=HTTP) from None
        stream = peek.stream
        key = door.api_key(request)
        if stream:
            usage = peek.stream_options is not None and peek.stream_options.include_usage
            return await _stream(door, request, body, key, rid, usage, t0)
        data = await door.bridge.chat(body, key, rid, door.forward(request))
        try:
            info = INFO.decode(data).lockgate
        except (msgspec.ValidationError, msgspec.DecodeError):
            info = None
        return web.Response(body=data, content_type="application/json", headers=door.info_headers(rid, info))
    except LockgateError as err:
        status = http_errors.status_of(err)
        door.metrics.errors.labels(err.type).inc()
        return http_errors.openai_response(err, rid)
    finally:
        door.metrics.in_flight.dec()
        door.metrics.requests.labels("chat_completions", str(status)).inc()
        door.metrics.latency.labels("chat_completions", str(stream).lower()).observe(time.perf_counter() - t0)


async def _stream(
    door: Door, request: web.Request, body: bytes, key: str | None, rid: str, include_usage: bool, t0: float
) -> web.StreamResponse:
    chat_stream, it, first, resp = await door.open_stream(body, key, rid, door.forward(request))
    try:
        await resp.prepare(request)
        if first is not None:
            await resp.write(_sse(first))
            door.metrics.ttft.labels("chat_completions").observe(time.perf_counter() - t0)
            async for chunk in it:
                await resp.write(_sse(chunk))
        done = chat_stream.done
        if done is not None:
            for event in _tail(done, first, include_usage):
                await resp.write(_sse(event))
        await resp.write(b"data: [DONE]\n\n")
    except LockgateError as err:
        door.metrics.errors.labels(err.type).inc()
        await _write_quietly(resp, _sse(http_errors.openai_body(err, rid)))
    except DISCONNECTED:
        await door.disconnected("chat_completions", rid)
    finally:
        await it.aclose()
    return resp


def _tail(done: StreamDone, first: ChatChunk | None, include_usage: bool) -> list[dict[str, Any]]:
    created = first.created if first is not None else int(time.time())
    base = {"id": done.id, "object": "chat.completion.chunk", "created": created, "model": done.model}
    finish = done.finish_reason if done.finish_reason in _FINISH else "stop"
    last: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None}]}
    lockgate = msgspec.to_builtins(done.lockgate)
    if not include_usage:
        return [{**last, "lockgate": lockgate}]
    return [last, {**base, "choices": [], "usage": msgspec.to_builtins(done.usage), "lockgate": lockgate}]


async def _write_quietly(resp: web.StreamResponse, data: bytes) -> None:
    with contextlib.suppress(DISCONNECTED):
        await resp.write(data)


async def models(door: Door, request: web.Request) -> web.Response:
    rid = door.request_id(request)
    try:
        listing = await door.bridge.models(door.api_key(request), rid)
    except LockgateError as err:
        door.metrics.requests.labels("models", str(http_errors.status_of(err))).inc()
        return http_errors.openai_response(err, rid)
    door.metrics.requests.labels("models", "200").inc()
    return web.Response(body=bus.encode(listing), content_type="application/json", headers=door.info_headers(rid, None))
