"""`lockgate bench --scenario resilience`: what failing providers cost a client, in one run.

Layout as in ``bench``: a simulator process (zero latency, with fault profiles), ``lockgate up``
on a config written here, and this load generator (the thin NATS client).

1. Flaky primary: a deployment answering 30 % 429s and 10 % 503s (simulator ``mix``) in front of a
   healthy one. Prints the success rate, p50/p99 against a healthy-only run, attempts per request
   and the share of answers each deployment served. The breaker here only opens on a failure
   ratio of 50 % (a count-based breaker would take the primary out at once, see 2).
2. Hanging primary: a deployment that never answers (per-attempt timeout 500 ms) in front of a
   healthy one, for a fixed time. Prints p99 against the deadline and against the per-attempt
   timeout plus the healthy p99, the breaker's changes (events.v1.breaker.*), and how many
   requests tried the hanging deployment while its breaker was open (the goal: none; only
   half-open probes get through).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from nats.aio.msg import Msg

from services.cli.bench import Result, _start_mesh, _stop
from shared import keys
from shared.client import LockgateClient
from shared.schemas.breaker import BreakerEvent
from shared.schemas.chat import ChatRequest, ChatResponse, Message
from shared.subjects import EV_BREAKER, Names

WARMUP = 100
DEADLINE_S = 5.0
HANG_TIMEOUT_MS = 500
COOLDOWN_MS = 2_000

_COMMON = f"""
[gateway]
default_route = "healthy"
request_timeout_ms = 10000
simulate = "always"

[providers.sim-flaky]
kind = "openai"
simulated = true
profile = "flaky"

[providers.sim-hang]
kind = "openai"
simulated = true
profile = "hang"

[providers.sim-ok]
kind = "openai"
simulated = true
profile = "ok"

[providers.sim-ok2]
kind = "openai"
simulated = true
profile = "ok2"

[deployments.primary-flaky]
provider = "sim-flaky"
model = "gpt-4o-mini"

[deployments.primary-hang]
provider = "sim-hang"
model = "gpt-4o-mini"
timeout_ms = {HANG_TIMEOUT_MS}

[deployments.healthy]
provider = "sim-ok"
model = "gpt-4o-mini"

[deployments.secondary]
provider = "sim-ok2"
model = "gpt-4o-mini"

[models.healthy]
deployments = ["healthy"]

[models.flaky]
deployments = ["primary-flaky", "secondary"]

[models.hanging]
deployments = ["primary-hang", "secondary"]

[routes.healthy]
models = ["healthy"]

[tenants.dev]
"""

RATIO_BREAKER = """
[resilience.breaker]
failure_count = 1000000
failure_ratio = 0.5
min_requests = 20
window_s = 10
"""

COUNT_BREAKER = f"""
[resilience.breaker]
failure_count = 5
failure_ratio = 0.5
min_requests = 20
window_s = 10
cooldown_ms = {COOLDOWN_MS}
half_open_probes = 1
"""


@dataclass
class Outcome:
    start_ms: float
    end_ms: float
    ok: bool
    deployment: str = ""
    attempts: list[tuple[str, str, float]] = field(default_factory=list)  # deployment, outcome, ms

    def tried_at(self, deployment: str) -> float | None:
        """When a real attempt on ``deployment`` started (estimated back from the end), or None."""
        for i, (d, outcome, _) in enumerate(self.attempts):
            if d == deployment and outcome != "breaker_open":
                return self.end_ms - sum(ms for _, _, ms in self.attempts[i:])
        return None


async def _start_simulator() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.simulator", "--port", "0",
        "--profile", "flaky=mix=429:0.3/503:0.1", "--profile", "hang=hang",
        "--profile", "ok=latency=0", "--profile", "ok2=latency=0",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    if not line.startswith("simulator "):
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def _write_config(data_dir: Path, toml: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = data_dir / "resilience.toml"
    cfg.write_text(toml, encoding="utf-8")
    return cfg


async def _start_mesh_with(
    sim_url: str, data_dir: Path, dev_key: str, toml: str
) -> tuple[asyncio.subprocess.Process, str]:
    mesh, values = await _start_mesh(sim_url, data_dir / "nats", dev_key, config=_write_config(data_dir, toml))
    return mesh, values["NATS_URL"]


def _req(i: int, model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content=f"resilience {i}")], max_tokens=16)


async def _drive(
    lg: LockgateClient, model: str, concurrency: int, *, n: int | None = None, seconds: float | None = None
) -> tuple[list[Outcome], float]:
    out: list[Outcome] = []
    counter = iter(range(n if n is not None else 10**9))
    t0 = time.perf_counter()
    end = t0 + (seconds if seconds is not None else 1e9)

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() >= end:
                return
            start = time.time() * 1000
            try:
                reply: ChatResponse = await lg.chat(_req(i, model), timeout_s=DEADLINE_S)
            except Exception:
                out.append(Outcome(start, time.time() * 1000, ok=False))
                continue
            info = reply.lockgate
            out.append(
                Outcome(start, time.time() * 1000, ok=True, deployment=info.deployment,
                        attempts=[(a.deployment, a.outcome, a.latency_ms) for a in info.attempts])
            )  # fmt: skip

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out, time.perf_counter() - t0


def _result(label: str, c: int, outs: list[Outcome], secs: float) -> Result:
    lat = [o.end_ms - o.start_ms for o in outs if o.ok]
    return Result(label, c, len(outs), secs, lat, sum(1 for o in outs if not o.ok))


async def _mesh(sim_url: str, tmp: Path, breaker: str, body: Callable[[LockgateClient, str], Awaitable[None]]) -> None:
    dev_key = keys.generate()
    mesh, nats_url = await _start_mesh_with(sim_url, tmp, dev_key, _COMMON + breaker)
    try:
        lg = await LockgateClient.connect(nats_url, dev_key)
        try:
            await _drive(lg, "healthy", 4, n=WARMUP)
            await body(lg, nats_url)
        finally:
            await lg.close()
    finally:
        await _stop(mesh)


def _line(r: Result) -> str:
    ok = r.n - r.errors
    return (
        f"{r.label:<22}{r.concurrency:>5}{r.n:>7}{100 * ok / max(1, r.n):>9.2f}%{r.rps:>8.0f}"
        f"{r.pct(50):>9.1f}{r.pct(99):>9.1f}"
    )


HEADER = f"{'run':<22}{'conc':>5}{'reqs':>7}{'success':>10}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"


async def run(n: int, concurrency: int, hang_seconds: float) -> int:
    sim, sim_url = await _start_simulator()
    ok = True
    try:
        print(f"lockgate bench --scenario resilience: {os.cpu_count()} CPUs, client deadline {DEADLINE_S:g} s")

        async def flaky(lg: LockgateClient, _: str) -> None:
            nonlocal ok
            healthy_out, hs = await _drive(lg, "healthy", concurrency, n=n)
            flaky_out, fs = await _drive(lg, "flaky", concurrency, n=n)
            healthy, fl = (
                _result("healthy only", concurrency, healthy_out, hs),
                _result("primary 30%429+10%503", concurrency, flaky_out, fs),
            )
            print("\n1. flaky primary (30 % 429, 10 % 503) + healthy secondary; breaker: ratio >= 50 %")
            print(HEADER)
            print(_line(healthy))
            print(_line(fl))
            share = Counter(o.deployment for o in flaky_out if o.ok)
            attempts = Counter(len(o.attempts) for o in flaky_out if o.ok)
            served = sum(share.values()) or 1
            print("   served by: " + ", ".join(f"{d} {100 * k / served:.1f} %" for d, k in share.most_common()))
            print("   attempts per request: " + ", ".join(f"{a}: {k}" for a, k in sorted(attempts.items())))
            ratio = fl.pct(99) / healthy.pct(99) if healthy.pct(99) else float("nan")
            print(f"   p99 / healthy p99 = {ratio:.2f} (target < 3)")
            ok = ok and fl.errors == 0

        async def hanging(lg: LockgateClient, nats_url: str) -> None:
            nonlocal ok
            healthy_out, hs = await _drive(lg, "healthy", concurrency, n=n)
            healthy = _result("healthy only", concurrency, healthy_out, hs)
            events: list[BreakerEvent] = []
            dec = msgspec.json.Decoder(BreakerEvent)

            async def on_event(msg: Msg) -> None:
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                    events.append(dec.decode(msg.data))

            sub = await lg.nc.subscribe(Names().events_of(EV_BREAKER), cb=on_event)
            hang_out, secs = await _drive(lg, "hanging", concurrency, seconds=hang_seconds)
            await asyncio.sleep(0.2)
            await sub.unsubscribe()
            hang = _result(f"primary hangs {hang_seconds:g} s", concurrency, hang_out, secs)
            print(
                f"\n2. hanging primary (per-attempt timeout {HANG_TIMEOUT_MS} ms) + healthy secondary; "
                f"breaker: 5 failures in 10 s, cool-down {COOLDOWN_MS} ms, 1 probe"
            )
            print(HEADER)
            print(_line(healthy))
            print(_line(hang))
            bound = HANG_TIMEOUT_MS + healthy.pct(99)
            print(
                f"   p99 {hang.pct(99):.0f} ms; deadline {DEADLINE_S * 1000:.0f} ms; "
                f"per-attempt timeout + healthy p99 = {bound:.0f} ms"
            )
            mine = [e for e in events if e.deployment == "primary-hang"]
            t_first = min((o.start_ms for o in hang_out), default=0.0)
            print("   breaker: " + ", ".join(f"{e.state}@{(e.ts_ms - t_first) / 1000:.2f}s" for e in mine))
            # Cool-downs: from each `open` to its end (until_ms). A real attempt on the hanging
            # deployment that started inside one is a leak; after one, it is the half-open probe.
            # Attempt start times are estimated back from the reply (the guard's reply time makes
            # them early by a few ms), hence the tolerance.
            windows = [(float(e.ts_ms), float(e.until_ms)) for e in mine if e.state == "open"]
            starts = [t for t in (o.tried_at("primary-hang") for o in hang_out) if t is not None]
            before = [t for t in starts if not windows or t < windows[0][0]]
            leaks = [t for t in starts if any(a <= t < b - 50 for a, b in windows)]
            print(
                f"   real attempts on the hanging deployment: {len(starts)} of {len(hang_out)} requests "
                f"({len(before)} before the breaker first opened, {len(starts) - len(before) - len(leaks)} "
                f"half-open probes); during a cool-down: {len(leaks)} (target 0)"
            )
            ok = ok and hang.errors == 0 and not leaks

        with tempfile.TemporaryDirectory(prefix="lockgate-bench-res-") as tmp:
            await _mesh(sim_url, Path(tmp) / "a", RATIO_BREAKER, flaky)
            await _mesh(sim_url, Path(tmp) / "b", COUNT_BREAKER, hanging)
    finally:
        await _stop(sim)
    return 0 if ok else 1
