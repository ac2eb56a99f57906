"""One TOML file, decoded by msgspec into typed Structs and cross-checked.

Every error names the file and the bad key (``at `$.deployments.x.timeout_ms```)
so an operator can fix it without reading code. Unknown keys are errors: a
typo in a production config must not be silently ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec

from shared.schemas.mesh import Deployment
from shared.schemas.simulator import SimulatorConfig
from shared.security import SecurityConfig


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class NatsConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    url: str = "nats://127.0.0.1:4222"
    namespace: str = ""  # prefixes every subject/stream/bucket; "" in production


class StagePolicy(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    timeout_ms: int = 500
    on_failure: Literal["open", "closed"] = "closed"


class StagesConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    router: StagePolicy = StagePolicy(timeout_ms=500, on_failure="closed")
    cache: StagePolicy = StagePolicy(timeout_ms=200, on_failure="open")
    budgeter: StagePolicy = StagePolicy(timeout_ms=500, on_failure="closed")
    validator: StagePolicy = StagePolicy(timeout_ms=1_000, on_failure="closed")
    rates: StagePolicy = StagePolicy(timeout_ms=500, on_failure="closed")  # the guard's rate check (KV)


class LimitsConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    max_request_bytes: int = 1_048_576
    max_messages: int = 256
    max_message_chars: int = 200_000
    max_total_chars: int = 1_000_000
    max_output_tokens: int = 32_768
    max_json_depth: int = 32  # nesting of free-form JSON: tools, tool_choice, a json_schema, image_url


class GatewayConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    default_route: str = "default"
    request_timeout_ms: int = 60_000  # used when the client sends no deadline
    max_timeout_ms: int = 600_000  # a client deadline further out is clamped
    max_in_flight: int = 1_024  # per endpoint per process
    simulate: Literal["auto", "always", "never"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class ProviderConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    kind: Literal["openai", "anthropic"]
    base_url: str | None = None
    api_key_env: str | None = None  # env var holding the key
    simulated: bool = False  # served by the built-in simulator
    profile: str | None = None  # simulator fault profile (simulated providers only)


class DeploymentConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    provider: str
    model: str  # the provider's model id
    timeout_ms: int = 30_000  # per attempt (always cut to what is left of the request's deadline)
    max_attempts: int | None = None  # None: resilience.attempts_per_deployment
    rpm: int | None = None  # the provider's requests-per-minute quota for it (the router prefers headroom)
    tpm: int | None = None  # the provider's tokens-per-minute quota for it


class ModelConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    deployments: list[str]
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    price_cached_in_per_mtok: float | None = None  # cached prompt tokens; None: the input price
    context_window: int = 128_000
    max_output_tokens: int = 4_096


DegradeStep = Literal["similar", "cheaper_model", "template"]


class RouteConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    models: list[str]
    # When every candidate failed and the request sets lockgate.degrade: these steps, in this order.
    degrade: list[DegradeStep] = []
    degrade_similarity: float = 0.6  # the least similarity of a cached answer ("similar"), Jaccard of words
    degrade_model: str | None = None  # the cheaper model ("cheaper_model")
    degrade_template: str | None = None  # the message ("template")


BudgetMode = Literal["hard", "soft"]


class Limits(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Budgets and rate limits of one scope (a tenant, each user of a tier, each key of a tier); None: unlimited."""

    daily_budget_usd: float | None = None  # UTC day
    monthly_budget_usd: float | None = None  # UTC calendar month
    budget_mode: BudgetMode = "hard"  # hard: refuse (or degrade) past the budget; soft: alert and let it through
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (the prompt estimate plus the output cap, counted at admission)

    def problems(self, where: str) -> list[str]:
        out = []
        for name in ("daily_budget_usd", "monthly_budget_usd", "rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value < 0:
                out.append(f"{where}.{name}: must not be negative")
        return out


class TenantConfig(Limits, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A tenant's own limits (for all its keys and users together)."""


class TierConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A user tier ("free", "paid", "unlimited"…): the limits of each user and of each key of the tier.

    A key's tier is set when the key is made (``[[keys]] tier``, ``lockgate keys create --tier``);
    the user is the request's ``user`` field (no user: no per-user limits).
    """

    user: Limits = Limits()
    key: Limits = Limits()


class BudgetsConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    alert_threshold: float = 0.8  # events.v1.alert once per window when spend passes this share of a budget
    lease_grace_ms: int = 30_000  # a reservation not settled by its request's deadline plus this is released


class KeyConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: str
    tenant: str
    hash: str  # "sha256:<hex>" of the key; the key itself is never stored
    routes: list[str] = msgspec.field(default_factory=lambda: ["*"])
    tier: str = ""  # a [tiers] name ("": no tier limits)


class BreakerConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    window_s: float = 30.0  # the sliding window failures are counted in
    failure_count: int = 5  # open after this many failures in the window ...
    failure_ratio: float = 0.5  # ... or this share of failures ...
    min_requests: int = 10  # ... once the window holds at least this many attempts
    cooldown_ms: int = 5_000  # open → half-open after this long
    half_open_probes: int = 1  # requests let through while half-open (per executor replica)


class ResilienceConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    attempts_per_deployment: int = 1  # a deployment's max_attempts overrides it
    backoff_base_ms: int = 100  # exponential backoff with full jitter: uniform(0, min(max, base * 2^n))
    backoff_max_ms: int = 2_000
    max_retry_after_ms: int = 5_000  # a longer Retry-After moves on to the next candidate at once
    idempotency_ttl_s: int = 86_400  # how long an Idempotency-Key's first result is kept
    breaker: BreakerConfig = BreakerConfig()


class CacheConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    ttl_s: int = 3_600
    max_entries: int = 10_000


class HttpConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The HTTP door (OpenAI- and Anthropic-compatible); port 0 picks a free port."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4_194_304  # larger bodies get 413 before any parsing


class JobsConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Background jobs: a JetStream work queue drained by the jobs workers."""

    max_items: int = 10_000  # requests per submitted job (a JSONL batch)
    max_deliver: int = 5  # deliveries of one item before it is dead-lettered
    ack_wait_s: float = 120.0  # an item not acked by then is redelivered (a worker died)
    backoff_base_ms: int = 500  # transient failure: retry after base * 2^(delivery-1), capped
    backoff_max_ms: int = 30_000
    result_ttl_s: int = 86_400  # how long results stay in the KV bucket
    concurrency: int = 32  # items one worker runs at once


class ApprovalsConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Human in the loop (``lockgate approvals``): which requests and answers wait for a person."""

    # Tools whose call cannot be undone: a non-streamed answer that calls one is held until a human
    # approves it; a streamed request that offers one is approved before it runs (a stream cannot
    # be held back).
    irreversible_tools: list[str] = []
    timeout_s: float = 900.0  # no decision by then: approval_expired


class LockgateConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    nats: NatsConfig = NatsConfig()
    gateway: GatewayConfig = GatewayConfig()
    stages: StagesConfig = StagesConfig()
    limits: LimitsConfig = LimitsConfig()
    cache: CacheConfig = CacheConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    http: HttpConfig = HttpConfig()
    jobs: JobsConfig = JobsConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    providers: dict[str, ProviderConfig] = {}
    deployments: dict[str, DeploymentConfig] = {}
    models: dict[str, ModelConfig] = {}
    routes: dict[str, RouteConfig] = {}
    tenants: dict[str, TenantConfig] = {}
    tiers: dict[str, TierConfig] = {}
    budgets: BudgetsConfig = BudgetsConfig()
    keys: list[KeyConfig] = []
    security: SecurityConfig = SecurityConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()


APPROVAL_TIMEOUT_MAX_S = 86_400.0  # the approvals bucket keeps records 7 days; a day of waiting is plenty


def _check(cfg: LockgateConfig) -> None:
    problems: list[str] = cfg.security.problems()
    for where, name in cfg.security.moderation_providers():
        prov = cfg.providers.get(name)
        if prov is None:
            problems.append(f'{where}: unknown provider {name!r} (use "off" or a [providers] name)')
        elif prov.kind != "openai":
            problems.append(f"{where}: provider {name!r} is of kind {prov.kind!r}; moderation needs kind 'openai'")
    for name, dep in cfg.deployments.items():
        if dep.provider not in cfg.providers:
            problems.append(f"deployments.{name}.provider: unknown provider {dep.provider!r}")
        if dep.timeout_ms <= 0:
            problems.append(f"deployments.{name}.timeout_ms: must be positive")
        if dep.max_attempts is not None and dep.max_attempts < 1:
            problems.append(f"deployments.{name}.max_attempts: must be at least 1")
    for name, model in cfg.models.items():
        if not model.deployments:
            problems.append(f"models.{name}.deployments: must list at least one deployment")
        for dep_name in model.deployments:
            if dep_name not in cfg.deployments:
                problems.append(f"models.{name}.deployments: unknown deployment {dep_name!r}")
    for name, route in cfg.routes.items():
        if not route.models:
            problems.append(f"routes.{name}.models: must list at least one model")
        for model_name in route.models:
            if model_name not in cfg.models:
                problems.append(f"routes.{name}.models: unknown model {model_name!r}")
        if "cheaper_model" in route.degrade and route.degrade_model not in cfg.models:
            problems.append(f"routes.{name}.degrade_model: 'cheaper_model' needs a known model")
        if not 0.0 < route.degrade_similarity <= 1.0:
            problems.append(f"routes.{name}.degrade_similarity: must be in (0, 1]")
        if "template" in route.degrade and not route.degrade_template:
            problems.append(f"routes.{name}.degrade_template: 'template' needs a message")
    if cfg.routes and cfg.gateway.default_route not in cfg.routes:
        problems.append(f"gateway.default_route: unknown route {cfg.gateway.default_route!r}")
    for i, key in enumerate(cfg.keys):
        if key.tenant not in cfg.tenants:
            problems.append(f"keys[{i}].tenant: unknown tenant {key.tenant!r}")
        if not key.hash.startswith("sha256:") or len(key.hash) != 7 + 64:
            problems.append(f"keys[{i}].hash: expected 'sha256:' followed by 64 hex digits")
        if key.tier and key.tier not in cfg.tiers:
            problems.append(f"keys[{i}].tier: unknown tier {key.tier!r}")
    for name, tenant in cfg.tenants.items():
        problems += tenant.problems(f"tenants.{name}")
    for name, tier in cfg.tiers.items():
        problems += tier.user.problems(f"tiers.{name}.user") + tier.key.problems(f"tiers.{name}.key")
    for name, dep in cfg.deployments.items():
        for field in ("rpm", "tpm"):
            if (getattr(dep, field) or 0) < 0:
                problems.append(f"deployments.{name}.{field}: must not be negative")
    if not 0.0 < cfg.budgets.alert_threshold <= 1.0:
        problems.append("budgets.alert_threshold: must be in (0, 1]")
    if cfg.budgets.lease_grace_ms < 0:
        problems.append("budgets.lease_grace_ms: must not be negative")
    for field in ("request_timeout_ms", "max_timeout_ms", "max_in_flight"):
        if getattr(cfg.gateway, field) <= 0:
            problems.append(f"gateway.{field}: must be positive")
    res = cfg.resilience
    if res.attempts_per_deployment < 1:
        problems.append("resilience.attempts_per_deployment: must be at least 1")
    if res.breaker.failure_count < 1 or res.breaker.half_open_probes < 1:
        problems.append("resilience.breaker: failure_count and half_open_probes must be at least 1")
    if not 0.0 < res.breaker.failure_ratio <= 1.0:
        problems.append("resilience.breaker.failure_ratio: must be in (0, 1]")
    if not 0.0 < cfg.approvals.timeout_s <= APPROVAL_TIMEOUT_MAX_S:
        problems.append(f"approvals.timeout_s: must be in (0, {int(APPROVAL_TIMEOUT_MAX_S)}]")
    if any(not name.strip() for name in cfg.approvals.irreversible_tools):
        problems.append("approvals.irreversible_tools: tool names must not be empty")
    if problems:
        raise ConfigError("; ".join(problems))


_TABLES: dict[str, type[msgspec.Struct]] = {
    "providers": ProviderConfig,
    "deployments": DeploymentConfig,
    "models": ModelConfig,
    "routes": RouteConfig,
    "tenants": TenantConfig,
    "tiers": TierConfig,
}


def _locate(text: str | bytes, exc: msgspec.ValidationError) -> str:
    """msgspec writes a table entry as ``$.providers[...]``; name the entry (``$.providers.p.kind``)."""
    message = str(exc)
    m = re.search(r"`\$\.(\w+)\[\.\.\.\]", message)
    if m is None or m.group(1) not in _TABLES:
        return message
    section = m.group(1)
    try:
        entries = msgspec.toml.decode(text).get(section)
    except (msgspec.DecodeError, AttributeError):
        return message
    for name, entry in entries.items() if isinstance(entries, dict) else ():
        try:
            msgspec.convert(entry, _TABLES[section])
        except msgspec.ValidationError as inner:
            where = f"$.{section}.{name}"
            detail = str(inner)
            return detail.replace("`$", f"`{where}", 1) if " - at `$" in detail else f"{detail} - at `{where}`"
    return message


def parse(text: str | bytes, source: str = "<config>") -> LockgateConfig:
    try:
        cfg = msgspec.toml.decode(text, type=LockgateConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_locate(text, exc)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        _check(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def default_text() -> str:
    return resources.files("shared").joinpath("defaults/lockgate.toml").read_text(encoding="utf-8")


def load(path: str | Path | None) -> LockgateConfig:
    """Load a config file, or the packaged default when ``path`` is None."""
    if path is None:
        return parse(default_text(), "default config")
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    return parse(data, str(p))


def _drop_none(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def encode(cfg: LockgateConfig) -> bytes:
    """TOML text that ``parse`` reads back to the same config (TOML has no null: None is the default)."""
    return msgspec.toml.encode(_drop_none(msgspec.to_builtins(cfg)))


# -- provider selection ----------------------------------------------------------------
def simulation_active(cfg: LockgateConfig, env: Mapping[str, str] | None = None) -> bool:
    """Whether simulated providers serve: always/never, or auto = no real key is set."""
    env = os.environ if env is None else env
    mode = cfg.gateway.simulate
    if mode != "auto":
        return mode == "always"
    return not any(not p.simulated and p.api_key_env and env.get(p.api_key_env) for p in cfg.providers.values())


def provider_enabled(cfg: LockgateConfig, name: str, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    p = cfg.providers[name]
    if p.simulated:
        return simulation_active(cfg, env)
    if p.api_key_env is None:
        return True  # e.g. a local vLLM/Ollama server that needs no key
    return bool(env.get(p.api_key_env)) and cfg.gateway.simulate != "always"


def with_simulator_url(cfg: LockgateConfig, url: str) -> LockgateConfig:
    """Point every simulated provider at a running simulator."""

    def point(p: ProviderConfig) -> ProviderConfig:
        base = url + (f"/p/{p.profile}" if p.profile else "")
        # The OpenAI SDK wants the /v1 in its base URL; the Anthropic SDK adds it itself.
        return msgspec.structs.replace(p, base_url=base + "/v1" if p.kind == "openai" else base)

    providers = {name: point(p) if p.simulated else p for name, p in cfg.providers.items()}
    return msgspec.structs.replace(cfg, providers=providers)


def deployment(cfg: LockgateConfig, model_name: str, dep_name: str) -> Deployment:
    """The wire form of one deployment of one model."""
    model = cfg.models[model_name]
    dep = cfg.deployments[dep_name]
    prov = cfg.providers[dep.provider]
    return Deployment(
        name=dep_name,
        model=model_name,
        provider=dep.provider,
        kind=prov.kind,
        provider_model=dep.model,
        base_url=prov.base_url,
        api_key_env=prov.api_key_env,
        timeout_ms=dep.timeout_ms,
        max_attempts=dep.max_attempts or cfg.resilience.attempts_per_deployment,
        price_in_per_mtok=model.price_in_per_mtok,
        price_out_per_mtok=model.price_out_per_mtok,
        price_cached_in_per_mtok=model.price_cached_in_per_mtok,
        context_window=model.context_window,
        max_output_tokens=model.max_output_tokens,
    )
