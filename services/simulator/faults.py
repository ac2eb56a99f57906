"""Fault specs: parsing the ``key=value,...`` grammar and merging the three sources.

Grammar (used by the ``x-sim-fault`` header, the ``[sim:...]`` content directive and the CLI)::

    spec  := item ("," item)*
    item  := key "=" value | key          (a bare key sets a boolean to true)
    key   := latency | chunk_delay | status | retry_after | error_rate | hang | malformed | output | mix
             (the FaultConfig field names latency_ms, chunk_delay_ms, retry_after_s are accepted too)

Whitespace around items is ignored, empty items are skipped, keys are case-insensitive.  The
header may also carry the bracketed form ``[sim:...]``.  Sources are merged field by field, later
wins: profile (or ``SimulatorConfig.default``) < header < directive in the last user message.
"""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec

from shared.schemas.simulator import FaultConfig

NO_FAULT = FaultConfig()
DIRECTIVE_OPEN = "[sim:"
HEADER = "x-sim-fault"

_ALIASES: dict[str, str] = {
    "latency": "latency_ms",
    "latency_ms": "latency_ms",
    "chunk_delay": "chunk_delay_ms",
    "chunk_delay_ms": "chunk_delay_ms",
    "status": "status",
    "retry_after": "retry_after_s",
    "retry_after_s": "retry_after_s",
    "error_rate": "error_rate",
    "hang": "hang",
    "malformed": "malformed",
    "output": "output",
    "mix": "status_mix",
    "status_mix": "status_mix",
}
_BOOLS: dict[str, bool] = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}
_OUTPUTS: dict[str, str] = {
    "auto": "auto",
    "bad-json": "bad-json",
    "bad_json": "bad-json",
    "schema-violation": "schema-violation",
    "schema_violation": "schema-violation",
    "tool-call": "tool-call",
    "tool_call": "tool-call",
    "echo": "echo",
}
_CACHE_MAX = 1024


class FaultSpecError(ValueError):
    """A fault spec that does not follow the grammar; the message says what is wrong."""


def _int(key: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise FaultSpecError(f"fault '{key}' needs an integer, got {raw!r}") from None
    if value < 0:
        raise FaultSpecError(f"fault '{key}' must be >= 0, got {value}")
    return value


def _float(key: str, raw: str, high: float | None = None) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise FaultSpecError(f"fault '{key}' needs a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (high is not None and value > high):
        bounds = f"in [0, {high:g}]" if high is not None else ">= 0"
        raise FaultSpecError(f"fault '{key}' must be {bounds}, got {raw!r}")
    return value


def _convert(field: str, key: str, raw: str | None) -> Any:
    if field in ("hang", "malformed"):
        if raw is None:
            return True
        flag = _BOOLS.get(raw.lower())
        if flag is None:
            raise FaultSpecError(f"fault '{key}' is a flag: write '{key}' or '{key}=true|false'")
        return flag
    if raw is None or raw == "":
        raise FaultSpecError(f"fault '{key}' needs a value ('{key}=...')")
    if field == "status_mix":
        return _mix(key, raw)
    if field == "output":
        mode = _OUTPUTS.get(raw.lower())
        if mode is None:
            raise FaultSpecError(
                f"fault 'output' must be auto, bad-json, schema-violation, tool-call or echo, got {raw!r}"
            )
        return mode
    if field == "status":
        status = _int(key, raw)
        if status != 0 and not 400 <= status <= 599:
            raise FaultSpecError(f"fault 'status' must be 0 or an HTTP error status 400-599, got {status}")
        return status
    if field == "retry_after_s":
        return _float(key, raw)
    if field == "error_rate":
        return _float(key, raw, 1.0)
    return _int(key, raw)


def _mix(key: str, raw: str) -> dict[int, float]:
    """``429:0.3/503:0.1``: statuses with their probabilities (which sum to at most 1)."""
    out: dict[int, float] = {}
    for part in raw.split("/"):
        status_raw, sep, rate_raw = part.strip().partition(":")
        if not sep:
            raise FaultSpecError(f"fault '{key}' items are STATUS:RATE joined by '/', got {part!r}")
        status = _int(key, status_raw.strip())
        if not 400 <= status <= 599:
            raise FaultSpecError(f"fault '{key}' statuses must be 400-599, got {status}")
        out[status] = _float(key, rate_raw.strip(), 1.0)
    if sum(out.values()) > 1.0 + 1e-9:
        raise FaultSpecError(f"fault '{key}' rates add up to more than 1")
    return out


def parse_fault_spec(spec: str) -> dict[str, Any]:
    """Parse ``spec`` into FaultConfig field overrides, e.g. ``"status=429,hang"`` ->
    ``{"status": 429, "hang": True}``.  Raises :class:`FaultSpecError`."""
    body = spec.strip()
    if body.startswith(DIRECTIVE_OPEN) and body.endswith("]"):
        body = body[len(DIRECTIVE_OPEN) : -1]
    out: dict[str, Any] = {}
    for item in body.split(","):
        text = item.strip()
        if not text:
            continue
        key, sep, raw = text.partition("=")
        key = key.strip().lower()
        field = _ALIASES.get(key)
        if field is None:
            known = "latency, chunk_delay, status, retry_after, error_rate, hang, malformed, output, mix"
            raise FaultSpecError(f"unknown fault {key!r} in {spec!r} (known: {known})")
        out[field] = _convert(field, key, raw.strip() if sep else None)
    return out


def find_directive(text: str) -> str | None:
    """The spec inside the first ``[sim:...]`` of ``text``, or ``None`` when there is none."""
    start = text.find(DIRECTIVE_OPEN)
    if start < 0:
        return None
    end = text.find("]", start)
    if end < 0:
        raise FaultSpecError("unterminated fault directive: '[sim:' without a closing ']'")
    return text[start + len(DIRECTIVE_OPEN) : end]


def fault_from_spec(spec: str, base: FaultConfig = NO_FAULT) -> FaultConfig:
    """``base`` with the fields named in ``spec`` replaced."""
    return msgspec.structs.replace(base, **parse_fault_spec(spec))


class FaultResolver:
    """Merges profile, header and content directive into one FaultConfig, caching parsed specs."""

    def __init__(self) -> None:
        self._cache: dict[str, dict[str, Any]] = {}

    def _overrides(self, spec: str) -> dict[str, Any]:
        hit = self._cache.get(spec)
        if hit is None:
            hit = parse_fault_spec(spec)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[spec] = hit
        return hit

    def resolve(self, base: FaultConfig, header: str | None, text: str | None) -> FaultConfig:
        """The faults for one request.  Raises :class:`FaultSpecError` for a malformed spec."""
        directive = find_directive(text) if text is not None else None
        if header is None and directive is None:
            return base
        fields: dict[str, Any] = {}
        if header is not None:
            fields.update(self._overrides(header))
        if directive is not None:
            fields.update(self._overrides(directive))
        return msgspec.structs.replace(base, **fields) if fields else base


def status_applies(fault: FaultConfig, rng: random.Random) -> bool:
    """Whether ``fault.status`` hits this request (``error_rate`` 0 or 1 means always)."""
    if not fault.status:
        return False
    rate = fault.error_rate
    if rate <= 0.0 or rate >= 1.0:
        return True
    return rng.random() < rate


def pick_status(fault: FaultConfig, rng: random.Random) -> int:
    """The error status for this request (0: none): from ``status_mix`` when set, else ``status``."""
    if fault.status_mix:
        r = rng.random()
        for status, rate in fault.status_mix.items():
            if r < rate:
                return status
            r -= rate
        return 0
    return fault.status if status_applies(fault, rng) else 0


def retry_headers(fault: FaultConfig) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` when configured."""
    delay = fault.retry_after_s
    if delay is None:
        return {}
    return {"Retry-After": str(math.ceil(delay)), "retry-after-ms": str(round(delay * 1000))}
