"""Deployment capacity: requests and tokens per deployment over the last minute, from completion events.

Every router replica follows ``events.v1.completion.*`` on the EVENTS stream
with its own ordered consumer that starts one minute back, so a started or
restarted router knows the last minute at once and all replicas converge on
the same counts without shared counters. Requests are the provider attempts
of each event (a breaker refusal, an idempotent replay or a coalesced follower
made none); tokens are the event's usage, booked to the deployment that
answered. Requests still in flight are not seen until their event arrives, so
a sudden burst can pass a quota briefly; the executor's 429 handling covers
that.

A deployment at ``HEADROOM`` (90 %) or more of its ``rpm`` or ``tpm`` has no
headroom: the router moves it behind those that have some (never out of the
plan).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.config import LockgateConfig
from shared.schemas.events import CompletionEvent
from shared.subjects import EV_COMPLETION, Names

WINDOW_MS = 60_000
HEADROOM = 0.9  # DESIGN.md: pick deployments under 90 % of their quota
NO_PROVIDER_CALL = frozenset({"breaker_open", "idempotent_replay", "coalesced"})

log = structlog.get_logger("lockgate.router.capacity")
_decoder = msgspec.json.Decoder(CompletionEvent)


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    """One deployment's last minute against its quota (None: no quota)."""

    deployment: str
    requests: int
    tokens: int
    rpm: int | None = None
    tpm: int | None = None


class Capacity:
    def __init__(self, quotas: Mapping[str, tuple[int | None, int | None]], clock: Callable[[], float] = time.time):
        self.quotas = dict(quotas)  # deployment -> (rpm, tpm)
        self._clock = clock
        self._seen: dict[str, collections.deque[tuple[int, int, int]]] = {}  # (ts_ms, requests, tokens)

    @classmethod
    def from_config(cls, config: LockgateConfig, clock: Callable[[], float] = time.time) -> Capacity:
        return cls({name: (d.rpm, d.tpm) for name, d in config.deployments.items()}, clock)

    def record(self, ev: CompletionEvent) -> None:
        calls = collections.Counter(a.deployment for a in ev.attempts if a.outcome not in NO_PROVIDER_CALL)
        # A cached or refused request made no provider call: no tokens were spent on it.
        tokens = ev.usage.total_tokens if calls.get(ev.deployment) else 0
        for dep, n in calls.items():
            self._seen.setdefault(dep, collections.deque()).append((ev.ts_ms, n, tokens if dep == ev.deployment else 0))

    def used(self, deployment: str) -> tuple[int, int]:
        """(requests, tokens) of the last minute."""
        q = self._seen.get(deployment)
        if not q:
            return 0, 0
        since = int(self._clock() * 1000) - WINDOW_MS
        while q and q[0][0] < since:
            q.popleft()
        return sum(n for _, n, _ in q), sum(t for _, _, t in q)

    def has_headroom(self, deployment: str) -> bool:
        rpm, tpm = self.quotas.get(deployment, (None, None))
        if rpm is None and tpm is None:
            return True
        requests, tokens = self.used(deployment)
        return (rpm is None or requests < HEADROOM * rpm) and (tpm is None or tokens < HEADROOM * tpm)

    def usage(self) -> list[Usage]:
        names = sorted(set(self._seen) | {n for n, q in self.quotas.items() if q != (None, None)})
        out = []
        for name in names:
            requests, tokens = self.used(name)
            rpm, tpm = self.quotas.get(name, (None, None))
            out.append(Usage(deployment=name, requests=requests, tokens=tokens, rpm=rpm, tpm=tpm))
        return out

    async def follow(self, js: JetStreamContext, names: Names) -> Callable[[], Awaitable[None]]:
        """Follow completion events from one minute back; returns the function that stops it.

        Returns once the last minute is replayed (at most two seconds), so a restarted router
        plans with it from its first request.
        """
        caught_up = asyncio.Event()

        async def on_msg(msg: Msg) -> None:
            try:
                self.record(_decoder.decode(msg.data))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("undecodable_event", subject=msg.subject, error=str(exc))
            with contextlib.suppress(Exception):
                if msg.metadata.num_pending == 0:
                    caught_up.set()

        start = dt.datetime.fromtimestamp(self._clock() - WINDOW_MS / 1000, dt.UTC)
        sub = await js.subscribe(
            names.events_of(EV_COMPLETION),
            stream=names.events_stream,
            cb=on_msg,
            ordered_consumer=True,
            idle_heartbeat=5.0,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start),
        )
        with contextlib.suppress(Exception):
            if (await sub.consumer_info()).num_pending == 0:
                caught_up.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(caught_up.wait(), 2.0)

        async def stop() -> None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

        return stop
