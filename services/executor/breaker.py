"""A circuit breaker per deployment: closed → open → half-open → closed.

Closed: attempts flow; outcomes go into a sliding window. ``failure_count``
failures in the window, or a failure share of ``failure_ratio`` once the
window holds ``min_requests`` attempts, open it. Open: no attempts until
``cooldown_ms`` has passed, then half-open: up to ``half_open_probes``
attempts go through (per replica); the first success closes it, a failure
opens it again for another cooldown.

Every change is written to the breaker bucket and published as an event
(``events.v1.breaker.<deployment>``); the other replicas adopt the states they
see in the bucket (``adopt``), and the router skips open deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from shared.config import BreakerConfig
from shared.headers import now_ms
from shared.schemas.breaker import BreakerState, BreakerStateName

log = structlog.get_logger("lockgate.breaker")

Publish = Callable[[BreakerState, BreakerStateName], Coroutine[Any, Any, None]]


@dataclass
class _One:
    state: BreakerStateName = "closed"
    since_ms: int = 0
    until_ms: int = 0
    window: deque[tuple[int, bool]] = field(default_factory=deque)  # (ms, failed)
    probes: int = 0  # probes let through in this half-open period


class Breakers:
    def __init__(self, cfg: BreakerConfig, replica: str, publish: Publish | None = None) -> None:
        self.cfg = cfg
        self.replica = replica
        self._publish = publish
        self._by_dep: dict[str, _One] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _get(self, dep: str) -> _One:
        one = self._by_dep.get(dep)
        if one is None:
            one = self._by_dep[dep] = _One(since_ms=now_ms())
        return one

    def state(self, dep: str) -> BreakerStateName:
        return self._get(dep).state

    def allow(self, dep: str) -> bool:
        """Whether an attempt on ``dep`` may start now (counts a half-open probe)."""
        one = self._get(dep)
        now = now_ms()
        if one.state == "open":
            if now < one.until_ms:
                return False
            self._change(dep, one, "half_open", now, f"cooldown of {self.cfg.cooldown_ms} ms passed")
        if one.state == "half_open":
            if one.probes >= self.cfg.half_open_probes:
                return False
            one.probes += 1
        return True

    def open_for_ms(self, dep: str) -> int | None:
        """How long until ``dep`` may be probed, when it is open."""
        one = self._get(dep)
        if one.state != "open":
            return None
        return max(0, one.until_ms - now_ms())

    def success(self, dep: str) -> None:
        one = self._get(dep)
        now = now_ms()
        if one.state == "half_open":
            self._change(dep, one, "closed", now, "probe succeeded")
            return
        self._note(one, now, failed=False)

    def failure(self, dep: str, why: str) -> None:
        one = self._get(dep)
        now = now_ms()
        if one.state == "half_open":
            self._change(dep, one, "open", now, f"probe failed: {why}"[:200])
            return
        if one.state == "open":
            return
        self._note(one, now, failed=True)
        failures = sum(1 for _, f in one.window if f)
        total = len(one.window)
        if failures >= self.cfg.failure_count:
            reason = f"{failures} failures in {self.cfg.window_s:g} s; last: {why}"
        elif total >= self.cfg.min_requests and failures / total >= self.cfg.failure_ratio:
            reason = f"{failures} of {total} attempts failed in {self.cfg.window_s:g} s; last: {why}"
        else:
            return
        self._change(dep, one, "open", now, reason[:200])

    def release(self, dep: str) -> None:
        """A probe that ended without a verdict (the request's deadline ran out)."""
        one = self._get(dep)
        if one.state == "half_open" and one.probes > 0:
            one.probes -= 1

    def _note(self, one: _One, now: int, *, failed: bool) -> None:
        one.window.append((now, failed))
        horizon = now - int(self.cfg.window_s * 1000)
        while one.window and one.window[0][0] < horizon:
            one.window.popleft()

    def _change(self, dep: str, one: _One, to: BreakerStateName, now: int, reason: str) -> None:
        previous = one.state
        one.state = to
        one.since_ms = now
        one.probes = 0
        one.window.clear()
        one.until_ms = now + self.cfg.cooldown_ms if to == "open" else 0
        log.warning("breaker_changed", deployment=dep, state=to, previous=previous, reason=reason)
        st = BreakerState(
            deployment=dep, state=to, since_ms=now, until_ms=one.until_ms, reason=reason, replica=self.replica
        )
        if self._publish is not None:
            task = asyncio.create_task(self._publish(st, previous))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def adopt(self, st: BreakerState) -> None:
        """Take over a state another replica wrote (our own writes come back too: ignored)."""
        if st.replica == self.replica:
            return
        one = self._by_dep.setdefault(st.deployment, _One())
        if st.since_ms < one.since_ms:
            return  # older than what we know
        one.state = st.state
        one.since_ms = st.since_ms
        one.until_ms = st.until_ms
        one.probes = 0
        one.window.clear()

    async def drain(self) -> None:
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(set(self._tasks), timeout=2.0)
