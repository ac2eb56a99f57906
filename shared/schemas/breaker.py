"""Circuit-breaker state: the KV value every executor replica and the router read, and its event."""

from __future__ import annotations

from typing import Literal

import msgspec

BreakerStateName = Literal["closed", "open", "half_open"]


class BreakerState(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One deployment's breaker, as kept in the breaker bucket (key = deployment name)."""

    deployment: str
    state: BreakerStateName
    since_ms: int  # when it entered this state
    until_ms: int = 0  # open: when it may go half-open (probes allowed)
    reason: str = ""  # why it changed ("5 failures in 30 s", "probe failed", "probe succeeded")
    replica: str = ""  # the executor replica that changed it


class BreakerEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Published on events.v1.breaker.<deployment> at every state change."""

    deployment: str
    state: BreakerStateName
    previous: BreakerStateName
    ts_ms: int
    until_ms: int = 0
    reason: str = ""
    replica: str = ""
