"""Retry decisions: which statuses, how long to wait (provider hints, backoff with full jitter)."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from services.executor import retry

NOW = 1_700_000_000.0


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(status: int) -> None:
    assert retry.status_retryable(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_statuses_never_retried(status: int) -> None:
    assert not retry.status_retryable(status)


@pytest.mark.parametrize(
    ("headers", "ms"),
    [
        ({"retry-after-ms": "250"}, 250),
        ({"retry-after": "2"}, 2000),
        ({"retry-after": formatdate(NOW + 3, usegmt=True)}, 3000),  # an HTTP date
        ({"retry-after": formatdate(NOW - 60, usegmt=True)}, 0),  # in the past: now
        ({"retry-after": "tomorrow"}, None),
        ({"x-ratelimit-reset-requests": "1s"}, 1000),
        ({"x-ratelimit-reset-tokens": "6m0s"}, 360_000),
        ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "1.5s"}, 1500),  # the later one
        ({"x-ratelimit-reset-requests": "soon"}, None),
        ({"retry-after-ms": "100", "x-ratelimit-reset-requests": "9s"}, 100),  # the explicit one wins
        ({}, None),
    ],
)
def test_retry_after_hints(headers: dict[str, str], ms: int | None) -> None:
    assert retry.retry_after_ms(headers, now=NOW) == ms


def test_backoff_is_full_jitter_and_capped() -> None:
    rng = random.Random(1)
    for attempt in range(8):
        ceiling = min(2_000, 100 * 2**attempt) / 1000
        waits = [retry.backoff_s(attempt, 100, 2_000, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # spread over the whole range, not a fixed delay
        assert min(waits) < ceiling * 0.2
    assert retry.backoff_s(100, 100, 2_000, rng) <= 2.0  # no overflow for large attempt numbers
