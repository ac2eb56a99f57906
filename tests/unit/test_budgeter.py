"""Reserve-then-settle budgets on an in-memory KV with revision checks (no NATS)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import msgspec
import nats.js.errors
import pytest

from services.budgeter.handlers import Budgeter
from services.budgeter.store import BudgetState, BudgetStore, day_window
from shared import config as cfgmod
from shared.errors import BudgetExceeded
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import ReserveRequest
from tests.unit.fakes import MemoryKV


class FakeKV(MemoryKV):
    def state(self, key: str) -> BudgetState:
        return msgspec.json.decode(self.data[key].value, type=BudgetState)


def store(kv: FakeKV) -> BudgetStore:
    return BudgetStore(kv)  # type: ignore[arg-type]


async def test_reserve_within_the_limit() -> None:
    kv = FakeKV()
    remaining = await store(kv).reserve("acme", "d20260101", 0.4, 1.0, 5_000)
    assert remaining == pytest.approx(0.6)
    assert kv.state("acme.d20260101") == BudgetState(spent_usd=0.0, reserved_usd=0.4)


async def test_reserve_over_the_limit_is_refused_with_retry_after() -> None:
    kv = FakeKV()
    s = store(kv)
    await s.reserve("acme", "w", 0.7, 1.0, 3_600_000)
    with pytest.raises(BudgetExceeded) as info:
        await s.reserve("acme", "w", 0.5, 1.0, 3_600_000)
    err = info.value
    assert err.retry_after_ms == 3_600_000
    assert err.stage == "budgeter"
    assert err.retryable is False
    assert "'acme'" in err.message
    assert "resets in 3600 s" in err.message
    assert kv.state("acme.w").reserved_usd == pytest.approx(0.7)  # unchanged by the refusal


async def test_exactly_the_limit_fits() -> None:
    s = store(FakeKV())
    assert await s.reserve("t", "w", 0.25, 0.5, 1) == pytest.approx(0.25)
    assert await s.reserve("t", "w", 0.25, 0.5, 1) == pytest.approx(0.0)
    with pytest.raises(BudgetExceeded):
        await s.reserve("t", "w", 0.01, 0.5, 1)


async def test_tenants_and_windows_are_separate() -> None:
    kv = FakeKV()
    s = store(kv)
    await s.reserve("a", "d1", 1.0, 1.0, 1)
    await s.reserve("b", "d1", 1.0, 1.0, 1)
    await s.reserve("a", "d2", 1.0, 1.0, 1)
    assert set(kv.data) == {"a.d1", "b.d1", "a.d2"}


async def test_concurrent_reserves_never_overshoot() -> None:
    random.seed(7)
    kv = FakeKV()
    s = store(kv)
    results = await asyncio.gather(*(s.reserve("t", "w", 0.1, 5.05, 1) for _ in range(200)), return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(admitted) == 50
    assert len(refused) == 150
    assert kv.state("t.w").reserved_usd == pytest.approx(5.0)
    assert kv.state("t.w").reserved_usd <= 5.05


async def test_concurrent_reserves_are_batched() -> None:
    """200 concurrent reserves of one key need a handful of KV round trips, not 200^2."""
    kv = FakeKV(jitter=False)
    s = store(kv)
    await asyncio.gather(*(s.reserve("t", "w", 0.001, 100.0, 1) for _ in range(200)))
    assert kv.state("t.w").reserved_usd == pytest.approx(0.2)
    assert kv.ops < 20


async def test_replicas_sharing_the_bucket_never_overshoot() -> None:
    random.seed(11)
    kv = FakeKV()
    replicas = [store(kv) for _ in range(4)]
    calls = [replicas[i % 4].reserve("t", "w", 0.1, 3.05, 1) for i in range(120)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    assert all(isinstance(r, BudgetExceeded) for r in results if isinstance(r, BaseException))
    assert len(admitted) == 30
    assert kv.state("t.w").reserved_usd == pytest.approx(3.0)


async def test_a_small_request_still_fits_after_a_big_one_is_refused() -> None:
    s = store(FakeKV())
    await s.reserve("t", "w", 0.9, 1.0, 1)
    big, small = await asyncio.gather(s.reserve("t", "w", 0.5, 1.0, 1), s.reserve("t", "w", 0.05, 1.0, 1),
                                      return_exceptions=True)  # fmt: skip
    assert isinstance(big, BudgetExceeded)
    assert small == pytest.approx(0.05)


async def test_settle_releases_the_reservation_and_books_the_cost() -> None:
    kv = FakeKV()
    s = store(kv)
    await s.reserve("t", "w", 0.5, 1.0, 1)
    await s.reserve("t", "w", 0.3, 1.0, 1)
    await s.settle("t", "w", 0.5, 0.02)
    assert kv.state("t.w") == BudgetState(spent_usd=pytest.approx(0.02), reserved_usd=pytest.approx(0.3))
    await s.settle("t", "w", 0.3, 0.01)
    state = await s.read("t", "w")
    assert state.spent_usd == pytest.approx(0.03)
    assert state.reserved_usd == pytest.approx(0.0)
    # The released room is usable again.
    assert await s.reserve("t", "w", 0.9, 1.0, 1) == pytest.approx(0.07)


async def test_settle_never_makes_reserved_negative() -> None:
    kv = FakeKV()
    s = store(kv)
    await s.settle("t", "w", 0.5, 0.1)  # a settle without its reservation (e.g. after a window change)
    assert kv.state("t.w") == BudgetState(spent_usd=pytest.approx(0.1), reserved_usd=0.0)


async def test_concurrent_settles_and_reserves_keep_the_books() -> None:
    random.seed(3)
    kv = FakeKV()
    s = store(kv)
    await asyncio.gather(*(s.reserve("t", "w", 0.1, 100.0, 1) for _ in range(20)))
    await asyncio.gather(*(s.settle("t", "w", 0.1, 0.01) for _ in range(20)), *(s.reserve("t", "w", 0.1, 100.0, 1)
                                                                                  for _ in range(10)))  # fmt: skip
    state = kv.state("t.w")
    assert state.spent_usd == pytest.approx(0.2)
    assert state.reserved_usd == pytest.approx(1.0)


async def test_kv_failure_reaches_every_waiter() -> None:
    kv = FakeKV()
    kv.fail = nats.js.errors.ServiceUnavailableError()
    s = store(kv)
    results = await asyncio.wait_for(
        asyncio.gather(*(s.reserve("t", "w", 0.1, 1.0, 1) for _ in range(5)), return_exceptions=True), 1.0
    )
    assert all(isinstance(r, nats.js.errors.ServiceUnavailableError) for r in results)
    kv.fail = None
    assert await s.reserve("t", "w", 0.1, 1.0, 1) == pytest.approx(0.9)  # and the store recovers


async def test_a_caller_that_gave_up_reserves_nothing() -> None:
    kv = FakeKV(jitter=False)
    s = store(kv)
    first = asyncio.create_task(s.reserve("t", "w", 0.1, 1.0, 1))
    await asyncio.sleep(0)  # the first round is in flight
    gone = asyncio.create_task(s.reserve("t", "w", 0.5, 1.0, 1))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == pytest.approx(0.9)
    with pytest.raises(asyncio.CancelledError):
        await gone
    await asyncio.sleep(0.01)
    assert kv.state("t.w").reserved_usd == pytest.approx(0.1)


def test_day_window() -> None:
    now = dt.datetime(2026, 3, 4, 23, 59, 30, tzinfo=dt.UTC)
    assert day_window(now) == ("d20260304", 30_000)
    window, reset_ms = day_window()
    assert window == "d" + dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    assert 0 < reset_ms <= 86_400_000


# -- the handler ---------------------------------------------------------------------------
CONFIG = cfgmod.parse("[tenants.rich]\ndaily_budget_usd = 10.0\n[tenants.free]\n")


async def test_tenant_without_a_budget_is_not_accounted() -> None:
    kv = FakeKV()
    r = await Budgeter(CONFIG, store(kv)).reserve(ReserveRequest(tenant="free", amount_usd=1e9))
    assert r.window == ""
    assert r.amount_usd == 1e9
    r = await Budgeter(CONFIG, store(kv)).reserve(ReserveRequest(tenant="unknown", amount_usd=1.0))
    assert r.window == ""
    assert kv.ops == 0


async def test_budgeted_tenant_reserves_in_todays_window_and_settles() -> None:
    kv = FakeKV()
    b = Budgeter(CONFIG, store(kv))
    r = await b.reserve(ReserveRequest(tenant="rich", amount_usd=2.0))
    assert r.window == day_window()[0]
    assert r.remaining_usd == pytest.approx(8.0)
    assert len(r.reservation_id) == 24
    ev = CompletionEvent(request_id="x", tenant="rich", ts_ms=0, outcome="completed", cost_usd=0.5,
                         reserved_usd=2.0, budget_window=r.window, reservation_id=r.reservation_id)  # fmt: skip
    await b.settle(ev)
    assert kv.state(f"rich.{r.window}") == BudgetState(spent_usd=0.5, reserved_usd=0.0)
    ops = kv.ops
    await b.settle(msgspec.structs.replace(ev, budget_window=""))  # nothing was reserved: nothing to settle
    assert kv.ops == ops


async def test_one_process_never_races_itself_between_reserves_and_settles() -> None:
    """Reserves and settles of one key share a queue: one compare-and-set a round, none lost to a self-race."""
    random.seed(5)
    kv = FakeKV()
    s = store(kv)
    await s.reserve("t", "w", 0.01, 1_000.0, 1)  # create the key
    ops_before = kv.ops

    async def request() -> None:
        await s.reserve("t", "w", 0.01, 1_000.0, 1)
        await asyncio.sleep(0)
        await s.settle("t", "w", 0.01, 0.005)

    await asyncio.gather(*(request() for _ in range(300)))
    await s.settle("t", "w", 0.01, 0.005)  # the first reservation
    state = kv.state("t.w")
    assert state.reserved_usd == pytest.approx(0.0, abs=1e-9)
    assert state.spent_usd == pytest.approx(301 * 0.005)
    # 600 decisions, batched: far fewer KV operations than one read + one write each
    assert kv.ops - ops_before < 600
