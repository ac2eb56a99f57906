"""Internal stage contracts: one typed input and one typed reply per operation."""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.schemas.budget import BudgetHold
from shared.schemas.chat import Attempt, ChatRequest, ResponseFormat, ToolCall, Usage


class Deployment(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One place a model can be served: a provider endpoint plus its model id."""

    name: str
    model: str  # the gateway's model name (what clients ask for)
    provider: str
    kind: Literal["openai", "anthropic"]
    provider_model: str  # the id the provider knows
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_ms: int = 30_000
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    price_cached_in_per_mtok: float | None = None  # cached prompt tokens; None: the input price
    context_window: int = 128_000
    max_output_tokens: int = 4_096
    max_attempts: int = 1  # attempts on this deployment before the next candidate (retries = this - 1)


# -- router ----------------------------------------------------------------------------
class RouteRequest(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    model: str | None = None
    route: str | None = None


class DegradePlan(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a route allows when every candidate failed, tried in this order."""

    similar_min: float | None = None  # a cached answer at least this similar (cache.similar); None: not allowed
    cheaper: list[Deployment] = []  # the deployments of the route's cheaper model
    template: str | None = None  # a configured message


class RoutePlan(msgspec.Struct, kw_only=True, frozen=True):
    route: str
    candidates: list[Deployment]
    degrade: DegradePlan | None = None


# -- budgeter --------------------------------------------------------------------------
class ReserveRequest(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Hold ``amount_usd`` against the tenant's, the user's and the key's budgets (those that have one).

    The hold's lease is the request's deadline (the ``Lockgate-Deadline`` header) plus
    ``budgets.lease_grace_ms``.
    """

    tenant: str
    user: str = ""  # the request's ``user`` ("" : no per-user budget)
    key_id: str = ""  # the API key's id ("" : no per-key budget)
    tier: str = ""  # the key's tier: the [tiers.<tier>.user] and [tiers.<tier>.key] limits
    amount_usd: float


class Reservation(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    reservation_id: str
    amount_usd: float
    hold: BudgetHold | None = None  # None: no budget applies, nothing to settle
    remaining_usd: float | None = None  # the least room left in any budget after this hold


class SettleRequest(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What settling a hold needs; forwarded to the tenant's owner replica.

    Its fields are a completion event's (shared.schemas.events.CompletionEvent) of the same
    names, so the budgeter decodes events straight into it and skips the rest (the answer).
    """

    tenant: str
    user: str = ""
    key_id: str = ""
    cost_usd: float = 0.0
    hold: BudgetHold | None = None  # None: nothing was held, nothing to settle


class Settled(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The reply to a forwarded settlement: it was applied (an already settled hold counts too)."""

    ok: bool = True


# -- cache -----------------------------------------------------------------------------
class CachedCompletion(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What the cache keeps of a completion: enough to answer again."""

    content: str | None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = "stop"
    model: str
    usage: Usage = Usage()
    deployment: str = ""


class CacheLookup(msgspec.Struct, kw_only=True, frozen=True):
    tenant: str
    key: str


class SimilarLookup(msgspec.Struct, kw_only=True, frozen=True):
    """The most similar cached answer of this tenant and route, if it is similar enough."""

    tenant: str
    route: str
    fingerprint: list[int]  # shared.similarity.fingerprint of the request
    min_similarity: float


class CacheResult(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    hit: Literal["", "exact", "semantic"] = ""
    completion: CachedCompletion | None = None


# -- executor --------------------------------------------------------------------------
class ExecuteRequest(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    request: ChatRequest
    candidates: list[Deployment]
    response_id: str
    stream_inbox: str | None = None  # publish chunks here (the client's inbox)
    route: str = ""
    degrade: DegradePlan | None = None  # set only when the request and its route allow degrading
    idempotency_key: str | None = None  # the client's Idempotency-Key header
    coalesce_key: str | None = None  # identical cacheable requests share one provider call
    redact_stream: bool = False  # redact PII in streamed chunks before they reach the client (shared.pii)
    blocklist: list[str] = []  # streams: end with blocked_output before any of these goes out (shared.blocklist)


class ExecuteResult(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    content: str | None
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    usage: Usage = Usage()
    model: str
    deployment: str
    provider: str
    attempts: list[Attempt] = []
    chunks: int = 0
    cost_usd: float = 0.0
    degraded: str = ""  # "", "similar", "cheaper_model", "template"
    redacted: dict[str, int] = {}  # placeholders put into streamed chunks, by kind


# -- validator -------------------------------------------------------------------------
class ValidateRequest(msgspec.Struct, kw_only=True, frozen=True):
    content: str
    response_format: ResponseFormat


class ValidateResult(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    outcome: Literal["valid", "repaired"]
    content: str
