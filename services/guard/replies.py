"""Building and sending what the client receives."""

from __future__ import annotations

import time

from nats.aio.client import Client

from shared import bus, headers
from shared.errors import LockgateError
from shared.schemas.chat import (
    AssistantMessage,
    ChatChunk,
    ChatResponse,
    Choice,
    ChunkChoice,
    ChunkDelta,
    LockgateInfo,
    StreamDone,
    ToolCall,
    Usage,
)


def completion(
    rid: str, model: str, content: str | None, tool_calls: list[ToolCall] | None, finish: str | None,
    usage: Usage, info: LockgateInfo,
) -> ChatResponse:  # fmt: skip
    return ChatResponse(
        id=rid,
        created=int(time.time()),
        model=model,
        choices=[Choice(message=AssistantMessage(content=content, tool_calls=tool_calls), finish_reason=finish)],
        usage=usage,
        lockgate=info,
    )


async def send_completion(nc: Client, inbox: str, resp: ChatResponse, request_id: str) -> None:
    await nc.publish(inbox, bus.encode(resp), headers={headers.REQUEST_ID: request_id})


async def send_chunk(nc: Client, inbox: str, rid: str, model: str, text: str, seq: int, request_id: str) -> None:
    delta = ChunkDelta(role="assistant", content=text) if seq == 0 else ChunkDelta(content=text)
    chunk = ChatChunk(id=rid, created=int(time.time()), model=model, choices=[ChunkChoice(delta=delta)])
    await nc.publish(
        inbox,
        bus.encode(chunk),
        headers={headers.EVENT: headers.EVENT_CHUNK, headers.SEQ: str(seq), headers.REQUEST_ID: request_id},
    )


async def send_done(nc: Client, inbox: str, done: StreamDone, request_id: str) -> None:
    await nc.publish(
        inbox,
        bus.encode(done),
        headers={headers.EVENT: headers.EVENT_DONE, headers.SEQ: str(done.chunks), headers.REQUEST_ID: request_id},
    )


async def send_error(nc: Client, inbox: str, err: LockgateError, request_id: str) -> None:
    await nc.publish(
        inbox,
        bus.encode(err.envelope(request_id)),
        headers=bus.error_headers(err, {headers.REQUEST_ID: request_id}),
    )
