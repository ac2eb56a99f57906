"""Rate-limit figures a reply carries (``lockgate.rate_limit``), as the HTTP door's ``x-ratelimit-*`` headers."""

from __future__ import annotations

import msgspec


class RateLimitInfo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The most constraining scope per metric after this request was counted (or refused).

    ``reset_*_ms``: until that scope is back to its full allowance (nothing used in the last minute).
    A metric no scope limits is absent (0 limit, omitted).
    """

    limit_requests: int = 0
    remaining_requests: int = 0
    reset_requests_ms: int = 0
    limit_tokens: int = 0
    remaining_tokens: int = 0
    reset_tokens_ms: int = 0
