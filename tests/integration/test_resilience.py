"""Executor resilience against the simulated provider's faults, through the real SDKs and a real nats-server.

Retries (429 with Retry-After, 5xx, malformed bodies, timeouts, a closed port) and what is never
retried; the deadline; circuit breakers (open, half-open, closed) shared through JetStream KV with the
router; degradation; streams that break after chunks; idempotency keys and coalescing. Provider calls
are counted at the simulator (its own profile per behaviour).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from services import host
from services.executor.breaker import Breakers
from services.simulator.server import SimulatorServer
from shared import breakers, bus, errors, headers, jetstream, keys
from shared.client import LockgateClient
from shared.config import BreakerConfig
from shared.nats_server import NatsServer
from shared.schemas.breaker import BreakerEvent, BreakerState, BreakerStateName
from shared.schemas.chat import ChatResponse
from shared.schemas.simulator import FaultConfig, SimulatorConfig
from shared.subjects import EV_BREAKER, Names
from tests.conftest import Mesh, make_config
from tests.integration.test_mesh_audit import audit_records
from tests.integration.test_mesh_basic import ask, error_of, eventually

SLACK_S = 0.5

PROFILES = {
    "ok": FaultConfig(),
    "ok2": FaultConfig(),
    "slow-ok": FaultConfig(latency_ms=300),
    "storm": FaultConfig(status=429, retry_after_s=0.2),
    "storm-long": FaultConfig(status=429, retry_after_s=30),
    "burst": FaultConfig(status=503),
    "auth": FaultConfig(status=401),
    "bad": FaultConfig(status=400),
    "broken": FaultConfig(malformed=True),
    "hang": FaultConfig(hang=True),
    "trickle": FaultConfig(chunk_delay_ms=100),
    "flip": FaultConfig(status=503),  # a test turns it healthy
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(closed_port: int) -> str:
    lines = []
    for name in PROFILES:
        lines += [f"[providers.r-{name}]", 'kind = "openai"', "simulated = true", f'profile = "{name}"', ""]
        lines += [f"[deployments.d-{name}]", f'provider = "r-{name}"', 'model = "gpt-4o-mini"', ""]
    lines += ["[providers.r-down]", 'kind = "openai"', f'base_url = "http://127.0.0.1:{closed_port}/v1"', ""]
    lines += ["[deployments.d-down]", 'provider = "r-down"', 'model = "gpt-4o-mini"', ""]
    return "\n".join(lines)


MODELS = """
[resilience]
backoff_base_ms = 50
backoff_max_ms = 200
max_retry_after_ms = 1000

[resilience.breaker]
failure_count = 3
min_requests = 100
cooldown_ms = 600

[deployments.d-storm]
provider = "r-storm"
model = "gpt-4o-mini"
max_attempts = 3

[models.m-storm]
deployments = ["d-storm", "d-ok"]

[providers.r-storm-claude]
kind = "anthropic"
simulated = true
profile = "storm"

[deployments.d-storm-claude]
provider = "r-storm-claude"
model = "claude-3-5-haiku-latest"
max_attempts = 2

[models.m-storm-claude]
deployments = ["d-storm-claude", "d-ok"]

[deployments.d-burst3]
provider = "r-burst"
model = "gpt-4o-mini"
max_attempts = 3

[models.m-burst3]
deployments = ["d-burst3", "d-ok"]

[models.m-storm-long]
deployments = ["d-storm-long"]

[models.m-storm-long-ok]
deployments = ["d-storm-long", "d-ok"]

[models.m-burst]
deployments = ["d-burst", "d-ok"]

[models.m-auth]
deployments = ["d-auth", "d-ok"]

[models.m-bad]
deployments = ["d-bad", "d-ok"]

[models.m-broken]
deployments = ["d-broken", "d-ok"]

[models.m-down]
deployments = ["d-down", "d-ok"]

[models.m-hang]
deployments = ["d-hang", "d-ok"]

[models.m-trickle]
deployments = ["d-trickle", "d-ok"]

[models.m-flip]
deployments = ["d-flip", "d-ok2"]

[models.m-slow]
deployments = ["d-slow-ok"]

[models.m-cheap]
deployments = ["d-ok2"]

[models.m-dead]
deployments = ["d-burst"]

[routes.degrading]
models = ["m-dead"]
degrade = ["cheaper_model", "template"]
degrade_model = "m-cheap"
degrade_template = "We are busy; please try again shortly."

[models.m-flipper]
deployments = ["d-flip"]

[routes.similar]
models = ["m-flipper"]
degrade = ["similar", "template"]
degrade_similarity = 0.6
degrade_template = "We are busy; please try again shortly."

[routes.template-only]
models = ["m-dead"]
degrade = ["template"]
degrade_template = "We are busy; please try again shortly."
"""


@pytest.fixture(scope="module")
async def rsim() -> AsyncIterator[SimulatorServer]:
    sim = SimulatorServer(SimulatorConfig(profiles=dict(PROFILES)))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def rmesh(nats_server: NatsServer, rsim: SimulatorServer) -> AsyncIterator[Mesh]:
    rsim.reset_stats()
    rsim.config.profiles["flip"] = PROFILES["flip"]
    namespace = f"r{uuid.uuid4().hex[:10]}"
    generated = _toml(_closed_port())
    # d-storm and d-hang need their own settings: drop the generated tables for them.
    for name, extra in (("storm", ""), ("hang", "timeout_ms = 2000\n"), ("trickle", "timeout_ms = 500\n")):
        generated = generated.replace(f'[deployments.d-{name}]\nprovider = "r-{name}"\nmodel = "gpt-4o-mini"\n', "")
        if extra:
            generated += f'\n[deployments.d-{name}]\nprovider = "r-{name}"\nmodel = "gpt-4o-mini"\n{extra}'
    config = make_config(rsim.url, namespace, generated + MODELS)
    nc = await nats.connect(nats_server.url, name=f"mesh-{namespace}")
    running = await host.start(nc, config, ["guard", "router", "budgeter", "cache", "executor", "auditor"])
    names = Names(namespace)
    dev_key = keys.generate()
    bucket = await jetstream.ensure_bucket(nc.jetstream(), names.keys_bucket)
    await keys.register(bucket, dev_key, keys.Principal(key_id="dev", tenant="dev"))
    client_nc = await nats.connect(nats_server.url, name=f"client-{namespace}")
    client = LockgateClient(client_nc, dev_key, names=names)
    mesh = Mesh(nc=nc, config=config, names=names, running=running, dev_key=dev_key, client=client,
                url=nats_server.url)  # fmt: skip
    yield mesh
    await host.stop(running)
    await client_nc.drain()
    await nc.drain()


def calls(sim: SimulatorServer, profile: str) -> int:
    return int(sim.stats["by_profile"].get(profile, 0))


async def send(mesh: Mesh, body: Any, *, timeout_s: float = 10.0, extra: dict[str, str] | None = None) -> Msg:
    h = {
        headers.REQUEST_ID: f"rs-{uuid.uuid4().hex[:12]}",
        headers.DEADLINE: str(headers.now_ms() + int(timeout_s * 1000)),
        headers.AUTHORIZATION: f"Bearer {mesh.dev_key}",
        **(extra or {}),
    }
    return await mesh.nc.request(mesh.names.chat, bus.encode(body), timeout=timeout_s + 2.0, headers=h)


def reply_of(msg: Msg) -> ChatResponse:
    assert not (msg.headers or {}).get(headers.SERVICE_ERROR_CODE), msg.data[:300]
    return msgspec.json.decode(msg.data, type=ChatResponse)


# -- retries -------------------------------------------------------------------------------------
async def test_429_storm_honours_retry_after_then_falls_back(rmesh: Mesh, rsim: SimulatorServer) -> None:
    t0 = time.monotonic()
    reply = await rmesh.client.chat(ask("storm", model="m-storm"))
    elapsed = time.monotonic() - t0
    info = reply.lockgate
    assert [a.deployment for a in info.attempts] == ["d-storm"] * 3 + ["d-ok"]
    assert [a.outcome for a in info.attempts] == ["rate_limited"] * 3 + ["ok"]
    assert info.deployment == "d-ok"
    assert info.fallbacks == 1  # three attempts on one deployment are retries, not fallbacks
    assert calls(rsim, "storm") == 3
    assert elapsed >= 2 * 0.2  # two waits of the provider's retry-after-ms (200 ms) between three attempts
    assert elapsed < 5.0


async def test_retry_after_longer_than_allowed_moves_on_at_once(rmesh: Mesh, rsim: SimulatorServer) -> None:
    t0 = time.monotonic()
    reply = await rmesh.client.chat(ask("long storm", model="m-storm-long-ok"))
    assert time.monotonic() - t0 < 2.0
    assert [a.outcome for a in reply.lockgate.attempts] == ["rate_limited", "ok"]
    # Alone, it is upstream_unavailable with the provider's hint.
    err = error_of(await send(rmesh, ask("long storm", model="m-storm-long")), "upstream_unavailable")
    assert err.retry_after_ms == 30_000
    assert err.retryable
    assert calls(rsim, "storm-long") == 2


async def test_5xx_burst_is_retried_with_backoff(rmesh: Mesh, rsim: SimulatorServer) -> None:
    msg = await send(rmesh, ask("burst", model="m-burst"))
    info = reply_of(msg).lockgate
    # attempts_per_deployment defaults to 1: the next candidate is the retry.
    assert [(a.deployment, a.outcome) for a in info.attempts] == [("d-burst", "upstream_error"), ("d-ok", "ok")]
    assert calls(rsim, "burst") == 1


async def test_anthropic_429_is_retried_through_the_anthropic_sdk(rmesh: Mesh, rsim: SimulatorServer) -> None:
    info = (await rmesh.client.chat(ask("storm", model="m-storm-claude"))).lockgate
    assert [(a.deployment, a.outcome) for a in info.attempts] == [
        ("d-storm-claude", "rate_limited"),
        ("d-storm-claude", "rate_limited"),
        ("d-ok", "ok"),
    ]
    assert rsim.stats["by_endpoint"].get("messages") == 2


async def test_5xx_burst_retries_on_the_same_deployment_with_capped_backoff(rmesh: Mesh, rsim: SimulatorServer) -> None:
    t0 = time.monotonic()
    info = (await rmesh.client.chat(ask("burst", model="m-burst3"))).lockgate
    elapsed = time.monotonic() - t0
    assert [(a.deployment, a.outcome) for a in info.attempts] == [("d-burst3", "upstream_error")] * 3 + [("d-ok", "ok")]
    assert calls(rsim, "burst") == 3
    # Two waits of uniform(0, min(200, 50 * 2^n)) ms: at most 150 ms in all (generous bound for a busy box).
    assert elapsed < 3.0


async def test_malformed_stream_before_the_first_chunk_falls_back_transparently(rmesh: Mesh) -> None:
    stream = await rmesh.client.stream(ask("broken stream", model="m-broken"))
    chunks = [c async for c in stream]
    assert chunks
    assert stream.done is not None
    assert [a.outcome for a in stream.done.lockgate.attempts] == ["upstream_error", "ok"]
    assert stream.done.chunks == len(chunks)


@pytest.mark.parametrize(("model", "profile", "outcome"), [("m-auth", "auth", "upstream_error")])
async def test_401_is_never_retried_but_falls_back(
    rmesh: Mesh, rsim: SimulatorServer, model: str, profile: str, outcome: str
) -> None:
    info = (await rmesh.client.chat(ask("who am I", model=model))).lockgate
    assert [(a.deployment, a.outcome) for a in info.attempts] == [(f"d-{profile}", outcome), ("d-ok", "ok")]
    assert "401" in (info.attempts[0].error or "")
    assert calls(rsim, profile) == 1


async def test_400_is_never_retried_anywhere(rmesh: Mesh, rsim: SimulatorServer) -> None:
    err = error_of(await send(rmesh, ask("bad", model="m-bad")), "invalid_request")
    assert err.stage == "executor"
    assert calls(rsim, "bad") == 1
    assert calls(rsim, "ok") == 0


async def test_malformed_body_falls_back(rmesh: Mesh, rsim: SimulatorServer) -> None:
    info = (await rmesh.client.chat(ask("broken", model="m-broken"))).lockgate
    assert [a.outcome for a in info.attempts] == ["upstream_error", "ok"]
    assert "malformed" in (info.attempts[0].error or "")


async def test_provider_down_closed_port_falls_back(rmesh: Mesh) -> None:
    info = (await rmesh.client.chat(ask("anyone there", model="m-down"))).lockgate
    assert [(a.deployment, a.outcome) for a in info.attempts] == [("d-down", "upstream_error"), ("d-ok", "ok")]
    assert "unreachable" in (info.attempts[0].error or "")


# -- deadlines ---------------------------------------------------------------------------------------
async def test_a_hang_never_outlives_the_deadline(rmesh: Mesh) -> None:
    deadline_s = 0.8  # shorter than d-hang's 2 s attempt timeout
    t0 = time.monotonic()
    err = error_of(await send(rmesh, ask("hang", model="m-hang"), timeout_s=deadline_s), "deadline_exceeded")
    assert time.monotonic() - t0 < deadline_s + SLACK_S
    assert err.retryable


async def test_a_hang_within_the_deadline_falls_back_after_the_attempt_timeout(rmesh: Mesh) -> None:
    t0 = time.monotonic()
    info = (await rmesh.client.chat(ask("hang", model="m-hang"), timeout_s=6.0)).lockgate
    elapsed = time.monotonic() - t0
    assert [a.outcome for a in info.attempts] == ["upstream_error", "ok"]
    assert "timed out" in (info.attempts[0].error or "")
    assert 2.0 <= elapsed < 6.0


async def test_retries_stop_before_the_deadline(rmesh: Mesh, rsim: SimulatorServer) -> None:
    # d-storm: three attempts with 200 ms waits; a 300 ms deadline leaves room for the first only.
    t0 = time.monotonic()
    msg = await send(rmesh, ask("storm", model="m-storm"), timeout_s=0.3)
    assert time.monotonic() - t0 < 0.3 + SLACK_S
    if (msg.headers or {}).get(headers.SERVICE_ERROR_CODE):
        body = msgspec.json.decode(msg.data)["error"]
        assert body["type"] in ("deadline_exceeded", "upstream_unavailable")
    assert calls(rsim, "storm") <= 2


# -- circuit breakers ------------------------------------------------------------------------------------
async def _breaker_events(mesh: Mesh) -> list[BreakerEvent]:
    js = mesh.nc.jetstream()
    info = await js.stream_info(mesh.names.events_stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(mesh.names.events_stream, seq)
        except Exception:
            continue
        if msg.subject.startswith(mesh.names.event(EV_BREAKER, "x")[:-1]):
            out.append(msgspec.json.decode(msg.data, type=BreakerEvent))
    return out


async def _kv_state(mesh: Mesh, dep: str) -> BreakerState | None:
    kv = await breakers.bucket(mesh.nc.jetstream(), mesh.names)
    for st in await breakers.read_all(kv):
        if st.deployment == dep:
            return st
    return None


@pytest.mark.slow
async def test_breaker_opens_router_skips_then_half_open_probe_closes_it(rmesh: Mesh, rsim: SimulatorServer) -> None:
    for i in range(3):  # failure_count = 3
        info = (await rmesh.client.chat(ask(f"flip {i}", model="m-flip"))).lockgate
        assert [a.outcome for a in info.attempts] == ["upstream_error", "ok"]

    async def opened() -> BreakerState | None:
        st = await _kv_state(rmesh, "d-flip")
        return st if st is not None and st.state == "open" else None

    st = await eventually(opened, timeout_s=3.0)
    assert st.until_ms > st.since_ms
    # Open: the router leaves it out; the provider gets no traffic.
    before = calls(rsim, "flip")
    for i in range(3):
        info = (await rmesh.client.chat(ask(f"while open {i}", model="m-flip"))).lockgate
        assert [a.deployment for a in info.attempts] == ["d-ok2"]
    assert calls(rsim, "flip") == before

    # After the cool-down a probe goes through: it fails, and the breaker opens again.
    await asyncio.sleep(0.7)
    info = (await rmesh.client.chat(ask("probe 1", model="m-flip"))).lockgate
    assert [a.outcome for a in info.attempts] == ["upstream_error", "ok"]
    assert calls(rsim, "flip") == before + 1
    await eventually(opened, timeout_s=3.0)

    # The provider recovers; the next probe closes the breaker.
    rsim.config.profiles["flip"] = FaultConfig()
    await asyncio.sleep(0.7)
    info = (await rmesh.client.chat(ask("probe 2", model="m-flip"))).lockgate
    assert [(a.deployment, a.outcome) for a in info.attempts] == [("d-flip", "ok")]

    async def closed() -> BreakerState | None:
        st = await _kv_state(rmesh, "d-flip")
        return st if st is not None and st.state == "closed" else None

    await eventually(closed, timeout_s=3.0)

    async def all_events() -> list[BreakerEvent] | None:
        evs = [e for e in await _breaker_events(rmesh) if e.deployment == "d-flip"]
        return evs if len(evs) >= 5 else None

    evs = await eventually(all_events, timeout_s=3.0)
    assert [(e.previous, e.state) for e in evs] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_all_open_is_upstream_unavailable_with_the_cool_down(rmesh: Mesh) -> None:
    for i in range(3):
        error_of(await send(rmesh, ask(f"dead {i}", model="m-dead")), "upstream_unavailable")

    async def opened() -> bool:
        st = await _kv_state(rmesh, "d-burst")
        return st is not None and st.state == "open"

    await eventually(opened, timeout_s=3.0)
    t0 = time.monotonic()
    err = error_of(await send(rmesh, ask("dead again", model="m-dead")), "upstream_unavailable")
    assert time.monotonic() - t0 < 1.0
    assert "breaker" in err.message
    assert err.retry_after_ms is not None
    assert 0 < err.retry_after_ms <= 600


async def test_status_shows_breaker_states(rmesh: Mesh, capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import status  # noqa: PLC0415

    for i in range(3):
        error_of(await send(rmesh, ask(f"dead {i}", model="m-dead")), "upstream_unavailable")

    async def opened() -> bool:
        st = await _kv_state(rmesh, "d-burst")
        return st is not None and st.state == "open"

    await eventually(opened, timeout_s=3.0)
    assert await status.run(rmesh.url, namespace=rmesh.names.namespace) == 0
    out = capsys.readouterr().out
    assert "Circuit breakers" in out
    assert "d-burst" in out
    assert "open" in out


# -- degradation -----------------------------------------------------------------------------------------
async def test_degrades_to_the_cheaper_model_then_template_only_when_allowed(
    rmesh: Mesh, rsim: SimulatorServer
) -> None:
    # Not asked for: the failure, with when to retry.
    err = error_of(await send(rmesh, ask("degrade?", model="degrading")), "upstream_unavailable")
    assert err.retry_after_ms is not None

    reply = reply_of(await send(rmesh, ask("degrade!", model="degrading", lockgate={"degrade": True})))
    assert reply.lockgate.degraded == "cheaper_model"
    assert reply.lockgate.deployment == "d-ok2"
    assert reply.choices[0].message.content

    reply = reply_of(await send(rmesh, ask("template!", model="template-only", lockgate={"degrade": True})))
    assert reply.lockgate.degraded == "template"
    assert reply.choices[0].message.content == "We are busy; please try again shortly."

    records = await audit_records(rmesh, 3)
    assert sorted(r.degraded for _, r in records) == ["", "cheaper_model", "template"]


# -- streaming ---------------------------------------------------------------------------------------------
async def test_stream_broken_after_chunks_says_how_far_it_got(rmesh: Mesh, rsim: SimulatorServer) -> None:
    # d-trickle sends a chunk every 100 ms; its 500 ms attempt timeout ends the stream part way.
    stream = await rmesh.client.stream(ask("trickle", model="m-trickle", max_tokens=50), timeout_s=5.0)
    chunks: list[object] = []

    async def read_all() -> None:
        async for c in stream:
            chunks.append(c)

    with pytest.raises(errors.UpstreamError) as info:
        await read_all()
    assert 1 <= len(chunks) < 50
    assert f"broke after {len(chunks)} chunk(s)" in info.value.message
    assert calls(rsim, "ok") == 0  # chunks went out: no silent switch to another deployment


# -- idempotency and coalescing ------------------------------------------------------------------------------
async def test_idempotency_key_calls_the_provider_once(rmesh: Mesh, rsim: SimulatorServer) -> None:
    key = {headers.IDEMPOTENCY_KEY: f"order-{uuid.uuid4().hex}"}
    first = reply_of(await send(rmesh, ask("charge it", model="m-slow"), extra=key))
    again = reply_of(await send(rmesh, ask("charge it", model="m-slow"), extra=key))
    assert again.choices[0].message.content == first.choices[0].message.content
    assert [a.outcome for a in again.lockgate.attempts] == ["idempotent_replay"]
    assert again.lockgate.cost_usd == 0.0
    assert calls(rsim, "slow-ok") == 1
    # Concurrent repeats of a new key: still one call.
    key2 = {headers.IDEMPOTENCY_KEY: f"order-{uuid.uuid4().hex}"}
    replies = await asyncio.gather(*(send(rmesh, ask("charge again", model="m-slow"), extra=key2) for _ in range(4)))
    assert len({reply_of(m).choices[0].message.content for m in replies}) == 1
    assert calls(rsim, "slow-ok") == 2
    # Another tenant's identical key is its own.
    other = await rmesh.add_key("acme", ["*"])
    h = {**key, headers.AUTHORIZATION: f"Bearer {other}"}
    reply_of(await send(rmesh, ask("charge it", model="m-slow"), extra=h))
    assert calls(rsim, "slow-ok") == 3


async def test_identical_concurrent_cacheable_requests_are_coalesced(rmesh: Mesh, rsim: SimulatorServer) -> None:
    req = ask(f"same question {uuid.uuid4().hex}", model="m-slow", temperature=0)
    replies = await asyncio.gather(*(send(rmesh, req) for _ in range(5)))
    outcomes = sorted(reply_of(m).lockgate.attempts[0].outcome for m in replies)
    assert calls(rsim, "slow-ok") == 1
    assert outcomes == ["coalesced"] * 4 + ["ok"]


async def test_idempotency_key_holds_across_executor_replicas(
    rmesh: Mesh, rsim: SimulatorServer, nats_server: NatsServer
) -> None:
    nc2 = await nats.connect(nats_server.url, name="second-executor")
    second = await host.start(nc2, rmesh.config, ["executor"])
    try:
        key = {headers.IDEMPOTENCY_KEY: f"pay-{uuid.uuid4().hex}"}
        replies = await asyncio.gather(*(send(rmesh, ask("pay once", model="m-slow"), extra=key) for _ in range(8)))
        assert len({reply_of(m).choices[0].message.content for m in replies}) == 1
        assert calls(rsim, "slow-ok") == 1
    finally:
        await host.stop(second)
        await nc2.drain()


async def test_streamed_repeat_of_an_idempotent_request_gets_the_first_answer(
    rmesh: Mesh, rsim: SimulatorServer
) -> None:
    key = {headers.IDEMPOTENCY_KEY: f"s-{uuid.uuid4().hex}"}
    first = reply_of(await send(rmesh, ask("stream me", model="m-slow"), extra=key))
    inbox = rmesh.nc.new_inbox()
    got: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await got.put(msg)

    sub = await rmesh.nc.subscribe(inbox, cb=on_msg)
    h = {
        headers.REQUEST_ID: f"rs-{uuid.uuid4().hex[:12]}",
        headers.DEADLINE: str(headers.now_ms() + 10_000),
        headers.AUTHORIZATION: f"Bearer {rmesh.dev_key}",
        **key,
    }
    await rmesh.nc.publish(rmesh.names.chat, bus.encode(ask("stream me", model="m-slow", stream=True)), reply=inbox,
                           headers=h)  # fmt: skip
    events = []
    while True:
        msg = await asyncio.wait_for(got.get(), 10)
        events.append(((msg.headers or {}).get(headers.EVENT), msgspec.json.decode(msg.data)))
        if events[-1][0] != headers.EVENT_CHUNK:
            break
    await sub.unsubscribe()
    kinds = [k for k, _ in events]
    assert kinds == [headers.EVENT_CHUNK, headers.EVENT_DONE]
    assert events[0][1]["choices"][0]["delta"]["content"] == first.choices[0].message.content
    assert events[1][1]["chunks"] == 1
    assert calls(rsim, "slow-ok") == 1


async def test_degrades_to_a_similar_cached_answer(rmesh: Mesh, rsim: SimulatorServer) -> None:
    rsim.config.profiles["flip"] = FaultConfig()
    first = await rmesh.client.chat(ask("What is the capital of France?", model="similar", temperature=0))
    assert first.lockgate.degraded == ""

    async def cached() -> bool:  # the cache has filled from the completion event
        again = await rmesh.client.chat(ask("What is the capital of France?", model="similar", temperature=0))
        return again.lockgate.cached == "exact"

    await eventually(cached, timeout_s=3.0)
    rsim.config.profiles["flip"] = FaultConfig(status=503)
    similar = reply_of(
        await send(rmesh, ask("what is the capital of france, again", model="similar", lockgate={"degrade": True}))
    )
    assert similar.lockgate.degraded == "similar"
    assert similar.choices[0].message.content == first.choices[0].message.content
    assert [a.outcome for a in similar.lockgate.attempts] == ["upstream_error"]
    unrelated = reply_of(
        await send(rmesh, ask("how do I bake sourdough bread", model="similar", lockgate={"degrade": True}))
    )
    assert unrelated.lockgate.degraded == "template"


async def test_a_breaker_opened_by_one_replica_is_open_in_the_others(nats_server: NatsServer) -> None:
    """Two executor replicas' breakers on one bucket: what one opens, the other refuses at once."""
    nc = await nats.connect(nats_server.url)
    try:
        kv = await breakers.bucket(nc.jetstream(), Names(f"b{uuid.uuid4().hex[:8]}"))

        async def publish(st: BreakerState, _: BreakerStateName) -> None:
            await kv.put(breakers.kv_key(st.deployment), bus.encode(st))

        cfg = BreakerConfig(failure_count=2, cooldown_ms=60_000)
        a, b = Breakers(cfg, "replica-a", publish), Breakers(cfg, "replica-b", publish)
        view_a, view_b = breakers.BreakerView(kv, a.adopt), breakers.BreakerView(kv, b.adopt)
        await view_a.start()
        await view_b.start()
        assert b.allow("dep")
        a.failure("dep", "503")
        a.failure("dep", "503")
        assert a.state("dep") == "open"

        async def b_refuses() -> bool:
            return not b.allow("dep")

        await eventually(b_refuses, timeout_s=3.0)
        assert b.state("dep") == "open"
        assert view_b.is_open("dep")
        await view_a.stop()
        await view_b.stop()
    finally:
        await nc.close()
