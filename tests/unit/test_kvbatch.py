"""shared.kvbatch: batched, revision-checked updates on an in-memory KV (no NATS)."""

from __future__ import annotations

import asyncio

import msgspec
import nats.js.errors
import pytest

from shared.kvbatch import BatchedKV, Decision
from tests.unit.fakes import MemoryKV


class Counter(msgspec.Struct):
    n: int = 0


class TooMany(Exception):
    pass


def take(limit: int):  # type: ignore[no-untyped-def]
    def decide(_key: str, state: Counter, asks: list[int]) -> Decision:
        outcomes: list[object] = []
        changed = False
        for ask in asks:
            if state.n + ask > limit:
                outcomes.append(TooMany(f"{state.n}+{ask}>{limit}"))
            else:
                state.n += ask
                changed = True
                outcomes.append(state.n)
        return Decision(changed, outcomes)

    return decide


def batcher(kv: MemoryKV, limit: int) -> BatchedKV[Counter, int]:
    return BatchedKV(kv, Counter, take(limit), contended=lambda: RuntimeError("contended"))  # type: ignore[arg-type]


async def test_concurrent_asks_share_rounds_and_never_overshoot() -> None:
    kv = MemoryKV()
    b = batcher(kv, 50)
    results = await asyncio.gather(*(b.submit("k", 1) for _ in range(80)), return_exceptions=True)
    assert sum(1 for r in results if isinstance(r, TooMany)) == 30
    assert (await b.read("k")).n == 50
    assert kv.ops < 40  # 80 asks decided in a few rounds, not one round trip (or more) each


async def test_replicas_on_one_key_never_overshoot() -> None:
    kv = MemoryKV()
    replicas = [batcher(kv, 100) for _ in range(3)]
    results = await asyncio.gather(*(replicas[i % 3].submit("k", 1) for i in range(150)), return_exceptions=True)
    admitted = [r for r in results if isinstance(r, int)]
    assert len(admitted) == 100
    assert sorted(admitted) == list(range(1, 101))  # every count handed out exactly once
    assert (await replicas[0].read("k")).n == 100


async def test_a_refusal_only_writes_nothing() -> None:
    kv = MemoryKV()
    b = batcher(kv, 1)
    assert await b.submit("k", 1) == 1
    ops = kv.ops
    with pytest.raises(TooMany):
        await b.submit("k", 1)
    assert kv.ops == ops  # decided on the remembered state, no compare-and-set


async def test_kv_failure_reaches_every_waiting_caller() -> None:
    kv = MemoryKV()
    b = batcher(kv, 10)
    kv.fail = ConnectionError("kv down")
    results = await asyncio.gather(*(b.submit("k", 1) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    kv.fail = None
    assert await b.submit("k", 1) == 1  # and the key is usable again


async def test_endless_lost_races_end_in_the_contended_error() -> None:
    kv = MemoryKV()
    b: BatchedKV[Counter, int] = BatchedKV(
        kv,  # type: ignore[arg-type]
        Counter,
        take(10),
        contended=lambda: RuntimeError("contended"),
        max_retries=3,
    )

    async def always_moved(key: str, value: bytes, last: int) -> int:
        raise nats.js.errors.KeyWrongLastSequenceError

    await b.submit("k", 1)
    kv.update = always_moved  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="contended"):
        await b.submit("k", 1)
