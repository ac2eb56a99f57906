"""What every HTTP endpoint shares: the key, the request id, the body, headers out, metrics."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator
from typing import cast

import structlog
from aiohttp import web

from services.http.bridge import Bridge, Forward
from services.http.errors import TooLarge, rate_limit_headers
from services.http.metrics import DoorMetrics
from shared.client import ChatStream
from shared.config import LockgateConfig
from shared.errors import InvalidRequest
from shared.headers import new_id
from shared.schemas.chat import ChatChunk, LockgateInfo
from shared.subjects import HTTP

log = structlog.get_logger("lockgate.http")

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.:-]")
TIMEOUT_HEADER = "x-lockgate-timeout-ms"
_SAFE_KEY = re.compile(r"[^\x21-\x7e]")  # printable ASCII without spaces


class Door:
    def __init__(self, bridge: Bridge, config: LockgateConfig) -> None:
        self.bridge = bridge
        self.max_body = config.http.max_body_bytes  # the largest body the door reads (job batches)
        # A chat body over the guard's own limit is refused here, as 413, instead of as the guard's 400.
        self.max_chat_body = min(config.limits.max_request_bytes, self.max_body)
        self.metrics = DoorMetrics()
        # The longest deadline worth asking for: the guard's clamp, plus an approval's wait.
        self.max_timeout_ms = config.gateway.max_timeout_ms + int(config.approvals.timeout_s * 1000)

    @staticmethod
    def request_id(request: web.Request) -> str:
        """The caller's ``x-request-id`` (made header-safe, at most 128 chars) or a new one."""
        rid = _SAFE_ID.sub("", request.headers.get("x-request-id", ""))[:128]
        return rid or new_id()

    def forward(self, request: web.Request) -> Forward:
        """What a chat request's headers ask of the mesh.

        ``Idempotency-Key`` (made header-safe, at most 255 chars): the executor answers a repeat with the
        first result. ``x-lockgate-timeout-ms``: the request's deadline (default ``gateway.request_timeout_ms``;
        the guard clamps it to ``gateway.max_timeout_ms``, longer only for a request that may wait for an approval).
        """
        idem = _SAFE_KEY.sub("", request.headers.get("Idempotency-Key", ""))[:255] or None
        raw = request.headers.get(TIMEOUT_HEADER, "").strip()
        timeout_ms = None
        if raw:
            if not raw.isdigit() or not 0 < int(raw) <= self.max_timeout_ms:
                raise InvalidRequest(
                    f"{TIMEOUT_HEADER}: expected whole milliseconds in 1..{self.max_timeout_ms}, got {raw[:32]!r}",
                    stage=HTTP,
                )
            timeout_ms = int(raw)
        return Forward(idempotency_key=idem, timeout_ms=timeout_ms)

    @staticmethod
    def api_key(request: web.Request) -> str | None:
        """``Authorization: Bearer KEY`` (OpenAI) or ``x-api-key: KEY`` (Anthropic)."""
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        key = request.headers.get("x-api-key", "").strip()
        return key or None

    async def body(self, request: web.Request, *, chat: bool = True) -> bytes:
        limit = self.max_chat_body if chat else self.max_body
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge(f"request body is {request.content_length} bytes; the limit is {limit}", stage=HTTP)
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise TooLarge(f"request body is over the limit of {limit} bytes", stage=HTTP) from None
        if len(data) > limit:
            raise TooLarge(f"request body is {len(data)} bytes; the limit is {limit}", stage=HTTP)
        return data

    async def open_stream(
        self, body: bytes, key: str | None, rid: str, fwd: Forward | None = None
    ) -> tuple[ChatStream, AsyncGenerator[ChatChunk, None], ChatChunk | None, web.StreamResponse]:
        """Start a streamed chat and wait for its first chunk before any header is sent.

        Waiting first lets an error that comes before any chunk (a bad key, a refusal) still be an
        ordinary HTTP error status; both APIs' SSE writers then continue from ``first``.
        """
        chat_stream = await self.bridge.stream(body, key, rid, fwd)
        it = cast(AsyncGenerator[ChatChunk, None], aiter(chat_stream))
        first: ChatChunk | None = None
        try:
            first = await anext(it)
        except StopAsyncIteration:
            pass
        except BaseException:
            await it.aclose()
            raise
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": rid,
                "x-lockgate-request-id": rid,
            }
        )
        return chat_stream, it, first, resp

    @staticmethod
    def info_headers(request_id: str, info: LockgateInfo | None) -> dict[str, str]:
        h = {"x-request-id": request_id, "x-lockgate-request-id": request_id}
        if info is not None:
            if info.route:
                h["x-lockgate-route"] = info.route
            if info.deployment:
                h["x-lockgate-deployment"] = info.deployment
            if info.cached:
                h["x-lockgate-cached"] = info.cached
            h["x-lockgate-cost-usd"] = f"{info.cost_usd:.8f}"
            h["x-lockgate-attempts"] = str(len(info.attempts))
            h.update(rate_limit_headers(info.rate_limit))
        return h

    async def disconnected(self, endpoint: str, request_id: str) -> None:
        """The client left mid-stream: tell the executors to cancel the provider call.

        The executor serving the request answers the guard ``deadline_exceeded`` (499,
        "cancelled"), and the guard's completion event has the request audited as failed.
        """
        self.metrics.disconnects.inc()
        with contextlib.suppress(Exception):
            log.info("client_disconnected", endpoint=endpoint, request_id=request_id)
            await self.bridge.cancel(request_id)
