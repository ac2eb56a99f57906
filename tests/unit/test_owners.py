"""Slot ownership by rendezvous hashing (shared.owners), without NATS."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from shared.owners import SLOTS, Owners, assign, slot_of


def test_every_slot_has_one_owner_and_everyone_computes_the_same_table() -> None:
    members = ["a1", "b2", "c3"]
    table = assign(members)
    assert len(table) == SLOTS
    assert set(table) == set(members)
    assert assign(list(reversed(members))) == table  # the order members were seen in does not matter


def test_slots_are_shared_about_evenly() -> None:
    shares = Counter(assign([f"replica-{i}" for i in range(3)]))
    assert all(0.25 * SLOTS < n < 0.42 * SLOTS for n in shares.values()), shares


def test_a_member_that_leaves_moves_only_its_own_slots() -> None:
    before = assign(["a", "b", "c", "d"])
    after = assign(["a", "b", "d"])
    moved = [s for s in range(SLOTS) if before[s] != after[s]]
    assert moved
    assert all(before[s] == "c" for s in moved)
    assert all(after[s] == before[s] for s in range(SLOTS) if before[s] != "c")


def test_no_members_no_owner() -> None:
    assert assign([]) == []


def test_a_forgotten_member_owns_nothing_until_seen_again() -> None:
    owners = Owners(nc=None, subject="x.members")  # type: ignore[arg-type] # no refresh in this test
    owners._set(("a", "b"))
    keys = [f"tenant-{i}" for i in range(200)]
    assert {owners.owner(k) for k in keys} == {"a", "b"}
    owners.forget("a")
    assert {owners.owner(k) for k in keys} == {"b"}
    owners.forget("b")
    assert owners.owner("tenant-1") is None
    assert 0 <= slot_of("tenant-1") < SLOTS


class FakeMembers:
    """Answers an Owners refresh with the members of the current round."""

    def __init__(self) -> None:
        self.answering: list[str] = []

    def new_inbox(self) -> str:
        return "_INBOX.t"

    async def subscribe(self, subject: str, cb: Any) -> Any:
        self.cb = cb
        return self

    async def unsubscribe(self) -> None:
        return None

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        for m in self.answering:
            await self.cb(SimpleNamespace(data=m.encode()))


async def test_a_member_that_misses_a_reply_window_keeps_its_slots_until_it_misses_three() -> None:
    nc = FakeMembers()
    owners = Owners(nc, "x.members", window_s=0)  # type: ignore[arg-type]
    nc.answering = ["a", "b"]
    assert await owners.refresh() == ("a", "b")
    nc.answering = ["a"]  # b's reply is late twice: it keeps its tenants
    assert await owners.refresh() == ("a", "b")
    assert await owners.refresh() == ("a", "b")
    assert await owners.refresh() == ("a",)  # the third miss: gone
    nc.answering = ["a", "b"]
    assert await owners.refresh() == ("a", "b")  # back
    owners.forget("b")  # known gone (no responders): at once
    assert owners.members == ("a",)
