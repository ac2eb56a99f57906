"""Budget state in JetStream KV: one key per scope entity, revision-checked, batched.

An entity is a tenant (``t.<tenant>``), a user of a tenant (``u.<tenant>.<user>``) or an
API key (``k.<key id>``). Its value holds the spend of the current UTC day and month
(``d<YYYYMMDD>``, ``m<YYYYMM>``, older windows are dropped) and the live holds by
reservation id, each with its amount, lease expiry and day. Reserved = the sum of the
live holds of a window, so a hold whose settlement never comes stops counting when its
lease runs out, in every replica and in ``lockgate budget show``, with no sweeper.

Holds are kept one by one (not summed per lease bucket) so that a settlement is
idempotent: the event stream delivers at least once, and a redelivered settlement
finds its hold gone and releases nothing twice.

Every update is a compare-and-set on the key's revision, batched per key in process
(shared.kvbatch). In a round, releases and settlements go first (what they free is
usable by the reservations of the same round), then reservations in arrival order.
``decide`` is a pure function of the state and the asks (the asks carry the clock).

Amounts are integers of nano-USD (1e-9 USD): sums of many requests must compare exactly
against a limit (0.1 + 0.2 > 0.3 in floating point).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from nats.js.kv import KeyValue

from shared.config import BudgetMode
from shared.errors import StageUnavailable
from shared.kvbatch import BatchedKV, Decision
from shared.subjects import BUDGETER

NANO = 1_000_000_000


def units(usd: float) -> int:
    """USD as whole nano-USD (the same float always gives the same integer)."""
    return round(usd * NANO)


def usd(nano: int) -> float:
    return nano / NANO


# -- the state -------------------------------------------------------------------------
class Hold(msgspec.Struct, array_like=True, frozen=True):
    amount: int  # nano-USD
    expires_s: int  # Unix seconds: the lease
    day: str  # "d20260101": the windows it counts in (that day, that month)


class Window(msgspec.Struct, kw_only=True, omit_defaults=True):
    spent: int = 0  # nano-USD settled in this window
    alerted: bool = False  # the alert_threshold alert went out
    over: bool = False  # the soft-budget-exceeded alert went out


class EntityState(msgspec.Struct, kw_only=True, omit_defaults=True):
    windows: dict[str, Window] = {}
    holds: dict[str, Hold] = {}


# -- windows ---------------------------------------------------------------------------
def month_of(day: str) -> str:
    return "m" + day[1:7]


@dataclass(frozen=True, slots=True)
class Clock:
    """The windows at one instant (UTC)."""

    now_s: float

    @property
    def at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now_s, dt.UTC)

    @property
    def day(self) -> str:
        return _windows(int(self.now_s))[0]

    @property
    def month(self) -> str:
        return _windows(int(self.now_s))[1]

    def reset_ms(self, window: str) -> int:
        """Milliseconds until ``window`` (the current day or month) ends."""
        at = self.at
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        if window.startswith("m"):
            first = start.replace(day=1)
            end = (first + dt.timedelta(days=32)).replace(day=1)
        else:
            end = start + dt.timedelta(days=1)
        return max(1, int((end - at).total_seconds() * 1000))


@functools.lru_cache(maxsize=8)
def _windows(second: int) -> tuple[str, str]:
    """The day and month window ids of a Unix second (every request of a second asks again)."""
    at = dt.datetime.fromtimestamp(second, dt.UTC)
    return "d" + at.strftime("%Y%m%d"), "m" + at.strftime("%Y%m")


def day_window(now: dt.datetime | None = None) -> tuple[str, int]:
    """The current daily window id and the ms until it resets."""
    c = Clock((now or dt.datetime.now(dt.UTC)).timestamp())
    return c.day, c.reset_ms(c.day)


# -- entity keys -----------------------------------------------------------------------
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _token(value: str) -> str:
    """A KV-key-safe token; anything else becomes '=' + a hash (KV keys allow [-/_=.A-Za-z0-9])."""
    if _SAFE.fullmatch(value):
        return value
    return "=" + hashlib.sha256(value.encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=65_536)
def tenant_key(tenant: str) -> str:
    return f"t.{_token(tenant)}"


@functools.lru_cache(maxsize=65_536)
def user_key(tenant: str, user: str) -> str:
    return f"u.{_token(tenant)}.{_token(user)}"


@functools.lru_cache(maxsize=65_536)
def key_key(key_id: str) -> str:
    return f"k.{_token(key_id)}"


# -- asks and decisions ----------------------------------------------------------------
Scope = Literal["tenant", "user", "key"]


@dataclass(frozen=True, slots=True)
class Budget:
    """The effective budget of one entity (config, overridden at runtime), in nano-USD."""

    scope: Scope
    name: str  # the tenant, "tenant/user" or the key id (for messages and alerts)
    daily: int | None
    monthly: int | None
    mode: BudgetMode

    def limit(self, window: str) -> int | None:
        return self.monthly if window.startswith("m") else self.daily


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert to send once the state that records it is written."""

    kind: Literal["threshold", "soft_exceeded"]
    budget: Budget
    window: str
    limit: int
    spent: int
    reserved: int


@dataclass(frozen=True, slots=True)
class Granted:
    remaining: int  # the least room left in any window with a limit (nano-USD)
    alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Refused:
    """Over a hard budget in ``window`` (the binding one: the one that resets last)."""

    budget: Budget
    window: str
    limit: int
    spent: int
    reserved: int
    needed: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Settled:
    released: bool  # the hold was still there (False: already settled, released on refusal, or expired)
    alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Ask:
    op: Literal["reserve", "release", "settle"]
    hold_id: str
    now_s: float
    budget: Budget | None = None  # reserve, settle (alerts)
    amount: int = 0  # reserve: nano-USD to hold
    expires_s: int = 0  # reserve, settle: the hold's lease
    actual: int = 0  # settle: nano-USD to book
    threshold: float = 0.8  # settle: alert when spent passes this share of a limit


def _reserved(state: EntityState, now_s: float, day: str, month: str) -> tuple[int, int]:
    d = m = 0
    for h in state.holds.values():
        if h.expires_s > now_s:
            if h.day == day:
                d += h.amount
            if month_of(h.day) == month:
                m += h.amount
    return d, m


def _prune(state: EntityState, now_s: float, day: str, month: str) -> bool:
    """Drop expired holds and windows that are neither today nor this month; whether anything went."""
    changed = False
    expired = [k for k, h in state.holds.items() if h.expires_s <= now_s]
    for k in expired:
        del state.holds[k]
        changed = True
    old = [w for w in state.windows if w not in (day, month)]
    for w in old:
        del state.windows[w]
        changed = True
    return changed


def decide(_key: str, state: EntityState, asks: list[Ask]) -> Decision:
    """Releases and settlements first, then reservations in arrival order."""
    clock = Clock(max(a.now_s for a in asks))
    now_s, day, month = clock.now_s, clock.day, clock.month
    changed = _prune(state, now_s, day, month)
    outcomes: list[object] = [None] * len(asks)
    for i, a in enumerate(asks):
        if a.op == "reserve":
            continue
        hold = state.holds.pop(a.hold_id, None)
        changed = changed or hold is not None
        alerts: list[Alert] = []
        # No hold any more: either a redelivered settlement (booked already: book nothing) or a
        # lease that ran out before the settlement came (book the cost now; nothing to release).
        if a.op == "settle" and (hold is not None or (a.expires_s <= now_s and a.actual > 0)):
            alerts = _book(state, a, day, month, now_s)
            changed = True
        outcomes[i] = Settled(released=hold is not None, alerts=alerts)
    res_d, res_m = _reserved(state, now_s, day, month)
    for i, a in enumerate(asks):
        if a.op != "reserve":
            continue
        assert a.budget is not None
        outcome = _reserve(state, a, clock, res_d, res_m)
        if isinstance(outcome, Granted):
            res_d += a.amount
            res_m += a.amount
            state.holds[a.hold_id] = Hold(a.amount, a.expires_s, day)
            changed = True
            if outcome.alerts:
                for al in outcome.alerts:
                    state.windows.setdefault(al.window, Window()).over = True
        outcomes[i] = outcome
    return Decision(changed, outcomes)


def _reserve(state: EntityState, a: Ask, clock: Clock, res_d: int, res_m: int) -> Granted | Refused:
    b = a.budget
    assert b is not None
    room: int | None = None
    over: list[tuple[str, int, int, int]] = []  # window, limit, spent, reserved
    for window, reserved in ((clock.day, res_d), (clock.month, res_m)):
        limit = b.limit(window)
        if limit is None:
            continue
        w = state.windows.get(window)
        spent = w.spent if w else 0
        left = limit - spent - reserved - a.amount
        room = left if room is None else min(room, left)
        if left < 0:
            over.append((window, limit, spent, reserved))
    if not over:
        return Granted(remaining=room if room is not None else 0)
    if b.mode == "hard":
        # The binding window is the one that frees room last (a monthly limit outlasts a daily one).
        window, limit, spent, reserved = max(over, key=lambda o: clock.reset_ms(o[0]))
        return Refused(b, window, limit, spent, reserved, a.amount, clock.reset_ms(window))
    alerts = []
    for window, limit, spent, reserved in over:
        w = state.windows.get(window)
        if w is None or not w.over:
            alerts.append(Alert("soft_exceeded", b, window, limit, spent, reserved + a.amount))
    return Granted(remaining=room if room is not None else 0, alerts=alerts)


def _book(state: EntityState, a: Ask, day: str, month: str, now_s: float) -> list[Alert]:
    """Book the actual cost in the current windows; the threshold alerts it triggers (once per window)."""
    alerts: list[Alert] = []
    res_d, res_m = _reserved(state, now_s, day, month)
    for window, reserved in ((day, res_d), (month, res_m)):
        w = state.windows.setdefault(window, Window())
        w.spent += a.actual
        limit = a.budget.limit(window) if a.budget else None
        if limit and not w.alerted and w.spent >= a.threshold * limit:
            w.alerted = True
            alerts.append(Alert("threshold", a.budget, window, limit, w.spent, reserved))  # type: ignore[arg-type]
    return alerts


def _contended() -> Exception:
    return StageUnavailable("budget state is too contended; try again", stage=BUDGETER)


class BudgetStore:
    """Reserve, release and settle on the entity keys of the budgets bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._batch: BatchedKV[EntityState, Ask] = BatchedKV(kv, EntityState, decide, contended=_contended)

    async def submit(self, key: str, ask: Ask) -> Granted | Refused | Settled:
        out = await self._batch.submit(key, ask)
        assert isinstance(out, Granted | Refused | Settled)
        return out

    async def read(self, key: str) -> EntityState:
        return await self._batch.read(key)
