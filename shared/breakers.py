"""The shared view of circuit-breaker state: a JetStream KV bucket, watched.

Executor replicas write a deployment's state when their breaker changes it;
every executor replica and every router watch the bucket, so all of them see
an open deployment within a round trip of the change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from shared import jetstream
from shared.headers import now_ms
from shared.schemas.breaker import BreakerState
from shared.subjects import Names

log = structlog.get_logger("lockgate.breakers")
_decoder = msgspec.json.Decoder(BreakerState)


async def bucket(js: JetStreamContext, names: Names) -> KeyValue:
    return await jetstream.ensure_bucket(js, names.breakers_bucket)


def kv_key(deployment: str) -> str:
    """A KV key for a deployment name (KV keys allow [-/_=.a-zA-Z0-9])."""
    return "".join(c if c.isalnum() or c in "-_=" else "_" for c in deployment) or "_"


class BreakerView:
    """The latest state of every deployment's breaker, kept current by a KV watch."""

    def __init__(self, kv: KeyValue, on_change: Callable[[BreakerState], None] | None = None) -> None:
        self.kv = kv
        self.states: dict[str, BreakerState] = {}
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> asyncio.Task[None]:
        watcher = await self.kv.watchall()
        self._task = asyncio.create_task(self._run(watcher))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), 2.0)
        return self._task

    async def _run(self, watcher: KeyValue.KeyWatcher) -> None:
        # A watch that ends (a reconnect, a stream hiccup) is started again: a stale view would
        # keep sending traffic to an open deployment, or keep skipping a closed one.
        while True:
            try:
                async for entry in watcher:
                    if entry is None:  # the initial values have all been delivered
                        self.ready.set()
                        continue
                    if entry.operation is not None or not entry.value:  # a delete or purge
                        continue
                    try:
                        st = _decoder.decode(entry.value)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        log.warning("bad_breaker_state", key=entry.key)
                        continue
                    self.states[st.deployment] = st
                    if self._on_change is not None:
                        self._on_change(st)
            except Exception as exc:
                log.warning("breaker_watch_failed", error=str(exc))
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it untyped
            await asyncio.sleep(1.0)
            try:
                watcher = await self.kv.watchall()
            except Exception as exc:
                log.warning("breaker_watch_restart_failed", error=str(exc))

    def is_open(self, deployment: str, at_ms: int | None = None) -> bool:
        """Open and still cooling down: no traffic until its half-open probe."""
        st = self.states.get(deployment)
        return st is not None and st.state == "open" and (now_ms() if at_ms is None else at_ms) < st.until_ms

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def read_all(kv: KeyValue) -> list[BreakerState]:
    """Every breaker state in the bucket (for `lockgate status`)."""
    out: list[BreakerState] = []
    try:
        keys = await kv.keys()
    except Exception:  # nats-py raises NoKeysError on an empty bucket
        return out
    for key in keys:
        try:
            entry = await kv.get(key)
        except Exception:
            continue
        if entry.value:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                out.append(_decoder.decode(entry.value))
    return sorted(out, key=lambda s: s.deployment)
