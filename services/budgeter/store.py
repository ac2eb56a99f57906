"""Budget state in JetStream KV: one key per tenant and UTC day, revision-checked.

Each update is a compare-and-set on the key's revision, so any number of
budgeter replicas share the state without overshooting a hard budget.

Reservations for one key are batched in process: while one compare-and-set is
in flight, new reservations and settlements queue, and the next round decides
all of them (settlements first, then reservations in arrival order) with one
read and one write. Settlements share the queue so that one process never races
itself on a key (reserves and settles invalidating each other's revision). Without that, N concurrent
requests of one tenant cost O(N^2) KV round trips (each round only one CAS
wins) and most of them missed the guard's time slice for the budgeter.

The store remembers the state and revision it last read or wrote per key, so
an uncontended reserve or settle is one KV round trip (the compare-and-set)
instead of two. A remembered revision that another replica has moved past
only fails the compare-and-set, which then re-reads: correctness rests on the
revision check, the memory only saves the read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from shared.errors import BudgetExceeded, StageUnavailable
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


@dataclass(slots=True)
class _Ask:
    """A reservation to decide (``settle`` False) or a settlement to book (``settle`` True)."""

    tenant: str
    amount: float  # reserve: the amount; settle: the reservation to release
    limit: float
    reset_ms: int
    future: asyncio.Future[float]
    settle: bool = False
    actual: float = 0.0  # settle: the cost to book


class BudgetStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._queued: dict[str, list[_Ask]] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()
        self._known: dict[str, tuple[float, float, int]] = {}  # key -> (spent, reserved, revision)

    async def _load(self, key: str, *, fresh: bool = False) -> tuple[BudgetState, int | None]:
        known = None if fresh else self._known.get(key)
        if known is not None:
            return BudgetState(spent_usd=known[0], reserved_usd=known[1]), known[2]
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return BudgetState(), None
        state = _dec.decode(entry.value) if entry.value else BudgetState()
        self._remember(key, state, entry.revision)
        return state, entry.revision

    def _remember(self, key: str, state: BudgetState, revision: int | None) -> None:
        if revision is None:
            return
        if len(self._known) > 100_000:  # old windows' keys: forget them all, they are re-read on demand
            self._known.clear()
        self._known[key] = (state.spent_usd, state.reserved_usd, revision)

    async def _cas(self, key: str, state: BudgetState, revision: int | None) -> bool:
        data = msgspec.json.encode(state)
        try:
            if revision is None:
                new_revision = await self.kv.create(key, data)
            else:
                new_revision = await self.kv.update(key, data, last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyValueError, nats.js.errors.APIError):
            self._known.pop(key, None)  # someone else moved it: read it again
            return False
        self._remember(key, state, new_revision)
        return True

    async def reserve(self, tenant: str, window: str, amount: float, limit: float, reset_ms: int) -> float:
        """Add ``amount`` to the reserved total if it fits; returns what remains."""
        ask = _Ask(tenant, amount, limit, reset_ms, asyncio.get_running_loop().create_future())
        return await self._enqueue(f"{tenant}.{window}", ask)

    async def _enqueue(self, key: str, ask: _Ask) -> float:
        self._queued.setdefault(key, []).append(ask)
        if key not in self._busy:
            self._busy.add(key)
            task = asyncio.create_task(self._drain(key))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return await ask.future  # a caller that gives up cancels its ask; an undecided one is then skipped

    async def _drain(self, key: str) -> None:
        try:
            while batch := self._queued.pop(key, None):
                try:
                    await self._decide(key, batch)
                except Exception as exc:  # KV unavailable: every waiting caller hears it, none hangs
                    for ask in batch:
                        if not ask.future.done():
                            ask.future.set_exception(exc)
        finally:
            self._busy.discard(key)

    async def _decide(self, key: str, batch: list[_Ask]) -> None:
        """One read, admit in order what fits, one compare-and-set; again on a lost race."""
        for _ in range(MAX_CAS_RETRIES):
            live = [a for a in batch if not a.future.done()]
            if not live:
                return
            state, rev = await self._load(key)
            outcomes: list[tuple[_Ask, float | BudgetExceeded]] = []
            admitted = False
            for ask in live:  # settlements first: what they release is free for the reservations
                if ask.settle:
                    state.reserved_usd = max(0.0, state.reserved_usd - ask.amount)
                    state.spent_usd += ask.actual
                    admitted = True
                    outcomes.append((ask, 0.0))
            for ask in live:
                if ask.settle:
                    continue
                if state.spent_usd + state.reserved_usd + ask.amount > ask.limit:
                    outcomes.append((ask, self._refusal(ask, state)))
                else:
                    state.reserved_usd += ask.amount
                    admitted = True
                    outcomes.append((ask, ask.limit - state.spent_usd - state.reserved_usd))
            if admitted and not await self._cas(key, state, rev):
                continue
            for ask, outcome in outcomes:
                if ask.future.done():
                    continue
                if isinstance(outcome, BudgetExceeded):
                    ask.future.set_exception(outcome)
                else:
                    ask.future.set_result(outcome)
            return
        for ask in batch:
            if not ask.future.done():
                ask.future.set_exception(StageUnavailable("budget state is too contended; try again", stage=BUDGETER))

    @staticmethod
    def _refusal(ask: _Ask, state: BudgetState) -> BudgetExceeded:
        return BudgetExceeded(
            f"tenant {ask.tenant!r} daily budget of ${ask.limit:.2f} is used up "
            f"(spent ${state.spent_usd:.4f}, reserved ${state.reserved_usd:.4f}, this request needs up to "
            f"${ask.amount:.4f}); it resets in {ask.reset_ms // 1000} s",
            stage=BUDGETER,
            retry_after_ms=ask.reset_ms,
        )

    async def settle(self, tenant: str, window: str, reserved: float, actual: float) -> None:
        """Release a reservation and book the actual cost (decided with the key's reservations)."""
        ask = _Ask(tenant, reserved, 0.0, 0, asyncio.get_running_loop().create_future(), settle=True, actual=actual)
        await self._enqueue(f"{tenant}.{window}", ask)

    async def read(self, tenant: str, window: str) -> BudgetState:
        return (await self._load(f"{tenant}.{window}", fresh=True))[0]
