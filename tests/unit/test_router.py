"""The route table: models and routes to ordered candidate deployments (no NATS)."""

from __future__ import annotations

import pytest

from services.router.handlers import RouteTable
from shared import config as cfgmod
from shared.errors import InvalidRequest, NotFound, UpstreamUnavailable
from shared.keys import Principal
from shared.schemas.mesh import RouteRequest

CONFIG = cfgmod.parse(
    """
[gateway]
default_route = "default"

[providers.openai]
kind = "openai"
api_key_env = "OPENAI_KEY"

[providers.sim]
kind = "openai"
simulated = true

[providers.sim-claude]
kind = "anthropic"
simulated = true

[deployments.real-gpt]
provider = "openai"
model = "gpt-4o-mini"

[deployments.sim-gpt]
provider = "sim"
model = "gpt-4o-mini"

[deployments.sim-gpt-2]
provider = "sim"
model = "gpt-4o-mini-2"

[deployments.sim-claude]
provider = "sim-claude"
model = "claude-3-5-haiku-latest"

[models.gpt]
deployments = ["real-gpt", "sim-gpt", "sim-gpt-2"]
price_in_per_mtok = 0.15

[models.claude]
deployments = ["sim-claude"]

[models.only-real]
deployments = ["real-gpt"]

[routes.default]
models = ["gpt", "claude"]

[routes.cheap]
models = ["gpt"]

[routes.real]
models = ["only-real"]
"""
)

SIMULATED: dict[str, str] = {}
REAL = {"OPENAI_KEY": "sk-test"}


def names(plan_candidates: list[object]) -> list[str]:
    return [c.name for c in plan_candidates]  # type: ignore[attr-defined]


def test_model_plan_lists_its_enabled_deployments_in_order() -> None:
    plan = RouteTable(CONFIG, SIMULATED).plan(RouteRequest(model="gpt"))
    assert plan.route == "gpt"
    assert names(plan.candidates) == ["sim-gpt", "sim-gpt-2"]
    first = plan.candidates[0]
    assert (first.model, first.provider, first.kind, first.provider_model) == ("gpt", "sim", "openai", "gpt-4o-mini")
    assert first.price_in_per_mtok == 0.15


def test_disabled_providers_are_dropped() -> None:
    real = RouteTable(CONFIG, REAL)  # a real key: simulated providers are off
    assert names(real.plan(RouteRequest(model="gpt")).candidates) == ["real-gpt"]
    with pytest.raises(UpstreamUnavailable, match="no enabled deployment serves 'claude'") as info:
        real.plan(RouteRequest(model="claude"))
    assert info.value.retryable is False
    with pytest.raises(UpstreamUnavailable, match="'real'"):
        RouteTable(CONFIG, SIMULATED).plan(RouteRequest(route="real"))


def test_route_plan_chains_its_models() -> None:
    plan = RouteTable(CONFIG, SIMULATED).plan(RouteRequest(route="default"))
    assert plan.route == "default"
    assert names(plan.candidates) == ["sim-gpt", "sim-gpt-2", "sim-claude"]


def test_no_model_no_route_uses_the_default_route() -> None:
    plan = RouteTable(CONFIG, SIMULATED).plan(RouteRequest())
    assert plan.route == "default"
    assert names(plan.candidates)[0] == "sim-gpt"


def test_route_named_in_model() -> None:
    plan = RouteTable(CONFIG, SIMULATED).plan(RouteRequest(model="cheap"))
    assert plan.route == "cheap"
    assert names(plan.candidates) == ["sim-gpt", "sim-gpt-2"]


def test_model_with_a_route_that_contains_it() -> None:
    plan = RouteTable(CONFIG, SIMULATED).plan(RouteRequest(model="gpt", route="cheap"))
    assert plan.route == "cheap"
    assert names(plan.candidates) == ["sim-gpt", "sim-gpt-2"]


def test_model_with_a_route_that_does_not_contain_it_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="model 'claude' is not in route 'cheap'") as info:
        RouteTable(CONFIG, SIMULATED).plan(RouteRequest(model="claude", route="cheap"))
    assert info.value.stage == "router"


def test_unknown_model_names_it_and_the_known_ones() -> None:
    with pytest.raises(NotFound) as info:
        RouteTable(CONFIG, SIMULATED).plan(RouteRequest(model="gpt-17"))
    assert "unknown model 'gpt-17'" in info.value.message
    assert "claude, gpt, only-real" in info.value.message
    assert info.value.type == "invalid_request"
    assert info.value.status == 404


@pytest.mark.parametrize("req", [RouteRequest(route="nowhere"), RouteRequest(model="gpt", route="nowhere")])
def test_unknown_route_names_it(req: RouteRequest) -> None:
    with pytest.raises(NotFound, match="unknown route 'nowhere'; known routes: cheap, default, real"):
        RouteTable(CONFIG, SIMULATED).plan(req)


def test_models_for_a_wildcard_key_lists_servable_models_and_every_route() -> None:
    listed = RouteTable(CONFIG, SIMULATED).models_for(Principal(key_id="k", tenant="t"))
    ids = [m.id for m in listed.data]
    assert ids[:2] == ["gpt", "claude"]  # models first, in config order ("only-real" has no enabled deployment)
    assert {"default", "cheap"} <= set(ids[2:])
    assert all(m.object == "model" for m in listed.data)


def test_models_for_a_limited_key() -> None:
    p = Principal(key_id="k", tenant="t", routes=["cheap", "claude", "ghost"])
    assert [m.id for m in RouteTable(CONFIG, SIMULATED).models_for(p).data] == ["claude", "cheap"]


def test_models_for_leaves_out_models_without_enabled_deployments() -> None:
    listed = RouteTable(CONFIG, REAL).models_for(Principal(key_id="k", tenant="t"))
    ids = [m.id for m in listed.data]
    assert "claude" not in ids
    assert {"gpt", "only-real"} <= set(ids)
