"""The in-process cache tier: tenant-scoped and bounded (TTLs are aiocache's)."""

from __future__ import annotations

from services.cache.store import MemoryTier
from shared.schemas.mesh import CachedCompletion


def answer(text: str) -> CachedCompletion:
    return CachedCompletion(content=text, model="m")


async def test_entries_are_scoped_by_tenant() -> None:
    tier = MemoryTier(ttl_s=60, max_entries=10)
    await tier.put("dev", "k", answer("for dev"))
    assert await tier.get("dev", "k") == answer("for dev")
    assert await tier.get("acme", "k") is None
    await tier.put("acme", "k", answer("for acme"))
    assert (await tier.get("dev", "k")).content == "for dev"  # type: ignore[union-attr]


async def test_tenant_and_key_cannot_collide() -> None:
    tier = MemoryTier(ttl_s=60, max_entries=10)
    await tier.put("a.b", "c", answer("1"))
    assert await tier.get("a", "b.c") is None


async def test_oldest_entries_are_evicted_past_the_bound() -> None:
    tier = MemoryTier(ttl_s=60, max_entries=3)
    for i in range(5):
        await tier.put("t", str(i), answer(str(i)))
    assert len(tier) == 3
    assert await tier.get("t", "0") is None
    assert await tier.get("t", "1") is None
    assert (await tier.get("t", "4")).content == "4"  # type: ignore[union-attr]


async def test_rewriting_a_key_refreshes_it() -> None:
    tier = MemoryTier(ttl_s=60, max_entries=2)
    await tier.put("t", "a", answer("a"))
    await tier.put("t", "b", answer("b"))
    await tier.put("t", "a", answer("a2"))
    await tier.put("t", "c", answer("c"))
    assert await tier.get("t", "b") is None
    assert (await tier.get("t", "a")).content == "a2"  # type: ignore[union-attr]
