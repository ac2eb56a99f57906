"""`lockgate budget show|set`: budgets of a tenant, a user or a key, read and changed at runtime.

``set`` writes the scope's runtime limits to the KV bucket LOCKGATE_BUDGET_LIMITS (every
budgeter replica watches it: the change applies within about a second); ``show`` reads
them with the config's, and the spend and live holds from LOCKGATE_BUDGETS.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from services.budgeter.limits import NO_LIMITS, effective
from services.budgeter.store import Clock, EntityState, key_key, month_of, tenant_key, usd, user_key
from shared import config as cfgmod
from shared import jetstream, keys
from shared.config import Limits, LockgateConfig
from shared.headers import now_ms
from shared.runtime import connect_once
from shared.schemas.budget import BudgetLimits
from shared.subjects import Names

_limits_decoder = msgspec.json.Decoder(BudgetLimits)
_state_decoder = msgspec.json.Decoder(EntityState)


class BudgetCliError(Exception):
    """A user error: printed as one line, exit code 1."""


@dataclass(frozen=True)
class Target:
    scope: str  # "tenant", "user", "key"
    name: str  # the tenant, "tenant/user" or the key id
    key: str  # the entity key
    tenant: str
    base: Limits  # the config's limits for it


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


async def _target(
    cfg: LockgateConfig, keys_kv: KeyValue, tenant: str | None, user: str | None, key_id: str | None
) -> Target:
    given = [x for x in (tenant, user, key_id) if x]
    if len(given) != 1:
        raise BudgetCliError("name exactly one of --tenant, --user TENANT/USER or --key KEY_ID")
    listed = await keys.list_keys(keys_kv)
    if key_id:
        tier = next((k.tier for k in cfg.keys if k.id == key_id), None)
        owner = next((k.tenant for k in cfg.keys if k.id == key_id), "")
        for _, p in listed:
            if p.key_id == key_id:
                tier, owner = p.tier, p.tenant
        if tier is None:
            raise BudgetCliError(f"unknown key {key_id!r} (see `lockgate keys list`)")
        t = cfg.tiers.get(tier)
        return Target("key", key_id, key_key(key_id), owner, t.key if t else NO_LIMITS)
    known = set(cfg.tenants) | {k.tenant for k in cfg.keys} | {p.tenant for _, p in listed}
    if user:
        ten, sep, name = user.partition("/")
        if not sep or not ten or not name:
            raise BudgetCliError(f"--user must be TENANT/USER, got {user!r}")
        if ten not in known:
            raise BudgetCliError(f"unknown tenant {ten!r}")
        # A user's config limits come from the tier of the key it calls with: only runtime limits here.
        return Target("user", f"{ten}/{name}", user_key(ten, name), ten, NO_LIMITS)
    assert tenant is not None
    if tenant not in known:
        raise BudgetCliError(f"unknown tenant {tenant!r}")
    return Target("tenant", tenant, tenant_key(tenant), tenant, cfg.tenants.get(tenant) or NO_LIMITS)


async def _override(kv: KeyValue, key: str) -> tuple[BudgetLimits | None, int | None]:
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None, None
    if not entry.value:
        return None, entry.revision
    return _limits_decoder.decode(entry.value), entry.revision


async def set_(
    nats_url: str,
    namespace: str,
    config_path: Path | None,
    target: tuple[str | None, str | None, str | None],
    daily: float | None,
    monthly: float | None,
    mode: str | None,
) -> int:
    for flag, value in (("--daily", daily), ("--monthly", monthly)):
        if value is not None and (value < 0 or not math.isfinite(value)):
            return _fail(f"{flag} must be a non-negative amount in USD, got {value}")
    if mode is not None and mode not in ("hard", "soft"):
        return _fail(f"--mode must be hard or soft, got {mode!r}")
    if daily is None and monthly is None and mode is None:
        return _fail("nothing to set: give --daily, --monthly and/or --mode")
    cfg = cfgmod.load(config_path)
    nc = await connect_once(nats_url, "lockgate-budget")
    try:
        js = nc.jetstream()
        names = Names(namespace)
        keys_kv = await jetstream.ensure_bucket(js, names.keys_bucket)
        kv = await jetstream.ensure_bucket(js, names.budget_limits_bucket)
        try:
            t = await _target(cfg, keys_kv, *target)
        except BudgetCliError as exc:
            return _fail(str(exc))
        for _ in range(10):  # compare-and-set: two operators never lose each other's fields
            old, rev = await _override(kv, t.key)
            new = BudgetLimits(
                daily_budget_usd=daily if daily is not None else (old.daily_budget_usd if old else None),
                monthly_budget_usd=monthly if monthly is not None else (old.monthly_budget_usd if old else None),
                budget_mode=mode or (old.budget_mode if old else None),  # type: ignore[arg-type]
                updated_ms=now_ms(),
            )
            data = msgspec.json.encode(new)
            try:
                if rev is None:
                    await kv.create(t.key, data)
                else:
                    await kv.update(t.key, data, last=rev)
                break
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError):
                continue
        else:
            return _fail("the limits changed concurrently ten times; try again")
    finally:
        await nc.drain()
    d, m, md = effective(t.base, new)
    print(f"{t.scope} {t.name}: daily {_money(d)}, monthly {_money(m)}, mode {md} (budgeters apply it within ~1 s)")
    return 0


async def show(
    nats_url: str,
    namespace: str,
    config_path: Path | None,
    target: tuple[str | None, str | None, str | None],
    as_json: bool,
) -> int:
    cfg = cfgmod.load(config_path)
    nc = await connect_once(nats_url, "lockgate-budget")
    try:
        js = nc.jetstream()
        names = Names(namespace)
        keys_kv = await jetstream.ensure_bucket(js, names.keys_bucket)
        limits_kv = await jetstream.ensure_bucket(js, names.budget_limits_bucket)
        state_kv = await jetstream.ensure_bucket(js, names.budgets_bucket, ttl_s=jetstream.BUDGETS_TTL_S)
        try:
            t = await _target(cfg, keys_kv, *target)
        except BudgetCliError as exc:
            return _fail(str(exc))
        override, _ = await _override(limits_kv, t.key)
        try:
            entry = await state_kv.get(t.key)
            state = _state_decoder.decode(entry.value) if entry.value else EntityState()
        except nats.js.errors.KeyNotFoundError:
            state = EntityState()
    finally:
        await nc.drain()
    daily, monthly, mode = effective(t.base, override)
    rows = _rows(state, Clock(time.time()), daily, monthly)
    if as_json:
        out = {"scope": t.scope, "name": t.name, "key": t.key, "mode": mode, "override": override is not None,
               "windows": rows}  # fmt: skip
        print(msgspec.json.encode(out).decode())
        return 0
    src = "runtime" if override is not None else "config"
    print(f"{t.scope} {t.name} ({t.key}), mode {mode}, limits from {src}")
    print(f"{'window':<10}{'limit':>12}{'spent':>12}{'reserved':>12}{'remaining':>12}  resets")
    for r in rows:
        print(
            f"{r['window']:<10}{_money(r['limit_usd']):>12}{r['spent_usd']:>12.6f}{r['reserved_usd']:>12.6f}"
            f"{_money(r['remaining_usd']):>12}  {r['resets']} (in {r['reset_in_s']} s)"
        )
    return 0


def _rows(state: EntityState, clock: Clock, daily: float | None, monthly: float | None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for window, limit in ((clock.day, daily), (clock.month, monthly)):
        spent = usd(w.spent) if (w := state.windows.get(window)) else 0.0
        live = [h for h in state.holds.values() if h.expires_s > clock.now_s]
        held = usd(sum(h.amount for h in live if (h.day == window or month_of(h.day) == window)))
        reset_ms = clock.reset_ms(window)
        resets = (clock.at + dt.timedelta(milliseconds=reset_ms)).replace(microsecond=0)
        rows.append(
            {
                "window": window,
                "limit_usd": limit,
                "spent_usd": round(spent, 9),
                "reserved_usd": round(held, 9),
                "remaining_usd": None if limit is None else round(max(0.0, limit - spent - held), 9),
                "resets": resets.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "reset_in_s": reset_ms // 1000,
            }
        )
    return rows


def _money(v: object) -> str:
    return "-" if v is None else f"${v:.4f}" if isinstance(v, float | int) else str(v)
