"""Which budgets apply to a request: the config's limits, overridden at runtime.

Runtime limits (`lockgate budget set`) live in the KV bucket ``LOCKGATE_BUDGET_LIMITS``
under the entity key they apply to (``t.<tenant>``, ``u.<tenant>.<user>``, ``k.<key id>``).
Every budgeter replica watches the bucket, so a change applies everywhere within a
round trip. A field an override leaves unset keeps the config's value.
"""

from __future__ import annotations

from nats.js.kv import KeyValue

from services.budgeter.store import Budget, Scope, key_key, tenant_key, units, user_key
from shared.config import Limits, LockgateConfig
from shared.kvwatch import KVMirror
from shared.schemas.budget import BudgetLimits

NO_LIMITS = Limits()


def effective(base: Limits, override: BudgetLimits | None) -> tuple[float | None, float | None, str]:
    """(daily, monthly, mode) of a scope: the override's fields where set, else the config's."""
    if override is None:
        return base.daily_budget_usd, base.monthly_budget_usd, base.budget_mode
    return (
        override.daily_budget_usd if override.daily_budget_usd is not None else base.daily_budget_usd,
        override.monthly_budget_usd if override.monthly_budget_usd is not None else base.monthly_budget_usd,
        override.budget_mode or base.budget_mode,
    )


class LimitsView:
    """The config's limits plus the runtime overrides, kept current by a KV watch."""

    def __init__(self, config: LockgateConfig, kv: KeyValue | None = None) -> None:
        self.config = config
        self.kv = kv
        self._mirror = KVMirror(kv, BudgetLimits, name="budget_limits") if kv is not None else None
        # entity key -> runtime limits (the mirror's own dict, kept current by its watch)
        self.overrides: dict[str, BudgetLimits] = self._mirror.entries if self._mirror is not None else {}

    # -- resolving -----------------------------------------------------------------------
    def budgets(self, tenant: str, user: str, key_id: str, tier: str) -> list[tuple[str, Budget]]:
        """(entity key, budget) of every scope of this request that has a daily or monthly budget."""
        out: list[tuple[str, Budget]] = []
        t = self.config.tenants.get(tenant)
        tier_cfg = self.config.tiers.get(tier) if tier else None
        self._add(out, "tenant", tenant, tenant_key(tenant), t or NO_LIMITS)
        if user:
            self._add(out, "user", f"{tenant}/{user}", user_key(tenant, user), tier_cfg.user if tier_cfg else NO_LIMITS)
        if key_id:
            self._add(out, "key", key_id, key_key(key_id), tier_cfg.key if tier_cfg else NO_LIMITS)
        return out

    def _add(self, out: list[tuple[str, Budget]], scope: Scope, name: str, key: str, base: Limits) -> None:
        daily, monthly, mode = effective(base, self.overrides.get(key) if self.overrides else None)
        if daily is None and monthly is None:
            return
        out.append(
            (
                key,
                Budget(
                    scope=scope,
                    name=name,
                    daily=None if daily is None else units(daily),
                    monthly=None if monthly is None else units(monthly),
                    mode="soft" if mode == "soft" else "hard",
                ),
            )
        )

    # -- watching ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._mirror is not None:
            await self._mirror.start()

    async def stop(self) -> None:
        if self._mirror is not None:
            await self._mirror.stop()
