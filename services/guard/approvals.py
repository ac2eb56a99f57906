"""Human in the loop: which requests and answers wait for a person, and the wait itself.

- A request with ``lockgate.requires_approval`` waits before it runs (after the key, input
  and safety checks, so nobody is asked about a request that would be refused anyway; before
  the cache answer, the budget reservation and the provider call).
- A streamed request that offers a tool listed in ``[approvals] irreversible_tools`` waits
  before it runs too: its chunks go straight to the client, so an answer cannot be held back.
- A non-streamed answer that calls such a tool is held before delivery (fresh or cached):
  the person sees the tool names and a redacted excerpt of the arguments. The provider was
  paid for; a denied answer is settled like any other.

Waiting is bounded by ``approvals.timeout_s`` and by the request's deadline, whichever ends
first, so nothing hangs; an approval-gated request may ask for a deadline longer than
``gateway.max_timeout_ms`` (up to ``timeout_s`` plus that), see ``deadline_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from shared import approvals
from shared.approvals import ApprovalStore
from shared.config import ApprovalsConfig
from shared.errors import ApprovalDenied, ApprovalExpired
from shared.headers import RequestContext, now_ms
from shared.schemas.approvals import ApprovalKind, ApprovalRecord
from shared.schemas.chat import ChatRequest, ToolCall
from shared.schemas.events import ApprovalFacts
from shared.subjects import GUARD

log = structlog.get_logger("lockgate.guard.approvals")
MARGIN_MS = 250  # the wait ends this long before the deadline, so the client still gets a clean answer


class Gate:
    def __init__(self, cfg: ApprovalsConfig, store: ApprovalStore) -> None:
        self.cfg = cfg
        self.store = store
        self.listed = frozenset(cfg.irreversible_tools)

    # -- who waits ---------------------------------------------------------------------
    def may_wait(self, req: ChatRequest) -> bool:
        """Whether the request may wait for a person at some point (it then gets a longer deadline)."""
        return req.lockgate.requires_approval or bool(
            approvals.irreversible(approvals.offered_tools(req.tools), self.listed)
        )

    def before(self, req: ChatRequest) -> str | None:
        """The reason the request waits before it runs, or None."""
        if req.lockgate.requires_approval:
            return "requires_approval"
        if req.stream and approvals.irreversible(approvals.offered_tools(req.tools), self.listed):
            return "irreversible_tools"
        return None

    def held(self, calls: list[ToolCall] | None) -> list[str]:
        """The irreversible tools an answer calls (a non-empty list holds the answer)."""
        return approvals.irreversible(approvals.called_tools(calls), self.listed)

    def deadline_ms(self, asked_ms: int | None, request_timeout_ms: int, max_timeout_ms: int) -> int:
        """The deadline of a request that may wait: the client's own (None: it sent none), capped at
        the approval wait plus an ordinary request's longest deadline."""
        wait_ms = int(self.cfg.timeout_s * 1000)
        now = now_ms()
        cap = now + wait_ms + max_timeout_ms
        return min(asked_ms, cap) if asked_ms is not None else min(now + wait_ms + request_timeout_ms, cap)

    # -- the wait ----------------------------------------------------------------------
    async def wait(
        self, ctx: RequestContext, *, kind: ApprovalKind, reason: str, model: str, route: str, tools: list[str],
        preview: str, facts: list[ApprovalFacts],
    ) -> None:  # fmt: skip
        """Park an approval and wait for its decision: return on approve, raise on deny or expiry.

        The outcome is appended to ``facts`` (the audit record's ``approvals``) before raising."""
        t0 = time.perf_counter()
        now = now_ms()
        by_timeout = now + int(self.cfg.timeout_s * 1000)
        expires = min(by_timeout, ctx.deadline_ms - MARGIN_MS)
        cut_by_deadline = expires < by_timeout
        rec = ApprovalRecord(
            id=approvals.new_id(), tenant=ctx.tenant, request_id=ctx.request_id, kind=kind, reason=reason,
            created_ms=now, expires_ms=max(expires, now), model=model, route=route, tools=tools,
            preview=approvals.preview(preview),
        )  # fmt: skip
        if expires <= now:
            facts.append(ApprovalFacts(id=rec.id, kind=kind, outcome="expired"))
            raise ApprovalExpired(self._expired_message(rec, cut_by_deadline=True), stage=GUARD)
        await self.store.park(rec)
        log.info("approval_parked", approval_id=rec.id, kind=kind, reason=reason, tools=tools)
        try:
            done = await self.store.wait(rec.id)
        except asyncio.CancelledError:  # this guard is stopping: nobody will act on a decision now
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.expire(rec.id))
            raise
        wait_ms = round((time.perf_counter() - t0) * 1000)
        facts.append(ApprovalFacts(id=rec.id, kind=kind, outcome=done.status, by=done.decided_by, wait_ms=wait_ms))
        log.info("approval_decided", approval_id=rec.id, outcome=done.status, by=done.decided_by, wait_ms=wait_ms)
        if done.status == "approved":
            return
        if done.status == "denied":
            what = "the request" if kind == "request" else f"the answer calling {', '.join(tools)}"
            note = f": {done.note}" if done.note else ""
            by = f" by {done.decided_by}" if done.decided_by else ""
            raise ApprovalDenied(f"{what} was denied{by} (approval {rec.id}){note}", stage=GUARD)
        raise ApprovalExpired(self._expired_message(rec, cut_by_deadline=cut_by_deadline), stage=GUARD)

    def _expired_message(self, rec: ApprovalRecord, *, cut_by_deadline: bool) -> str:
        limit = f"approvals.timeout_s = {self.cfg.timeout_s:g} s"
        if cut_by_deadline:
            return (
                f"no decision on approval {rec.id} before the request's deadline; approvals wait up to {limit}: "
                "send a deadline at least that long"
            )
        return f"no decision on approval {rec.id} within {limit}"
