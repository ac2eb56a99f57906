"""Budget state in JetStream KV: one key per tenant and UTC day, revision-checked.

Each update is a compare-and-set on the key's revision, so any number of
budgeter replicas share the state without overshooting a hard budget.
"""

from __future__ import annotations

import datetime as dt

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.errors import BudgetExceeded
from shared.subjects import BUDGETER

MAX_CAS_RETRIES = 64


class BudgetState(msgspec.Struct, kw_only=True):
    spent_usd: float = 0.0
    reserved_usd: float = 0.0


_dec = msgspec.json.Decoder(BudgetState)


def day_window(now: dt.datetime | None = None) -> tuple[str, int]:
    """The current daily window id and the ms until it resets."""
    now = now or dt.datetime.now(dt.UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    reset = start + dt.timedelta(days=1)
    return "d" + now.strftime("%Y%m%d"), int((reset - now).total_seconds() * 1000)


class BudgetStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def _load(self, key: str) -> tuple[BudgetState, int | None]:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return BudgetState(), None
        return (_dec.decode(entry.value) if entry.value else BudgetState()), entry.revision

    async def _cas(self, key: str, state: BudgetState, revision: int | None) -> bool:
        data = msgspec.json.encode(state)
        try:
            if revision is None:
                await self.kv.create(key, data)
            else:
                await self.kv.update(key, data, last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyValueError, nats.js.errors.APIError):
            return False
        return True

    async def reserve(self, tenant: str, window: str, amount: float, limit: float, reset_ms: int) -> float:
        """Add ``amount`` to the reserved total if it fits; returns what remains."""
        key = f"{tenant}.{window}"
        for _ in range(MAX_CAS_RETRIES):
            state, rev = await self._load(key)
            if state.spent_usd + state.reserved_usd + amount > limit:
                raise BudgetExceeded(
                    f"tenant {tenant!r} daily budget of ${limit:.2f} is used up "
                    f"(spent ${state.spent_usd:.4f}, reserved ${state.reserved_usd:.4f}, this request needs up to "
                    f"${amount:.4f}); it resets in {reset_ms // 1000} s",
                    stage=BUDGETER,
                    retry_after_ms=reset_ms,
                )
            state.reserved_usd += amount
            if await self._cas(key, state, rev):
                return limit - state.spent_usd - state.reserved_usd
        raise BudgetExceeded("budget state is too contended; try again", stage=BUDGETER, retryable=True)

    async def settle(self, tenant: str, window: str, reserved: float, actual: float) -> None:
        """Release a reservation and book the actual cost."""
        key = f"{tenant}.{window}"
        for _ in range(MAX_CAS_RETRIES):
            state, rev = await self._load(key)
            state.reserved_usd = max(0.0, state.reserved_usd - reserved)
            state.spent_usd += actual
            if await self._cas(key, state, rev):
                return
        raise RuntimeError(f"could not settle {key} after {MAX_CAS_RETRIES} attempts")

    async def read(self, tenant: str, window: str) -> BudgetState:
        return (await self._load(f"{tenant}.{window}"))[0]
