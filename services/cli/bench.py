"""`lockgate bench`: the mesh's added latency and cost, against a baseline in the same run.

Layout (three processes besides this one, all on loopback):
  simulator  `python -m services.simulator --port 0` (zero latency)
  mesh       `lockgate up --simulator-url ...` (nats-server child + all services in one process)
  this       the load generator: the same requests (1) straight to the simulator through
             the OpenAI SDK, (2) over NATS through the whole mesh with the thin client.

Prints requests/s and p50/p95/p99 for both, the difference (the mesh's added
latency), mesh CPU seconds per request (the `up` process and its nats-server,
from /proc via psutil) and the mesh's RSS. The load generator shares the two
cores with everything else: the figures are for comparison within one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import openai
import psutil
from openai.types.chat import ChatCompletionMessageParam

from shared import keys
from shared.client import LockgateClient
from shared.errors import LockgateError
from shared.schemas.chat import ChatRequest, Message

WARMUP = 100


@dataclass
class Result:
    label: str
    concurrency: int
    n: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    cpu_s: float | None = None
    nats_cpu_s: float | None = None

    def pct(self, p: float) -> float:
        xs = sorted(self.latencies_ms)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]

    @property
    def rps(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0


ERRORS_SEEN: Counter[str] = Counter()  # by error type (or exception class), printed after the table


async def _load(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            t = time.perf_counter()
            try:
                await one(i)
            except Exception as exc:
                errors += 1
                kind = exc.type if isinstance(exc, LockgateError) else type(exc).__name__
                ERRORS_SEEN[f"{kind}: {str(exc)[:80]}"] += 1
                continue
            latencies.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies, errors


def _request(i: int, stream: bool) -> ChatRequest:
    # A different prompt each time (and no temperature 0): nothing is served from the cache.
    return ChatRequest(messages=[Message(role="user", content=f"bench request {i}")], max_tokens=16, stream=stream)


async def _start_simulator() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.simulator", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    if not line.startswith("simulator "):
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


async def _start_mesh(
    sim_url: str, data_dir: Path, dev_key: str, *, config: Path | None = None
) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """`lockgate up` as a child process (no provider keys: simulated); returns it and its KEY=value lines."""
    env = dict(os.environ, OPENAI_API_KEY="", ANTHROPIC_API_KEY="")
    args = ["--config", str(config)] if config is not None else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "up", *args, "--simulator-url", sim_url, "--data-dir", str(data_dir),
        "--dev-key", dev_key, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    values: dict[str, str] = {}
    async with asyncio.timeout(60):
        while "READY" not in values:
            line = (await proc.stdout.readline()).decode().strip()
            if not line:
                raise RuntimeError("lockgate up exited before it was ready")
            k, _, v = line.partition("=")
            values[k] = v
    return proc, values


def _mesh_cpu(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of the mesh process and of its children (nats-server)."""
    p = psutil.Process(pid)
    t = p.cpu_times()
    own: float = t.user + t.system
    kids = 0.0
    for child in p.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            ct = child.cpu_times()
            kids += ct.user + ct.system
    return own, kids


def _mesh_rss_mb(pid: int) -> tuple[float, float]:
    p = psutil.Process(pid)
    own = p.memory_info().rss / 2**20
    kids = sum(c.memory_info().rss for c in p.children(recursive=True)) / 2**20
    return own, kids


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run(n: int, levels: list[int], *, stream: bool) -> int:
    dev_key = keys.generate()
    sim, sim_url = await _start_simulator()
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as tmp:
        mesh, nats_url = None, ""
        try:
            mesh, up_values = await _start_mesh(sim_url, Path(tmp), dev_key)
            nats_url = up_values["NATS_URL"]
            direct = openai.AsyncOpenAI(base_url=sim_url + "/v1", api_key="sk-bench", max_retries=0)
            lg = await LockgateClient.connect(nats_url, dev_key)

            async def via_sdk(i: int) -> None:
                req = _request(i, stream)
                msgs: list[ChatCompletionMessageParam] = [{"role": "user", "content": req.messages[0].text()}]
                if stream:
                    chunks = await direct.chat.completions.create(
                        model="gpt-4o-mini", messages=msgs, max_tokens=16, stream=True
                    )
                    async for _ in chunks:
                        pass
                else:
                    await direct.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=16)

            async def via_mesh(i: int) -> None:
                req = _request(i, stream)
                if stream:
                    s = await lg.stream(req, timeout_s=30)
                    async for _ in s:
                        pass
                    if s.done is None:
                        raise RuntimeError("stream ended without done")
                else:
                    await lg.chat(req, timeout_s=30)

            await _load(WARMUP, 4, via_sdk)
            await _load(WARMUP, 4, via_mesh)
            results: list[tuple[Result, Result]] = []
            for c in levels:
                secs, lat, err = await _load(n, c, via_sdk)
                base = Result("direct", c, n, secs, lat, err)
                own0, nats0 = _mesh_cpu(mesh.pid)
                secs, lat, err = await _load(n, c, via_mesh)
                own1, nats1 = _mesh_cpu(mesh.pid)
                cpu, nats_cpu = own1 - own0 + nats1 - nats0, nats1 - nats0
                results.append((base, Result("mesh", c, n, secs, lat, err, cpu_s=cpu, nats_cpu_s=nats_cpu)))
            own, kids = _mesh_rss_mb(mesh.pid)
            await lg.close()
            await direct.close()
        finally:
            if mesh is not None:
                await _stop(mesh)
            await _stop(sim)
    _print(results, n, stream, own, kids)
    return 0 if all(m.errors == 0 and b.errors == 0 for b, m in results) else 1


def _print(results: list[tuple[Result, Result]], n: int, stream: bool, own_mb: float, kids_mb: float) -> None:
    mode = "streaming" if stream else "non-streaming"
    print(f"lockgate bench: {n} {mode} requests per run, simulator at zero latency, {os.cpu_count()} CPUs")
    hdr = f"{'path':<8}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}{'mesh CPU ms/req (of which nats-server)':>40}"
    print(hdr)
    for base, mesh in results:
        for r in (base, mesh):
            cpu = "-"
            if r.cpu_s is not None and r.nats_cpu_s is not None:
                cpu = f"{r.cpu_s / r.n * 1000:.2f} ({r.nats_cpu_s / r.n * 1000:.2f} nats)"
            print(
                f"{r.label:<8}{r.concurrency:>5}{r.rps:>10.0f}{r.pct(50):>9.2f}{r.pct(95):>9.2f}{r.pct(99):>9.2f}"
                f"{r.errors:>8}{cpu:>40}"
            )
        print(
            f"{'added':<8}{mesh.concurrency:>5}{'':>10}{mesh.pct(50) - base.pct(50):>9.2f}"
            f"{mesh.pct(95) - base.pct(95):>9.2f}{mesh.pct(99) - base.pct(99):>9.2f}"
            f"   throughput ratio mesh/direct {mesh.rps / base.rps if base.rps else 0:.2f}"
        )
    print(f"mesh RSS: lockgate up {own_mb:.0f} MB, nats-server {kids_mb:.0f} MB")
    for what, count in ERRORS_SEEN.most_common(5):
        print(f"error x{count}: {what}")
