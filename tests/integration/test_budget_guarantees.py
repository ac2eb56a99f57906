"""Budgets under concurrency, across replicas in separate processes, through restarts and crashes.

Budgeter (and, for the crash test, guard and executor) replicas run as `lockgate serve NAME`
processes against the session's real nats-server; this process drives reservations on
mesh.v1.budgeter.reserve and settles them by publishing completion events, as the guard does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.budgeter.store import Clock, EntityState, Hold, Window, tenant_key, units, usd
from shared import bus, headers, jetstream
from shared import config as cfgmod
from shared.config import LockgateConfig
from shared.errors import BudgetExceeded
from shared.headers import RequestContext
from shared.nats_server import NatsServer
from shared.owners import Owners, call_owner
from shared.schemas.budget import BudgetAlert, BudgetLimits
from shared.schemas.chat import LockgateOptions
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import Reservation, ReserveRequest
from shared.subjects import BUDGETER, EV_ALERT, EV_COMPLETION, OP_MEMBERS, OP_RESERVE, Names
from tests.conftest import MeshFactory, make_config
from tests.integration.test_mesh_basic import ask, error_of, eventually, raw_chat

ROOT = Path(__file__).resolve().parents[2]
AMOUNT = 0.001  # USD per reservation
K = 137  # the budget holds exactly this many worst cases
MONTHLY = 0.5  # USD: the monthly budget of tenant "monthly"


@dataclass
class Proc:
    name: str
    proc: asyncio.subprocess.Process
    instance: str = ""  # its micro service id (the service_started log line says it)


async def start_service(name: str, url: str, config_path: Path) -> Proc:
    """`lockgate serve NAME` as its own process; returns once it logged that it started."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", name, "--nats", url, "--config", str(config_path),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None  # the JSON log
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stdout.readline()
                assert line, f"{name} exited during start-up ({proc.returncode})"
                if b"service_started" in line:
                    instance = str(msgspec.json.decode(line).get("instance", ""))
                    break
    except BaseException:
        await stop(Proc(name, proc), signal.SIGKILL)  # never leave a half-started service behind
        raise
    _DRAINS.add(asyncio.get_running_loop().create_task(_drain(proc.stdout)))
    return Proc(name, proc, instance)


_DRAINS: set[asyncio.Task[None]] = set()


async def _drain(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.readline():
            pass


async def stop(p: Proc, sig: int = signal.SIGTERM) -> None:
    if p.proc.returncode is None:
        p.proc.send_signal(sig)
        try:
            await asyncio.wait_for(p.proc.wait(), 15)
        except TimeoutError:
            p.proc.kill()
            await p.proc.wait()


@dataclass
class Replicas:
    nc: Client
    names: Names
    config: LockgateConfig
    config_path: Path
    url: str
    procs: list[Proc]

    async def reserve(
        self, tenant: str, amount: float = AMOUNT, timeout_ms: int = 20_000, *, owners: Owners | None = None
    ) -> Reservation:
        """Through the queue group (any replica), or as the guard does: at the tenant's owner first."""
        ctx = RequestContext.new(timeout_ms=timeout_ms, tenant=tenant)
        return await call_owner(
            self.nc, owners, self.names, BUDGETER, OP_RESERVE, tenant, ReserveRequest(tenant=tenant, amount_usd=amount),
            Reservation, ctx, timeout_s=timeout_ms / 1000,
        )  # fmt: skip

    async def settle(self, tenant: str, res: Reservation, cost: float) -> None:
        ev = CompletionEvent(
            request_id=res.reservation_id, tenant=tenant, ts_ms=headers.now_ms(), outcome="completed",
            cost_usd=cost, reservation_id=res.reservation_id, hold=res.hold,
        )  # fmt: skip
        await self.nc.jetstream().publish(
            self.names.event(EV_COMPLETION, tenant), bus.encode(ev), headers={headers.MSG_ID: headers.new_id()}
        )

    async def state(self, tenant: str) -> tuple[float, float]:
        """(spent today, live reserved) of a tenant, in USD."""
        kv = await self.nc.jetstream().key_value(self.names.budgets_bucket)
        try:
            entry = await kv.get(tenant_key(tenant))
        except nats.js.errors.KeyNotFoundError:
            return 0.0, 0.0
        st = msgspec.json.decode(entry.value or b"{}", type=EntityState)
        day = "d" + time.strftime("%Y%m%d", time.gmtime())
        w = st.windows.get(day)
        now = time.time()
        return usd(w.spent) if w else 0.0, usd(sum(h.amount for h in st.holds.values() if h.expires_s > now))


def _write_config(config: LockgateConfig, path: Path) -> Path:
    path.write_bytes(cfgmod.encode(config))
    return path


@pytest.fixture
async def replicas(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Replicas]:
    namespace = f"b{uuid.uuid4().hex[:8]}"
    config = make_config(
        "http://127.0.0.1:1", namespace,
        f"\n[tenants.hot]\ndaily_budget_usd = {K * AMOUNT}\n[tenants.open]\n"
        f"[tenants.monthly]\ndaily_budget_usd = 1.0\nmonthly_budget_usd = {MONTHLY}\n",
    )  # fmt: skip
    path = _write_config(config, tmp_path / "lockgate.toml")
    nc = await nats.connect(nats_server.url, name=f"driver-{namespace}")
    await jetstream.ensure_all(nc.jetstream(), Names(namespace))
    r = Replicas(nc, Names(namespace), config, path, nats_server.url, [])
    try:
        for _ in range(3):  # one by one, so a failed start still leaves the started ones to stop
            r.procs.append(await start_service("budgeter", nats_server.url, path))
        yield r
    finally:
        for p in r.procs:
            await stop(p)
        await nc.drain()


@pytest.mark.slow
async def test_three_budgeter_processes_admit_exactly_what_fits_and_never_overshoot(replicas: Replicas) -> None:
    results = await asyncio.gather(*(replicas.reserve("hot") for _ in range(500)), return_exceptions=True)
    granted = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    others = [r for r in results if not isinstance(r, Reservation | BudgetExceeded)]
    assert others == []  # no reservation lost to contention, no timeout
    assert len(granted) == K  # every request that fit was admitted ...
    assert len(refused) == 500 - K  # ... and no more
    assert all(g.hold is not None for g in granted)
    spent, reserved = await replicas.state("hot")
    assert reserved == pytest.approx(K * AMOUNT)
    # Settle every admitted request at up to its worst case (as the guard's completion events do).
    await asyncio.gather(*(replicas.settle("hot", g, AMOUNT * (0.5 + 0.5 * (i % 2))) for i, g in enumerate(granted)))
    expected = sum(AMOUNT * (0.5 + 0.5 * (i % 2)) for i in range(K))

    async def settled() -> tuple[float, float] | None:
        s, r = await replicas.state("hot")
        return (s, r) if r == 0 and s > 0 else None

    spent, reserved = await eventually(settled, timeout_s=20)
    assert units(spent) == units(expected)
    assert spent <= K * AMOUNT
    # What the settlements freed is admitted again, and still never more than the budget.
    more = await asyncio.gather(*(replicas.reserve("hot") for _ in range(200)), return_exceptions=True)
    assert sum(isinstance(m, Reservation) for m in more) == (units(K * AMOUNT) - units(spent)) // units(AMOUNT)


async def owned_counts(replicas: Replicas) -> dict[str, int]:
    """reserve-owned requests per budgeter instance of this mesh ($SRV.STATS)."""
    ids = {p.instance for p in replicas.procs}
    inbox = replicas.nc.new_inbox()
    replies: list[dict[str, object]] = []

    async def collect(msg: Msg) -> None:
        replies.append(msgspec.json.decode(msg.data))

    sub = await replicas.nc.subscribe(inbox, cb=collect)
    await replicas.nc.publish("$SRV.STATS.budgeter", b"", reply=inbox)
    await asyncio.sleep(0.3)
    await sub.unsubscribe()
    out: dict[str, int] = {}
    for rep in replies:
        if rep["id"] in ids:
            endpoints = rep["endpoints"]
            assert isinstance(endpoints, list)
            out[str(rep["id"])] = sum(e["num_requests"] for e in endpoints if e["name"] == "reserve-owned")
    return out


@pytest.mark.slow
async def test_a_tenants_reservations_meet_at_one_owner_which_may_die_without_loss(replicas: Replicas) -> None:
    owners = Owners(replicas.nc, replicas.names.mesh(BUDGETER, OP_MEMBERS))
    await eventually(lambda: _members(owners, 3), timeout_s=10)
    owner = owners.owner("hot")
    assert owner in {p.instance for p in replicas.procs}
    first = await asyncio.gather(*(replicas.reserve("hot", owners=owners) for _ in range(40)))
    counts = await owned_counts(replicas)
    assert counts == {p.instance: 40 if p.instance == owner else 0 for p in replicas.procs}
    # The owner dies (SIGKILL, holds live): the next reservations still get an answer (any replica,
    # then the new owner once the members see it), and the budget is still never overshot.
    [dead] = [p for p in replicas.procs if p.instance == owner]
    await stop(dead, signal.SIGKILL)
    rest = await asyncio.gather(*(replicas.reserve("hot", owners=owners) for _ in range(200)), return_exceptions=True)
    assert not [r for r in rest if not isinstance(r, Reservation | BudgetExceeded)]
    assert sum(isinstance(r, Reservation) for r in rest) == K - len(first)
    await eventually(lambda: _members(owners, 2), timeout_s=10)
    assert owners.owner("hot") not in (None, owner)


async def _members(owners: Owners, n: int) -> bool:
    return len(await owners.refresh()) == n


@pytest.mark.slow
async def test_a_restarted_budgeter_keeps_spent_and_reserved(replicas: Replicas) -> None:
    first = [await replicas.reserve("hot") for _ in range(10)]
    for r in first[:4]:
        await replicas.settle("hot", r, AMOUNT / 2)

    async def four_settled() -> tuple[float, float] | None:
        s, r = await replicas.state("hot")
        return (s, r) if units(s) == units(4 * AMOUNT / 2) else None

    await eventually(four_settled, timeout_s=10)
    for p in replicas.procs:  # every replica dies mid-run, with six holds live
        await stop(p, signal.SIGKILL)
    replicas.procs = [await start_service("budgeter", replicas.url, replicas.config_path)]
    spent, reserved = await replicas.state("hot")
    assert units(spent) == units(2 * AMOUNT)
    assert units(reserved) == units(6 * AMOUNT)
    # The new replica sees them: exactly what is left of the budget is admitted.
    room = units(K * AMOUNT) - units(spent) - units(reserved)
    results = await asyncio.gather(*(replicas.reserve("hot") for _ in range(200)), return_exceptions=True)
    assert sum(isinstance(r, Reservation) for r in results) == room // units(AMOUNT)
    # And the holds from before the restart still settle.
    for r in first[4:]:
        await replicas.settle("hot", r, AMOUNT / 2)

    async def all_settled() -> float | None:
        s, _ = await replicas.state("hot")
        return s if units(s) == units(5 * AMOUNT) else None

    await eventually(all_settled, timeout_s=10)


@pytest.mark.slow
async def test_a_new_utc_day_starts_from_zero_while_the_month_keeps_counting(replicas: Replicas) -> None:
    # The state budgeters left at the end of yesterday (UTC): the daily budget spent, a hold still
    # within its lease; this month's spend of tenant "monthly" three worst cases short of its limit.
    now = time.time()
    today, yesterday = Clock(now), Clock(now - 86_400)
    kv = await replicas.nc.jetstream().key_value(replicas.names.budgets_bucket)
    late = EntityState(
        windows={yesterday.day: Window(spent=units(K * AMOUNT), alerted=True)},
        holds={"yesterday": Hold(units(10 * AMOUNT), int(now) + 600, yesterday.day)},
    )
    await kv.put(tenant_key("hot"), msgspec.json.encode(late))
    month = EntityState(windows={today.month: Window(spent=units(MONTHLY - 3 * AMOUNT))})
    await kv.put(tenant_key("monthly"), msgspec.json.encode(month))

    # Today the whole daily budget is there again (yesterday's spend and hold count in yesterday only).
    hot = await asyncio.gather(*(replicas.reserve("hot") for _ in range(200)), return_exceptions=True)
    assert not [r for r in hot if not isinstance(r, Reservation | BudgetExceeded)]
    assert sum(isinstance(r, Reservation) for r in hot) == K
    entry = await kv.get(tenant_key("hot"))
    st = msgspec.json.decode(entry.value or b"{}", type=EntityState)
    assert yesterday.day not in st.windows  # the old window is dropped by the next write
    # The month keeps counting across days: three more fit, then the monthly limit binds.
    monthly = await asyncio.gather(*(replicas.reserve("monthly") for _ in range(10)), return_exceptions=True)
    assert sum(isinstance(r, Reservation) for r in monthly) == 3
    refused = [r for r in monthly if isinstance(r, BudgetExceeded)]
    assert len(refused) == 7
    assert "monthly budget" in refused[0].message
    assert refused[0].retry_after_ms is not None
    assert abs(refused[0].retry_after_ms - today.reset_ms(today.month)) < 60_000


@pytest.mark.slow
async def test_runtime_limits_reach_every_replica_within_a_second(replicas: Replicas) -> None:
    assert (await replicas.reserve("open", amount=5.0)).hold is None  # no budget: not accounted
    kv = await replicas.nc.jetstream().key_value(replicas.names.budget_limits_bucket)
    await kv.put(tenant_key("open"), msgspec.json.encode(BudgetLimits(daily_budget_usd=1.0)))
    t0 = time.monotonic()

    async def every_replica_refuses() -> bool:
        # Several tries land on several replicas (queue group): all of them must know the limit.
        outcomes = await asyncio.gather(*(replicas.reserve("open", amount=5.0) for _ in range(9)),
                                        return_exceptions=True)  # fmt: skip
        return all(isinstance(o, BudgetExceeded) for o in outcomes)

    await eventually(every_replica_refuses, timeout_s=5, interval_s=0.1)
    assert time.monotonic() - t0 < 1.5


# -- crashes: a hold whose settlement never comes ----------------------------------------------
LEASED = """
[budgets]
lease_grace_ms = 500

[tenants.leased]
daily_budget_usd = 0.05
"""


@pytest.mark.slow
async def test_holds_of_killed_guard_and_executor_processes_expire_with_their_lease(
    mesh_factory: MeshFactory, tmp_path: Path
) -> None:
    # In this process: router, budgeter, cache, validator, auditor. Guard and executor: their own.
    mesh = await mesh_factory(services=["router", "budgeter", "cache", "validator", "auditor"], extra_toml=LEASED)
    path = _write_config(mesh.config, tmp_path / "lockgate.toml")
    procs: list[Proc] = []
    try:
        for name in ("guard", "executor"):
            procs.append(await start_service(name, mesh.url, path))
        key = await mesh.add_key("leased", ["*"])
        # The worst case of one request is most of the budget: a second one does not fit beside it.
        body = bus.encode(ask("[sim:hang]", model="gpt-4o-mini", max_tokens=16_000))
        hanging = asyncio.ensure_future(raw_chat(mesh, body, auth=f"Bearer {key}", timeout_s=3.0))
        kv = await mesh.nc.jetstream().key_value(mesh.names.budgets_bucket)

        async def held() -> EntityState | None:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                st = msgspec.json.decode((await kv.get(tenant_key("leased"))).value or b"{}", type=EntityState)
                return st if st.holds else None
            return None

        st = await eventually(held, timeout_s=5)
        (hold,) = st.holds.values()
        assert hold.expires_s >= time.time() + 2  # deadline (3 s from the start) + grace, rounded up to 5 s
        for p in procs:  # the provider call hangs; guard and executor crash: no settlement ever comes
            await stop(p, signal.SIGKILL)
        # Until the lease runs out the hold counts: a second request's worst case does not fit.
        second = ReserveRequest(tenant="leased", amount_usd=0.05 - usd(hold.amount) + 0.001)
        ctx = RequestContext.new(timeout_ms=2_000, tenant="leased")
        subject = mesh.names.mesh(BUDGETER, OP_RESERVE)
        with pytest.raises(BudgetExceeded):
            await bus.call(mesh.nc, subject, second, Reservation, ctx, stage=BUDGETER, timeout_s=2)
        await asyncio.sleep(max(0.0, hold.expires_s - time.time()) + 0.2)
        ctx = RequestContext.new(timeout_ms=2_000, tenant="leased")
        r = await bus.call(mesh.nc, subject, second, Reservation, ctx, stage=BUDGETER, timeout_s=2)
        assert r.hold is not None  # nothing leaked
        st = msgspec.json.decode((await kv.get(tenant_key("leased"))).value or b"{}", type=EntityState)
        assert list(st.holds) == [r.hold.id]  # the expired hold is gone from the state too
        with contextlib.suppress(Exception):
            await hanging  # the client heard nothing (the guard died): its own timeout
    finally:
        for p in procs:
            await stop(p, signal.SIGKILL)


# -- hard budgets: degrade or refuse; alerts ---------------------------------------------------
DEGRADE = """
[models.free-gpt]
deployments = ["sim-gpt"]

[routes.thrifty]
models = ["gpt-4o-mini"]
degrade = ["cheaper_model"]
degrade_model = "free-gpt"

[tenants.tight]
daily_budget_usd = 0.001
monthly_budget_usd = 0.5
"""


async def test_over_a_hard_budget_a_request_that_allows_it_gets_the_cheaper_model(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=DEGRADE)
    key = await mesh.add_key("tight", ["*"])
    big = {"model": "thrifty", "max_tokens": 16_000}  # worst case $0.0096 > $0.001
    msg = await raw_chat(mesh, bus.encode(ask("Too dear", **big)), auth=f"Bearer {key}")
    err = error_of(msg, "budget_exceeded")
    assert "daily window resets in" in err.message
    assert err.retry_after_ms is not None
    assert 0 < err.retry_after_ms <= 86_400_000
    degraded = ask("Too dear, but degrade", lockgate=LockgateOptions(degrade=True), **big)
    ok = await raw_chat(mesh, bus.encode(degraded), auth=f"Bearer {key}")
    reply = msgspec.json.decode(ok.data)
    assert reply["object"] == "chat.completion", reply
    assert reply["lockgate"]["degraded"] == "cheaper_model"
    assert reply["lockgate"]["cost_usd"] == 0.0
    audit = await mesh.nc.jetstream().subscribe(mesh.names.audit_of("tight"), stream=mesh.names.audit_stream)
    kinds = []
    async with asyncio.timeout(5):
        while "admitted" not in kinds:
            rec = msgspec.json.decode((await audit.next_msg(timeout=5)).data)
            kinds.append(rec["kind"])
            if rec["kind"] == "admitted":
                assert rec["degraded"] == "cheaper_model"
    await audit.unsubscribe()


ALERTING = """
[budgets]
alert_threshold = 0.1

[tenants.watched]
daily_budget_usd = 0.001
"""


async def test_passing_the_alert_threshold_alerts_once_with_an_audit_record(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=ALERTING)
    key = await mesh.add_key("watched", ["*"])
    js = mesh.nc.jetstream()
    alerts = await js.subscribe(mesh.names.event(EV_ALERT, "watched"), stream=mesh.names.events_stream)
    # Each call costs about $0.00001: some ten of them pass $0.0001, a tenth of the budget.
    first: BudgetAlert | None = None
    after = 0
    for i in range(80):
        msg = await raw_chat(mesh, bus.encode(ask(f"Spend {i}", model="gpt-4o-mini", max_tokens=16)),
                             auth=f"Bearer {key}")  # fmt: skip
        assert b'"chat.completion"' in msg.data, msg.data[:300]
        if first is None:
            with contextlib.suppress(nats.errors.TimeoutError):
                first = msgspec.json.decode((await alerts.next_msg(timeout=0.05)).data, type=BudgetAlert)
        else:
            after += 1
            if after == 5:
                break
    assert first is not None
    assert (first.kind, first.scope, first.entity, first.window[0]) == ("threshold", "tenant", "watched", "d")
    assert first.spent_usd >= 0.0001
    assert first.limit_usd == pytest.approx(0.001)
    with pytest.raises(nats.errors.TimeoutError):
        await alerts.next_msg(timeout=0.5)  # once per window
    await alerts.unsubscribe()
    audit = await js.subscribe(mesh.names.audit("watched", "alert"), stream=mesh.names.audit_stream)
    rec = msgspec.json.decode((await audit.next_msg(timeout=5)).data, type=BudgetAlert)
    assert rec.kind == "threshold"
    await audit.unsubscribe()
