"""`lockgate bench --scenario http`: the HTTP door against the NATS path and the simulator, in one run.

Layout as in ``bench``: a zero-latency simulator process, ``lockgate up`` (nats-server
child + all services, the HTTP door included, in one process) and this load generator.
Three paths per concurrency level, streamed and not:

  direct  the openai SDK straight to the simulator
  nats    the thin NATS client through the mesh
  http    the openai SDK through the HTTP door, then the mesh

Prints requests/s, p50/p99, time to first token (streams), mesh CPU ms per request
(the ``up`` process and its nats-server: the door is in that process) and the ratios
http/direct and http - nats. All processes share the machine's cores.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import openai
from openai.types.chat import ChatCompletionMessageParam

from services.cli.bench import _mesh_cpu, _start_mesh, _start_simulator, _stop
from shared import keys
from shared.client import LockgateClient
from shared.schemas.chat import ChatRequest, Message

WARMUP = 100
PATHS = ("direct", "nats", "http")


@dataclass
class Run:
    path: str
    concurrency: int
    stream: bool
    n: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: float | None = None

    @staticmethod
    def _pct(xs: list[float], p: float) -> float:
        s = sorted(xs)
        return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")

    def p(self, pct: float) -> float:
        return self._pct(self.latencies_ms, pct)

    def ttft(self, pct: float) -> float:
        return self._pct(self.ttft_ms, pct)

    @property
    def rps(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float | None:
        return None if self.cpu_s is None else self.cpu_s / self.n * 1000


One = Callable[[int], Awaitable[float | None]]  # returns the time to first token (ms) of a stream


async def _load(run: Run, one: One) -> None:
    counter = iter(range(run.n))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            try:
                first = await one(i)
            except Exception:
                run.errors += 1
                continue
            run.latencies_ms.append((time.perf_counter() - t) * 1000)
            if first is not None:
                run.ttft_ms.append(first)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(run.concurrency)))
    run.seconds = time.perf_counter() - t0


def _timed_first() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: (time.perf_counter() - t0) * 1000


async def run(n: int, levels: list[int]) -> int:
    dev_key = keys.generate()
    sim, sim_url = await _start_simulator()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-http-") as tmp:
        mesh = None
        try:
            mesh, values = await _start_mesh(sim_url, Path(tmp), dev_key)
            direct = openai.AsyncOpenAI(base_url=sim_url + "/v1", api_key="sk-bench", max_retries=0)
            door = openai.AsyncOpenAI(base_url=values["HTTP_URL"] + "/v1", api_key=dev_key, max_retries=0)
            lg = await LockgateClient.connect(values["NATS_URL"], dev_key)

            def sdk(client: openai.AsyncOpenAI, stream: bool) -> One:
                async def one(i: int) -> float | None:
                    msgs: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"bench request {i}"}]
                    if not stream:
                        await client.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=16)
                        return None
                    since = _timed_first()
                    first: float | None = None
                    chunks = await client.chat.completions.create(
                        model="gpt-4o-mini", messages=msgs, max_tokens=16, stream=True
                    )
                    async for c in chunks:
                        if first is None and c.choices and c.choices[0].delta.content:
                            first = since()
                    return first

                return one

            def via_nats(stream: bool) -> One:
                async def one(i: int) -> float | None:
                    req = ChatRequest(
                        model="gpt-4o-mini", messages=[Message(role="user", content=f"bench request {i}")],
                        max_tokens=16, stream=stream,
                    )  # fmt: skip
                    if not stream:
                        await lg.chat(req, timeout_s=30)
                        return None
                    since = _timed_first()
                    first: float | None = None
                    s = await lg.stream(req, timeout_s=30)
                    async for c in s:
                        if first is None and c.choices and c.choices[0].delta.content:
                            first = since()
                    if s.done is None:
                        raise RuntimeError("stream ended without done")
                    return first

                return one

            makers: dict[str, Callable[[bool], One]] = {
                "direct": lambda s: sdk(direct, s),
                "nats": via_nats,
                "http": lambda s: sdk(door, s),
            }
            for path in PATHS:
                await _load(Run(path, 4, False, WARMUP), makers[path](False))
            for stream in (False, True):
                for c in levels:
                    for path in PATHS:
                        r = Run(path, c, stream, n)
                        own0, kids0 = _mesh_cpu(mesh.pid)
                        await _load(r, makers[path](stream))
                        own1, kids1 = _mesh_cpu(mesh.pid)
                        if path != "direct":
                            r.cpu_s = own1 - own0 + kids1 - kids0
                        runs.append(r)
            await lg.close()
            await direct.close()
            await door.close()
        finally:
            if mesh is not None:
                await _stop(mesh)
            await _stop(sim)
    _print(runs, n)
    return 0 if all(r.errors == 0 for r in runs) else 1


def _print(runs: list[Run], n: int) -> None:
    print(f"lockgate bench --scenario http: {n} requests per run, simulator at zero latency, {os.cpu_count()} CPUs")
    print(
        f"{'mode':<7}{'path':<8}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ttft p50':>10}{'ttft p99':>10}"
        f"{'errors':>8}{'mesh CPU ms/req':>17}"
    )
    by = {(r.path, r.concurrency, r.stream): r for r in runs}
    for stream in (False, True):
        for c in sorted({r.concurrency for r in runs}):
            for path in PATHS:
                r = by[(path, c, stream)]
                ttft50 = f"{r.ttft(50):.2f}" if stream else "-"
                ttft99 = f"{r.ttft(99):.2f}" if stream else "-"
                cpu = f"{r.cpu_ms:.2f}" if r.cpu_ms is not None else "-"
                mode = "stream" if stream else "plain"
                print(
                    f"{mode:<7}{path:<8}{c:>5}{r.rps:>9.0f}{r.p(50):>9.2f}{r.p(99):>9.2f}{ttft50:>10}{ttft99:>10}"
                    f"{r.errors:>8}{cpu:>17}"
                )
            h, d, m = by[("http", c, stream)], by[("direct", c, stream)], by[("nats", c, stream)]
            ttft_added = f", ttft +{h.ttft(50) - m.ttft(50):.2f} ms" if stream else ""
            cpu_ratio = f", CPU http/nats {h.cpu_ms / m.cpu_ms:.2f}" if h.cpu_ms and m.cpu_ms else ""
            print(
                f"  ratios: req/s http/direct {h.rps / d.rps if d.rps else 0:.2f}, http/nats "
                f"{h.rps / m.rps if m.rps else 0:.2f}; p50 added by the door {h.p(50) - m.p(50):+.2f} ms"
                f"{ttft_added}{cpu_ratio}"
            )
