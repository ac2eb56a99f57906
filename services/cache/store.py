"""The in-process cache tier: aiocache's memory backend with a bounded key count.

aiocache's memory backend has TTLs but no size bound; the insertion-ordered key
index here evicts the oldest entry past ``max_entries`` so a busy gateway cannot
grow without limit. (aiocache is also the interface a Redis tier will plug into.)
"""

from __future__ import annotations

from collections import OrderedDict

from aiocache import SimpleMemoryCache

from shared.schemas.mesh import CachedCompletion


class MemoryTier:
    def __init__(self, *, ttl_s: int, max_entries: int) -> None:
        self._cache = SimpleMemoryCache()
        self._ttl_s = ttl_s
        self._max = max_entries
        self._order: OrderedDict[str, None] = OrderedDict()

    @staticmethod
    def _key(tenant: str, key: str) -> str:
        return f"{tenant}\x00{key}"  # tenant-scoped: one tenant never sees another's answers

    async def get(self, tenant: str, key: str) -> CachedCompletion | None:
        value = await self._cache.get(self._key(tenant, key))
        return value if isinstance(value, CachedCompletion) else None

    async def put(self, tenant: str, key: str, completion: CachedCompletion) -> None:
        k = self._key(tenant, key)
        await self._cache.set(k, completion, ttl=self._ttl_s)
        self._order[k] = None
        self._order.move_to_end(k)
        while len(self._order) > self._max:
            old, _ = self._order.popitem(last=False)
            await self._cache.delete(old)

    def __len__(self) -> int:
        return len(self._order)
