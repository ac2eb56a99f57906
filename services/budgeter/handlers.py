"""Reserve the worst-case cost before a call; settle to the actual cost after it."""

from __future__ import annotations

from services.budgeter.store import BudgetStore, day_window
from shared.config import LockgateConfig
from shared.headers import new_id
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import Reservation, ReserveRequest


class Budgeter:
    def __init__(self, config: LockgateConfig, store: BudgetStore) -> None:
        self.config = config
        self.store = store

    async def reserve(self, req: ReserveRequest) -> Reservation:
        tenant = self.config.tenants.get(req.tenant)
        limit = tenant.daily_budget_usd if tenant else None
        if limit is None:  # no budget: nothing to account
            return Reservation(reservation_id=new_id(), amount_usd=req.amount_usd)
        window, reset_ms = day_window()
        remaining = await self.store.reserve(req.tenant, window, req.amount_usd, limit, reset_ms)
        return Reservation(reservation_id=new_id(), amount_usd=req.amount_usd, window=window, remaining_usd=remaining)

    async def settle(self, ev: CompletionEvent) -> None:
        if ev.budget_window:
            await self.store.settle(ev.tenant, ev.budget_window, ev.reserved_usd, ev.cost_usd)
