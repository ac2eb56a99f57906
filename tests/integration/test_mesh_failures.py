"""Stages that are down, deadlines that run out, providers that fail: the answer says what happened."""

from __future__ import annotations

import time

import pytest

from shared import bus, errors
from tests.conftest import Mesh, MeshFactory
from tests.integration.test_mesh_basic import ask, error_of, raw_chat

SLACK_S = 0.5


# -- a stage is down ----------------------------------------------------------------------
async def test_cache_down_fails_open(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    await mesh.stop_service("cache")
    t0 = time.monotonic()
    reply = await mesh.client.chat(ask("Cache is gone", model="gpt-4o-mini", temperature=0))
    assert reply.choices[0].message.content
    assert reply.lockgate.cached == ""
    assert "cache" in reply.lockgate.latency_ms
    assert time.monotonic() - t0 < 2.0  # no responders is immediate: no waiting out the cache's slice


async def test_budgeter_down_fails_closed_naming_it(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    await mesh.stop_service("budgeter")
    msg = await raw_chat(mesh, bus.encode(ask("Budget is gone", model="gpt-4o-mini")))
    err = error_of(msg, "stage_unavailable")
    assert err.stage == "budgeter"
    assert "budgeter" in err.message
    assert err.retryable is True
    assert msg.headers["Nats-Service-Error-Code"] == "503"


async def test_executor_down_is_refused_quickly_naming_it(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    await mesh.stop_service("executor")
    t0 = time.monotonic()
    with pytest.raises((errors.StageUnavailable, errors.DeadlineExceeded)) as info:
        await mesh.client.chat(ask("Executor is gone", model="gpt-4o-mini"), timeout_s=5.0)
    assert time.monotonic() - t0 < 1.0
    assert info.value.stage == "executor"
    assert "executor" in info.value.message


async def test_router_down_fails_closed(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    await mesh.stop_service("router")
    with pytest.raises(errors.StageUnavailable) as info:
        await mesh.client.chat(ask("Router is gone", model="gpt-4o-mini"))
    assert info.value.stage == "router"


async def test_validator_down_fails_closed_for_json(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    await mesh.stop_service("validator")
    # Plain text never needs the validator ...
    assert (await mesh.client.chat(ask("Plain", model="gpt-4o-mini"))).choices[0].message.content
    # ... JSON does, and its policy is closed.
    with pytest.raises(errors.StageUnavailable) as info:
        await mesh.client.chat(ask("JSON please", model="gpt-4o-mini", response_format={"type": "json_object"}))
    assert info.value.stage == "validator"


async def test_auditor_down_does_not_affect_answers(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    await mesh.stop_service("auditor")
    assert (await mesh.client.chat(ask("No auditor", model="gpt-4o-mini"))).choices[0].message.content


# -- deadlines ---------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_deadline_exceeded_arrives_on_time(mesh_factory: MeshFactory, stream: bool) -> None:
    mesh = await mesh_factory()
    deadline_s = 0.3
    t0 = time.monotonic()

    async def go() -> None:
        if stream:
            s = await mesh.client.stream(ask("Slowly", model="slow-gpt"), timeout_s=deadline_s)
            _ = [c async for c in s]
        else:
            await mesh.client.chat(ask("Slowly", model="slow-gpt"), timeout_s=deadline_s)

    with pytest.raises(errors.DeadlineExceeded) as info:
        await go()
    elapsed = time.monotonic() - t0
    assert elapsed < deadline_s + SLACK_S, elapsed
    assert info.value.stage != "client", "the mesh should answer, not the client's own timer"
    assert info.value.retryable


async def test_max_latency_ms_is_a_deadline(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    t0 = time.monotonic()
    msg = await raw_chat(mesh, bus.encode(ask("Slowly", model="slow-gpt", lockgate={"max_latency_ms": 300})))
    error_of(msg, "deadline_exceeded")
    assert time.monotonic() - t0 < 0.3 + SLACK_S


async def test_slow_model_answers_within_a_generous_deadline(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    t0 = time.monotonic()
    reply = await mesh.client.chat(ask("Slowly", model="slow-gpt"), timeout_s=5.0)
    assert reply.choices[0].message.content
    assert time.monotonic() - t0 >= 1.0


# -- provider failures and fallbacks -------------------------------------------------------
async def test_hanging_deployment_times_out_and_falls_back(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    t0 = time.monotonic()
    reply = await mesh.client.chat(ask("Hang on", model="hanging-gpt"), timeout_s=5.0)
    elapsed = time.monotonic() - t0
    info = reply.lockgate
    assert info.deployment == "sim-gpt"
    assert info.fallbacks == 1
    assert [a.deployment for a in info.attempts] == ["sim-gpt-hang", "sim-gpt"]
    assert info.attempts[0].outcome == "upstream_error"
    assert info.attempts[0].error
    assert "timed out" in info.attempts[0].error
    assert 450 <= info.attempts[0].latency_ms < 1500  # the deployment's own 500 ms timeout
    assert info.attempts[1].outcome == "ok"
    assert 0.5 <= elapsed < 3.0


async def test_flaky_deployment_falls_back_to_a_healthy_one(mesh: Mesh) -> None:
    reply = await mesh.client.chat(ask("Flaky", model="flaky-gpt"))
    info = reply.lockgate
    assert info.deployment == "sim-gpt"
    assert info.fallbacks == 1
    assert info.attempts[0].deployment == "sim-gpt-down"
    assert info.attempts[0].outcome == "upstream_error"
    assert info.attempts[0].error
    assert "503" in info.attempts[0].error
    assert info.attempts[1].outcome == "ok"


async def test_flaky_deployment_falls_back_when_streaming(mesh: Mesh) -> None:
    stream = await mesh.client.stream(ask("Flaky stream", model="flaky-gpt"))
    chunks = [c async for c in stream]
    assert chunks
    assert stream.done is not None
    assert stream.done.lockgate.deployment == "sim-gpt"
    assert [a.outcome for a in stream.done.lockgate.attempts] == ["upstream_error", "ok"]


async def test_dead_model_is_upstream_unavailable(mesh: Mesh) -> None:
    msg = await raw_chat(mesh, bus.encode(ask("Anyone?", model="dead-gpt")))
    err = error_of(msg, "upstream_unavailable")
    assert err.stage == "executor"
    assert "sim-gpt-down" in err.message
    assert "503" in err.message
    assert err.retryable is True
    assert msg.headers["Nats-Service-Error-Code"] == "503"
