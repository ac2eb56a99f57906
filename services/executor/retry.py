"""When to try a deployment again, and how long to wait first.

Retryable on the same deployment: 429, 408, 409, 5xx, timeouts, connection
errors and malformed bodies. Never 400/401/403/404/422: the same request will
get the same answer (401/403/404 still move on to the next candidate, which
may have other credentials; 400/422 end the request). Waits are exponential
with full jitter, capped; a provider's own hint (``retry-after-ms``,
``Retry-After`` in seconds or as an HTTP date, ``x-ratelimit-reset-*``) wins
when it is given.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({408, 409, 429})
NEVER_RETRY_STATUS = frozenset({400, 401, 403, 404, 422})


def status_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def backoff_s(attempt: int, base_ms: int, max_ms: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform(0, min(max, base * 2^attempt)), attempt counted from 0."""
    ceiling = min(max_ms, base_ms * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0, ceiling) / 1000.0


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_s(raw: str) -> float | None:
    """OpenAI's reset form ("1s", "6m0s", "20ms") or plain seconds ("2", "0.5")."""
    raw = raw.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    parts = _DURATION.findall(raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def retry_after_ms(h: Mapping[str, str], now: float | None = None) -> int | None:
    """The provider's wait hint in ms, or None when it gave none (or one we cannot read)."""
    now = time.time() if now is None else now
    raw = h.get("retry-after-ms")
    if raw is not None:
        try:
            return max(0, int(float(raw)))
        except ValueError:
            pass
    raw = h.get("retry-after")
    if raw is not None:
        try:
            return max(0, int(float(raw) * 1000))
        except ValueError:
            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0, int((when.timestamp() - now) * 1000))
    resets = []
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens", "x-ratelimit-reset"):
        value = h.get(name)
        if value is not None:
            seconds = _duration_s(value)
            if seconds is not None:
                resets.append(seconds)
    if resets:
        return max(0, int(max(resets) * 1000))
    return None
