"""A process's live copy of a JetStream KV bucket: every entry, decoded, kept current by a watch.

Breaker states (shared/breakers.py) and runtime budget limits
(services/budgeter/limits.py) are read on every request and changed rarely,
so each process mirrors the bucket instead of reading it. A watch that ends
(a reconnect, a stream hiccup) is started again after a second: a stale
mirror would keep deciding with old values.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec
import structlog
from nats.js.kv import KeyValue

log = structlog.get_logger("lockgate.kvwatch")

T = TypeVar("T")

READY_WAIT_S = 2.0
RESTART_AFTER_S = 1.0


class KVMirror(Generic[T]):
    """``entries``: bucket key → decoded value; deletes and purges remove the key."""

    def __init__(
        self,
        kv: KeyValue,
        value_type: type[T],
        *,
        name: str,
        on_put: Callable[[str, T], None] | None = None,
    ) -> None:
        self.kv = kv
        self.name = name  # for the logs: what the bucket holds
        self.entries: dict[str, T] = {}
        self.ready = asyncio.Event()  # set once the bucket's initial values are in
        self._decoder = msgspec.json.Decoder(value_type)
        self._on_put = on_put
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> asyncio.Task[None]:
        """Start watching; waits (briefly) for the initial values so the first requests see them."""
        watcher = await self.kv.watchall()
        self._task = asyncio.create_task(self._run(watcher))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), READY_WAIT_S)
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self, watcher: KeyValue.KeyWatcher) -> None:
        while True:
            try:
                async for entry in watcher:
                    if entry is None:  # the initial values have all been delivered
                        self.ready.set()
                        continue
                    if entry.operation is not None or not entry.value:  # a delete or purge
                        self.entries.pop(entry.key, None)
                        continue
                    try:
                        value = self._decoder.decode(entry.value)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        log.warning("kv_entry_undecodable", bucket=self.name, key=entry.key)
                        continue
                    self.entries[entry.key] = value
                    if self._on_put is not None:
                        self._on_put(entry.key, value)
            except Exception as exc:
                log.warning("kv_watch_failed", bucket=self.name, error=str(exc))
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it untyped
            await asyncio.sleep(RESTART_AFTER_S)
            try:
                watcher = await self.kv.watchall()
            except Exception as exc:
                log.warning("kv_watch_restart_failed", bucket=self.name, error=str(exc))
