"""The request context: in from headers, out to headers, with safe defaults for bad values."""

from __future__ import annotations

import re

import pytest

from shared import headers
from shared.headers import RequestContext, child_traceparent, new_traceparent, now_ms

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


def test_round_trip_keeps_id_tenant_deadline_and_trace() -> None:
    ctx = RequestContext.new(timeout_ms=5_000, tenant="acme", request_id="req-1")
    back = RequestContext.from_headers(ctx.to_headers(), default_timeout_ms=1)
    assert back.request_id == "req-1"
    assert back.tenant == "acme"
    assert back.deadline_ms == ctx.deadline_ms
    # The next hop is a child span of the same trace.
    assert back.traceparent.split("-")[1] == ctx.traceparent.split("-")[1]
    assert back.traceparent.split("-")[2] != ctx.traceparent.split("-")[2]
    assert TRACEPARENT.match(back.traceparent)


def test_to_headers_uses_the_documented_names() -> None:
    h = RequestContext.new(timeout_ms=1_000, tenant="t").to_headers()
    assert set(h) == {"Lockgate-Request-Id", "Lockgate-Tenant", "Lockgate-Deadline", "traceparent"}
    assert h["Lockgate-Deadline"].isdigit()


@pytest.mark.parametrize("raw", ["soon", "", "-5", "0", "12.5", "1e12"])
def test_malformed_or_missing_deadline_gets_the_default(raw: str) -> None:
    before = now_ms()
    ctx = RequestContext.from_headers({headers.DEADLINE: raw}, default_timeout_ms=3_000)
    assert before + 3_000 <= ctx.deadline_ms <= now_ms() + 3_000


def test_no_headers_at_all() -> None:
    ctx = RequestContext.from_headers(None, default_timeout_ms=1_000)
    assert len(ctx.request_id) == 24
    assert ctx.tenant == ""
    assert TRACEPARENT.match(ctx.traceparent)
    assert not ctx.expired()
    assert 0 < ctx.remaining_ms() <= 1_000
    assert 0 < ctx.remaining_s() <= 1.0


def test_past_deadline_is_kept_and_expired() -> None:
    ctx = RequestContext.from_headers({headers.DEADLINE: str(now_ms() - 10)}, default_timeout_ms=1_000)
    assert ctx.expired()
    assert ctx.remaining_ms() < 0


def test_oversized_values_are_truncated() -> None:
    ctx = RequestContext.from_headers(
        {headers.REQUEST_ID: "r" * 1_000, headers.TENANT: "t" * 1_000}, default_timeout_ms=1_000
    )
    assert len(ctx.request_id) == 128
    assert len(ctx.tenant) == 128


@pytest.mark.parametrize("bad", ["", "garbage", "00-abc-def-01", "00-" + "a" * 32 + "-" + "b" * 15 + "-01"])
def test_malformed_traceparent_starts_a_new_trace(bad: str) -> None:
    tp = child_traceparent(bad)
    assert TRACEPARENT.match(tp)
    ctx = RequestContext.from_headers({headers.TRACEPARENT: bad}, default_timeout_ms=1_000)
    assert TRACEPARENT.match(ctx.traceparent)


def test_child_traceparent_keeps_version_trace_and_flags() -> None:
    parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-00"
    child = child_traceparent(parent)
    version, trace, span, flags = child.split("-")
    assert (version, trace, flags) == ("00", "a" * 32, "00")
    assert span != "b" * 16
    assert len(span) == 16


def test_ids_are_fresh() -> None:
    assert len({headers.new_id() for _ in range(100)}) == 100
    assert new_traceparent() != new_traceparent()


def test_with_tenant_and_deadline_are_copies() -> None:
    ctx = RequestContext.new(timeout_ms=1_000)
    other = ctx.with_tenant("x").with_deadline(42)
    assert (other.tenant, other.deadline_ms) == ("x", 42)
    assert (ctx.tenant, ctx.request_id) == ("", other.request_id)
