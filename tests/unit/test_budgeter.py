"""Reserve-then-settle budgets on an in-memory KV with revision checks (no NATS)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import msgspec
import nats.js.errors
import pytest

from services.budgeter.handlers import Budgeter, lease_expiry
from services.budgeter.limits import LimitsView
from services.budgeter.store import (
    Ask,
    Budget,
    BudgetStore,
    Clock,
    EntityState,
    Granted,
    Refused,
    Settled,
    day_window,
    key_key,
    tenant_key,
    units,
    user_key,
)
from shared import config as cfgmod
from shared.errors import BudgetExceeded
from shared.schemas.budget import BudgetAlert, BudgetHold, BudgetLimits
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import ReserveRequest, SettleRequest
from tests.unit.fakes import MemoryKV

T0 = dt.datetime(2026, 3, 4, 12, 0, tzinfo=dt.UTC).timestamp()


class FakeKV(MemoryKV):
    def state(self, key: str) -> EntityState:
        return msgspec.json.decode(self.data[key].value, type=EntityState)


def store(kv: FakeKV) -> BudgetStore:
    return BudgetStore(kv)  # type: ignore[arg-type]


def hard(daily: float | None = 1.0, monthly: float | None = None, mode: str = "hard") -> Budget:
    return Budget(
        scope="tenant", name="acme", daily=None if daily is None else units(daily),
        monthly=None if monthly is None else units(monthly), mode="soft" if mode == "soft" else "hard",
    )  # fmt: skip


def reserve(rid: str, amount: float, budget: Budget, now: float = T0, expires: float = T0 + 60) -> Ask:
    return Ask("reserve", rid, now, budget=budget, amount=units(amount), expires_s=int(expires))


def settle(rid: str, actual: float, budget: Budget, now: float = T0, expires: float = T0 + 60) -> Ask:
    return Ask("settle", rid, now, budget=budget, actual=units(actual), expires_s=int(expires))


# -- the accounting, one entity key ------------------------------------------------------------
async def test_reserve_within_the_limit_holds_the_amount() -> None:
    kv = FakeKV()
    out = await store(kv).submit("t.acme", reserve("r1", 0.4, hard()))
    assert isinstance(out, Granted)
    assert out.remaining == units(0.6)
    st = kv.state("t.acme")
    assert st.holds["r1"].amount == units(0.4)
    assert st.holds["r1"].day == "d20260304"


async def test_reserve_over_the_limit_is_refused_and_holds_nothing() -> None:
    kv = FakeKV()
    s = store(kv)
    await s.submit("t.acme", reserve("r1", 0.7, hard()))
    out = await s.submit("t.acme", reserve("r2", 0.5, hard()))
    assert isinstance(out, Refused)
    assert out.window == "d20260304"
    assert out.reset_ms == 12 * 3_600_000
    assert set(kv.state("t.acme").holds) == {"r1"}


async def test_exactly_the_limit_fits_even_where_floats_would_not() -> None:
    s = store(FakeKV())
    b = hard(daily=0.3)
    assert isinstance(await s.submit("k", reserve("a", 0.1, b)), Granted)
    assert isinstance(await s.submit("k", reserve("b", 0.1, b)), Granted)
    assert isinstance(await s.submit("k", reserve("c", 0.1, b)), Granted)  # 0.1 + 0.1 + 0.1 > 0.3 in floats
    assert isinstance(await s.submit("k", reserve("d", 1e-9, b)), Refused)


async def test_monthly_limit_binds_and_says_when_it_resets() -> None:
    s = store(FakeKV())
    b = hard(daily=10.0, monthly=1.0)
    await s.submit("k", reserve("a", 0.9, b))
    out = await s.submit("k", reserve("b", 0.2, b))
    assert isinstance(out, Refused)
    assert out.window == "m202603"
    assert out.reset_ms == Clock(T0).reset_ms("m202603")
    assert out.reset_ms > 26 * 86_400_000  # 4 March noon to 1 April


async def test_when_both_windows_are_over_the_later_reset_binds() -> None:
    s = store(FakeKV())
    b = hard(daily=1.0, monthly=1.0)
    await s.submit("k", reserve("a", 1.0, b))
    out = await s.submit("k", reserve("b", 0.5, b))
    assert isinstance(out, Refused)
    assert out.window == "m202603"


async def test_soft_budget_lets_requests_through_and_alerts_once() -> None:
    s = store(FakeKV())
    b = hard(daily=1.0, mode="soft")
    await s.submit("k", reserve("a", 0.9, b))
    first = await s.submit("k", reserve("b", 0.5, b))
    second = await s.submit("k", reserve("c", 0.5, b))
    assert isinstance(first, Granted)
    assert [a.kind for a in first.alerts] == ["soft_exceeded"]
    assert isinstance(second, Granted)
    assert second.alerts == []


async def test_settle_releases_the_hold_and_books_the_cost() -> None:
    kv = FakeKV()
    s = store(kv)
    b = hard()
    await s.submit("k", reserve("a", 0.5, b))
    await s.submit("k", reserve("b", 0.3, b))
    out = await s.submit("k", settle("a", 0.02, b))
    assert out == Settled(released=True, alerts=[])
    st = kv.state("k")
    assert set(st.holds) == {"b"}
    assert st.windows["d20260304"].spent == units(0.02)
    assert st.windows["m202603"].spent == units(0.02)
    # The released room is usable again.
    out2 = await s.submit("k", reserve("c", 0.6, b))
    assert isinstance(out2, Granted)
    assert out2.remaining == units(1.0 - 0.02 - 0.3 - 0.6)


async def test_a_redelivered_settlement_releases_and_books_nothing_twice() -> None:
    kv = FakeKV()
    s = store(kv)
    b = hard()
    await s.submit("k", reserve("a", 0.5, b))
    await s.submit("k", reserve("b", 0.5, b))
    await s.submit("k", settle("a", 0.1, b))
    again = await s.submit("k", settle("a", 0.1, b))
    assert again == Settled(released=False, alerts=[])
    st = kv.state("k")
    assert set(st.holds) == {"b"}  # b's hold was not taken by the repeat
    assert st.windows["d20260304"].spent == units(0.1)


async def test_a_hold_stops_counting_when_its_lease_runs_out() -> None:
    kv = FakeKV()
    s = store(kv)
    b = hard()
    await s.submit("k", reserve("lost", 1.0, b, expires=T0 + 30))  # its settlement never comes
    assert isinstance(await s.submit("k", reserve("x", 0.1, b, now=T0 + 29)), Refused)
    out = await s.submit("k", reserve("y", 0.1, b, now=T0 + 30))
    assert isinstance(out, Granted)
    assert set(kv.state("k").holds) == {"y"}  # the expired hold is dropped in the same round


async def test_a_settlement_after_the_lease_still_books_the_cost() -> None:
    kv = FakeKV()
    s = store(kv)
    b = hard()
    await s.submit("k", reserve("slow", 0.5, b, expires=T0 + 30))
    out = await s.submit("k", settle("slow", 0.2, b, now=T0 + 40, expires=T0 + 30))
    assert out == Settled(released=False, alerts=[])
    assert kv.state("k").windows["d20260304"].spent == units(0.2)


async def test_threshold_alert_once_per_window() -> None:
    s = store(FakeKV())
    b = hard(daily=1.0, monthly=10.0)
    for i in range(3):
        await s.submit("k", reserve(f"r{i}", 0.3, b))
    first = await s.submit("k", settle("r0", 0.5, b))
    second = await s.submit("k", settle("r1", 0.35, b))  # 0.85 >= 0.8 x 1.0: the daily alert
    third = await s.submit("k", settle("r2", 0.1, b))
    assert isinstance(first, Settled)
    assert first.alerts == []
    assert isinstance(second, Settled)
    assert [(a.kind, a.window) for a in second.alerts] == [("threshold", "d20260304")]
    assert isinstance(third, Settled)
    assert third.alerts == []


async def test_a_new_utc_day_starts_from_zero_while_the_month_keeps_counting() -> None:
    kv = FakeKV()
    s = store(kv)
    b = hard(daily=1.0, monthly=1.5)
    await s.submit("k", reserve("a", 0.9, b))
    await s.submit("k", settle("a", 0.9, b))
    assert isinstance(await s.submit("k", reserve("b", 0.2, b)), Refused)  # the day is used up
    tomorrow = T0 + 86_400
    out = await s.submit("k", reserve("c", 0.5, b, now=tomorrow, expires=tomorrow + 60))
    assert isinstance(out, Granted)
    assert out.remaining == units(0.1)  # the month binds: 1.5 - 0.9 - 0.5
    st = kv.state("k")
    assert set(st.windows) == {"m202603"}  # yesterday's window is dropped
    assert isinstance(await s.submit("k", reserve("d", 0.2, b, now=tomorrow)), Refused)


async def test_concurrent_reserves_never_overshoot_and_admit_all_that_fit() -> None:
    random.seed(7)
    kv = FakeKV()
    s = store(kv)
    b = hard(daily=5.0)
    results = await asyncio.gather(*(s.submit("k", reserve(f"r{i}", 0.1, b)) for i in range(200)))
    assert sum(isinstance(r, Granted) for r in results) == 50
    assert sum(h.amount for h in kv.state("k").holds.values()) == units(5.0)


async def test_concurrent_reserves_are_batched() -> None:
    """200 concurrent reserves of one key need a handful of KV round trips, not 200^2."""
    kv = FakeKV(jitter=False)
    s = store(kv)
    await asyncio.gather(*(s.submit("k", reserve(f"r{i}", 0.001, hard(100.0))) for i in range(200)))
    assert len(kv.state("k").holds) == 200
    assert kv.ops < 20


async def test_replicas_sharing_the_bucket_never_overshoot() -> None:
    random.seed(11)
    kv = FakeKV()
    replicas = [store(kv) for _ in range(4)]
    b = hard(daily=3.0)
    calls = [replicas[i % 4].submit("k", reserve(f"r{i}", 0.1, b)) for i in range(120)]
    results = await asyncio.gather(*calls)
    assert sum(isinstance(r, Granted) for r in results) == 30
    assert sum(h.amount for h in kv.state("k").holds.values()) == units(3.0)


async def test_concurrent_settles_and_reserves_keep_the_books() -> None:
    random.seed(3)
    kv = FakeKV()
    s = store(kv)
    b = hard(daily=100.0)
    await asyncio.gather(*(s.submit("k", reserve(f"a{i}", 0.1, b)) for i in range(20)))
    await asyncio.gather(
        *(s.submit("k", settle(f"a{i}", 0.01, b)) for i in range(20)),
        *(s.submit("k", reserve(f"b{i}", 0.1, b)) for i in range(10)),
    )
    st = kv.state("k")
    assert st.windows["d20260304"].spent == units(0.2)
    assert sum(h.amount for h in st.holds.values()) == units(1.0)


async def test_kv_failure_reaches_every_waiter() -> None:
    kv = FakeKV()
    kv.fail = nats.js.errors.ServiceUnavailableError()
    s = store(kv)
    results = await asyncio.wait_for(
        asyncio.gather(*(s.submit("k", reserve(f"r{i}", 0.1, hard())) for i in range(5)), return_exceptions=True), 1.0
    )
    assert all(isinstance(r, nats.js.errors.ServiceUnavailableError) for r in results)
    kv.fail = None
    assert isinstance(await s.submit("k", reserve("ok", 0.1, hard())), Granted)  # and the store recovers


def test_day_window_and_resets() -> None:
    now = dt.datetime(2026, 3, 4, 23, 59, 30, tzinfo=dt.UTC)
    assert day_window(now) == ("d20260304", 30_000)
    dec31 = Clock(dt.datetime(2026, 12, 31, 23, 0, tzinfo=dt.UTC).timestamp())
    assert dec31.month == "m202612"
    assert dec31.reset_ms("m202612") == 3_600_000


def test_lease_is_the_deadline_plus_grace_rounded_up() -> None:
    assert lease_expiry(deadline_ms=1_000_001_000, grace_ms=30_000, now_s=1_000_000.0) == 1_000_035
    assert lease_expiry(deadline_ms=0, grace_ms=0, now_s=1_000_002.0) == 1_000_005  # a past deadline: now


def test_entity_keys_are_valid_kv_keys() -> None:
    assert tenant_key("acme") == "t.acme"
    assert user_key("acme", "alice") == "u.acme.alice"
    assert key_key("k-12ab") == "k.k-12ab"
    odd = user_key("acme", "alice@example.com / *>")
    assert odd.startswith("u.acme.=")
    assert all(c.isalnum() or c in "-_=./" for c in odd)
    assert odd != user_key("acme", "bob@example.com")


# -- the handler: scopes, limits, alerts -----------------------------------------------------
CONFIG = cfgmod.parse(
    """
[tenants.rich]
daily_budget_usd = 10.0
monthly_budget_usd = 100.0
[tenants.free]
[tenants.soft]
daily_budget_usd = 1.0
budget_mode = "soft"
[tiers.basic.user]
daily_budget_usd = 1.0
[tiers.basic.key]
monthly_budget_usd = 5.0
[budgets]
alert_threshold = 0.5
lease_grace_ms = 10000
"""
)


class Now:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def budgeter(kv: FakeKV, clock: Now | None = None, alerts: list[BudgetAlert] | None = None) -> Budgeter:
    async def alert(a: BudgetAlert) -> None:
        if alerts is not None:
            alerts.append(a)

    return Budgeter(CONFIG, store(kv), LimitsView(CONFIG), clock=clock or Now(), alert=alert)


def completion(tenant: str, hold: BudgetHold | None, cost: float, user: str = "", key_id: str = "") -> CompletionEvent:
    return CompletionEvent(
        request_id="x", tenant=tenant, ts_ms=0, outcome="completed", cost_usd=cost, user=user, key_id=key_id,
        hold=hold,
    )  # fmt: skip


def event(tenant: str, hold: BudgetHold | None, cost: float, user: str = "", key_id: str = "") -> SettleRequest:
    """The settlement the budgeter's consumer decodes from a completion event."""
    return msgspec.json.decode(msgspec.json.encode(completion(tenant, hold, cost, user, key_id)), type=SettleRequest)


async def test_tenant_without_a_budget_is_not_accounted() -> None:
    kv = FakeKV()
    b = budgeter(kv)
    r = await b.reserve(ReserveRequest(tenant="free", amount_usd=1e9))
    assert r.hold is None
    assert r.amount_usd == 1e9
    r = await b.reserve(ReserveRequest(tenant="unknown", user="u", key_id="k", amount_usd=1.0))
    assert r.hold is None
    assert kv.ops == 0


async def test_reserve_and_settle_through_the_handler() -> None:
    kv = FakeKV()
    b = budgeter(kv)
    r = await b.reserve(ReserveRequest(tenant="rich", amount_usd=2.0), deadline_ms=int(T0 * 1000) + 5_000)
    assert r.hold is not None
    assert r.hold.keys == ["t.rich"]
    assert r.hold.day == "d20260304"
    assert r.hold.expires_s == lease_expiry(int(T0 * 1000) + 5_000, 10_000, T0)
    assert r.remaining_usd == pytest.approx(8.0)
    await b.settle(event("rich", r.hold, 0.5))
    st = kv.state("t.rich")
    assert st.holds == {}
    assert st.windows["d20260304"].spent == units(0.5)
    ops = kv.ops
    await b.settle(event("rich", None, 0.5))  # nothing was held: nothing to settle
    assert kv.ops == ops


async def test_user_and_key_budgets_of_the_keys_tier() -> None:
    kv = FakeKV()
    b = budgeter(kv)
    req = ReserveRequest(tenant="rich", user="alice", key_id="k-1", tier="basic", amount_usd=0.6)
    r = await b.reserve(req)
    assert r.hold is not None
    assert r.hold.keys == ["t.rich", "u.rich.alice", "k.k-1"]
    with pytest.raises(BudgetExceeded) as info:
        await b.reserve(req)  # alice's daily $1 is held up to 0.6 already
    assert "user 'rich/alice' daily budget" in info.value.message
    # The tenant's and the key's holds of the refused request were released at once.
    assert len(kv.state("t.rich").holds) == 1
    assert len(kv.state("k.k-1").holds) == 1
    # Another user of the same key still fits.
    r2 = await b.reserve(ReserveRequest(tenant="rich", user="bob", key_id="k-1", tier="basic", amount_usd=0.6))
    assert r2.hold is not None
    assert r2.remaining_usd == pytest.approx(0.4)  # bob's day: 1.0 - 0.6


async def test_budget_exceeded_says_which_window_resets_when() -> None:
    b = budgeter(FakeKV())
    with pytest.raises(BudgetExceeded) as info:
        await b.reserve(ReserveRequest(tenant="rich", amount_usd=10.5))
    err = info.value
    assert err.retry_after_ms == 12 * 3_600_000
    assert err.stage == "budgeter"
    assert err.retryable is False
    assert "tenant 'rich' daily budget of $10.00" in err.message
    assert "daily window resets in 43200 s" in err.message


async def test_runtime_limits_override_the_config() -> None:
    kv = FakeKV()
    b = budgeter(kv)
    b.limits.overrides["t.rich"] = BudgetLimits(daily_budget_usd=1.0)
    with pytest.raises(BudgetExceeded):
        await b.reserve(ReserveRequest(tenant="rich", amount_usd=2.0))
    b.limits.overrides["t.free"] = BudgetLimits(monthly_budget_usd=1.0, budget_mode="soft")
    r = await b.reserve(ReserveRequest(tenant="free", amount_usd=2.0))
    assert r.hold is not None  # soft: through, with an alert
    b.limits.overrides.pop("t.rich")
    assert (await b.reserve(ReserveRequest(tenant="rich", amount_usd=2.0))).hold is not None


async def test_alerts_go_out_once_per_window() -> None:
    alerts: list[BudgetAlert] = []
    b = budgeter(FakeKV(), alerts=alerts)
    for _ in range(3):
        r = await b.reserve(ReserveRequest(tenant="rich", amount_usd=3.0))
        await b.settle(event("rich", r.hold, 3.0))
    assert [(a.kind, a.window, a.scope) for a in alerts] == [("threshold", "d20260304", "tenant")]
    assert alerts[0].spent_usd == pytest.approx(6.0)
    assert alerts[0].limit_usd == pytest.approx(10.0)
    soft: list[BudgetAlert] = []
    b2 = budgeter(FakeKV(), alerts=soft)
    for _ in range(3):
        await b2.reserve(ReserveRequest(tenant="soft", amount_usd=0.6))
    assert [a.kind for a in soft] == ["soft_exceeded"]


async def test_window_rollover_with_a_settable_clock() -> None:
    kv = FakeKV()
    clock = Now(dt.datetime(2026, 3, 31, 23, 59, 50, tzinfo=dt.UTC).timestamp())
    b = budgeter(kv, clock)
    r = await b.reserve(ReserveRequest(tenant="rich", amount_usd=9.0))
    await b.settle(event("rich", r.hold, 9.0))
    with pytest.raises(BudgetExceeded):
        await b.reserve(ReserveRequest(tenant="rich", amount_usd=2.0))
    clock.t += 20  # 1 April: a new day and a new month
    r2 = await b.reserve(ReserveRequest(tenant="rich", amount_usd=2.0))
    assert r2.hold is not None
    assert r2.hold.day == "d20260401"
    clock.t += 86_400  # 2 April: a new day, the month keeps counting
    r3 = await b.reserve(ReserveRequest(tenant="rich", amount_usd=1.0))
    await b.settle(event("rich", r2.hold, 2.0))
    await b.settle(event("rich", r3.hold, 1.0))
    st = kv.state("t.rich")
    assert st.windows["m202604"].spent == units(3.0)
    assert st.windows["d20260402"].spent == units(3.0)  # settled today: booked today


async def test_a_caller_that_gave_up_holds_nothing() -> None:
    kv = FakeKV(jitter=False)
    s = store(kv)
    first = asyncio.create_task(s.submit("k", reserve("a", 0.1, hard())))
    await asyncio.sleep(0)  # the first round is in flight
    gone = asyncio.create_task(s.submit("k", reserve("b", 0.5, hard())))
    await asyncio.sleep(0)
    gone.cancel()
    assert isinstance(await first, Granted)
    with pytest.raises(asyncio.CancelledError):
        await gone
    await asyncio.sleep(0.01)
    assert set(kv.state("k").holds) == {"a"}
