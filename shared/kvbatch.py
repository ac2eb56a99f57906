"""Shared counters in JetStream KV: revision-checked updates, batched per key.

Several replicas of a service (budgeter, guard) keep counters in one KV
bucket. Every update is a compare-and-set on the key's revision, so no
replica overwrites another's work and a hard limit is never overshot.

Concurrent asks for one key are batched in process: while one
compare-and-set is in flight, new asks queue, and the next round decides all
of them with one read and one write. Without that, N concurrent asks of one
key cost O(N^2) KV round trips (each round only one compare-and-set wins).

The batcher remembers the value and revision it last read or wrote per key,
so an uncontended update is one KV round trip (the compare-and-set) instead
of two. A remembered revision that another replica has moved past only fails
the compare-and-set, which then re-reads: correctness rests on the revision
check, the memory only saves the read.

What an ask means is the caller's: ``decide(key, state, asks)`` mutates the
decoded state in place and returns one outcome per ask (a value, or an
exception to raise in that caller) and whether the state changed. It must be
a pure function of its arguments: on a lost race it runs again on a fresh read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec
import nats.js.errors
from nats.js.api import Header
from nats.js.kv import KeyValue

S = TypeVar("S", bound=msgspec.Struct)
A = TypeVar("A")

MAX_CAS_RETRIES = 64
MAX_REMEMBERED = 100_000
CAS_TIMEOUT_S = 5.0
WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's "wrong last sequence" error codes (a lost race)


class _AckError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    """A JetStream publish acknowledgement: the new sequence, or the error."""

    seq: int = 0
    error: _AckError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)
EXPECTED_LAST = Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``decide`` made of one batch: one outcome per ask, in order."""

    changed: bool  # write the state back (compare-and-set)
    outcomes: Sequence[object]  # a value for the caller, or a BaseException to raise in it


Decide = Callable[[str, S, list[A]], Decision]


@dataclass(slots=True)
class _Pending(Generic[A]):
    ask: A
    future: asyncio.Future[object]


class BatchedKV(Generic[S, A]):
    def __init__(
        self,
        kv: KeyValue,
        state_type: type[S],
        decide: Decide[S, A],
        *,
        contended: Callable[[], Exception],
        max_retries: int = MAX_CAS_RETRIES,
    ) -> None:
        self.kv = kv
        self._state_type = state_type
        self._decoder = msgspec.json.Decoder(state_type)
        self._decide = decide
        self._contended = contended
        self._max_retries = max_retries
        self._queued: dict[str, list[_Pending[A]]] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()
        self._known: dict[str, tuple[bytes, int]] = {}  # key -> (value, revision) last read or written

    # -- public ------------------------------------------------------------------------
    async def submit(self, key: str, ask: A) -> object:
        """Decide ``ask`` together with whatever else is queued for ``key``; its outcome."""
        pending = _Pending(ask, asyncio.get_running_loop().create_future())
        self._queued.setdefault(key, []).append(pending)
        if key not in self._busy:
            self._busy.add(key)
            task = asyncio.create_task(self._drain(key))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return await pending.future  # a caller that gives up cancels its future; the batch then skips it

    async def read(self, key: str) -> S:
        """The key's current state, read from KV (not the remembered copy)."""
        return (await self._load(key, fresh=True))[0]

    def forget(self) -> None:
        self._known.clear()

    # -- the rounds --------------------------------------------------------------------
    async def _drain(self, key: str) -> None:
        try:
            while batch := self._queued.pop(key, None):
                try:
                    await self._round(key, batch)
                except Exception as exc:  # KV unavailable: every waiting caller hears it, none hangs
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
        finally:
            self._busy.discard(key)

    async def _round(self, key: str, batch: list[_Pending[A]]) -> None:
        """One read, decide, one compare-and-set; again on a lost race."""
        for _ in range(self._max_retries):
            live = [p for p in batch if not p.future.done()]
            if not live:
                return
            state, rev = await self._load(key)
            decision = self._decide(key, state, [p.ask for p in live])
            if len(decision.outcomes) != len(live):
                raise RuntimeError(f"decide returned {len(decision.outcomes)} outcomes for {len(live)} asks")
            if decision.changed and not await self._cas(key, state, rev):
                continue
            for p, outcome in zip(live, decision.outcomes, strict=True):
                if p.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    p.future.set_exception(outcome)
                else:
                    p.future.set_result(outcome)
            return
        for p in batch:
            if not p.future.done():
                p.future.set_exception(self._contended())

    async def _load(self, key: str, *, fresh: bool = False) -> tuple[S, int | None]:
        known = None if fresh else self._known.get(key)
        if known is not None:
            return self._decoder.decode(known[0]), known[1]
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # also a deleted or purged key
            return self._state_type(), None
        if not entry.value or entry.revision is None:
            return self._state_type(), entry.revision
        self._remember(key, entry.value, entry.revision)
        return self._decoder.decode(entry.value), entry.revision

    def _remember(self, key: str, value: bytes, revision: int) -> None:
        if len(self._known) > MAX_REMEMBERED:  # keys of old windows: forget them all, re-read on demand
            self._known.clear()
        self._known[key] = (value, revision)

    async def _cas(self, key: str, state: S, revision: int | None) -> bool:
        data = msgspec.json.encode(state)
        try:
            if revision is None:
                new_revision = await self.kv.create(key, data)
            elif isinstance(self.kv, KeyValue):
                new_revision = await self._update(key, data, revision)
            else:  # a stand-in with KeyValue's methods (unit tests)
                new_revision = await self.kv.update(key, data, last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyValueError, nats.js.errors.APIError):
            self._known.pop(key, None)  # someone else moved it: read it again
            return False
        self._remember(key, data, new_revision)
        return True

    async def _update(self, key: str, data: bytes, revision: int) -> int:
        """``kv.update`` with the ack decoded by msgspec: measured 188 -> 137 us of client CPU per update
        (nats-py parses the ack with ``json`` into a dataclass)."""
        msg = await self.kv._js._nc.request(
            self.kv._pre + key, data, timeout=CAS_TIMEOUT_S, headers={EXPECTED_LAST: str(revision)}
        )
        ack = _ack_decoder.decode(msg.data)
        if ack.error is not None:
            if ack.error.err_code in WRONG_LAST_SEQUENCE:
                raise nats.js.errors.KeyWrongLastSequenceError(description=ack.error.description)
            raise nats.js.errors.APIError(
                code=ack.error.code, err_code=ack.error.err_code, description=ack.error.description
            )
        return ack.seq
