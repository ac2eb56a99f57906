"""Try the router's candidates in order, each attempt bounded inside the deadline.

Streaming: deltas go straight to the client's inbox as numbered chunks. A
failure before the first chunk falls through to the next candidate; after the
first chunk the stream cannot be taken back, so the error says how far it got.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.aio.client import Client

from services.executor import providers
from services.executor.providers import Clients, Final
from shared import bus, headers
from shared.errors import DeadlineExceeded, LockgateError, UpstreamError, UpstreamUnavailable
from shared.headers import RequestContext
from shared.schemas.chat import Attempt, ChatChunk, ChunkChoice, ChunkDelta, ToolCall, Usage
from shared.schemas.mesh import Deployment, ExecuteRequest, ExecuteResult
from shared.subjects import EXECUTOR

log = structlog.get_logger("lockgate.executor")

REPLY_MARGIN_S = 0.05  # leave the guard time to answer before the deadline
MIN_ATTEMPT_S = 0.05


class _StreamBroken(Exception):
    def __init__(self, cause: LockgateError) -> None:
        super().__init__(cause.message)
        self.cause = cause


class Executor:
    def __init__(self, nc: Client, clients: Clients) -> None:
        self.nc = nc
        self.clients = clients

    async def execute(self, req: ExecuteRequest, ctx: RequestContext) -> ExecuteResult:
        attempts: list[Attempt] = []
        last: LockgateError | None = None
        for dep in req.candidates:
            budget_s = ctx.remaining_s() - REPLY_MARGIN_S
            if budget_s < MIN_ATTEMPT_S:
                raise DeadlineExceeded(
                    f"deadline passed after {len(attempts)} attempt(s)" + (f"; last: {last.message}" if last else ""),
                    stage=EXECUTOR,
                )
            timeout_s = min(dep.timeout_ms / 1000.0, budget_s)
            cut_by_deadline = timeout_s < dep.timeout_ms / 1000.0
            t0 = time.perf_counter()
            try:
                result = await self._attempt(req, dep, timeout_s, ctx)
            except _StreamBroken as broken:
                attempts.append(self._failed(dep, t0, broken.cause))
                raise broken.cause from None
            except Exception as exc:
                err = providers.classify(exc, dep)
                attempts.append(self._failed(dep, t0, err))
                log.info("attempt_failed", deployment=dep.name, error_type=err.type, error=err.message)
                if cut_by_deadline and providers.is_timeout(exc):
                    # Not the deployment's fault: the request's deadline is what ran out.
                    raise DeadlineExceeded(
                        f"deadline passed during attempt {len(attempts)} (deployment {dep.name})", stage=EXECUTOR
                    ) from None
                if not err.retryable and err.type in ("invalid_request", "context_too_long"):
                    raise err from None  # the request itself is wrong: another provider will not help
                last = err
                continue
            attempts.append(Attempt(deployment=dep.name, outcome="ok", latency_ms=_ms(t0)))
            content, tool_calls, final, chunks = result
            return ExecuteResult(
                content=content,
                tool_calls=tool_calls,
                finish_reason=final.finish_reason,
                usage=final.usage,
                model=dep.model,
                deployment=dep.name,
                provider=dep.provider,
                attempts=attempts,
                chunks=chunks,
                cost_usd=providers.cost(dep, final.usage),
            )
        detail = "; ".join(f"{a.deployment}: {a.error}" for a in attempts)
        raise UpstreamUnavailable(
            f"all {len(attempts)} deployment(s) failed: {detail}",
            stage=EXECUTOR,
            retry_after_ms=last.retry_after_ms if last else None,
        )

    @staticmethod
    def _failed(dep: Deployment, t0: float, err: LockgateError) -> Attempt:
        return Attempt(deployment=dep.name, outcome=err.type, latency_ms=_ms(t0), error=err.message)

    async def _attempt(
        self, req: ExecuteRequest, dep: Deployment, timeout_s: float, ctx: RequestContext
    ) -> tuple[str | None, list[ToolCall] | None, Final, int]:
        inbox = req.stream_inbox
        parts: list[str] = []
        final = Final(finish_reason=None, usage=Usage())
        sent = 0
        created = int(time.time())
        try:
            async with asyncio.timeout(timeout_s):
                async for item in providers.call(self.clients, req.request, dep, timeout_s, inbox is not None):
                    if isinstance(item, Final):
                        final = item
                        continue
                    parts.append(item)
                    if inbox is not None:
                        await self._publish_chunk(inbox, req.response_id, dep.model, created, sent, item, ctx)
                        sent += 1
        except Exception as exc:
            if sent:
                err = providers.classify(exc, dep)
                raise _StreamBroken(
                    UpstreamError(f"stream from {dep.name} broke after {sent} chunk(s): {err.message}", stage=EXECUTOR)
                ) from None
            raise
        if inbox is not None and sent:
            await self.nc.flush()  # chunks reach the server before the guard's `done`
        return ("".join(parts) if parts or final.tool_calls is None else None), final.tool_calls, final, sent

    async def _publish_chunk(
        self, inbox: str, rid: str, model: str, created: int, seq: int, text: str, ctx: RequestContext
    ) -> None:
        delta = ChunkDelta(role="assistant", content=text) if seq == 0 else ChunkDelta(content=text)
        chunk = ChatChunk(id=rid, created=created, model=model, choices=[ChunkChoice(delta=delta)])
        await self.nc.publish(
            inbox,
            bus.encode(chunk),
            headers={headers.EVENT: headers.EVENT_CHUNK, headers.SEQ: str(seq), headers.REQUEST_ID: ctx.request_id},
        )


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
