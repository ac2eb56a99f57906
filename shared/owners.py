"""One owner per key among the live replicas of a service, so a key's updates meet in one process.

State in JetStream KV is correct with any number of writers (every update is a
revision-checked compare-and-set), but it is only fast when one process writes a
key: that process batches the key's concurrent asks into one compare-and-set and
remembers the revision it wrote, so its next update needs no read. With writers
chosen at random, every write of another replica makes that memory stale and a
round becomes compare-and-set (lost), read, compare-and-set.

So callers send a key's requests to the replica that owns it:

- Every replica answers ``<mesh group>.members`` (no queue group: all answer) with
  its instance id, and serves its own subjects ``<mesh group>.own.<id>.<op>``.
- ``Owners`` asks the members every ``refresh_s`` (gathering replies for
  ``window_s``) and maps each of ``SLOTS`` hash slots to one member by rendezvous
  hashing: a member that joins or leaves moves only its share of the slots. A
  member whose reply missed the window stays for ``MISSES`` refreshes (a slow
  reply must not move its tenants back and forth); one that is known to be
  gone (no responders on its subject) is dropped at once.
- A key's owner is the owner of its slot. Views may differ for a refresh
  interval after a change; two writers then meet only the compare-and-set, which
  keeps the state correct. A caller whose owner does not answer (no responders)
  forgets it and sends to the service's queue group instead (any replica).

Ownership is a routing hint, never a lock: nothing depends on it for correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import zlib
from collections.abc import Sequence
from typing import Any, TypeVar

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared import bus
from shared.errors import NoResponders
from shared.headers import RequestContext
from shared.subjects import Names

R = TypeVar("R")

log = structlog.get_logger("lockgate.owners")

SLOTS = 1024
REFRESH_S = 1.0
WINDOW_S = 0.05
MISSES = 3  # refreshes a member may miss before it is dropped


def slot_of(key: str) -> int:
    return zlib.crc32(key.encode()) % SLOTS


def _weight(slot: int, member: str) -> bytes:
    return hashlib.blake2b(f"{slot}/{member}".encode(), digest_size=8).digest()


def assign(members: Sequence[str]) -> list[str]:
    """The owner of every slot: the member with the highest weight for it (rendezvous hashing)."""
    if not members:
        return []
    return [max(members, key=lambda m: _weight(s, m)) for s in range(SLOTS)]


class Members:
    """This replica's side: answer the members request with our instance id."""

    def __init__(self, nc: Client, subject: str, instance_id: str) -> None:
        self.nc = nc
        self.subject = subject
        self.instance_id = instance_id
        self._sub: Subscription | None = None

    async def start(self) -> None:
        payload = self.instance_id.encode()

        async def answer(msg: Msg) -> None:
            if msg.reply:
                await self.nc.publish(msg.reply, payload)

        self._sub = await self.nc.subscribe(self.subject, cb=answer)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


class Owners:
    """A caller's view: which live member owns a key (None: no member known yet)."""

    def __init__(self, nc: Client, subject: str, *, refresh_s: float = REFRESH_S, window_s: float = WINDOW_S) -> None:
        self.nc = nc
        self.subject = subject
        self.refresh_s = refresh_s
        self.window_s = window_s
        self.members: tuple[str, ...] = ()
        self._missed: dict[str, int] = {}  # member -> refreshes in a row it did not answer
        self._table: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def owner(self, key: str) -> str | None:
        table = self._table
        return table[slot_of(key)] if table else None

    def forget(self, member: str) -> None:
        """A member that did not answer: route around it until a refresh sees it again."""
        self._missed.pop(member, None)
        if member in self.members:
            self._set(tuple(m for m in self.members if m != member))

    async def refresh(self) -> tuple[str, ...]:
        seen: set[str] = set()
        inbox = self.nc.new_inbox()

        async def on_reply(msg: Msg) -> None:
            seen.add(msg.data.decode("ascii", "replace")[:64])

        sub = await self.nc.subscribe(inbox, cb=on_reply)
        try:
            await self.nc.publish(self.subject, b"", reply=inbox)
            await asyncio.sleep(self.window_s)
        finally:
            await sub.unsubscribe()
        for m in self.members:
            if m not in seen:
                self._missed[m] = self._missed.get(m, 0) + 1
        for m in seen:
            self._missed[m] = 0
        self._missed = {m: n for m, n in self._missed.items() if n < MISSES}
        self._set(tuple(sorted(self._missed)))
        return self.members

    def _set(self, members: tuple[str, ...]) -> None:
        if members != self.members:
            log.info("owners_changed", subject=self.subject, members=len(members))
            self.members = members
            self._table = assign(members)

    async def start(self) -> None:
        with contextlib.suppress(Exception):  # no member yet is fine: callers use the queue group
            await self.refresh()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # a reconnect: keep the last view, try again
                log.warning("owners_refresh_failed", subject=self.subject, error=str(exc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


async def call_owner(
    nc: Client,
    owners: Owners | None,
    names: Names,
    stage: str,
    op: str,
    key: str,
    payload: Any,
    reply_type: type[R],
    ctx: RequestContext,
    *,
    timeout_s: float,
) -> R:
    """Ask ``key``'s owner for ``op``; the stage's queue group when there is none or it is gone."""
    owner = owners.owner(key) if owners is not None else None
    if owner is not None:
        try:
            return await bus.call(
                nc, names.owned(stage, owner, op), payload, reply_type, ctx, stage=stage, timeout_s=timeout_s
            )
        except NoResponders:  # never delivered: asking another replica cannot do it twice
            assert owners is not None
            owners.forget(owner)
    return await bus.call(nc, names.mesh(stage, op), payload, reply_type, ctx, stage=stage, timeout_s=timeout_s)
