"""Which budgets apply to a request: the config's limits, overridden at runtime.

Runtime limits (`lockgate budget set`) live in the KV bucket ``LOCKGATE_BUDGET_LIMITS``
under the entity key they apply to (``t.<tenant>``, ``u.<tenant>.<user>``, ``k.<key id>``).
Every budgeter replica watches the bucket, so a change applies everywhere within a
round trip. A field an override leaves unset keeps the config's value.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import structlog
from nats.js.kv import KeyValue

from services.budgeter.store import Budget, Scope, key_key, tenant_key, units, user_key
from shared.config import Limits, LockgateConfig
from shared.schemas.budget import BudgetLimits

log = structlog.get_logger("lockgate.budgeter")
_decoder = msgspec.json.Decoder(BudgetLimits)

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
        self.overrides: dict[str, BudgetLimits] = {}
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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
        if self.kv is None:
            return
        watcher = await self.kv.watchall()
        self._task = asyncio.create_task(self._run(watcher))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), 2.0)

    async def _run(self, watcher: KeyValue.KeyWatcher) -> None:
        assert self.kv is not None
        while True:  # a watch that ends (reconnect) starts again: stale limits would mis-budget
            try:
                async for entry in watcher:
                    if entry is None:  # the initial values are all in
                        self.ready.set()
                        continue
                    if entry.operation is not None or not entry.value:  # deleted or purged
                        self.overrides.pop(entry.key, None)
                        continue
                    try:
                        self.overrides[entry.key] = _decoder.decode(entry.value)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        log.warning("bad_budget_limits", key=entry.key)
            except Exception as exc:
                log.warning("budget_limits_watch_failed", error=str(exc))
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it untyped
            await asyncio.sleep(1.0)
            try:
                watcher = await self.kv.watchall()
            except Exception as exc:
                log.warning("budget_limits_watch_restart_failed", error=str(exc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
