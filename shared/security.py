"""The ``[security]`` config section: input and output safety policies, with per-route overrides.

```toml
[security]
injection = "flag"            # block | flag | allow  (prompt-injection detector)
injection_threshold = 0.5     # detector score (0..1) at which a message counts as an injection attempt
pii_input = "allow"           # redact | block | allow  (PII and secrets in what the client sends)
pii_output = "redact"         # redact | allow          (PII and secrets in what the model answers)
blocklist = ["forbidden phrase"]   # output moderation: any of these (case-insensitive) → blocked_output
moderation = "off"            # off | a [providers] name of kind "openai": its /v1/moderations judges each answer
moderation_model = "omni-moderation-latest"
moderation_timeout_ms = 2000  # a moderation call that fails or takes longer → stage_unavailable (fail closed)
reask_max = 0                 # JSON output: re-ask the model with the validation error up to N times (0-5)

[security.routes.support]     # any key above, for one route (by the route name the router resolves)
injection = "block"
pii_input = "redact"
```

Every key has a default, so a config without ``[security]`` means: flag injections,
pass inputs unchanged, redact PII in outputs, no blocklist, no moderation call, no
re-ask (each re-ask is another paid provider call, so a route opts in).

Moderation judges a whole answer, so a route with ``moderation`` on refuses
``stream: true`` (``invalid_request``) rather than let text out unjudged; and a
moderation call that fails or times out refuses the answer (``stage_unavailable``)
rather than deliver it unmoderated.
"""

from __future__ import annotations

from typing import Literal

import msgspec

InjectionPolicy = Literal["block", "flag", "allow"]
PiiInputPolicy = Literal["redact", "block", "allow"]
PiiOutputPolicy = Literal["redact", "allow"]
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"


class RouteSecurity(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A route's overrides; a key left out takes the ``[security]`` value."""

    injection: InjectionPolicy | None = None
    injection_threshold: float | None = None
    pii_input: PiiInputPolicy | None = None
    pii_output: PiiOutputPolicy | None = None
    blocklist: list[str] | None = None
    moderation: str | None = None
    moderation_model: str | None = None
    moderation_timeout_ms: int | None = None
    reask_max: int | None = None


class Policy(msgspec.Struct, kw_only=True, frozen=True):
    """The effective policy for one route."""

    injection: InjectionPolicy = "flag"
    injection_threshold: float = 0.5
    pii_input: PiiInputPolicy = "allow"
    pii_output: PiiOutputPolicy = "redact"
    blocklist: list[str] = []
    moderation: str = "off"  # "off" or the provider whose moderation endpoint judges answers
    moderation_model: str = DEFAULT_MODERATION_MODEL
    moderation_timeout_ms: int = 2_000
    reask_max: int = 0


class SecurityConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    injection: InjectionPolicy = "flag"
    injection_threshold: float = 0.5
    pii_input: PiiInputPolicy = "allow"
    pii_output: PiiOutputPolicy = "redact"
    blocklist: list[str] = []
    moderation: str = "off"  # "off" or a [providers] name of kind "openai" (services/guard/moderation.py)
    moderation_model: str = DEFAULT_MODERATION_MODEL
    moderation_timeout_ms: int = 2_000
    reask_max: int = 0
    routes: dict[str, RouteSecurity] = {}

    def policy(self, route: str) -> Policy:
        r = self.routes.get(route, RouteSecurity())
        return Policy(
            injection=r.injection or self.injection,
            injection_threshold=self.injection_threshold if r.injection_threshold is None else r.injection_threshold,
            pii_input=r.pii_input or self.pii_input,
            pii_output=r.pii_output or self.pii_output,
            blocklist=self.blocklist if r.blocklist is None else r.blocklist,
            moderation=r.moderation or self.moderation,
            moderation_model=r.moderation_model or self.moderation_model,
            moderation_timeout_ms=self.moderation_timeout_ms
            if r.moderation_timeout_ms is None
            else r.moderation_timeout_ms,
            reask_max=self.reask_max if r.reask_max is None else r.reask_max,
        )

    def moderation_providers(self) -> list[tuple[str, str]]:
        """``(key, provider)`` for each ``moderation`` set to a provider (config.py checks it exists)."""
        named = [("security.moderation", self.moderation)] + [
            (f"security.routes.{k}.moderation", v.moderation) for k, v in self.routes.items()
        ]
        return [(where, name) for where, name in named if name is not None and name != "off"]

    def problems(self) -> list[str]:
        out = []
        scopes: list[tuple[str, SecurityConfig | RouteSecurity]] = [("security", self)]
        scopes += [(f"security.routes.{k}", v) for k, v in self.routes.items()]
        for where, s in scopes:
            t, n = s.injection_threshold, s.reask_max
            if t is not None and not 0.0 < t <= 1.0:
                out.append(f"{where}.injection_threshold: must be in (0, 1]")
            if n is not None and not 0 <= n <= 5:
                out.append(f"{where}.reask_max: must be in [0, 5]")
            if s.moderation is not None and not s.moderation.strip():
                out.append(f'{where}.moderation: "off" or a provider name')
            if s.moderation_model is not None and not s.moderation_model.strip():
                out.append(f"{where}.moderation_model: must not be empty")
            if s.moderation_timeout_ms is not None and s.moderation_timeout_ms <= 0:
                out.append(f"{where}.moderation_timeout_ms: must be positive")
        return out
