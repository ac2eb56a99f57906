"""Deployment capacity: the last minute per deployment, and candidates with headroom first (no NATS)."""

from __future__ import annotations

from services.router.capacity import Capacity
from services.router.handlers import RouteTable
from shared import config as cfgmod
from shared.schemas.chat import Attempt, Usage
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import RouteRequest

NOW = 1_700_000_000.0

CONFIG = cfgmod.parse(
    """
[gateway]
simulate = "always"
[providers.sim]
kind = "openai"
simulated = true
[deployments.a]
provider = "sim"
model = "m"
rpm = 10
[deployments.b]
provider = "sim"
model = "m"
tpm = 1000
[deployments.c]
provider = "sim"
model = "m"
[models.m]
deployments = ["a", "b", "c"]
[routes.default]
models = ["m"]
"""
)


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def _event(
    deployment: str, *, tokens: int = 10, attempts: list[Attempt] | None = None, at: float = NOW
) -> CompletionEvent:
    return CompletionEvent(
        request_id="r", tenant="t", ts_ms=int(at * 1000), outcome="completed", deployment=deployment,
        usage=Usage(total_tokens=tokens),
        attempts=attempts if attempts is not None else [Attempt(deployment=deployment, outcome="ok", latency_ms=1)],
    )  # fmt: skip


def test_requests_are_provider_attempts_and_tokens_go_to_the_deployment_that_answered() -> None:
    cap = Capacity.from_config(CONFIG, clock=Clock())
    tries = [
        Attempt(deployment="a", outcome="upstream_unavailable", latency_ms=1),
        Attempt(deployment="a", outcome="upstream_unavailable", latency_ms=1),
        Attempt(deployment="b", outcome="ok", latency_ms=1),
    ]
    cap.record(_event("b", tokens=300, attempts=tries))
    cap.record(_event("c", attempts=[Attempt(deployment="c", outcome="idempotent_replay", latency_ms=0)]))
    cap.record(_event("c", attempts=[]))  # a cached answer
    assert cap.used("a") == (2, 0)
    assert cap.used("b") == (1, 300)
    assert cap.used("c") == (0, 0)


def test_a_deployment_at_90_percent_of_its_quota_has_no_headroom_until_the_minute_passes() -> None:
    clock = Clock()
    cap = Capacity.from_config(CONFIG, clock=clock)
    for _ in range(8):
        cap.record(_event("a"))
    assert cap.has_headroom("a")
    cap.record(_event("a"))
    assert not cap.has_headroom("a")  # 9 of 10 per minute
    cap.record(_event("b", tokens=950))
    assert not cap.has_headroom("b")
    for _ in range(100):
        cap.record(_event("c"))
    assert cap.has_headroom("c")  # no quota
    clock.t += 61
    assert cap.has_headroom("a")
    assert cap.has_headroom("b")
    assert [u.deployment for u in cap.usage()] == ["a", "b", "c"]


def test_the_router_moves_saturated_deployments_behind_those_with_headroom_never_out() -> None:
    cap = Capacity.from_config(CONFIG, clock=Clock())
    table = RouteTable(CONFIG, env={}, has_headroom=cap.has_headroom)
    assert [d.name for d in table.plan(RouteRequest()).candidates] == ["a", "b", "c"]
    for _ in range(9):
        cap.record(_event("a"))
    assert [d.name for d in table.plan(RouteRequest()).candidates] == ["b", "c", "a"]
    cap.record(_event("b", tokens=1000))
    assert [d.name for d in table.plan(RouteRequest()).candidates] == ["c", "a", "b"]


def test_an_open_breaker_still_wins_over_headroom() -> None:
    table = RouteTable(CONFIG, env={}, is_open=lambda d: d == "c", has_headroom=lambda d: d == "c")
    assert [d.name for d in table.plan(RouteRequest()).candidates] == ["a", "b"]
