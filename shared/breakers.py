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
from shared.kvwatch import KVMirror
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
    """The latest state of every deployment's breaker, kept current by a KV watch (shared.kvwatch).

    A stale view would keep sending traffic to an open deployment, or keep skipping a closed one;
    the mirror restarts its watch when it ends. A deleted state keeps the last one seen (the
    deployment's breaker decides again on its next failure or probe).
    """

    def __init__(self, kv: KeyValue, on_change: Callable[[BreakerState], None] | None = None) -> None:
        self.kv = kv
        self.states: dict[str, BreakerState] = {}
        self._on_change = on_change
        self._mirror = KVMirror(kv, BreakerState, name="breakers", on_put=self._put)
        self.ready = self._mirror.ready

    def _put(self, _key: str, st: BreakerState) -> None:
        self.states[st.deployment] = st
        if self._on_change is not None:
            self._on_change(st)

    async def start(self) -> asyncio.Task[None]:
        return await self._mirror.start()

    def is_open(self, deployment: str, at_ms: int | None = None) -> bool:
        """Open and still cooling down: no traffic until its half-open probe."""
        st = self.states.get(deployment)
        return st is not None and st.state == "open" and (now_ms() if at_ms is None else at_ms) < st.until_ms

    async def stop(self) -> None:
        await self._mirror.stop()


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
