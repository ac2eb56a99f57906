"""Reserve the worst-case cost before a call; settle to the actual cost after it.

A request is held against up to three budgets (its tenant's, its user's, its key's: those
that have one), decided concurrently on their own KV keys. If one refuses, the holds taken
on the others are released at once. A hold carries a lease (the request's deadline plus
``budgets.lease_grace_ms``); one that is never settled stops counting then.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import structlog

from services.budgeter.limits import LimitsView
from services.budgeter.store import Alert, Ask, BudgetStore, Clock, Granted, Refused, Settled, units, usd
from shared.config import LockgateConfig
from shared.errors import BudgetExceeded
from shared.headers import new_id, now_ms
from shared.schemas.budget import BudgetAlert, BudgetHold
from shared.schemas.mesh import Reservation, ReserveRequest, SettleRequest
from shared.subjects import BUDGETER

log = structlog.get_logger("lockgate.budgeter")

LEASE_BUCKET_S = 5  # leases are rounded up to this: holds expire in steps, never early


def lease_expiry(deadline_ms: int, grace_ms: int, now_s: float) -> int:
    """Unix seconds after which an unsettled hold stops counting (never before the deadline + grace)."""
    at_s = max(deadline_ms / 1000.0, now_s) + grace_ms / 1000.0
    return math.ceil(at_s / LEASE_BUCKET_S) * LEASE_BUCKET_S


class Budgeter:
    def __init__(
        self,
        config: LockgateConfig,
        store: BudgetStore,
        limits: LimitsView | None = None,
        *,
        clock: Callable[[], float] = time.time,
        alert: Callable[[BudgetAlert], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.limits = limits or LimitsView(config)
        self.clock = clock  # Unix seconds; tests set it to cross a UTC day or month
        self._alert = alert

    async def reserve(self, req: ReserveRequest, deadline_ms: int | None = None) -> Reservation:
        budgets = self.limits.budgets(req.tenant, req.user, req.key_id, req.tier)
        rid = new_id()
        if not budgets:  # no budget: nothing to account
            return Reservation(reservation_id=rid, amount_usd=req.amount_usd)
        now_s = self.clock()
        grace = self.config.budgets.lease_grace_ms
        deadline = (
            deadline_ms if deadline_ms is not None else int(now_s * 1000) + self.config.gateway.request_timeout_ms
        )
        expires = lease_expiry(deadline, grace, now_s)
        amount = units(req.amount_usd)
        asks = [Ask("reserve", rid, now_s, budget=b, amount=amount, expires_s=expires) for _, b in budgets]
        if len(budgets) == 1:
            outcomes: list[object] = [await self.store.submit(budgets[0][0], asks[0])]
        else:
            outcomes = await asyncio.gather(
                *(self.store.submit(key, ask) for (key, _), ask in zip(budgets, asks, strict=True)),
                return_exceptions=True,
            )
        refused = [o for o in outcomes if isinstance(o, Refused)]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if refused or failed:
            # Give back what the other budgets granted, at once (their room is someone else's).
            taken = [key for (key, _), o in zip(budgets, outcomes, strict=True) if isinstance(o, Granted)]
            await self._release(rid, taken, now_s)
            if failed:
                raise failed[0]
            raise _refusal(max(refused, key=lambda r: r.reset_ms))
        granted = [o for o in outcomes if isinstance(o, Granted)]
        alerts = [a for g in granted for a in g.alerts]
        if alerts:
            await self._send(req.tenant, alerts)
        day = Clock(now_s).day
        hold = BudgetHold(
            id=rid, keys=[k for k, _ in budgets], day=day, expires_s=expires, amount_usd=req.amount_usd, tier=req.tier
        )
        return Reservation(
            reservation_id=rid,
            amount_usd=req.amount_usd,
            hold=hold,
            remaining_usd=usd(min(g.remaining for g in granted)),
        )

    async def settle(self, ev: SettleRequest) -> None:
        """Release the hold and book its cost (idempotent: a redelivery releases nothing twice)."""
        hold = ev.hold
        if hold is None:
            return
        now_s = self.clock()
        budgets = dict(self.limits.budgets(ev.tenant, ev.user, ev.key_id, hold.tier))
        actual = units(max(0.0, ev.cost_usd))
        threshold = self.config.budgets.alert_threshold
        asks = [
            (key, Ask("settle", hold.id, now_s, budget=budgets.get(key), actual=actual, expires_s=hold.expires_s,
                      threshold=threshold))
            for key in hold.keys
        ]  # fmt: skip
        if len(asks) == 1:  # the usual case: no gather (a task per key)
            results: list[object] = [await self.store.submit(*asks[0])]
        else:
            results = list(await asyncio.gather(*(self.store.submit(key, ask) for key, ask in asks)))
        alerts = [a for r in results if isinstance(r, Settled) for a in r.alerts]
        if alerts:
            await self._send(ev.tenant, alerts)

    async def _release(self, rid: str, keys: list[str], now_s: float) -> None:
        if keys:
            await asyncio.gather(
                *(self.store.submit(k, Ask("release", rid, now_s)) for k in keys), return_exceptions=True
            )

    async def _send(self, tenant: str, alerts: list[Alert]) -> None:
        for a in alerts:
            ev = BudgetAlert(
                tenant=tenant,
                scope=a.budget.scope,
                entity=a.budget.name,
                window=a.window,
                kind=a.kind,
                limit_usd=usd(a.limit),
                spent_usd=usd(a.spent),
                reserved_usd=usd(a.reserved),
                threshold=self.config.budgets.alert_threshold,
                mode=a.budget.mode,
                ts_ms=now_ms(),
            )
            log.warning("budget_alert", kind=a.kind, scope=a.budget.scope, entity=a.budget.name, window=a.window)
            if self._alert is not None:
                try:
                    await self._alert(ev)
                except Exception as exc:  # the flag is set: this alert will not come again
                    log.error("budget_alert_lost", error=str(exc), entity=a.budget.name, window=a.window)


def _refusal(r: Refused) -> BudgetExceeded:
    what = {"tenant": "tenant", "user": "user", "key": "API key"}[r.budget.scope]
    period = "monthly" if r.window.startswith("m") else "daily"
    return BudgetExceeded(
        f"{what} {r.budget.name!r} {period} budget of ${usd(r.limit):.2f} is used up "
        f"(spent ${usd(r.spent):.4f}, reserved ${usd(r.reserved):.4f}, this request needs up to "
        f"${usd(r.needed):.4f}); the {period} window resets in {r.reset_ms // 1000} s",
        stage=BUDGETER,
        retry_after_ms=r.reset_ms,
    )
