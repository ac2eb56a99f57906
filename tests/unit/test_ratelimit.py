"""Rate limits: the GCRA math, one scope's decision, and the limiter over a KV fake."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from services.guard.rates import Ask, Outcome, RateLimiter, RateState, Scope, decide, gcra, refund
from services.http import errors as http_errors
from shared import bus, errors
from shared import config as cfgmod
from shared.errors import RateLimited
from shared.keys import Principal
from shared.schemas.chat import ChatRequest, Message
from shared.schemas.ratelimit import RateLimitInfo
from tests.unit.fakes import MemoryKV

NOW = 1_700_000_000_000.0


# -- GCRA ------------------------------------------------------------------------------
def test_a_full_burst_of_the_limit_is_admitted_then_the_next_waits_one_interval() -> None:
    tat = 0.0
    for i in range(10):
        v = gcra(tat, NOW, 1, 10)
        assert v.allowed, i
        assert v.remaining == 9 - i
        tat = v.tat
    v = gcra(tat, NOW, 1, 10)
    assert not v.allowed
    assert v.retry_after_ms == 6_000  # one request every 60 s / 10
    assert v.reset_ms == 60_000
    assert v.remaining == 0


def test_the_allowance_refills_smoothly_not_at_a_window_edge() -> None:
    tat = 0.0
    for _ in range(10):
        tat = gcra(tat, NOW, 1, 10).tat
    assert not gcra(tat, NOW + 5_999, 1, 10).allowed
    v = gcra(tat, NOW + 6_000, 1, 10)
    assert v.allowed
    assert v.remaining == 0
    # Half a minute later, half the allowance is back.
    assert gcra(tat, NOW + 30_000, 1, 10).remaining == 4  # 5 back, one of them taken by this request


def test_an_idle_bucket_is_full_whatever_its_old_state() -> None:
    v = gcra(NOW - 3_600_000, NOW, 1, 60)
    assert v.allowed
    assert v.remaining == 59
    assert v.reset_ms == 1_000


def test_token_costs_count_their_size_and_a_cost_above_the_limit_never_fits() -> None:
    v = gcra(0.0, NOW, 600, 1_000)
    assert v.allowed
    assert v.remaining == 400
    assert v.reset_ms == 36_000
    refused = gcra(v.tat, NOW, 600, 1_000)
    assert not refused.allowed
    assert refused.retry_after_ms == 12_000
    never = gcra(0.0, NOW, 1_001, 1_000)
    assert not never.allowed
    assert never.retry_after_ms is None


def test_a_zero_limit_refuses_everything() -> None:
    v = gcra(0.0, NOW, 1, 0)
    assert not v.allowed
    assert v.retry_after_ms is None
    assert v.remaining == 0


def test_refund_gives_the_cost_back() -> None:
    tat = gcra(0.0, NOW, 1, 10).tat
    assert gcra(refund(tat, 1, 10), NOW, 1, 10).remaining == 9


# -- decide (one scope) -------------------------------------------------------------------
SCOPE = Scope("t.acme", "tenant 'acme'", 3, 1_000)


def test_decide_counts_both_metrics_or_neither() -> None:
    state = RateState()
    d = decide("k", state, [Ask(SCOPE, 1, 600, NOW), Ask(SCOPE, 1, 600, NOW), Ask(SCOPE, 1, 300, NOW)])
    a, b, c = (cast(Outcome, o) for o in d.outcomes)
    assert d.changed
    assert a.allowed
    assert not b.allowed
    assert c.allowed
    assert b.refused_by == "tokens"
    assert b.retry_after_ms == 12_000
    # b counted no request: three requests were asked, two counted, one request still free.
    assert gcra(state.r, NOW, 1, 3).remaining == 0
    assert {f.metric: f.remaining for f in c.figures} == {"requests": 1, "tokens": 100}


def test_an_ask_that_waited_for_its_round_is_decided_at_the_time_of_the_round() -> None:
    # Another guard filled 19 of 20 slots starting 1 ms after this ask was made; the ask is decided
    # 5 ms after it was made. At the round's time the 20th slot is free; at the asking time it is not.
    burst = Scope(key="t.x", label="tenant 'x'", rpm=20, tpm=None)
    filled = RateState(r=NOW + 1 + 20 * 3_000.0 - 3_000.0)
    stale = decide("k", RateState(r=filled.r), [Ask(burst, 1, 0, NOW)])
    assert not cast(Outcome, stale.outcomes[0]).allowed  # the old way: decided at the asking time
    late = decide("k", filled, [Ask(burst, 1, 0, NOW, clock=lambda: (NOW + 5) / 1000.0)])
    assert cast(Outcome, late.outcomes[0]).allowed


def test_decide_refunds_and_a_refused_scope_reports_its_standing() -> None:
    state = RateState()
    decide("k", state, [Ask(SCOPE, 1, 10, NOW)] * 3)
    refused = cast(Outcome, decide("k", state, [Ask(SCOPE, 1, 10, NOW)]).outcomes[0])
    assert not refused.allowed
    assert refused.refused_by == "requests"
    assert refused.retry_after_ms == 20_000
    assert {f.metric: f.remaining for f in refused.figures} == {"requests": 0, "tokens": 970}
    decide("k", state, [Ask(SCOPE, 1, 10, NOW, refund=True)])
    assert cast(Outcome, decide("k", state, [Ask(SCOPE, 1, 10, NOW)]).outcomes[0]).allowed


# -- the limiter ------------------------------------------------------------------------------
TOML = """
[providers.p]
kind = "openai"
simulated = true
[deployments.d]
provider = "p"
model = "m"
[models.m]
deployments = ["d"]
max_output_tokens = 1000
[routes.default]
models = ["m"]
[tenants.acme]
rpm = 100
[tiers.free.key]
rpm = 5
[tiers.free.user]
rpm = 2
tpm = 10000
"""


class Clock:
    def __init__(self) -> None:
        self.t = NOW / 1000

    def __call__(self) -> float:
        return self.t


def _limiter(kv: MemoryKV, clock: Clock, extra: str = "") -> RateLimiter:
    return RateLimiter(cast(Any, kv), cfgmod.parse(TOML + extra), clock=clock)


def _req(user: str | None = None, max_tokens: int | None = 100, text: str = "hi") -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], user=user, max_tokens=max_tokens)


FREE = Principal(key_id="k1", tenant="acme", tier="free")


async def test_a_burst_is_cut_at_the_limit_and_the_refusal_names_the_scope_not_the_key() -> None:
    kv, clock = MemoryKV(), Clock()
    lim = _limiter(kv, clock)
    results = await asyncio.gather(*(lim.admit(FREE, _req(), 2) for _ in range(10)), return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(admitted) == 5
    assert len(refused) == 5
    err = refused[0]
    assert err.type == "rate_limited"
    assert err.retryable
    assert err.retry_after_ms is not None
    assert 0 < err.retry_after_ms <= 12_000
    assert "each API key of tier 'free'" in err.message
    assert "5 requests per minute" in err.message
    assert "k1" not in err.message
    assert err.rate_limit is not None
    assert err.rate_limit.remaining_requests == 0
    assert err.rate_limit.limit_requests == 5


async def test_figures_are_of_the_most_constraining_scope() -> None:
    lim = _limiter(MemoryKV(), Clock())
    info = await lim.admit(FREE, _req(user="alice"), 2)
    assert info is not None
    # tenant 100/min (99 left), key 5/min (4 left), user 2/min (1 left): the user's figures.
    assert (info.limit_requests, info.remaining_requests, info.reset_requests_ms) == (2, 1, 30_000)
    assert info.limit_tokens == 10_000
    assert info.remaining_tokens == 10_000 - lim.tokens(_req(), 2)


async def test_a_refused_request_consumes_no_other_scope() -> None:
    kv, clock = MemoryKV(), Clock()
    lim = _limiter(kv, clock)
    for _ in range(2):
        await lim.admit(FREE, _req(user="alice"), 2)
    with pytest.raises(RateLimited) as info:
        await lim.admit(FREE, _req(user="alice"), 2)  # the user's 2/min is used up
    assert "each user of tier 'free'" in info.value.message
    # The key and the tenant were refunded: other users of the same key still get its three remaining requests.
    for user in ("bob", "carol", "dave"):
        await lim.admit(FREE, _req(user=user), 2)
    with pytest.raises(RateLimited) as again:
        await lim.admit(FREE, _req(user="erin"), 2)
    assert "each API key of tier 'free'" in again.value.message


async def test_the_tpm_counts_the_prompt_estimate_plus_the_output_cap() -> None:
    lim = _limiter(MemoryKV(), Clock())
    assert lim.tokens(_req(max_tokens=100, text="x" * 300), 300) == 300 // 3 + 4 + 8 + 100
    assert lim.tokens(_req(max_tokens=None), 2) == 2 // 3 + 4 + 8 + 1000  # no cap: the model's
    with pytest.raises(RateLimited) as info:
        await lim.admit(FREE, _req(user="u", max_tokens=None, text="x" * 30_000), 30_000)
    assert not info.value.retryable
    assert "10000 tokens per minute" in info.value.message


async def test_the_allowance_comes_back_with_time_and_unlimited_requests_touch_no_kv() -> None:
    kv, clock = MemoryKV(), Clock()
    lim = _limiter(kv, clock)
    for _ in range(5):
        await lim.admit(FREE, _req(), 2)
    with pytest.raises(RateLimited):
        await lim.admit(FREE, _req(), 2)
    clock.t += 24.0  # two intervals of 60 s / 5
    await lim.admit(FREE, _req(), 2)
    await lim.admit(FREE, _req(), 2)
    with pytest.raises(RateLimited):
        await lim.admit(FREE, _req(), 2)
    ops = kv.ops
    assert await lim.admit(Principal(key_id="x", tenant="other"), _req(), 2) is None
    assert kv.ops == ops


async def test_two_limiters_on_one_kv_share_the_allowance() -> None:
    kv, clock = MemoryKV(), Clock()
    a, b = _limiter(kv, clock), _limiter(kv, clock)
    results = await asyncio.gather(
        *(lim.admit(FREE, _req(), 2) for lim in (a, b) for _ in range(6)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 5


# -- the figures on the wire -------------------------------------------------------------------
def test_figures_ride_the_error_envelope_and_become_openai_headers() -> None:
    err = RateLimited("rate limit of tenant 'acme': 3 requests per minute reached", retry_after_ms=2_500)
    err.rate_limit = RateLimitInfo(limit_requests=3, remaining_requests=0, reset_requests_ms=61_500,
                                   limit_tokens=1000, remaining_tokens=990, reset_tokens_ms=600)  # fmt: skip
    back = errors.from_reply(bus.encode(err.envelope("r")), "429", None, "guard")
    assert back.rate_limit == err.rate_limit
    h = http_errors.error_headers(back, "r")
    assert h["Retry-After"] == "3"
    assert h["retry-after-ms"] == "2500"
    assert h["x-ratelimit-limit-requests"] == "3"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"] == "1m1.5s"
    assert h["x-ratelimit-limit-tokens"] == "1000"
    assert h["x-ratelimit-remaining-tokens"] == "990"
    assert h["x-ratelimit-reset-tokens"] == "600ms"
    assert http_errors.rate_limit_headers(RateLimitInfo(limit_tokens=5)).keys() == {
        "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"
    }  # fmt: skip
    assert http_errors.duration(12_000) == "12s"
