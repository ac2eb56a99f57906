"""The guard: admit a request, drive the stages, answer the client, report the outcome.

Order: size → key → decode → input checks → (route ‖ cache lookup) → access
check → safety → approval (when the request needs one) → cache hit answers at
once (no budget reserved) → reserve → execute → validate (JSON only) → output
checks → answer held for approval (an irreversible tool call) → reply →
completion event. Each stage call runs under
its own time slice of the deadline and its failure policy (open: carry on
without it; closed: refuse with ``stage_unavailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.micro.request import Request

from services.guard import inputs, reask, replies, safety
from services.guard.approvals import Gate
from services.guard.moderation import ModerationClients, Moderator
from services.guard.rates import RateLimiter
from shared import approvals, bus, headers, pii, similarity
from shared.config import LockgateConfig, StagePolicy
from shared.errors import (
    DECODE_ERRORS,
    BudgetExceeded,
    DeadlineExceeded,
    Forbidden,
    InvalidOutput,
    InvalidRequest,
    LockgateError,
    NoResponders,
    StageUnavailable,
    validation_message,
)
from shared.headers import RequestContext, now_ms
from shared.keys import KeyStore, Principal
from shared.owners import Owners
from shared.schemas.approvals import ApprovalKind
from shared.schemas.chat import ChatRequest, LockgateInfo, ResponseFormat, StreamDone, ToolCall, Usage
from shared.schemas.events import ApprovalFacts, CompletionEvent, Outcome
from shared.schemas.mesh import (
    CachedCompletion,
    CacheLookup,
    CacheResult,
    ExecuteRequest,
    ExecuteResult,
    Reservation,
    ReserveRequest,
    RoutePlan,
    RouteRequest,
    ValidateRequest,
    ValidateResult,
)
from shared.schemas.ratelimit import RateLimitInfo
from shared.security import Policy
from shared.subjects import (
    BUDGETER,
    CACHE,
    EV_COMPLETION,
    EXECUTOR,
    GUARD,
    OP_EXECUTE,
    OP_LOOKUP,
    OP_RESERVE,
    OP_ROUTE,
    OP_VALIDATE,
    ROUTER,
    VALIDATOR,
    Names,
)

T = TypeVar("T")
log = structlog.get_logger("lockgate.guard")

LATE_RESULT_S = 0.5  # after the deadline, how long the guard still listens for the executor's answer (its cost)

REFUSED = frozenset(
    {"invalid_request", "unauthorized", "forbidden", "budget_exceeded", "rate_limited", "blocked_input",
     "context_too_long", "approval_denied", "approval_expired"}
)  # fmt: skip


@dataclass
class Trace:
    """What the guard learned while serving one request (reply, event, logs)."""

    ctx: RequestContext
    t0: float = field(default_factory=time.perf_counter)
    event_id: str = field(default_factory=headers.new_id)  # Nats-Msg-Id of this request's completion event
    stages: dict[str, float] = field(default_factory=dict)
    principal: Principal | None = None
    req: ChatRequest | None = None
    plan: RoutePlan | None = None
    reservation: Reservation | None = None
    executing: asyncio.Future[ExecuteResult] | None = None  # the executor call (its cost settles the budget)
    result: ExecuteResult | None = None
    cache_key: str = ""
    cached: CachedCompletion | None = None
    validation: str = ""
    security: list[str] = field(default_factory=list)  # safety findings (names only, never matched text)
    redactions: int = 0
    approvals: list[ApprovalFacts] = field(default_factory=list)
    asked_deadline_ms: int | None = None  # the client's own deadline, before the clamp (None: it sent none)
    timer: asyncio.Timeout | None = None  # bounds the whole request; moved when an approval may be waited for
    rate_limit: RateLimitInfo | None = None  # the most constraining rate-limit scope, once counted
    delivered: str | None = None  # the answer's text as the client got it (the cache and the event keep this)

    def total_ms(self) -> float:
        return round((time.perf_counter() - self.t0) * 1000, 3)


class Guard:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        config: LockgateConfig,
        names: Names,
        keys: KeyStore,
        gate: Gate,
        *,
        on_error: Callable[[str, LockgateError], None] | None = None,
        rates: RateLimiter | None = None,
        budget_owners: Owners | None = None,
    ) -> None:
        self.budget_owners = budget_owners  # which budgeter replica owns a tenant (None: the queue group)
        self.rates = rates  # None: no rate limits (no KV bucket)
        self.on_error = on_error  # counts refusals in $SRV.STATS (Stage.record_error)
        self.gate = gate
        self.nc = nc
        self.js = js
        self.config = config
        self.names = names
        self.keys = keys
        self.limits = config.limits
        self.moderators: list[Moderator] = []  # output moderation hooks in code, run after the provider's moderation
        self.moderation = ModerationClients(config)  # the route's [security] moderation provider (close() on stop)
        self.stages = config.stages
        self._decoder = msgspec.json.Decoder(ChatRequest)
        self._subjects = {
            ROUTER: names.mesh(ROUTER, OP_ROUTE),
            CACHE: names.mesh(CACHE, OP_LOOKUP),
            BUDGETER: names.mesh(BUDGETER, OP_RESERVE),
            EXECUTOR: names.mesh(EXECUTOR, OP_EXECUTE),
            VALIDATOR: names.mesh(VALIDATOR, OP_VALIDATE),
        }

    # -- the endpoint ------------------------------------------------------------------
    async def chat(self, request: Request) -> None:
        h = request.headers or {}
        gw = self.config.gateway
        ctx = RequestContext.from_headers(h, default_timeout_ms=gw.request_timeout_ms)
        asked = ctx.deadline_ms if headers.DEADLINE in h and h[headers.DEADLINE].strip().isdigit() else None
        ctx = ctx.with_deadline(min(ctx.deadline_ms, now_ms() + gw.max_timeout_ms))
        # The Stage runs this in a task with an empty context (shared.bus): nothing to clear first.
        structlog.contextvars.bind_contextvars(request_id=ctx.request_id, stage=GUARD)
        tr = Trace(ctx=ctx, asked_deadline_ms=asked)
        inbox = request._msg.reply
        outcome: Outcome
        err: LockgateError | None = None
        try:
            if not inbox:
                raise InvalidRequest("no reply subject: send llm.v1.chat as a request", stage=GUARD)
            if ctx.expired():
                raise DeadlineExceeded("the request's deadline had passed on arrival", stage=GUARD)
            async with asyncio.timeout(ctx.remaining_s()) as tr.timer:
                outcome = await self._serve(request.data, h, inbox, tr)
        except asyncio.CancelledError:  # this guard is stopping (past its grace period): say so, do not go silent
            if inbox:
                gone = StageUnavailable("the guard serving this request stopped; send it again", stage=GUARD)
                with contextlib.suppress(Exception):
                    await replies.send_error(self.nc, inbox, gone, tr.ctx.request_id)
            raise
        except Exception as exc:
            err = bus.as_lockgate_error(exc, GUARD)
            if err.type == "internal":
                log.error("request_failed", error=repr(exc), exc_info=exc)
            outcome = "refused" if err.type in REFUSED else "failed"
            err.rate_limit = err.rate_limit or tr.rate_limit
            if self.on_error is not None:
                self.on_error(request.subject, err)
            if inbox:
                await replies.send_error(self.nc, inbox, err, tr.ctx.request_id)
            else:
                log.warning("request_without_reply_subject")
            if tr.result is None and tr.executing is not None:
                tr.result = await _late(tr.executing)
        await self._report(tr, outcome, err)

    async def _serve(self, data: bytes, h: dict[str, str], inbox: str, tr: Trace) -> Outcome:
        if len(data) > self.limits.max_request_bytes:
            raise InvalidRequest(
                f"request body is {len(data)} bytes; the limit is {self.limits.max_request_bytes}", stage=GUARD
            )
        principal = await self.keys.resolve(h.get(headers.AUTHORIZATION))
        tr.principal = principal
        tr.ctx = ctx = tr.ctx.with_tenant(principal.tenant)
        structlog.contextvars.bind_contextvars(tenant=principal.tenant)
        try:
            req = self._decoder.decode(data)
        except DECODE_ERRORS as exc:
            raise InvalidRequest(f"invalid request: {validation_message(exc)}", stage=GUARD) from None
        tr.req = req
        total_chars = inputs.check(req, self.limits)
        if self.gate.may_wait(req):  # a person may have to decide: the deadline the client asked for, within reason
            gw = self.config.gateway
            self._move_deadline(
                tr, self.gate.deadline_ms(tr.asked_deadline_ms, gw.request_timeout_ms, gw.max_timeout_ms)
            )
            ctx = tr.ctx
        if req.lockgate.max_latency_ms is not None:
            tr.ctx = ctx = ctx.with_deadline(min(ctx.deadline_ms, now_ms() + req.lockgate.max_latency_ms))

        # The rate check runs beside the route and cache lookups; a cached answer counts too.
        rated = asyncio.create_task(self._rate_check(principal, req, total_chars, tr))
        try:
            route = self._call(
                ROUTER, RouteRequest(model=req.model, route=req.lockgate.route), RoutePlan, self.stages.router, tr
            )
            if inputs.cacheable(req):
                tr.cache_key = inputs.cache_key(req)
                lookup = self._call(
                    CACHE, CacheLookup(tenant=principal.tenant, key=tr.cache_key), CacheResult, self.stages.cache, tr
                )
                plan, hit = await asyncio.gather(route, lookup)
            else:
                plan, hit = await route, None
        except Exception:
            refused = await _failure_of(rated)  # a rate-limit refusal wins: the client must back off
            if refused is not None:
                raise refused from None
            raise
        except BaseException:
            rated.cancel()
            raise
        await rated
        if plan is None:
            raise StageUnavailable("no route plan", stage=ROUTER)
        tr.plan = plan
        if not (principal.may_use(plan.route) or (req.model is not None and principal.may_use(req.model))):
            raise Forbidden(f"this API key may not use {req.model or plan.route!r}", stage=GUARD)
        policy = self.config.security.policy(plan.route)
        screened = safety.screen_input(req, policy)
        tr.security += screened.findings
        tr.redactions += screened.redactions
        if screened.refusal is not None:
            raise screened.refusal
        tr.req = req = screened.request
        if req.stream and policy.moderation != "off":
            raise InvalidRequest(
                f"route {plan.route!r} moderates answers (provider {policy.moderation}), which judges a whole "
                "answer: send it with stream=false",
                stage=GUARD,
            )

        reason = self.gate.before(req)
        if reason is not None:
            last_user = next((m.text() for m in reversed(req.messages) if m.role == "user"), "")
            await self._wait_for_approval(
                tr, kind="request", reason=reason, model=req.model or plan.route, tools=approvals.offered_tools(req.tools),
                preview=last_user,
            )  # fmt: skip

        if hit is not None and hit.completion is not None:
            tr.cached = hit.completion
            await self._hold_answer(req, hit.completion.tool_calls, hit.completion.model, tr)
            await self._answer_cached(req, hit.completion, inbox, tr, policy)
            return "cached"

        candidates, degraded = plan.candidates, ""
        fmt = req.response_format
        reasks = policy.reask_max if fmt is not None and fmt.wants_json and not req.stream else 0
        try:
            tr.reservation = await self._reserve(inputs.worst_case_cost(req, total_chars, candidates, reasks), tr)
        except BudgetExceeded:
            # Over a hard budget: the route's cheaper model, if the request and the route allow it.
            cheaper = plan.degrade.cheaper if req.lockgate.degrade and plan.degrade is not None else []
            if not cheaper:
                raise
            tr.reservation = await self._reserve(inputs.worst_case_cost(req, total_chars, cheaper, reasks), tr)
            candidates, degraded = cheaper, "cheaper_model"
            log.warning("degraded", how="cheaper_model", reason="budget")

        t = time.perf_counter()
        tr.executing = asyncio.ensure_future(
            bus.call(
                self.nc,
                self._subjects[EXECUTOR],
                ExecuteRequest(
                    request=req,
                    candidates=candidates,
                    response_id=f"chatcmpl-{ctx.request_id}",
                    stream_inbox=inbox if req.stream else None,
                    route=plan.route,
                    degrade=plan.degrade if req.lockgate.degrade and not degraded else None,
                    idempotency_key=h.get(headers.IDEMPOTENCY_KEY) or None,
                    coalesce_key=tr.cache_key or None,
                    redact_stream=req.stream and policy.pii_output == "redact",
                    blocklist=policy.blocklist if req.stream else [],
                ),
                ExecuteResult,
                ctx,
                stage=EXECUTOR,
                timeout_s=ctx.remaining_s(),
                late_s=LATE_RESULT_S if tr.reservation is not None and tr.reservation.hold else 0.0,
            )
        )
        # Shielded: when the deadline cancels this request, the call still hears an answer already on
        # its way, and the budget settles to what the provider actually charged (see chat()).
        result = await asyncio.shield(tr.executing)
        if degraded:
            result = msgspec.structs.replace(result, degraded=degraded)
        tr.result = result
        tr.stages[EXECUTOR] = _ms(t)
        if result.redacted:  # the executor redacted the streamed chunks
            tr.security += [f"pii_output:{k}" for k in sorted(result.redacted)]
            tr.redactions += sum(result.redacted.values())

        content = result.content
        if fmt is not None and fmt.wants_json and content is not None:
            content = await self._validate(req, fmt, content, plan, policy, tr)
            result = tr.result or result
        if not req.stream:
            out = await self._screen_output(content, policy, tr)
            content = out.content
            await self._hold_answer(req, result.tool_calls, result.model, tr)
        elif content is not None and policy.pii_output == "redact":  # the chunks went out redacted (executor)
            content = pii.redact(content)[0]
        tr.delivered = content

        info = self._info(tr)
        rid = f"chatcmpl-{ctx.request_id}"
        if req.stream:
            done = StreamDone(
                id=rid, model=result.model, finish_reason=result.finish_reason, usage=result.usage,
                chunks=result.chunks, lockgate=info,
            )  # fmt: skip
            await replies.send_done(self.nc, inbox, done, ctx.request_id)
        else:
            resp = replies.completion(
                rid, result.model, content, result.tool_calls, result.finish_reason, result.usage, info
            )
            await replies.send_completion(self.nc, inbox, resp, ctx.request_id)
        return "completed"

    # -- approvals ----------------------------------------------------------------------
    def _move_deadline(self, tr: Trace, deadline_ms: int) -> None:
        tr.ctx = tr.ctx.with_deadline(deadline_ms)
        if tr.timer is not None:
            tr.timer.reschedule(asyncio.get_running_loop().time() + tr.ctx.remaining_s())

    async def _wait_for_approval(
        self, tr: Trace, *, kind: ApprovalKind, reason: str, model: str, tools: list[str], preview: str
    ) -> None:
        t = time.perf_counter()
        try:
            await self.gate.wait(
                tr.ctx, kind=kind, reason=reason, model=model, route=tr.plan.route if tr.plan else "", tools=tools,
                preview=preview, facts=tr.approvals,
            )  # fmt: skip
        finally:
            tr.stages["approval"] = tr.stages.get("approval", 0.0) + _ms(t)

    async def _hold_answer(self, req: ChatRequest, calls: list[ToolCall] | None, model: str, tr: Trace) -> None:
        """A non-streamed answer that calls an irreversible tool waits for a person before delivery."""
        held = self.gate.held(calls) if not req.stream else []
        if held:
            args = " ".join(
                f"{c.function.name}({c.function.arguments})" for c in calls or () if c.function.name in held
            )
            await self._wait_for_approval(
                tr, kind="answer", reason="irreversible_call", model=model, tools=held, preview=args
            )

    async def _validate(
        self, req: ChatRequest, fmt: ResponseFormat, content: str, plan: RoutePlan, policy: Policy, tr: Trace
    ) -> str:
        """Validate JSON output; on ``invalid_output`` re-ask the model (not on streams) up to ``reask_max`` times."""
        asked = 0
        while True:
            try:
                checked = await self._call(
                    VALIDATOR, ValidateRequest(content=content, response_format=fmt), ValidateResult,
                    self.stages.validator, tr,
                )  # fmt: skip
            except InvalidOutput as exc:
                if req.stream or asked >= policy.reask_max or tr.ctx.remaining_s() < 0.2 or tr.result is None:
                    suffix = f" (after {asked} re-ask{'s' if asked != 1 else ''})" if asked else ""
                    raise InvalidOutput(exc.message + suffix, stage=exc.stage) from None
                asked += 1
                log.info("reask", attempt=asked, error=pii.redact(exc.message[:300])[0])
                again = await bus.call(
                    self.nc, self._subjects[EXECUTOR],
                    ExecuteRequest(request=reask.request(req, content, exc.message), candidates=plan.candidates,
                                   response_id=f"chatcmpl-{tr.ctx.request_id}", route=plan.route),
                    ExecuteResult, tr.ctx, stage=EXECUTOR, timeout_s=tr.ctx.remaining_s(),
                )  # fmt: skip
                tr.result = reask.merge(tr.result, again)
                content = again.content or ""
                continue
            if checked is None:  # the validator failed open
                return content
            tr.validation = f"reasked+{checked.outcome}" if asked else checked.outcome
            return checked.content

    async def _answer_cached(
        self, req: ChatRequest, c: CachedCompletion, inbox: str, tr: Trace, policy: Policy
    ) -> None:
        rid = f"chatcmpl-{tr.ctx.request_id}"
        out = await self._screen_output(c.content, policy, tr)
        c = msgspec.structs.replace(c, content=out.content)
        info = self._info(tr)
        if req.stream:
            chunks = 0
            if c.content:
                await replies.send_chunk(self.nc, inbox, rid, c.model, c.content, 0, tr.ctx.request_id)
                chunks = 1
            done = StreamDone(id=rid, model=c.model, finish_reason=c.finish_reason, usage=c.usage, chunks=chunks,
                              lockgate=info)  # fmt: skip
            await replies.send_done(self.nc, inbox, done, tr.ctx.request_id)
        else:
            resp = replies.completion(rid, c.model, c.content, c.tool_calls, c.finish_reason, c.usage, info)
            await replies.send_completion(self.nc, inbox, resp, tr.ctx.request_id)

    async def _screen_output(self, content: str | None, policy: Policy, tr: Trace) -> safety.OutputVerdict:
        """The output checks (a cached answer too): findings noted, a refusal raised, moderation timed."""
        t = time.perf_counter()
        moderators = self.moderation.moderators(policy) + self.moderators
        try:
            out = await safety.screen_output(content, policy, moderators)
        finally:
            if policy.moderation != "off":
                tr.stages["moderation"] = _ms(t)
        tr.security += out.findings
        tr.redactions += out.redactions
        if out.refusal is not None:
            raise out.refusal
        return out

    async def _rate_check(self, principal: Principal, req: ChatRequest, total_chars: int, tr: Trace) -> None:
        if self.rates is None:
            return
        t = time.perf_counter()
        policy = self.stages.rates
        try:
            async with asyncio.timeout(policy.timeout_ms / 1000.0):
                tr.rate_limit = await self.rates.admit(principal, req, total_chars)
        except LockgateError as exc:
            tr.rate_limit = exc.rate_limit
            if not isinstance(exc, StageUnavailable) or policy.on_failure == "closed":
                raise
            log.warning("rate_check_failed_open", error=exc.message)
        except Exception as exc:  # KV unreachable or slow
            if policy.on_failure == "closed":
                raise StageUnavailable("the rate-limit state could not be read", stage=GUARD) from exc
            log.warning("rate_check_failed_open", error=repr(exc))
        finally:
            tr.stages["rates"] = _ms(t)

    async def _reserve(self, amount: float, tr: Trace) -> Reservation | None:
        p, req = tr.principal, tr.req
        assert p is not None
        assert req is not None
        ask = ReserveRequest(tenant=p.tenant, user=req.user or "", key_id=p.key_id, tier=p.tier, amount_usd=amount)
        # The tenant's owner replica first (its keys' updates meet in one process: shared.owners); a
        # replica that is gone was never asked, so the queue group may be asked instead.
        owner = self.budget_owners.owner(p.tenant) if self.budget_owners is not None else None
        if owner is not None:
            subject = self.names.owned(BUDGETER, owner, OP_RESERVE)
            try:
                return await self._call(BUDGETER, ask, Reservation, self.stages.budgeter, tr, subject=subject)
            except NoResponders:
                assert self.budget_owners is not None
                self.budget_owners.forget(owner)
        return await self._call(BUDGETER, ask, Reservation, self.stages.budgeter, tr)

    # -- stage calls under policy -------------------------------------------------------
    async def _call(
        self, stage: str, payload: Any, reply_type: type[T], policy: StagePolicy, tr: Trace, *, subject: str = ""
    ) -> T | None:
        t = time.perf_counter()
        try:
            return await bus.call(
                self.nc, subject or self._subjects[stage], payload, reply_type, tr.ctx, stage=stage,
                timeout_s=policy.timeout_ms / 1000.0,
            )  # fmt: skip
        except StageUnavailable as exc:
            if subject and isinstance(exc, NoResponders):  # a chosen replica that is gone: the caller goes on
                raise
            if policy.on_failure == "open":
                log.warning("stage_failed_open", failed_stage=stage, error=exc.message)
                return None
            raise
        finally:
            tr.stages[stage] = _ms(t)

    # -- reporting ----------------------------------------------------------------------
    def _info(self, tr: Trace) -> LockgateInfo:
        r = tr.result
        stages = dict(tr.stages)
        stages["total"] = tr.total_ms()
        if tr.cached is not None:
            return LockgateInfo(
                request_id=tr.ctx.request_id, route=tr.plan.route if tr.plan else "",
                deployment=tr.cached.deployment, cached="exact", latency_ms=stages, redactions=tr.redactions,
                security=tr.security, rate_limit=tr.rate_limit,
            )  # fmt: skip
        return LockgateInfo(
            request_id=tr.ctx.request_id,
            route=tr.plan.route if tr.plan else "",
            deployment=r.deployment if r else "",
            provider=r.provider if r else "",
            attempts=r.attempts if r else [],
            fallbacks=max(0, len({a.deployment for a in r.attempts}) - 1) if r else 0,  # retries are not fallbacks
            cost_usd=r.cost_usd if r else 0.0,
            latency_ms=stages,
            validation=tr.validation,
            degraded=r.degraded if r else "",
            redactions=tr.redactions,
            security=tr.security,
            rate_limit=tr.rate_limit,
        )

    async def _report(self, tr: Trace, outcome: Outcome, err: LockgateError | None) -> None:
        """Publish the completion event: budget settles, cache fills, auditor records."""
        req, r, p, res = tr.req, tr.result, tr.principal, tr.reservation
        completion = None
        if outcome == "completed" and tr.cache_key and r is not None and not r.degraded:
            completion = CachedCompletion(  # what the client got: validated/repaired, PII redacted
                content=tr.delivered, tool_calls=r.tool_calls, finish_reason=r.finish_reason, model=r.model,
                usage=r.usage, deployment=r.deployment,
            )  # fmt: skip
        stages = dict(tr.stages)
        ev = CompletionEvent(
            request_id=tr.ctx.request_id,
            tenant=p.tenant if p else "",
            ts_ms=now_ms(),
            outcome=outcome,
            user=(req.user or "") if req else "",
            key_id=p.key_id if p else "",
            model=(r.model if r else (tr.cached.model if tr.cached else (req.model or ""))) if req else "",
            route=tr.plan.route if tr.plan else "",
            deployment=r.deployment if r else (tr.cached.deployment if tr.cached else ""),
            stream=req.stream if req else False,
            error_type=err.type if err else "",
            error_stage=err.stage if err else "",
            error_message=pii.redact(err.message[:500])[0] if err else "",  # a schema error can quote output
            usage=r.usage if r else (tr.cached.usage if tr.cached else Usage()),
            cost_usd=r.cost_usd if r else 0.0,
            reservation_id=res.reservation_id if res else "",
            hold=res.hold if res else None,
            latency_ms=tr.total_ms(),
            stage_latency_ms=stages,
            attempts=r.attempts if r else [],
            validation=tr.validation,
            degraded=r.degraded if r else "",
            cache_key=tr.cache_key if completion is not None else "",
            completion=completion,
            fingerprint=similarity.fingerprint(req.messages) if completion is not None and req else [],
            metadata=req.lockgate.metadata if req else {},
            security=tr.security,
            approvals=tr.approvals,
        )
        subject = self.names.event(EV_COMPLETION, ev.tenant)  # Names makes the tenant a safe token
        try:
            # The de-duplication id is ours, not the client's request id: a client that reuses its id
            # (a retry) must not have the second event dropped (budget never settled, no audit record).
            await self.js.publish(subject, bus.encode(ev), headers={headers.MSG_ID: tr.event_id})
        except Exception as exc:  # the client has its answer; losing the event is logged loudly
            log.error("completion_event_lost", error=str(exc))


async def _failure_of(task: asyncio.Task[None]) -> Exception | None:
    try:
        await task
    except Exception as exc:
        return exc
    return None


async def _late(call: asyncio.Future[ExecuteResult]) -> ExecuteResult | None:
    """The executor's answer if it still comes (``LATE_RESULT_S``): what the provider charged."""
    if call.cancelled():
        return None
    try:
        return await asyncio.wait_for(asyncio.shield(call), LATE_RESULT_S + 0.1)
    except Exception:  # failed or timed out: no result, the cost is unknown (settled as 0)
        if not call.done():
            call.cancel()
        return None


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
