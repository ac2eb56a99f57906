"""ProviderModerator (the guard's moderation hook) against the simulator's /v1/moderations over HTTP."""

from __future__ import annotations

import msgspec
import openai
import pytest

from services.guard.moderation import ModerationClients, ProviderModerator
from services.simulator.server import SimulatorServer
from shared import config as cfgmod
from shared.errors import StageUnavailable
from shared.security import Policy

TOML = """
[gateway]
simulate = "always"

[providers.sim]
kind = "openai"
simulated = true

[providers.sim-down]
kind = "openai"
simulated = true
profile = "down"

[providers.sim-hang]
kind = "openai"
simulated = true
profile = "hang"

[providers.sim-broken]
kind = "openai"
simulated = true
profile = "broken"

[providers.real]
kind = "openai"
api_key_env = "LOCKGATE_TEST_MODERATION_KEY"
"""


def _pool(sim: SimulatorServer, **gateway: str) -> ModerationClients:
    cfg = cfgmod.with_simulator_url(cfgmod.parse(TOML), sim.url)
    if gateway:
        cfg = msgspec.structs.replace(cfg, gateway=msgspec.structs.replace(cfg.gateway, **gateway))
    return ModerationClients(cfg, env={})


def _one(pool: ModerationClients, provider: str, timeout_ms: int = 2_000) -> ProviderModerator:
    [mod] = pool.moderators(Policy(moderation=provider, moderation_timeout_ms=timeout_ms))
    assert isinstance(mod, ProviderModerator)
    return mod


async def test_flagged_categories_come_back_and_clean_text_passes(simulator: SimulatorServer) -> None:
    pool = _pool(simulator)
    try:
        mod = _one(pool, "sim")
        assert await mod.check("You idiot, I will hurt you") == ["harassment", "violence"]
        assert await mod.check("Simulated reply: amber anchor apple") == []
        assert pool.client("sim") is pool.client("sim")  # one pooled client per provider
        assert pool.moderators(Policy()) == []
    finally:
        await pool.close()


async def test_the_sdk_reads_the_simulators_moderation_answer(simulator: SimulatorServer) -> None:
    for prefix in ("", "/p/slow"):
        async with openai.AsyncOpenAI(base_url=f"{simulator.url}{prefix}/v1", api_key="sk-t", max_retries=0) as c:
            resp = await c.moderations.create(model="omni-moderation-latest", input=["gore", "fine"])
        assert resp.model == "omni-moderation-latest"
        assert resp.id.startswith("modr-")
        assert resp.results[0].flagged
        assert resp.results[0].categories.violence_graphic
        assert resp.results[0].category_scores.violence_graphic > 0.5
        assert not resp.results[1].flagged


@pytest.mark.parametrize(
    ("provider", "timeout_ms", "why"),
    [
        ("sim-down", 2_000, "answered HTTP 503"),
        ("sim-hang", 300, "did not answer within 300 ms"),
        ("sim-broken", 2_000, "malformed answer"),
    ],
)
async def test_an_endpoint_that_cannot_judge_fails_closed(
    simulator: SimulatorServer, provider: str, timeout_ms: int, why: str
) -> None:
    pool = _pool(simulator)
    try:
        with pytest.raises(StageUnavailable) as info:
            await _one(pool, provider, timeout_ms).check("You idiot")
        assert provider in info.value.message
        assert why in info.value.message
        assert "idiot" not in info.value.message
        assert info.value.retryable
    finally:
        await pool.close()


async def test_a_provider_that_is_not_enabled_fails_closed(simulator: SimulatorServer) -> None:
    pool = _pool(simulator)
    with pytest.raises(StageUnavailable, match="LOCKGATE_TEST_MODERATION_KEY"):
        await _one(pool, "real").check("text")
    off = _pool(simulator, simulate="never")
    with pytest.raises(StageUnavailable, match="simulation is off"):
        await _one(off, "sim").check("text")
