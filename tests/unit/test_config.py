"""The TOML config: typed decoding, errors that name the key, cross-checks, provider selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import config as cfgmod
from shared.config import ConfigError

BASE = """
[providers.real]
kind = "openai"
api_key_env = "REAL_KEY"

[providers.claude]
kind = "anthropic"
api_key_env = "CLAUDE_KEY"

[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8000/v1"

[providers.sim]
kind = "openai"
simulated = true

[providers.sim-slow]
kind = "anthropic"
simulated = true
profile = "slow"

[deployments.d-real]
provider = "real"
model = "gpt-4o-mini"

[deployments.d-sim]
provider = "sim"
model = "gpt-4o-mini"
timeout_ms = 1234

[models.m]
deployments = ["d-real", "d-sim"]
price_in_per_mtok = 1.5
price_out_per_mtok = 6.0

[routes.default]
models = ["m"]

[tenants.acme]
daily_budget_usd = 3.5
"""


def test_packaged_defaults_load() -> None:
    cfg = cfgmod.load(None)
    assert cfg.gateway.default_route in cfg.routes
    assert cfg.gateway.simulate == "auto"
    assert cfg.limits.max_request_bytes == 1_048_576
    assert cfg.stages.cache.on_failure == "open"
    assert cfg.stages.budgeter.on_failure == "closed"
    assert {"openai", "anthropic", "sim-openai", "sim-anthropic"} <= set(cfg.providers)
    assert cfg.tenants["dev"].daily_budget_usd is not None
    # The packaged file round-trips through the encoder.
    assert cfgmod.parse(cfgmod.encode(cfg)) == cfg


def test_empty_config_has_defaults() -> None:
    cfg = cfgmod.parse("")
    assert cfg.gateway.request_timeout_ms == 60_000
    assert cfg.nats.namespace == ""
    assert cfg.routes == {}


def test_load_a_file_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "lockgate.toml"
    path.write_text(BASE)
    assert cfgmod.load(path).tenants["acme"].daily_budget_usd == 3.5
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read config"):
        cfgmod.load(tmp_path / "missing.toml")


def test_bad_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[gateway]\nrequest_timeout_ms = 'soon'\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        cfgmod.load(path)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[gateway]\nrequest_timeout_ms = 'fast'\n", "$.gateway.request_timeout_ms"),
        ("[stages.cache]\non_failure = 'sometimes'\n", "$.stages.cache.on_failure"),
        ("[limits]\nmax_messages = 1.5\n", "$.limits.max_messages"),
        ("[providers.p]\nkind = 'cohere'\n", "$.providers.p.kind"),
        ("[providers.p]\nbase_url = 'x'\n", "$.providers.p"),  # kind is required
        ("[[keys]]\nid = 1\ntenant = 't'\nhash = 'h'\n", "$.keys[0].id"),
    ],
)
def test_bad_type_names_the_key_path(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfgmod.parse(text, "my.toml")
    assert path in str(info.value)
    assert str(info.value).startswith("my.toml: ")


@pytest.mark.parametrize(
    ("text", "field", "path"),
    [
        ("[gateway]\ncolour = 'blue'\n", "colour", "$.gateway"),
        ("[nats]\nurl = 'nats://x'\nuser = 'u'\n", "user", "$.nats"),
        ("[deployments.d]\nprovider = 'p'\nmodel = 'm'\ntimeout = 5\n", "timeout", "$.deployments.d"),
        ("typo_section = 1\n", "typo_section", ""),
    ],
)
def test_unknown_key_is_an_error(text: str, field: str, path: str) -> None:
    with pytest.raises(ConfigError, match="unknown field") as info:
        cfgmod.parse(text)
    assert field in str(info.value)
    assert path in str(info.value)


def test_not_toml() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfgmod.parse("[gateway\n")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("[deployments.x]\nprovider = 'nope'\nmodel = 'm'\n", "deployments.x.provider: unknown provider 'nope'"),
        (
            "[deployments.x]\nprovider = 'sim'\nmodel = 'm'\ntimeout_ms = 0\n",
            "deployments.x.timeout_ms: must be positive",
        ),
        ("[models.x]\ndeployments = ['ghost']\n", "models.x.deployments: unknown deployment 'ghost'"),
        ("[models.x]\ndeployments = []\n", "models.x.deployments: must list at least one deployment"),
        ("[routes.r]\nmodels = ['ghost-model']\n", "routes.r.models: unknown model 'ghost-model'"),
        ("[routes.r]\nmodels = []\n", "routes.r.models: must list at least one model"),
        ("[gateway]\ndefault_route = 'nowhere'\n", "gateway.default_route: unknown route 'nowhere'"),
        ("[gateway]\nmax_in_flight = 0\n", "gateway.max_in_flight: must be positive"),
        ("[gateway]\nrequest_timeout_ms = -1\n", "gateway.request_timeout_ms: must be positive"),
        ("[approvals]\ntimeout_s = 0\n", "approvals.timeout_s: must be in (0, 86400]"),
        ("[approvals]\nirreversible_tools = ['']\n", "approvals.irreversible_tools: tool names must not be empty"),
        (
            "[[keys]]\nid = 'k'\ntenant = 'ghost'\nhash = 'sha256:" + "0" * 64 + "'\n",
            "keys[0].tenant: unknown tenant 'ghost'",
        ),
        ("[[keys]]\nid = 'k'\ntenant = 'acme'\nhash = 'md5:abc'\n", "keys[0].hash: expected 'sha256:'"),
        ("[[keys]]\nid = 'k'\ntenant = 'acme'\nhash = 'sha256:abc'\n", "keys[0].hash: expected 'sha256:'"),
        (
            "[[keys]]\nid = 'k'\ntenant = 'acme'\ntier = 'gold'\nhash = 'sha256:" + "0" * 64 + "'\n",
            "keys[0].tier: unknown tier 'gold'",
        ),
        ("[tiers.free.user]\nrpm = -1\n", "tiers.free.user.rpm: must not be negative"),
        ("[budgets]\nalert_threshold = 1.5\n", "budgets.alert_threshold: must be in (0, 1]"),
        ("[security]\nmoderation = 'ghost'\n", "security.moderation: unknown provider 'ghost'"),
        ("[security]\nmoderation = 'claude'\n", "security.moderation: provider 'claude' is of kind 'anthropic'"),
        (
            "[security.routes.r]\nmoderation = 'sim-slow'\n",
            "security.routes.r.moderation: provider 'sim-slow' is of kind 'anthropic'",
        ),
        ("[security]\nmoderation = ''\n", 'security.moderation: "off" or a provider name'),
        ("[security]\nmoderation_timeout_ms = 0\n", "security.moderation_timeout_ms: must be positive"),
        ("[security.routes.r]\nmoderation_model = ' '\n", "security.routes.r.moderation_model: must not be empty"),
    ],
)
def test_cross_reference_errors_name_the_key(extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfgmod.parse(BASE + extra, "lockgate.toml")
    assert needle in str(info.value)
    assert str(info.value).startswith("lockgate.toml: ")


def test_moderation_policy_per_route() -> None:
    extra = """
[security]
moderation = "sim"
moderation_timeout_ms = 1500

[security.routes.fast]
moderation_model = "text-moderation-latest"

[security.routes.open]
moderation = "off"

[security.routes.real]
moderation = "real"
moderation_timeout_ms = 800
"""
    sec = cfgmod.parse(BASE + extra).security
    base = sec.policy("default")
    assert (base.moderation, base.moderation_model, base.moderation_timeout_ms) == (
        "sim", "omni-moderation-latest", 1500,
    )  # fmt: skip
    assert sec.policy("fast").moderation == "sim"
    assert sec.policy("fast").moderation_model == "text-moderation-latest"
    assert sec.policy("open").moderation == "off"
    assert (sec.policy("real").moderation, sec.policy("real").moderation_timeout_ms) == ("real", 800)
    assert cfgmod.parse(BASE).security.policy("default").moderation == "off"


def test_all_problems_are_reported_at_once() -> None:
    extra = "[models.x]\ndeployments = ['ghost']\n[routes.r]\nmodels = ['ghost-model']\n"
    with pytest.raises(ConfigError) as info:
        cfgmod.parse(BASE + extra)
    assert "ghost'" in str(info.value)
    assert "ghost-model" in str(info.value)


def test_valid_key_hash_is_accepted() -> None:
    cfg = cfgmod.parse(BASE + "[[keys]]\nid = 'k'\ntenant = 'acme'\nhash = 'sha256:" + "a" * 64 + "'\n")
    assert cfg.keys[0].routes == ["*"]


def test_limits_of_tenants_tiers_and_deployments() -> None:
    cfg = cfgmod.parse(
        BASE
        + "[tiers.free.user]\nrpm = 10\ndaily_budget_usd = 0.5\n[tiers.free.key]\ntpm = 1000\n"
        + "[[keys]]\nid = 'k'\ntenant = 'acme'\ntier = 'free'\nhash = 'sha256:"
        + "a" * 64
        + "'\n"
    )
    assert cfg.tiers["free"].user.rpm == 10
    assert cfg.tiers["free"].user.budget_mode == "hard"
    assert cfg.tiers["free"].key.tpm == 1000
    assert cfg.keys[0].tier == "free"
    with pytest.raises(ConfigError, match=r"tiers\.free\.user"):
        cfgmod.parse(BASE + "[tiers.free.user]\nbudget_mode = 'sometimes'\n")


# -- provider selection ----------------------------------------------------------------
def with_mode(mode: str) -> cfgmod.LockgateConfig:
    return cfgmod.parse(BASE + f"[gateway]\nsimulate = '{mode}'\n")


def test_auto_simulates_only_without_any_real_key() -> None:
    cfg = with_mode("auto")
    assert cfgmod.simulation_active(cfg, {})
    assert cfgmod.simulation_active(cfg, {"REAL_KEY": ""})  # an empty variable is no key
    assert cfgmod.simulation_active(cfg, {"UNRELATED": "x"})
    assert not cfgmod.simulation_active(cfg, {"REAL_KEY": "sk-1"})
    assert not cfgmod.simulation_active(cfg, {"CLAUDE_KEY": "sk-2"})


def test_always_and_never_ignore_the_environment() -> None:
    assert cfgmod.simulation_active(with_mode("always"), {"REAL_KEY": "sk-1"})
    assert not cfgmod.simulation_active(with_mode("never"), {})


@pytest.mark.parametrize(
    ("mode", "env", "enabled"),
    [
        ("auto", {}, {"sim", "sim-slow", "local"}),
        ("auto", {"REAL_KEY": "sk"}, {"real", "local"}),
        ("auto", {"REAL_KEY": "sk", "CLAUDE_KEY": "sk"}, {"real", "claude", "local"}),
        ("always", {"REAL_KEY": "sk"}, {"sim", "sim-slow", "local"}),
        ("never", {}, {"local"}),
        ("never", {"CLAUDE_KEY": "sk"}, {"claude", "local"}),
    ],
)
def test_provider_enabled(mode: str, env: dict[str, str], enabled: set[str]) -> None:
    cfg = with_mode(mode)
    assert {name for name in cfg.providers if cfgmod.provider_enabled(cfg, name, env)} == enabled


def test_with_simulator_url_points_only_simulated_providers() -> None:
    cfg = cfgmod.with_simulator_url(cfgmod.parse(BASE), "http://127.0.0.1:9999")
    assert cfg.providers["sim"].base_url == "http://127.0.0.1:9999/v1"  # the OpenAI SDK wants /v1
    assert cfg.providers["sim-slow"].base_url == "http://127.0.0.1:9999/p/slow"  # Anthropic adds /v1 itself
    assert cfg.providers["local"].base_url == "http://127.0.0.1:8000/v1"
    assert cfg.providers["real"].base_url is None


def test_deployment_wire_form() -> None:
    cfg = cfgmod.with_simulator_url(cfgmod.parse(BASE), "http://sim")
    d = cfgmod.deployment(cfg, "m", "d-sim")
    assert (d.name, d.model, d.provider, d.kind, d.provider_model) == ("d-sim", "m", "sim", "openai", "gpt-4o-mini")
    assert d.base_url == "http://sim/v1"
    assert d.timeout_ms == 1234
    assert (d.price_in_per_mtok, d.price_out_per_mtok) == (1.5, 6.0)
    assert cfgmod.deployment(cfg, "m", "d-real").api_key_env == "REAL_KEY"
