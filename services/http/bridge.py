"""The door's side of NATS: the same ``llm.v1.*`` requests any client sends, with the caller's key.

The body an OpenAI client posts is already Lockgate's request shape, so the door
forwards the bytes as they came (the guard decodes and checks them) and only
reads the few fields it needs itself (``stream``, ``stream_options``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared import errors, headers
from shared.client import ChatStream
from shared.headers import now_ms
from shared.schemas.chat import LockgateInfo, ModelList, StreamOptions
from shared.subjects import EXECUTOR, GUARD, OP_CANCEL, ROUTER, Names


class Peek(msgspec.Struct, kw_only=True):
    """The fields of a chat body the door itself acts on (all else passes through)."""

    stream: bool = False
    stream_options: StreamOptions | None = None


class InfoPeek(msgspec.Struct, kw_only=True):
    lockgate: LockgateInfo | None = None


PEEK = msgspec.json.Decoder(Peek)
INFO = msgspec.json.Decoder(InfoPeek)
MODELS = msgspec.json.Decoder(ModelList)


@dataclass(frozen=True, slots=True)
class Forward:
    """What the door passes on from a chat request's HTTP headers."""

    idempotency_key: str | None = None  # Idempotency-Key: a retry gets the first result
    timeout_ms: int | None = None  # x-lockgate-timeout-ms: the request's deadline (None: http request_timeout)


class Bridge:
    def __init__(self, nc: Client, names: Names, timeout_ms: int) -> None:
        self.nc = nc
        self.names = names
        self.timeout_s = timeout_ms / 1000.0

    def _timeout_s(self, fwd: Forward | None) -> float:
        return fwd.timeout_ms / 1000.0 if fwd is not None and fwd.timeout_ms else self.timeout_s

    def _headers(self, key: str | None, request_id: str, fwd: Forward | None = None) -> dict[str, str]:
        deadline = now_ms() + int(self._timeout_s(fwd) * 1000)
        h = {headers.REQUEST_ID: request_id, headers.DEADLINE: str(deadline)}
        if key:
            h[headers.AUTHORIZATION] = f"Bearer {key}"
        if fwd is not None and fwd.idempotency_key:
            h[headers.IDEMPOTENCY_KEY] = fwd.idempotency_key
        return h

    async def _request(
        self,
        subject: str,
        body: bytes,
        key: str | None,
        request_id: str,
        stage: str,
        fwd: Forward | None = None,
    ) -> Msg:
        try:
            msg = await self.nc.request(
                subject, body, timeout=self._timeout_s(fwd) + 1.0, headers=self._headers(key, request_id, fwd)
            )
        except nats.errors.NoRespondersError:
            raise errors.StageUnavailable(f"no {stage} is running", stage=stage) from None
        except nats.errors.TimeoutError:
            raise errors.DeadlineExceeded("no reply before the deadline", stage="http") from None
        h = msg.headers or {}
        if headers.SERVICE_ERROR_CODE in h:
            raise errors.from_reply(msg.data, h.get(headers.SERVICE_ERROR_CODE), h.get(headers.SERVICE_ERROR), stage)
        return msg

    async def chat(self, body: bytes, key: str | None, request_id: str, fwd: Forward | None = None) -> bytes:
        """The guard's reply bytes (an OpenAI ``chat.completion`` plus the ``lockgate`` block)."""
        return (await self._request(self.names.chat, body, key, request_id, GUARD, fwd)).data

    async def models(self, key: str | None, request_id: str) -> ModelList:
        return MODELS.decode((await self._request(self.names.models, b"", key, request_id, ROUTER)).data)

    async def jobs_submit(self, body: bytes, key: str | None, request_id: str) -> bytes:
        return (await self._request(self.names.jobs_submit, body, key, request_id, GUARD)).data

    async def jobs_status(self, body: bytes, key: str | None, request_id: str) -> bytes:
        return (await self._request(self.names.jobs_status, body, key, request_id, GUARD)).data

    async def cancel(self, request_id: str) -> None:
        await self.nc.publish(self.names.mesh(EXECUTOR, OP_CANCEL), request_id.encode())

    async def stream(self, body: bytes, key: str | None, request_id: str, fwd: Forward | None = None) -> ChatStream:
        """Publish with an inbox of ours as reply; chunks, then one done or one error, arrive there."""
        inbox = self.nc.new_inbox()
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            queue.put_nowait(msg)

        sub = await self.nc.subscribe(inbox, cb=on_msg)
        await self.nc.publish(self.names.chat, body, reply=inbox, headers=self._headers(key, request_id, fwd))
        return ChatStream(queue, self._timeout_s(fwd) + 1.0, sub)
