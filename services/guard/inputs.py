"""Input checks at the door, token estimates, and the cache key."""

from __future__ import annotations

import hashlib

import msgspec

from services.guard import reask
from shared.config import LimitsConfig
from shared.errors import InvalidRequest
from shared.schemas.chat import ChatRequest
from shared.schemas.mesh import Deployment
from shared.subjects import GUARD

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def check(req: ChatRequest, limits: LimitsConfig) -> int:
    """Refuse what no provider should see; returns the total characters of content."""
    if not req.messages:
        raise InvalidRequest("messages: must contain at least one message", stage=GUARD)
    if len(req.messages) > limits.max_messages:
        raise InvalidRequest(
            f"messages: {len(req.messages)} messages exceed the limit of {limits.max_messages}", stage=GUARD
        )
    total = 0
    has_content = False
    for i, m in enumerate(req.messages):
        if m.role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role: unknown role {m.role[:40]!r}", stage=GUARD)
        text = m.text()
        n = len(text)
        if n > limits.max_message_chars:
            raise InvalidRequest(
                f"messages[{i}].content: {n} characters exceed the limit of {limits.max_message_chars}", stage=GUARD
            )
        if "\x00" in text:
            raise InvalidRequest(f"messages[{i}].content: contains a NUL character", stage=GUARD)
        if text.strip() or m.tool_calls:
            has_content = True
        elif m.role == "user":
            raise InvalidRequest(f"messages[{i}].content: empty or whitespace-only", stage=GUARD)
        total += n
    if not has_content:
        raise InvalidRequest("messages: no message has any content", stage=GUARD)
    if total > limits.max_total_chars:
        raise InvalidRequest(
            f"messages: {total} characters in total exceed the limit of {limits.max_total_chars}", stage=GUARD
        )
    if req.temperature is not None and not 0.0 <= req.temperature <= 2.0:
        raise InvalidRequest(f"temperature: {req.temperature} is outside [0, 2]", stage=GUARD)
    if req.top_p is not None and not 0.0 <= req.top_p <= 1.0:
        raise InvalidRequest(f"top_p: {req.top_p} is outside [0, 1]", stage=GUARD)
    cap = req.output_cap
    if cap is not None and not 1 <= cap <= limits.max_output_tokens:
        raise InvalidRequest(f"max_tokens: {cap} is outside [1, {limits.max_output_tokens}]", stage=GUARD)
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is None:
        raise InvalidRequest("response_format.json_schema: required when type is 'json_schema'", stage=GUARD)
    if req.lockgate.max_latency_ms is not None and req.lockgate.max_latency_ms <= 0:
        raise InvalidRequest("lockgate.max_latency_ms: must be positive", stage=GUARD)
    return total


def estimate_prompt_tokens(total_chars: int, messages: int) -> int:
    """About four characters a token plus a few per message (a worst-case-ish estimate)."""
    return total_chars // 3 + 4 * messages + 8


def worst_case_cost(req: ChatRequest, total_chars: int, candidates: list[Deployment], reasks: int = 0) -> float:
    """USD to reserve: the estimated prompt plus the full output cap, on the dearest candidate.

    With ``reasks`` (JSON output on a route that re-asks on invalid output), each re-ask is another
    call whose prompt is the original plus the rejected answer and the error (``reask.EXTRA_CHARS``),
    so the hold covers every call the request may make and a re-ask cannot spend past a budget.
    """
    prompt_tokens = estimate_prompt_tokens(total_chars, len(req.messages))
    reask_tokens = estimate_prompt_tokens(total_chars + reask.EXTRA_CHARS, len(req.messages) + 2)

    def cost(d: Deployment) -> float:
        output = min(req.output_cap or d.max_output_tokens, d.max_output_tokens) * d.price_out_per_mtok
        first = prompt_tokens * d.price_in_per_mtok + output
        again = reask_tokens * d.price_in_per_mtok + output
        return (first + reasks * again) / 1e6

    return max(cost(d) for d in candidates)


_key_encoder = msgspec.json.Encoder(order="deterministic")


def cache_key(req: ChatRequest) -> str:
    """What makes two requests the same question (tenant scoping is the cache's job)."""
    material = (
        req.model or "",
        req.lockgate.route or "",
        req.messages,
        req.output_cap,
        req.response_format,
        req.tools,
        req.tool_choice,
        req.seed,
        req.stop,
        req.top_p,
    )
    return hashlib.sha256(_key_encoder.encode(material)).hexdigest()


def cacheable(req: ChatRequest) -> bool:
    """Only deterministic requests (temperature 0) are answered from the cache."""
    return req.temperature == 0 and req.lockgate.cache != "off"
