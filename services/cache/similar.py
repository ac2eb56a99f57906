"""The similar-answer tier: per tenant and route, recent answers by their word fingerprints.

Filled from the same completion events as the exact tier (answers the cache
policy allows keeping). A lookup scans the tenant's and route's entries (at
most ``max_per_scope``, the oldest dropped first) for the highest Jaccard
similarity; entries expire with the cache's TTL. It serves degradation only:
a similar answer is never given while a provider can answer.
"""

from __future__ import annotations

import time
from collections import deque

from shared.schemas.mesh import CachedCompletion
from shared.similarity import jaccard


class SimilarIndex:
    def __init__(self, *, ttl_s: int, max_per_scope: int = 1_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_per_scope
        self._by_scope: dict[tuple[str, str], deque[tuple[float, frozenset[int], CachedCompletion]]] = {}

    def put(self, tenant: str, route: str, fingerprint: list[int], completion: CachedCompletion) -> None:
        if not fingerprint:
            return
        entries = self._by_scope.setdefault((tenant, route), deque(maxlen=self._max))
        entries.append((time.monotonic() + self._ttl_s, frozenset(fingerprint), completion))

    def best(
        self, tenant: str, route: str, fingerprint: list[int], min_similarity: float
    ) -> tuple[float, CachedCompletion] | None:
        entries = self._by_scope.get((tenant, route))
        if not entries or not fingerprint:
            return None
        now = time.monotonic()
        while entries and entries[0][0] < now:
            entries.popleft()
        probe = frozenset(fingerprint)
        best: tuple[float, CachedCompletion] | None = None
        for _, words, completion in entries:
            score = jaccard(probe, words)
            if score >= min_similarity and (best is None or score > best[0]):
                best = (score, completion)
        return best
