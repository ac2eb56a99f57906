"""The simulator's status mix: several error statuses, each with its own probability, one draw per request."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest

from services.simulator.faults import FaultSpecError, fault_from_spec, parse_fault_spec, pick_status
from shared.schemas.simulator import FaultConfig


def test_mix_spec_parses() -> None:
    assert parse_fault_spec("mix=429:0.3/503:0.1") == {"status_mix": {429: 0.3, 503: 0.1}}
    assert fault_from_spec("mix=500:1,retry_after=1").status_mix == {500: 1.0}


@pytest.mark.parametrize("spec", ["mix=429", "mix=200:0.5", "mix=429:0.8/503:0.5", "mix=429:x", "mix="])
def test_bad_mix_specs_name_the_problem(spec: str) -> None:
    with pytest.raises(FaultSpecError, match="mix"):
        parse_fault_spec(spec)


def test_mix_draws_each_status_at_its_rate() -> None:
    fault = FaultConfig(status_mix={429: 0.3, 503: 0.1})
    rng = random.Random(7)
    counts = Counter(pick_status(fault, rng) for _ in range(20_000))
    assert abs(counts[429] / 20_000 - 0.3) < 0.02
    assert abs(counts[503] / 20_000 - 0.1) < 0.02
    assert abs(counts[0] / 20_000 - 0.6) < 0.02


def test_mix_replaces_status_and_old_rule_still_holds() -> None:
    rng = random.Random(1)
    assert {pick_status(FaultConfig(status=503, status_mix={429: 1.0}), rng) for _ in range(50)} == {429}
    assert {pick_status(FaultConfig(status=503), rng) for _ in range(50)} == {503}
    assert {pick_status(FaultConfig(), rng) for _ in range(50)} == {0}


def test_mix_in_toml_and_json_config() -> None:
    assert msgspec.toml.decode(b"status_mix = {429 = 0.3}", type=FaultConfig).status_mix == {429: 0.3}
    assert msgspec.json.decode(b'{"status_mix": {"503": 0.1}}', type=FaultConfig).status_mix == {503: 0.1}
