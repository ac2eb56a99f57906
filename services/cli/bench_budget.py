"""`lockgate bench --scenario budget`: what budget accounting costs, with 1 and 3 budgeter replicas.

Layout: a nats-server (JetStream, file store) and N `lockgate serve budgeter` processes; this
process drives mesh.v1.budgeter.reserve and settles by publishing completion events, as the
guard does: at the tenant's owner replica (shared.owners). With several replicas it runs twice,
once sending every reservation to the queue group (any replica: the baseline) and once to the
owners. Per run it prints:

- latency at concurrency 1: a bare NATS request/reply round trip (an echo in this process, the
  floor), the reserve round trip (what a request waits for) and the settle publish (after the
  reply, off the request's path), p50/p99;
- reservations/s at the given concurrency on one hot tenant key and spread over 256 tenants (each
  reservation is settled right after it is granted, so settlements contend for the keys too);
- the guarantee: a hard budget of exactly K worst cases, 500 concurrent reservations: admitted
  must be K, and once everything is settled at its worst case, spent must not exceed the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import nats
import nats.js.errors
import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.budgeter.store import EntityState, tenant_key, units
from services.cli.bench import Result, _stop
from shared import bus, headers, jetstream, logging
from shared.errors import BudgetExceeded
from shared.headers import RequestContext
from shared.nats_server import NatsServer
from shared.owners import Owners, call_owner
from shared.schemas.events import CompletionEvent
from shared.schemas.mesh import Reservation, ReserveRequest
from shared.subjects import BUDGETER, EV_COMPLETION, OP_MEMBERS, OP_RESERVE, Names

AMOUNT = 0.001
K = 137
SPREAD = 256


def _config(namespace: str) -> str:
    tenants = "".join(f"[tenants.s{i}]\ndaily_budget_usd = 1000000.0\n" for i in range(SPREAD))
    return f"""
[nats]
namespace = "{namespace}"

[gateway]
log_level = "warning"

[tenants.hot]
daily_budget_usd = 1000000.0
monthly_budget_usd = 1000000.0

[tenants.exact]
daily_budget_usd = {K * AMOUNT}

{tenants}"""


async def _serve_budgeter(url: str, config: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", "budgeter", "--nats", url, "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return proc


class Driver:
    """Reserves as the guard does: at the tenant's owner replica (``owners``), else the queue group."""

    def __init__(self, nc: Client, names: Names, owners: Owners | None = None) -> None:
        self.nc = nc
        self.names = names
        self.owners = owners
        self.js = nc.jetstream()

    async def reserve(self, tenant: str, amount: float = AMOUNT) -> Reservation:
        ctx = RequestContext.new(timeout_ms=10_000, tenant=tenant)
        return await call_owner(
            self.nc, self.owners, self.names, BUDGETER, OP_RESERVE, tenant,
            ReserveRequest(tenant=tenant, amount_usd=amount), Reservation, ctx, timeout_s=10,
        )  # fmt: skip

    async def settle(self, tenant: str, res: Reservation, cost: float) -> None:
        ev = CompletionEvent(
            request_id=res.reservation_id, tenant=tenant, ts_ms=headers.now_ms(), outcome="completed",
            cost_usd=cost, reservation_id=res.reservation_id, hold=res.hold,
        )  # fmt: skip
        await self.js.publish(
            self.names.event(EV_COMPLETION, tenant), bus.encode(ev), headers={headers.MSG_ID: headers.new_id()}
        )

    async def state(self, tenant: str) -> EntityState:
        kv = await self.js.key_value(self.names.budgets_bucket)
        try:
            entry = await kv.get(tenant_key(tenant))
        except nats.js.errors.KeyNotFoundError:
            return EntityState()
        return msgspec.json.decode(entry.value or b"{}", type=EntityState)


async def _timed(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> Result:
    lat: list[float] = []
    errors = 0
    it = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for i in it:
            t = time.perf_counter()
            try:
                await one(i)
            except Exception:
                errors += 1
                continue
            lat.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result("", concurrency, n, time.perf_counter() - t0, lat, errors)


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


async def _one_run(
    url: str, tmp: Path, replicas: int, n: int, concurrency: int, *, owned: bool, server_pid: int
) -> list[str]:
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    cfg = tmp / f"budget-{replicas}.toml"
    cfg.write_text(_config(namespace))
    nc = await nats.connect(url, name="bench-budget")
    names = Names(namespace)
    await jetstream.ensure_all(nc.jetstream(), names)
    procs = [await _serve_budgeter(url, cfg) for _ in range(replicas)]
    out: list[str] = []
    owners = Owners(nc, names.mesh(BUDGETER, OP_MEMBERS))
    try:
        d = Driver(nc, names)
        async with asyncio.timeout(60):  # every replica answers (the queue group spreads the warm-up)
            while True:
                with contextlib.suppress(Exception):
                    await asyncio.gather(*(d.reserve("s0", 0.0) for _ in range(replicas * 8)))
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # the other replicas' subscriptions
            await _until(lambda: len(owners.members) >= replicas, owners.refresh)  # and the members' view
            await asyncio.sleep(1.5)
        if owned:
            await owners.start()
            d.owners = owners
        echo = await nc.subscribe(f"{namespace}.echo", cb=_echo)

        async def ping(_: int) -> None:
            await nc.request(f"{namespace}.echo", b"x" * 200, timeout=5)

        async def reserve_hot(_: int) -> None:
            await d.settle("hot", await d.reserve("hot"), AMOUNT / 2)

        reserve_lat: list[float] = []
        settle_lat: list[float] = []

        async def reserve_then_settle(_: int) -> None:
            t = time.perf_counter()
            r = await d.reserve("hot")
            t1 = time.perf_counter()
            await d.settle("hot", r, AMOUNT / 2)
            reserve_lat.append((t1 - t) * 1000)
            settle_lat.append((time.perf_counter() - t1) * 1000)

        async def reserve_spread(i: int) -> None:
            tenant = f"s{i % SPREAD}"
            await d.settle(tenant, await d.reserve(tenant), AMOUNT / 2)

        await _timed(200, 4, reserve_hot)  # warm-up
        base = await _timed(500, 1, ping)
        await _timed(500, 1, reserve_then_settle)
        res = Result("", 1, 500, 0.0, reserve_lat, 0)
        stl = Result("", 1, 500, 0.0, settle_lat, 0)
        pids = [p.pid for p in procs]
        c0, s0 = _cpu_s(pids), _cpu_s([server_pid])
        hot = await _timed(n, concurrency, reserve_hot)
        c1, s1 = _cpu_s(pids), _cpu_s([server_pid])
        spread = await _timed(n, concurrency, reserve_spread)
        c2, s2 = _cpu_s(pids), _cpu_s([server_pid])
        await echo.unsubscribe()
        admitted, spent, ok = await _guarantee(d)
        how = "owner" if owned else "any"
        out.append(
            f"{replicas:>3} replica{'s' if replicas > 1 else ' '} {how:<5}  "
            f"nats rtt p50 {base.pct(50):.3f} p99 {base.pct(99):.3f} | reserve p50 {res.pct(50):.3f} "
            f"p99 {res.pct(99):.3f} (added over rtt p50 {res.pct(50) - base.pct(50):.3f}) | settle publish p50 "
            f"{stl.pct(50):.3f} p99 {stl.pct(99):.3f} ms"
        )
        out.append(
            f"{'':>13}reservations/s at concurrency {concurrency}: one hot key {hot.rps:,.0f} (p50 {hot.pct(50):.2f} "
            f"p99 {hot.pct(99):.2f} ms, errors {hot.errors}); {SPREAD} keys {spread.rps:,.0f} "
            f"(p50 {spread.pct(50):.2f} p99 {spread.pct(99):.2f} ms, errors {spread.errors})"
        )
        out.append(
            f"{'':>13}CPU per reservation + settlement, budgeters + nats-server: one hot key "
            f"{(c1 - c0) / n * 1000:.3f} + {(s1 - s0) / n * 1000:.3f} ms, {SPREAD} keys "
            f"{(c2 - c1) / n * 1000:.3f} + {(s2 - s1) / n * 1000:.3f} ms"
        )
        out.append(
            f"{'':>13}guarantee: budget = {K} worst cases, 500 concurrent: admitted {admitted}, settled spend "
            f"${spent:.6f} of ${K * AMOUNT:.6f}: {'zero overshoot' if ok else 'OVERSHOOT'}"
        )
    finally:
        await owners.stop()
        for p in procs:
            await _stop(p)
        await nc.drain()
    return out


async def _until(done: Callable[[], bool], step: Callable[[], Awaitable[object]]) -> None:
    while not done():
        await step()
        await asyncio.sleep(0.2)


async def _echo(msg: Msg) -> None:
    await msg.respond(msg.data)


async def _guarantee(d: Driver) -> tuple[int, float, bool]:
    results = await asyncio.gather(*(d.reserve("exact") for _ in range(500)), return_exceptions=True)
    granted = [r for r in results if isinstance(r, Reservation)]
    unexpected = [r for r in results if not isinstance(r, Reservation | BudgetExceeded)]
    await asyncio.gather(*(d.settle("exact", g, AMOUNT) for g in granted))
    st = EntityState()
    for _ in range(200):
        st = await d.state("exact")
        if not st.holds:
            break
        await asyncio.sleep(0.05)
    spent = sum(w.spent for k, w in st.windows.items() if k.startswith("d"))
    ok = len(granted) == K and not unexpected and not st.holds and spent <= units(K * AMOUNT)
    return len(granted), spent / 1e9, ok


async def run(n: int, levels: list[int], *, replicas: list[int]) -> int:
    logging.configure("warning", stream=sys.stderr)  # the figures alone on stdout
    concurrency = levels[0]
    lines = [
        f"lockgate bench --scenario budget: {n} reservations per throughput run, {os.cpu_count()} CPUs "
        "(nats-server, the budgeters and this driver share them)"
    ]
    ok = True
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-budget-") as tmp:
        server = NatsServer(Path(tmp) / "nats")
        await server.start()
        try:
            for r in replicas:
                for owned in (False, True) if r > 1 else (True,):
                    out = await _one_run(
                        server.url, Path(tmp), r, n, concurrency, owned=owned, server_pid=server.pid or 0
                    )
                    ok = ok and "zero overshoot" in out[-1]
                    lines += out
        finally:
            await server.stop()
    print("\n".join(lines))
    return 0 if ok else 1
