"""Rate limits per tenant, per user and per API key: requests and tokens per minute (GCRA).

Each limited (scope, metric) is a GCRA bucket ("generic cell rate algorithm", a
token bucket kept as one number): the theoretical arrival time (TAT, Unix ms)
at which the scope would be back to an empty history. A request of cost ``n``
under a limit of ``L`` per minute moves it to ``max(TAT, now) + n * 60000 / L``
and is admitted when that is at most one minute ahead of now. So the burst is
the whole per-minute limit and the allowance refills smoothly (one request
every ``60 / L`` s), never all at once at a window edge.

The state lives in the JetStream KV bucket ``LOCKGATE_RATES``, one key per
scope holding both TATs (``t.<tenant>``, ``k.<tenant>.<key id>``,
``u.<tenant>.<sha256 of the user>``), updated by revision-checked
compare-and-set batched per key (``shared.kvbatch``), so any number of guard
replicas share one allowance. A scope's two metrics are decided together (both
fit or neither is counted). The scopes of one request are decided
concurrently; when one refuses, the others that counted it are refunded, so a
refused request consumes nothing (for the moment between the two, a
concurrent request may see less allowance than there is: never more).

Tokens are counted at admission and never corrected: the prompt estimate plus
the output cap (``max_tokens``, or without it the largest output cap of the
models the request may reach).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
from nats.js.kv import KeyValue

from services.guard import inputs
from shared.config import Limits, LockgateConfig
from shared.errors import RateLimited, StageUnavailable
from shared.keys import Principal
from shared.kvbatch import BatchedKV, Decision
from shared.schemas.chat import ChatRequest
from shared.schemas.ratelimit import RateLimitInfo
from shared.subjects import GUARD, token

WINDOW_MS = 60_000.0  # limits are per minute; the burst is the whole minute's allowance
BUCKET_TTL_S = 2 * WINDOW_MS / 1000  # a key untouched for a minute is back to full: KV may forget it
_EPS = 1e-6

Metric = Literal["requests", "tokens"]


# -- the GCRA math (pure) ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    tat: float  # the TAT to store when allowed (else the unchanged one)
    remaining: int  # what could still be admitted now (after this request, when allowed)
    reset_ms: int  # until the bucket is full again
    retry_after_ms: int | None  # refused: when this request would fit; None: never (cost above the limit)


def gcra(tat: float, now: float, cost: int, limit: int) -> Verdict:
    """Decide ``cost`` units at ``now`` (ms) against ``limit`` per minute with burst = ``limit``."""
    base = max(tat, now)
    if limit <= 0 or cost > limit:
        return Verdict(False, tat, 0 if limit <= 0 else _remaining(base, now, limit), _ceil(base - now), None)
    interval = WINDOW_MS / limit
    new = base + cost * interval
    if new - now > WINDOW_MS + _EPS:
        return Verdict(
            False, tat, _remaining(base, now, limit), _ceil(base - now), max(1, _ceil(new - now - WINDOW_MS))
        )
    return Verdict(True, new, _remaining(new, now, limit), _ceil(new - now), None)


def refund(tat: float, cost: int, limit: int) -> float:
    """The TAT with ``cost`` units given back (a request another scope refused)."""
    if limit <= 0:
        return tat
    return max(0.0, tat - cost * WINDOW_MS / limit)


def _remaining(tat: float, now: float, limit: int) -> int:
    return max(0, math.floor((WINDOW_MS - (tat - now)) * limit / WINDOW_MS + _EPS))


def _ceil(ms: float) -> int:
    return max(0, math.ceil(ms - _EPS))


# -- one scope's decision (BatchedKV) ------------------------------------------------------
class RateState(msgspec.Struct, kw_only=True):
    r: float = 0.0  # TAT of requests (Unix ms)
    t: float = 0.0  # TAT of tokens (Unix ms)


@dataclass(frozen=True, slots=True)
class Scope:
    key: str  # the KV key
    label: str  # how a message names it: "tenant 'acme'", "each API key of tier 'free'" (never the key)
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True, slots=True)
class Figures:
    """One metric of one scope after a decision."""

    metric: Metric
    limit: int
    remaining: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Outcome:
    scope: Scope
    allowed: bool
    figures: tuple[Figures, ...]
    refused_by: Metric | None = None
    retry_after_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    scope: Scope
    requests: int
    tokens: int
    now_ms: float  # when it was asked
    refund: bool = False
    clock: Callable[[], float] | None = None  # Unix seconds; read again when the ask is decided

    def decided_at(self) -> float:
        """The time to decide at: now, not when the ask was made. An ask waits for its round (and
        for lost compare-and-sets); meanwhile another guard may have moved the bucket at its own,
        later time, and deciding at the older time would refuse what fits (19 of a burst of 20)."""
        return self.now_ms if self.clock is None else max(self.now_ms, self.clock() * 1000.0)


def decide(_key: str, state: RateState, asks: list[Ask]) -> Decision:
    """Each ask in arrival order: refunds give back, admissions count both metrics or neither."""
    outcomes: list[object] = []
    changed = False
    for ask in asks:
        s = ask.scope
        if ask.refund:
            if s.rpm is not None:
                state.r = refund(state.r, ask.requests, s.rpm)
            if s.tpm is not None:
                state.t = refund(state.t, ask.tokens, s.tpm)
            changed = True
            outcomes.append(None)
            continue
        now = ask.decided_at()
        verdicts: list[tuple[Metric, int, Verdict]] = []
        if s.rpm is not None:
            verdicts.append(("requests", s.rpm, gcra(state.r, now, ask.requests, s.rpm)))
        if s.tpm is not None:
            verdicts.append(("tokens", s.tpm, gcra(state.t, now, ask.tokens, s.tpm)))
        refused = [(m, v) for m, _, v in verdicts if not v.allowed]
        if not refused:
            for m, _, v in verdicts:
                if m == "requests":
                    state.r = v.tat
                else:
                    state.t = v.tat
            changed = changed or bool(verdicts)
            figures = tuple(Figures(m, lim, v.remaining, v.reset_ms) for m, lim, v in verdicts)
            outcomes.append(Outcome(s, True, figures))
            continue
        # Refused: nothing of this scope is counted, so its figures are the state's as it stands.
        figures = tuple(_standing(_tat(state, m), now, m, lim) for m, lim, _ in verdicts)
        never = [(m, v) for m, v in refused if v.retry_after_ms is None]
        metric, worst = (never or sorted(refused, key=lambda mv: mv[1].retry_after_ms or 0))[-1]
        outcomes.append(Outcome(s, False, figures, metric, worst.retry_after_ms))
    return Decision(changed, outcomes)


def _tat(state: RateState, metric: Metric) -> float:
    return state.r if metric == "requests" else state.t


def _standing(tat: float, now: float, metric: Metric, limit: int) -> Figures:
    base = max(tat, now)
    return Figures(metric, limit, _remaining(base, now, limit) if limit > 0 else 0, _ceil(base - now))


# -- what a reply shows ------------------------------------------------------------------
def most_constraining(outcomes: Sequence[Outcome]) -> RateLimitInfo | None:
    """Per metric, the scope with the least remaining (then the longest reset)."""
    best: dict[Metric, Figures] = {}
    for o in outcomes:
        for f in o.figures:
            cur = best.get(f.metric)
            if cur is None or (f.remaining, -f.reset_ms) < (cur.remaining, -cur.reset_ms):
                best[f.metric] = f
    if not best:
        return None
    r, t = best.get("requests"), best.get("tokens")
    return RateLimitInfo(
        limit_requests=r.limit if r else 0,
        remaining_requests=r.remaining if r else 0,
        reset_requests_ms=r.reset_ms if r else 0,
        limit_tokens=t.limit if t else 0,
        remaining_tokens=t.remaining if t else 0,
        reset_tokens_ms=t.reset_ms if t else 0,
    )


def refusal(o: Outcome, tokens: int) -> RateLimited:
    """The error for a refused scope: names the scope and its limit, never the key."""
    s = o.scope
    limit = s.rpm if o.refused_by == "requests" else s.tpm
    if o.retry_after_ms is None:
        if not limit:
            message = f"rate limit of {s.label}: no {o.refused_by} are allowed ({'rpm' if o.refused_by == 'requests' else 'tpm'} = 0)"
        else:
            message = (
                f"rate limit of {s.label}: {limit} tokens per minute, and this request counts {tokens} "
                "(the prompt estimate plus the output cap); lower max_tokens or shorten the prompt"
            )
        return RateLimited(message, stage=GUARD, retryable=False)
    message = (
        f"rate limit of {s.label}: {limit} {o.refused_by} per minute reached; retry in {o.retry_after_ms / 1000:.1f} s"
    )
    return RateLimited(message, stage=GUARD, retry_after_ms=o.retry_after_ms)


def _contended() -> Exception:
    return StageUnavailable("rate-limit state is too contended; try again", stage=GUARD)


# -- the limiter the guard calls -------------------------------------------------------------
class RateLimiter:
    def __init__(self, kv: KeyValue, config: LockgateConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._batch: BatchedKV[RateState, Ask] = BatchedKV(kv, RateState, decide, contended=_contended)

    def scopes(self, principal: Principal, user: str | None) -> list[Scope]:
        """The limited scopes a request of this key and user falls under."""
        out: list[Scope] = []
        tenant = token(principal.tenant)
        t = self.config.tenants.get(principal.tenant)
        if t is not None and _limited(t):
            out.append(Scope(f"t.{tenant}", f"tenant {principal.tenant!r}", t.rpm, t.tpm))
        tier = self.config.tiers.get(principal.tier) if principal.tier else None
        if tier is not None:
            if _limited(tier.key):
                label = f"each API key of tier {principal.tier!r}"
                out.append(Scope(f"k.{tenant}.{token(principal.key_id)}", label, tier.key.rpm, tier.key.tpm))
            if user and _limited(tier.user):
                digest = hashlib.sha256(user.encode()).hexdigest()[:32]  # any string; never stored in clear
                label = f"each user of tier {principal.tier!r}"
                out.append(Scope(f"u.{tenant}.{digest}", label, tier.user.rpm, tier.user.tpm))
        return out

    def tokens(self, req: ChatRequest, total_chars: int) -> int:
        """The tokens a request counts: the prompt estimate plus its output cap."""
        models = self.config.models
        if req.model in models:
            reach = [req.model]
        else:
            route = self.config.routes.get(req.model or "") or self.config.routes.get(
                req.lockgate.route or self.config.gateway.default_route
            )
            reach = [m for m in (route.models if route else []) if m in models]
        model_cap = max((models[m].max_output_tokens for m in reach), default=self.config.limits.max_output_tokens)
        cap = min(req.output_cap or model_cap, model_cap)
        return inputs.estimate_prompt_tokens(total_chars, len(req.messages)) + cap

    async def admit(self, principal: Principal, req: ChatRequest, total_chars: int) -> RateLimitInfo | None:
        """Count the request in every scope it falls under, or raise ``RateLimited`` having counted it in none."""
        scopes = self.scopes(principal, req.user)
        if not scopes:
            return None
        tokens = self.tokens(req, total_chars)
        now = self._clock() * 1000.0
        results = await asyncio.gather(
            *(self._batch.submit(s.key, Ask(s, 1, tokens, now, clock=self._clock)) for s in scopes)
        )
        outcomes = [r for r in results if isinstance(r, Outcome)]
        refused = [o for o in outcomes if not o.allowed]
        if not refused:
            return most_constraining(outcomes)
        counted = [o.scope for o in outcomes if o.allowed]
        await asyncio.gather(*(self._batch.submit(s.key, Ask(s, 1, tokens, now, refund=True)) for s in counted))
        # The scope that holds the client back longest (or for ever) is the one to name.
        worst = max(refused, key=lambda o: math.inf if o.retry_after_ms is None else o.retry_after_ms)
        err = refusal(worst, tokens)
        err.rate_limit = most_constraining([_refunded(o, tokens) for o in outcomes])
        raise err

    def forget(self) -> None:
        """Drop the remembered KV values (tests: as a restarted guard would start)."""
        self._batch.forget()


def _refunded(o: Outcome, tokens: int) -> Outcome:
    """A scope that counted the request and was refunded: its figures with the request given back."""
    if not o.allowed:
        return o
    back = []
    for f in o.figures:
        cost = 1 if f.metric == "requests" else tokens
        back.append(
            Figures(f.metric, f.limit, min(f.limit, f.remaining + cost), _ceil(f.reset_ms - cost * WINDOW_MS / f.limit))
        )
    return Outcome(o.scope, o.allowed, tuple(back))


def _limited(limits: Limits) -> bool:
    return limits.rpm is not None or limits.tpm is not None
