"""Budget state in JetStream KV: one key per tenant and UTC day, revision-checked.

Every update is a compare-and-set on the key's revision, batched per key in
process (shared.kvbatch), so any number of budgeter replicas share the state
without overshooting a hard budget. Settlements share a key's batches with its
reservations, so one process never races itself on a key; in a round,
settlements go first (what they release is free for the reservations), then
reservations in arrival order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec
from nats.js.kv import KeyValue

from shared.errors import BudgetExceeded, StageUnavailable
from shared.kvbatch import BatchedKV, Decision
from shared.subjects import BUDGETER


class BudgetState(msgspec.Struct, kw_only=True):
    spent_usd: float = 0.0
    reserved_usd: float = 0.0


def day_window(now: dt.datetime | None = None) -> tuple[str, int]:
    """The current daily window id and the ms until it resets."""
    now = now or dt.datetime.now(dt.UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    reset = start + dt.timedelta(days=1)
    return "d" + now.strftime("%Y%m%d"), int((reset - now).total_seconds() * 1000)


@dataclass(slots=True)
class _Ask:
    """A reservation to decide (``settle`` False) or a settlement to book (``settle`` True)."""

    tenant: str
    amount: float  # reserve: the amount; settle: the reservation to release
    limit: float
    reset_ms: int
    settle: bool = False
    actual: float = 0.0  # settle: the cost to book


def _decide(_key: str, state: BudgetState, asks: list[_Ask]) -> Decision:
    """Settlements first (what they release is free for the reservations), then reservations in arrival order."""
    outcomes: dict[int, object] = {}
    changed = False
    for i, ask in enumerate(asks):
        if ask.settle:
            state.reserved_usd = max(0.0, state.reserved_usd - ask.amount)
            state.spent_usd += ask.actual
            changed = True
            outcomes[i] = 0.0
    for i, ask in enumerate(asks):
        if ask.settle:
            continue
        if state.spent_usd + state.reserved_usd + ask.amount > ask.limit:
            outcomes[i] = _refusal(ask, state)
        else:
            state.reserved_usd += ask.amount
            changed = True
            outcomes[i] = ask.limit - state.spent_usd - state.reserved_usd
    return Decision(changed, [outcomes[i] for i in range(len(asks))])


def _refusal(ask: _Ask, state: BudgetState) -> BudgetExceeded:
    return BudgetExceeded(
        f"tenant {ask.tenant!r} daily budget of ${ask.limit:.2f} is used up "
        f"(spent ${state.spent_usd:.4f}, reserved ${state.reserved_usd:.4f}, this request needs up to "
        f"${ask.amount:.4f}); it resets in {ask.reset_ms // 1000} s",
        stage=BUDGETER,
        retry_after_ms=ask.reset_ms,
    )


def _contended() -> Exception:
    return StageUnavailable("budget state is too contended; try again", stage=BUDGETER)


class BudgetStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._batch: BatchedKV[BudgetState, _Ask] = BatchedKV(kv, BudgetState, _decide, contended=_contended)

    async def reserve(self, tenant: str, window: str, amount: float, limit: float, reset_ms: int) -> float:
        """Add ``amount`` to the reserved total if it fits; returns what remains."""
        remaining = await self._batch.submit(f"{tenant}.{window}", _Ask(tenant, amount, limit, reset_ms))
        assert isinstance(remaining, float)
        return remaining

    async def settle(self, tenant: str, window: str, reserved: float, actual: float) -> None:
        """Release a reservation and book the actual cost (decided with the key's reservations)."""
        await self._batch.submit(f"{tenant}.{window}", _Ask(tenant, reserved, 0.0, 0, settle=True, actual=actual))

    async def read(self, tenant: str, window: str) -> BudgetState:
        return await self._batch.read(f"{tenant}.{window}")
