"""Budgets: reserve the worst case before the call, settle to the actual cost after it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import msgspec
import nats.js.errors
import pytest

from services.budgeter.store import EntityState, tenant_key, usd
from shared import bus
from shared.client import LockgateClient
from tests.conftest import Mesh, MeshFactory
from tests.integration.test_mesh_basic import ask, error_of, eventually, raw_chat

POOR = """
[tenants.poor]
daily_budget_usd = 0.000001
"""


def today() -> str:
    return "d" + dt.datetime.now(dt.UTC).strftime("%Y%m%d")


async def budget_state(mesh: Mesh, tenant: str, key: str | None = None) -> dict[str, float] | None:
    """Today's spent and live reserved USD of an entity (the tenant's by default)."""
    kv = await mesh.nc.jetstream().key_value(mesh.names.budgets_bucket)
    try:
        entry = await kv.get(key or tenant_key(tenant))
    except nats.js.errors.KeyNotFoundError:
        return None
    if not entry.value:
        return None
    st = msgspec.json.decode(entry.value, type=EntityState)
    w = st.windows.get(today())
    now = time.time()
    return {
        "spent_usd": usd(w.spent) if w else 0.0,
        "reserved_usd": usd(sum(h.amount for h in st.holds.values() if h.expires_s > now)),
        "month_spent_usd": usd(st.windows[month].spent) if (month := "m" + today()[1:7]) in st.windows else 0.0,
    }


async def test_tiny_budget_is_refused_with_retry_after(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=POOR)
    key = await mesh.add_key("poor", ["*"])
    msg = await raw_chat(mesh, bus.encode(ask("Can I afford this?", model="gpt-4o-mini")), auth=f"Bearer {key}")
    err = error_of(msg, "budget_exceeded")
    assert err.stage == "budgeter"
    assert "poor" in err.message
    assert err.retry_after_ms is not None
    assert 0 < err.retry_after_ms <= 86_400_000
    assert msg.headers["Nats-Service-Error-Code"] == "402"
    # Nothing was reserved for a refused request.
    state = await budget_state(mesh, "poor")
    assert state is None or state.get("reserved_usd", 0.0) == 0.0
    # A tenant without a budget is not affected.
    acme = await mesh.add_key("acme", ["*"])
    ok = await raw_chat(mesh, bus.encode(ask("And me?", model="gpt-4o-mini")), auth=f"Bearer {acme}")
    assert b'"chat.completion"' in ok.data


async def test_free_model_fits_a_tiny_budget(mesh_factory: MeshFactory) -> None:
    """slow-gpt has no price: a zero worst case fits any budget (and its 1 s latency is fine here)."""
    mesh = await mesh_factory(extra_toml=POOR)
    poor = LockgateClient(mesh.client.nc, await mesh.add_key("poor", ["*"]), names=mesh.names)
    reply = await poor.chat(ask("Free?", model="slow-gpt"), timeout_s=5.0)
    assert reply.lockgate.cost_usd == 0


async def test_spend_is_settled_in_the_kv_bucket(mesh: Mesh) -> None:
    reply = await mesh.client.chat(ask("Spend a little", model="gpt-4o-mini"))
    cost = reply.lockgate.cost_usd
    assert cost > 0

    async def settled() -> dict[str, float] | None:
        state = await budget_state(mesh, "dev")
        if state and state.get("spent_usd", 0.0) > 0 and state.get("reserved_usd", 0.0) < 1e-12:
            return state
        return None

    state = await eventually(settled)
    assert state["spent_usd"] == pytest.approx(cost)
    assert state["reserved_usd"] == pytest.approx(0.0, abs=1e-12)


async def test_concurrent_requests_settle_to_the_sum_of_their_costs(mesh: Mesh) -> None:
    replies = await asyncio.gather(*(mesh.client.chat(ask(f"Spend {i}", model="gpt-4o-mini")) for i in range(10)))
    total = sum(r.lockgate.cost_usd for r in replies)

    async def settled() -> dict[str, float] | None:
        state = await budget_state(mesh, "dev")
        if state and state.get("spent_usd", 0.0) >= total * 0.999 and state.get("reserved_usd", 0.0) < 1e-9:
            return state
        return None

    state = await eventually(settled)
    assert state["spent_usd"] == pytest.approx(total)


async def test_budget_runs_out_after_spending(mesh_factory: MeshFactory) -> None:
    """Requests are admitted while spent + reserved + their worst case fits, then refused."""
    # Worst case of each call: (~15 prompt tokens x $0.15 + 100 x $0.60) / 1e6 ~ $0.000062; the actual
    # cost is ~ $0.00001, so a $0.0001 budget admits a handful of them and then refuses.
    mesh = await mesh_factory(extra_toml="\n[tenants.small]\ndaily_budget_usd = 0.0001\n")
    small = LockgateClient(mesh.client.nc, await mesh.add_key("small", ["*"]), names=mesh.names)
    outcomes = []
    for i in range(10):
        msg = await small.chat_raw(bus.encode(ask(f"Request {i}", model="gpt-4o-mini", max_tokens=100)))
        outcomes.append("ok" if b'"chat.completion"' in msg.data else error_of(msg, "budget_exceeded").type)
    assert outcomes[0] == "ok"
    assert "budget_exceeded" in outcomes
    first_refusal = outcomes.index("budget_exceeded")
    assert all(o == "ok" for o in outcomes[:first_refusal])


async def test_a_reused_request_id_still_settles_every_request(mesh: Mesh) -> None:
    """Clients choose request ids (and reuse them on retries); each request must still be settled."""
    replies = [
        await mesh.client.chat(ask("Same id", model="gpt-4o-mini"), request_id="client-retry-1") for _ in range(3)
    ]
    assert {r.lockgate.request_id for r in replies} == {"client-retry-1"}
    total = sum(r.lockgate.cost_usd for r in replies)

    async def settled() -> dict[str, float] | None:
        state = await budget_state(mesh, "dev")
        if state and state.get("spent_usd", 0.0) >= total * 0.999 and state.get("reserved_usd", 0.0) < 1e-9:
            return state
        return None

    state = await eventually(settled)
    assert state["spent_usd"] == pytest.approx(total)
