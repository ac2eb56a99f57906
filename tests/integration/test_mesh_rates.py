"""Rate limits through a real mesh: shared by guard replicas (one of them its own process), per tier and
user, on tokens, shown in the reply and the HTTP headers, and kept across a guard restart."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from services import host
from shared import config as cfgmod
from shared import jetstream, keys
from shared.client import LockgateClient
from shared.errors import RateLimited
from shared.schemas.chat import ChatRequest, ChatResponse, Message
from tests.conftest import ALL, Mesh, MeshFactory

ROOT = Path(__file__).resolve().parents[2]

LIMITS = """
[tenants.burst]
rpm = 20

[tenants.tiered]

[tenants.tokens]
tpm = 1000

[tenants.slow]
rpm = 2

[tiers.free.key]
rpm = 3

[tiers.free.user]
rpm = 2
"""


def _req(user: str | None = None, max_tokens: int = 8, temperature: float = 1.0) -> ChatRequest:
    return ChatRequest(
        messages=[Message(role="user", content="hello there")], user=user, max_tokens=max_tokens,
        temperature=temperature,
    )  # fmt: skip


async def _client(mesh: Mesh, tenant: str, tier: str = "", key_id: str = "") -> LockgateClient:
    key = keys.generate()
    bucket = await jetstream.ensure_bucket(mesh.nc.jetstream(), mesh.names.keys_bucket)
    await keys.register(bucket, key, keys.Principal(key_id=key_id or f"k-{tenant}", tenant=tenant, tier=tier))
    return LockgateClient(mesh.client.nc, key, names=mesh.names)


async def _burst(client: LockgateClient, n: int) -> tuple[list[ChatResponse], list[RateLimited]]:
    results = await asyncio.gather(*(client.chat(_req()) for _ in range(n)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, ChatResponse)]
    limited = [r for r in results if isinstance(r, RateLimited)]
    assert len(ok) + len(limited) == n, [r for r in results if not isinstance(r, ChatResponse | RateLimited)]
    return ok, limited


@pytest.fixture
async def second_guard(mesh_factory: MeshFactory, tmp_path: Path) -> AsyncIterator[Mesh]:
    """A mesh whose guard has a second replica: `lockgate serve guard`, its own process."""
    mesh = await mesh_factory(extra_toml=LIMITS)
    cfg = tmp_path / "lockgate.toml"
    cfg.write_bytes(cfgmod.encode(mesh.config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", "guard", "--nats", mesh.url, "--config", str(cfg),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):  # up to 20 s (imports on a busy machine)
            if await _guards_serving(mesh) == 2:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the second guard process never answered")
        yield mesh
    finally:
        proc.terminate()  # SIGTERM: it drains like a deployed service
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _guard_stats(mesh: Mesh) -> list[int]:
    """Requests served per guard instance of this mesh (its namespace's chat subject)."""
    inbox = mesh.nc.new_inbox()
    counts: list[int] = []

    async def on_reply(msg: object) -> None:
        stats = msgspec.json.decode(msg.data)  # type: ignore[attr-defined]
        for e in stats.get("endpoints") or []:
            if e.get("subject") == mesh.names.chat:
                counts.append(int(e.get("num_requests", 0)))

    sub = await mesh.nc.subscribe(inbox, cb=on_reply)
    await mesh.nc.publish("$SRV.STATS.guard", b"", reply=inbox)
    await asyncio.sleep(0.3)
    await sub.unsubscribe()
    return counts


async def _guards_serving(mesh: Mesh) -> int:
    return len(await _guard_stats(mesh))


async def test_two_guard_processes_share_one_limit_across_a_burst(second_guard: Mesh) -> None:
    client = await _client(second_guard, "burst")
    ok, limited = await _burst(client, 40)  # twice the tenant's 20 per minute
    # 20 fit the full bucket; the refill (one every 3 s) may let one more in while the burst runs.
    assert 20 <= len(ok) <= 21
    assert len(limited) == 40 - len(ok)
    for err in limited:
        assert err.retry_after_ms is not None
        # At most one interval (3 s): asks are decided at the time of their round (an ask decided at the
        # time it was made, after another guard moved the bucket, saw 3002 ms and refused the 20th slot).
        assert 0 < err.retry_after_ms <= 3_000
        assert "tenant 'burst'" in err.message
        assert "20 requests per minute" in err.message
    served = await _guard_stats(second_guard)
    assert len(served) == 2
    assert all(n > 0 for n in served), served  # both replicas took part
    last = ok[-1].lockgate.rate_limit
    assert last is not None
    assert last.limit_requests == 20


async def test_tier_limits_per_user_and_per_key(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=LIMITS)
    client = await _client(mesh, "tiered", tier="free")
    first = await client.chat(_req(user="alice"))
    info = first.lockgate.rate_limit
    assert info is not None
    assert (info.limit_requests, info.remaining_requests) == (2, 1)  # alice's own 2/min is the tightest
    await client.chat(_req(user="alice"))
    with pytest.raises(RateLimited) as user_limited:
        await client.chat(_req(user="alice"))
    assert "each user of tier 'free'" in user_limited.value.message
    await client.chat(_req(user="bob"))  # the key's third request this minute
    with pytest.raises(RateLimited) as key_limited:
        await client.chat(_req(user="carol"))
    assert "each API key of tier 'free'" in key_limited.value.message
    assert key_limited.value.rate_limit is not None
    assert key_limited.value.rate_limit.remaining_requests == 0
    # Another key of the same tier has its own allowance.
    other = await _client(mesh, "tiered", tier="free", key_id="k-other")
    await other.chat(_req(user="dave"))


async def test_tokens_per_minute_count_the_prompt_and_the_output_cap(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=LIMITS)
    client = await _client(mesh, "tokens")
    done = await client.chat(_req(max_tokens=400))
    info = done.lockgate.rate_limit
    assert info is not None
    assert info.limit_tokens == 1000
    assert 570 <= info.remaining_tokens < 600  # 400 of output cap plus a prompt estimate of a few tokens
    assert info.limit_requests == 0  # no request limit applies
    await client.chat(_req(max_tokens=400))
    with pytest.raises(RateLimited) as limited:
        await client.chat(_req(max_tokens=400))
    assert "1000 tokens per minute" in limited.value.message
    with pytest.raises(RateLimited) as never:
        await client.chat(_req(max_tokens=2000))
    assert not never.value.retryable


async def test_limits_survive_a_guard_restart_and_cached_answers_count(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=LIMITS)
    client = await _client(mesh, "slow")
    await client.chat(_req(temperature=0.0))
    await asyncio.sleep(0.5)  # the cache fills from the completion event
    cached = await client.chat(_req(temperature=0.0))
    assert cached.lockgate.cached == "exact"
    assert cached.lockgate.rate_limit is not None
    assert cached.lockgate.rate_limit.remaining_requests == 0
    await mesh.stop_service("guard")
    mesh.running += await host.start(mesh.nc, mesh.config, ["guard"])
    with pytest.raises(RateLimited) as limited:
        await client.chat(_req())
    assert limited.value.retry_after_ms is not None
    assert limited.value.retry_after_ms > 20_000  # 2 per minute: the next one in about 30 s


async def test_the_http_door_sends_openai_rate_limit_headers(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(services=[*ALL, "http"], extra_toml=LIMITS)
    url = next(r.url for r in mesh.running if r.name == "http")
    key = keys.generate()
    bucket = await jetstream.ensure_bucket(mesh.nc.jetstream(), mesh.names.keys_bucket)
    await keys.register(bucket, key, keys.Principal(key_id="k-h", tenant="slow"))
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        for remaining in ("1", "0"):
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=auth) as resp:
                assert resp.status == 200
                assert resp.headers["x-ratelimit-limit-requests"] == "2"
                assert resp.headers["x-ratelimit-remaining-requests"] == remaining
                assert resp.headers["x-ratelimit-reset-requests"].endswith("s")
                assert "x-ratelimit-limit-tokens" not in resp.headers
        async with http.post(f"{url}/v1/chat/completions", json=body, headers=auth) as resp:
            assert resp.status == 429
            assert int(resp.headers["retry-after"]) >= 20
            assert resp.headers["x-ratelimit-remaining-requests"] == "0"
            error = (await resp.json())["error"]
            assert error["code"] == "rate_limited"
            assert "tenant 'slow'" in error["message"]
            assert key not in error["message"]


CAPACITY = """
[deployments.q-first]
provider = "sim-openai"
model = "gpt-4o-mini"
rpm = 2

[deployments.q-second]
provider = "sim-anthropic"
model = "claude-3-5-haiku-latest"

[models.duo]
deployments = ["q-first", "q-second"]
"""


async def test_a_deployment_at_its_quota_moves_behind_one_with_headroom(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=CAPACITY)
    req = ChatRequest(model="duo", messages=[Message(role="user", content="hi")], max_tokens=8)
    for _ in range(2):
        assert (await mesh.client.chat(req)).lockgate.deployment == "q-first"
    served = ""
    for _ in range(30):  # the router counts a request once its completion event arrives
        served = (await mesh.client.chat(req)).lockgate.deployment
        if served == "q-second":
            break
        await asyncio.sleep(0.1)
    assert served == "q-second"
    # A restarted router replays the last minute of events: q-first is still at its quota.
    await mesh.stop_service("router")
    mesh.running += await host.start(mesh.nc, mesh.config, ["router"])
    assert (await mesh.client.chat(req)).lockgate.deployment == "q-second"


async def test_status_shows_deployment_capacity(mesh_factory: MeshFactory, capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import status  # noqa: PLC0415

    mesh = await mesh_factory(extra_toml=CAPACITY)
    await mesh.client.chat(ChatRequest(model="duo", messages=[Message(role="user", content="hi")], max_tokens=8))
    await asyncio.sleep(0.3)
    assert await status.run(mesh.url, namespace=mesh.names.namespace) == 0
    out = capsys.readouterr().out
    assert "Deployment capacity" in out
    assert "q-first" in out
