"""Try the router's candidates in order, each attempt bounded inside the deadline.

Per deployment: up to ``max_attempts`` attempts, retrying only retryable
failures (``retry``), waiting the provider's hint or an exponential backoff
with full jitter in between — when that wait still fits the deadline;
otherwise the next candidate at once. A circuit breaker per deployment
(``breaker``) refuses attempts while it is open. When every candidate failed,
the route's degradation steps run if the request allows it (a similar cached
answer, a cheaper model, a template message); otherwise
``upstream_unavailable`` with a ``retry_after_ms``.

Streaming: deltas go straight to the client's inbox as numbered chunks. A
failure before the first chunk falls through to the next attempt; after the
first chunk the stream cannot be taken back, so the error says how far it got.
With ``redact_stream`` the deltas pass through a ``shared.pii.StreamRedactor``
first: PII is replaced across chunk boundaries; the redactor collects deltas
and releases text in batches (up to 256 characters, and never the tail a match
could still extend into), so a chunk may carry several deltas, and a delta that
is held back sends no chunk.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from nats.aio.client import Client

from services.executor import providers, retry
from services.executor.breaker import Breakers
from services.executor.idempotency import IdempotencyStore, SingleFlight, replay
from services.executor.providers import Clients, Final
from shared import bus, headers, pii, similarity
from shared.blocklist import StreamBlocklist, compiled
from shared.config import ResilienceConfig
from shared.errors import (
    BlockedOutput,
    ContextTooLong,
    DeadlineExceeded,
    InvalidRequest,
    LockgateError,
    UpstreamError,
    UpstreamUnavailable,
)
from shared.headers import RequestContext
from shared.schemas.chat import Attempt, ChatChunk, ChunkChoice, ChunkDelta, ToolCall, Usage
from shared.schemas.mesh import CacheResult, Deployment, ExecuteRequest, ExecuteResult, SimilarLookup
from shared.subjects import EXECUTOR

log = structlog.get_logger("lockgate.executor")

REPLY_MARGIN_S = 0.05  # leave the guard time to answer before the deadline
MIN_ATTEMPT_S = 0.05
DEFAULT_RETRY_AFTER_MS = 1_000  # told to a client when nothing better is known

FindSimilar = Callable[[SimilarLookup, RequestContext], Awaitable[CacheResult | None]]


class _StreamBroken(Exception):
    def __init__(self, cause: LockgateError) -> None:
        super().__init__(cause.message)
        self.cause = cause


class _Run:
    """What one request's attempts have found so far."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.last: LockgateError | None = None
        self.hints_ms: list[int] = []  # when trying again may help (Retry-After, breaker cool-downs)


class Executor:
    def __init__(
        self,
        nc: Client,
        clients: Clients,
        resilience: ResilienceConfig | None = None,
        breakers: Breakers | None = None,
        idempotency: IdempotencyStore | None = None,
        rng: random.Random | None = None,
        similar: FindSimilar | None = None,
    ) -> None:
        self.nc = nc
        self.clients = clients
        self.res = resilience or ResilienceConfig()
        self.breakers = breakers or Breakers(self.res.breaker, replica=headers.new_id())
        self.idempotency = idempotency
        self.coalescer = SingleFlight()
        self.rng = rng or random.Random()
        self.similar = similar

    async def execute(self, req: ExecuteRequest, ctx: RequestContext) -> ExecuteResult:
        if req.idempotency_key and self.idempotency is not None:
            result = await self.idempotency.run(ctx.tenant, req.idempotency_key, ctx, lambda: self._execute(req, ctx))
            if result.attempts and result.attempts[0].outcome == "idempotent_replay" and req.stream_inbox:
                result = await self._replay_stream(req, result, ctx)
            return result
        if req.coalesce_key and req.stream_inbox is None:
            result, shared = await self.coalescer.run(
                f"{ctx.tenant}\x00{req.coalesce_key}", lambda: self._execute(req, ctx)
            )
            return replay(result, "coalesced") if shared else result
        return await self._execute(req, ctx)

    async def _execute(self, req: ExecuteRequest, ctx: RequestContext) -> ExecuteResult:
        run = _Run()
        for dep in req.candidates:
            result = await self._try_deployment(req, dep, ctx, run)
            if result is not None:
                return result
        degraded = await self._degrade(req, ctx, run)
        if degraded is not None:
            return degraded
        detail = "; ".join(f"{a.deployment}: {a.error}" for a in run.attempts)
        raise UpstreamUnavailable(
            f"all {len(req.candidates)} deployment(s) failed after {len(run.attempts)} attempt(s): {detail}",
            stage=EXECUTOR,
            retry_after_ms=min(run.hints_ms) if run.hints_ms else DEFAULT_RETRY_AFTER_MS,
        )

    async def _try_deployment(
        self, req: ExecuteRequest, dep: Deployment, ctx: RequestContext, run: _Run, *, max_attempts: int | None = None
    ) -> ExecuteResult | None:
        """Up to the deployment's attempts; None when it could not serve (move on)."""
        tries = max_attempts or max(1, dep.max_attempts)
        for n in range(tries):
            if not self.breakers.allow(dep.name):
                wait = self.breakers.open_for_ms(dep.name)
                if wait is not None:
                    run.hints_ms.append(wait)
                run.attempts.append(
                    Attempt(deployment=dep.name, outcome="breaker_open", latency_ms=0.0, error="circuit breaker open")
                )
                return None
            budget_s = ctx.remaining_s() - REPLY_MARGIN_S
            if budget_s < MIN_ATTEMPT_S:
                self.breakers.release(dep.name)
                last = run.last
                raise DeadlineExceeded(
                    f"deadline passed after {len(run.attempts)} attempt(s)"
                    + (f"; last: {last.message}" if last else ""),
                    stage=EXECUTOR,
                )
            timeout_s = min(dep.timeout_ms / 1000.0, budget_s)
            cut_by_deadline = timeout_s < dep.timeout_ms / 1000.0
            t0 = time.perf_counter()
            try:
                result = await self._attempt(req, dep, timeout_s, ctx)
            except _StreamBroken as broken:
                run.attempts.append(self._failed(dep, t0, broken.cause))
                self.breakers.failure(dep.name, broken.cause.message)
                raise broken.cause from None
            except asyncio.CancelledError:
                self.breakers.release(dep.name)
                raise
            except BlockedOutput:  # the answer, not the deployment: no retry, no other candidate
                self.breakers.release(dep.name)
                raise
            except Exception as exc:
                err = providers.classify(exc, dep)
                run.attempts.append(self._failed(dep, t0, err))
                log.info("attempt_failed", deployment=dep.name, attempt=n + 1, error_type=err.type, error=err.message)
                if cut_by_deadline and providers.is_timeout(exc):
                    # Not the deployment's fault: the request's deadline is what ran out.
                    self.breakers.release(dep.name)
                    raise DeadlineExceeded(
                        f"deadline passed during attempt {len(run.attempts)} (deployment {dep.name})", stage=EXECUTOR
                    ) from None
                if isinstance(err, InvalidRequest | ContextTooLong):
                    self.breakers.release(dep.name)
                    raise err from None  # the request itself is wrong: another provider will not help
                self.breakers.failure(dep.name, err.message)
                run.last = err
                if err.retry_after_ms is not None:
                    run.hints_ms.append(err.retry_after_ms)
                if not err.retryable or n + 1 >= tries:
                    return None
                wait_s = self._wait_s(err, n)
                if wait_s is None or wait_s + MIN_ATTEMPT_S > ctx.remaining_s() - REPLY_MARGIN_S:
                    return None  # the wait does not fit: the next candidate at once
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                continue
            self.breakers.success(dep.name)
            run.attempts.append(Attempt(deployment=dep.name, outcome="ok", latency_ms=_ms(t0)))
            content, tool_calls, final, chunks, redacted = result
            return ExecuteResult(
                content=content,
                tool_calls=tool_calls,
                finish_reason=final.finish_reason,
                usage=final.usage,
                model=dep.model,
                deployment=dep.name,
                provider=dep.provider,
                attempts=run.attempts,
                chunks=chunks,
                cost_usd=providers.cost(dep, final.usage),
                redacted=redacted,
            )
        return None

    def _wait_s(self, err: LockgateError, n: int) -> float | None:
        """Seconds before attempt n+2 on the same deployment; None: too long, move on."""
        if err.retry_after_ms is not None:
            if err.retry_after_ms > self.res.max_retry_after_ms:
                return None
            return err.retry_after_ms / 1000.0
        return retry.backoff_s(n, self.res.backoff_base_ms, self.res.backoff_max_ms, self.rng)

    async def _degrade(self, req: ExecuteRequest, ctx: RequestContext, run: _Run) -> ExecuteResult | None:
        plan = req.degrade
        if plan is None:
            return None
        if plan.similar_min is not None and self.similar is not None:
            lookup = SimilarLookup(
                tenant=ctx.tenant,
                route=req.route,
                fingerprint=similarity.fingerprint(req.request.messages),
                min_similarity=plan.similar_min,
            )
            found = await self.similar(lookup, ctx)
            if found is not None and found.completion is not None:
                log.warning("degraded", how="similar")
                c = found.completion
                chunks = 0
                redacted: dict[str, int] = {}
                if req.stream_inbox is not None and c.content:
                    text, redacted = _redacted(req, c.content)
                    await self._publish_chunk(req.stream_inbox, req.response_id, c.model, int(time.time()), 0,
                                              text, ctx)  # fmt: skip
                    await self.nc.flush()
                    chunks = 1
                return ExecuteResult(
                    content=c.content, tool_calls=c.tool_calls, finish_reason=c.finish_reason, model=c.model,
                    deployment=c.deployment, provider="cache", attempts=run.attempts, chunks=chunks,
                    degraded="similar", redacted=redacted,
                )  # fmt: skip
        for dep in plan.cheaper:
            result = await self._try_deployment(req, dep, ctx, run, max_attempts=1)
            if result is not None:
                log.warning("degraded", how="cheaper_model", deployment=dep.name)
                return _with(result, degraded="cheaper_model")
        if plan.template is not None:
            log.warning("degraded", how="template")
            chunks = 0
            if req.stream_inbox is not None and plan.template:
                await self._publish_chunk(
                    req.stream_inbox, req.response_id, req.route or "lockgate", int(time.time()), 0, plan.template, ctx
                )
                await self.nc.flush()
                chunks = 1
            return ExecuteResult(
                content=plan.template,
                finish_reason="stop",
                model=req.route or "lockgate",
                deployment="",
                provider="lockgate",
                attempts=run.attempts,
                chunks=chunks,
                degraded="template",
            )
        return None

    async def _replay_stream(self, req: ExecuteRequest, result: ExecuteResult, ctx: RequestContext) -> ExecuteResult:
        """A stored result sent to a streaming repeat as one chunk."""
        assert req.stream_inbox is not None
        chunks = 0
        redacted: dict[str, int] = {}
        if result.content:
            text, redacted = _redacted(req, result.content)
            await self._publish_chunk(req.stream_inbox, req.response_id, result.model, int(time.time()), 0, text, ctx)
            await self.nc.flush()
            chunks = 1
        return _with(result, chunks=chunks, redacted=redacted)

    @staticmethod
    def _failed(dep: Deployment, t0: float, err: LockgateError) -> Attempt:
        return Attempt(deployment=dep.name, outcome=err.type, latency_ms=_ms(t0), error=err.message)

    async def _attempt(
        self, req: ExecuteRequest, dep: Deployment, timeout_s: float, ctx: RequestContext
    ) -> tuple[str | None, list[ToolCall] | None, Final, int, dict[str, int]]:
        inbox = req.stream_inbox
        redactor = pii.StreamRedactor() if inbox is not None and req.redact_stream else None
        blocker = StreamBlocklist(compiled(tuple(req.blocklist)), EXECUTOR) if inbox and req.blocklist else None
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
                        text = redactor.feed(item) if redactor is not None else item
                        text = blocker.feed(text) if blocker is not None else text
                        if text:
                            await self._publish_chunk(inbox, req.response_id, dep.model, created, sent, text, ctx)
                            sent += 1
                if inbox is not None:
                    tail = redactor.flush() if redactor is not None else ""
                    if blocker is not None:
                        tail = blocker.feed(tail) + blocker.flush()
                    if tail:
                        await self._publish_chunk(inbox, req.response_id, dep.model, created, sent, tail, ctx)
                        sent += 1
        except BlockedOutput:
            raise  # the answer, not the deployment: no retry, no other candidate
        except Exception as exc:
            if sent:
                err = providers.classify(exc, dep)
                raise _StreamBroken(
                    UpstreamError(f"stream from {dep.name} broke after {sent} chunk(s): {err.message}", stage=EXECUTOR)
                ) from None
            raise
        if inbox is not None and sent:
            await self.nc.flush()  # chunks reach the server before the guard's `done`
        content = "".join(parts) if parts or final.tool_calls is None else None
        return content, final.tool_calls, final, sent, dict(redactor.counts) if redactor is not None else {}

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


def _redacted(req: ExecuteRequest, text: str) -> tuple[str, dict[str, int]]:
    """A whole text sent to a stream at once (replays, degraded answers): the blocklist, then PII."""
    if req.blocklist and compiled(tuple(req.blocklist)).hits(text):
        raise BlockedOutput("the answer contains blocked content (output blocklist)", stage=EXECUTOR)
    if not req.redact_stream:
        return text, {}
    out, counts = pii.redact(text)
    return out, dict(counts)


def _with(result: ExecuteResult, **changes: object) -> ExecuteResult:
    return msgspec.structs.replace(result, **changes)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
