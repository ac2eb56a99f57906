"""A thin async Python client for ``llm.v1.chat``.

    async with await LockgateClient.connect("nats://127.0.0.1:4222", api_key) as lg:
        reply = await lg.chat(ChatRequest(messages=[Message(role="user", content="Hi")]))
        async for chunk in lg.stream(ChatRequest(messages=[...], stream=True)):
            print(chunk.choices[0].delta.content or "", end="")

Errors arrive as the typed ``LockgateError`` subclasses of ``shared.errors``.
Streams: chunks are yielded in sequence order; the ``StreamDone`` that ends the
stream is available as ``stream.done`` afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared import bus, errors, headers
from shared.headers import new_id, now_ms
from shared.runtime import connect_once
from shared.schemas.chat import ChatChunk, ChatRequest, ChatResponse, ModelList, StreamDone
from shared.schemas.jobs import JobAccepted, JobStatus, JobStatusRequest, JobSubmit
from shared.subjects import GUARD, Names

_chunk = msgspec.json.Decoder(ChatChunk)
_done = msgspec.json.Decoder(StreamDone)
_reply = msgspec.json.Decoder(ChatResponse)


class ChatStream:
    """Async iterator over a streamed reply's chunks; ``done`` is set at the end."""

    def __init__(self, queue: asyncio.Queue[Msg], timeout_s: float, sub: Subscription) -> None:
        self._queue = queue
        self._timeout_s = timeout_s
        self._sub = sub
        self.done: StreamDone | None = None
        self._held: dict[int, ChatChunk] = {}
        self._next = 0

    def __aiter__(self) -> AsyncIterator[ChatChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ChatChunk]:
        try:
            async for chunk in self._read():
                yield chunk
        finally:
            await self._sub.unsubscribe()

    async def _read(self) -> AsyncIterator[ChatChunk]:
        loop = asyncio.get_running_loop()
        end = loop.time() + self._timeout_s
        pending_done: StreamDone | None = None
        while True:
            if pending_done is not None and self._next >= pending_done.chunks:
                self.done = pending_done
                return
            try:
                msg = await asyncio.wait_for(self._queue.get(), max(0.0, end - loop.time()))
            except TimeoutError:
                if pending_done is not None:  # chunks lost in transit: end with what we have
                    self.done = pending_done
                    return
                raise errors.DeadlineExceeded("no end of stream before the deadline", stage="client") from None
            h = msg.headers or {}
            kind = h.get(headers.EVENT)
            if kind == headers.EVENT_CHUNK:
                self._held[int(h.get(headers.SEQ, "0"))] = _chunk.decode(msg.data)
                while self._next in self._held:
                    yield self._held.pop(self._next)
                    self._next += 1
            elif kind == headers.EVENT_DONE:
                pending_done = _done.decode(msg.data)
                # Chunks come from the executor, `done` from the guard: give late chunks a moment.
                end = min(end, loop.time() + 2.0)
            else:
                raise errors.from_reply(
                    msg.data, h.get(headers.SERVICE_ERROR_CODE), h.get(headers.SERVICE_ERROR), GUARD
                )


class LockgateClient:
    def __init__(self, nc: Client, api_key: str, *, names: Names | None = None, owns_connection: bool = False) -> None:
        self.nc = nc
        self.api_key = api_key
        self.names = names or Names()
        self._owns = owns_connection

    @classmethod
    async def connect(cls, url: str, api_key: str, *, namespace: str = "") -> LockgateClient:
        nc = await connect_once(url, "lockgate-client")
        return cls(nc, api_key, names=Names(namespace), owns_connection=True)

    async def __aenter__(self) -> LockgateClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns:
            await self.nc.drain()

    def _headers(self, timeout_s: float, request_id: str | None) -> dict[str, str]:
        return {
            headers.AUTHORIZATION: f"Bearer {self.api_key}",
            headers.REQUEST_ID: request_id or new_id(),
            headers.DEADLINE: str(now_ms() + int(timeout_s * 1000)),
        }

    async def chat_raw(self, body: bytes, *, timeout_s: float = 60.0, request_id: str | None = None) -> Msg:
        """Send raw bytes (any JSON) and return the raw reply message."""
        try:
            return await self.nc.request(
                self.names.chat, body, timeout=timeout_s + 1.0, headers=self._headers(timeout_s, request_id)
            )
        except nats.errors.NoRespondersError:
            raise errors.StageUnavailable("no guard is running", stage=GUARD) from None
        except nats.errors.TimeoutError:
            raise errors.DeadlineExceeded("no reply before the deadline", stage="client") from None

    async def chat(self, req: ChatRequest, *, timeout_s: float = 60.0, request_id: str | None = None) -> ChatResponse:
        msg = await self.chat_raw(bus.encode(req), timeout_s=timeout_s, request_id=request_id)
        h = msg.headers or {}
        if headers.SERVICE_ERROR_CODE in h:
            raise errors.from_reply(msg.data, h.get(headers.SERVICE_ERROR_CODE), h.get(headers.SERVICE_ERROR), GUARD)
        return _reply.decode(msg.data)

    async def stream(self, req: ChatRequest, *, timeout_s: float = 60.0, request_id: str | None = None) -> ChatStream:
        """Publish with our own inbox as reply; chunks, then one done or one error arrive there."""
        if not req.stream:
            req = msgspec.structs.replace(req, stream=True)
        inbox = self.nc.new_inbox()
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            await queue.put(msg)

        sub = await self.nc.subscribe(inbox, cb=on_msg)
        await self.nc.publish(
            self.names.chat, bus.encode(req), reply=inbox, headers=self._headers(timeout_s, request_id)
        )
        return ChatStream(queue, timeout_s + 1.0, sub)

    async def models(self, *, timeout_s: float = 5.0) -> ModelList:
        msg = await self.nc.request(self.names.models, b"", timeout=timeout_s, headers=self._headers(timeout_s, None))
        h = msg.headers or {}
        if headers.SERVICE_ERROR_CODE in h:
            raise errors.from_reply(msg.data, h.get(headers.SERVICE_ERROR_CODE), h.get(headers.SERVICE_ERROR), "router")
        return msgspec.json.decode(msg.data, type=ModelList)

    # -- background jobs ----------------------------------------------------------------
    async def _call(self, subject: str, body: bytes, reply_type: type[bus.Resp], timeout_s: float) -> bus.Resp:
        try:
            msg = await self.nc.request(subject, body, timeout=timeout_s, headers=self._headers(timeout_s, None))
        except nats.errors.NoRespondersError:
            raise errors.StageUnavailable("no guard is running", stage=GUARD) from None
        except nats.errors.TimeoutError:
            raise errors.DeadlineExceeded("no reply before the deadline", stage="client") from None
        h = msg.headers or {}
        if headers.SERVICE_ERROR_CODE in h:
            raise errors.from_reply(msg.data, h.get(headers.SERVICE_ERROR_CODE), h.get(headers.SERVICE_ERROR), GUARD)
        result: bus.Resp = bus.decoder(reply_type).decode(msg.data)
        return result

    async def submit_job(self, job: JobSubmit, *, timeout_s: float = 30.0) -> JobAccepted:
        """Queue a batch of chat requests; the job id comes back at once."""
        return await self._call(self.names.jobs_submit, bus.encode(job), JobAccepted, timeout_s)

    async def job_status(self, job_id: str, *, include_results: bool = True, timeout_s: float = 10.0) -> JobStatus:
        body = bus.encode(JobStatusRequest(job_id=job_id, include_results=include_results))
        return await self._call(self.names.jobs_status, body, JobStatus, timeout_s)
