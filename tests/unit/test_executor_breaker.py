"""The circuit breaker's state machine (closed → open → half-open → closed) and what it publishes."""

from __future__ import annotations

import asyncio

import pytest

from services.executor.breaker import Breakers
from shared.config import BreakerConfig
from shared.headers import now_ms
from shared.schemas.breaker import BreakerState, BreakerStateName


def make(**kw: float) -> tuple[Breakers, list[tuple[str, BreakerStateName, BreakerStateName]]]:
    seen: list[tuple[str, BreakerStateName, BreakerStateName]] = []

    async def publish(st: BreakerState, previous: BreakerStateName) -> None:
        seen.append((st.deployment, previous, st.state))

    cfg = BreakerConfig(**{"failure_count": 3, "cooldown_ms": 100, "min_requests": 4, **kw})  # type: ignore[arg-type]
    return Breakers(cfg, replica="r1", publish=publish), seen


async def test_opens_after_failure_count_and_refuses_until_cooldown() -> None:
    b, seen = make()
    for _ in range(2):
        assert b.allow("d")
        b.failure("d", "503")
    assert b.state("d") == "closed"
    assert b.allow("d")
    b.failure("d", "503")
    assert b.state("d") == "open"
    assert not b.allow("d")
    wait = b.open_for_ms("d")
    assert wait is not None
    assert 0 < wait <= 100
    await asyncio.sleep(0)
    assert seen == [("d", "closed", "open")]


async def test_opens_on_failure_ratio() -> None:
    b, _ = make(failure_count=100, failure_ratio=0.5, min_requests=4)
    for ok in (True, False, True):
        b.success("d") if ok else b.failure("d", "x")
    assert b.state("d") == "closed"  # 1 of 3: below min_requests anyway
    b.failure("d", "x")
    assert b.state("d") == "open"  # 2 of 4


async def test_half_open_lets_limited_probes_and_closes_on_success() -> None:
    b, seen = make(half_open_probes=1)
    for _ in range(3):
        b.failure("d", "x")
    await asyncio.sleep(0.12)
    assert b.allow("d")  # the probe
    assert b.state("d") == "half_open"
    assert not b.allow("d")  # only one probe at a time
    b.success("d")
    assert b.state("d") == "closed"
    assert b.allow("d")
    await asyncio.sleep(0)
    assert [(p, s) for _, p, s in seen] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_failed_probe_opens_again() -> None:
    b, _ = make()
    for _ in range(3):
        b.failure("d", "x")
    await asyncio.sleep(0.12)
    assert b.allow("d")
    b.failure("d", "still down")
    assert b.state("d") == "open"
    assert not b.allow("d")


async def test_a_probe_without_verdict_frees_its_slot() -> None:
    b, _ = make()
    for _ in range(3):
        b.failure("d", "x")
    await asyncio.sleep(0.12)
    assert b.allow("d")
    b.release("d")
    assert b.allow("d")


async def test_adopts_other_replicas_states_but_not_its_own() -> None:
    b, _ = make()
    now = now_ms()
    b.adopt(BreakerState(deployment="d", state="open", since_ms=now, until_ms=now + 10_000, replica="r2"))
    assert not b.allow("d")
    b.adopt(BreakerState(deployment="d", state="closed", since_ms=now + 1, replica="r1"))  # our own echo
    assert not b.allow("d")
    b.adopt(BreakerState(deployment="d", state="closed", since_ms=now + 2, replica="r2"))
    assert b.allow("d")


@pytest.mark.parametrize("n", [1, 2])
async def test_deployments_are_independent(n: int) -> None:
    b, _ = make()
    for _ in range(3):
        b.failure("bad", "x")
    assert not b.allow("bad")
    assert all(b.allow("good") for _ in range(n))
