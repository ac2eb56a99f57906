"""Budget contracts: the hold a reservation leaves (carried to its settlement), runtime limits, alerts."""

from __future__ import annotations

from typing import Literal

import msgspec

BudgetMode = Literal["hard", "soft"]


class BudgetHold(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What one reservation holds and what its settlement needs to release it.

    The same amount is held under ``id`` in each entity key (tenant, user, key) for the UTC day
    ``day`` (``d<YYYYMMDD>``) and its month, until ``expires_s`` (the request's deadline plus
    ``budgets.lease_grace_ms``): a hold that is never settled stops counting then.
    """

    id: str
    keys: list[str]  # entity keys in the budgets bucket ("t.acme", "u.acme.alice", "k.k-1234")
    day: str  # the daily window the amount was reserved in; its month is "m" + day[1:7]
    expires_s: int  # the lease: Unix seconds after which the hold no longer counts
    amount_usd: float
    tier: str = ""  # the key's tier (its user and key budgets' alert thresholds at settlement)


class BudgetLimits(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Runtime limits of one scope (`lockgate budget set`); a field left unset keeps the config's value."""

    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None
    budget_mode: BudgetMode | None = None
    updated_ms: int = 0


AlertKind = Literal["threshold", "soft_exceeded"]


class BudgetAlert(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """events.v1.alert.<tenant>: a budget passed its alert threshold, or a soft budget was exceeded.

    Sent once per scope, window and kind (the flag is set in the same compare-and-set as the spend).
    """

    tenant: str
    scope: Literal["tenant", "user", "key"]
    entity: str  # the tenant, the user ("tenant/user") or the key id
    window: str  # "d20260101" or "m202601"
    kind: AlertKind
    limit_usd: float
    spent_usd: float
    reserved_usd: float = 0.0
    threshold: float = 0.0
    mode: BudgetMode = "hard"
    ts_ms: int = 0
