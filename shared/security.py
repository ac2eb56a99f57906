"""The ``[security]`` config section: input and output safety policies, with per-route overrides.

```toml
[security]
injection = "flag"            # block | flag | allow  (prompt-injection detector)
injection_threshold = 0.5     # detector score (0..1) at which a message counts as an injection attempt
pii_input = "allow"           # redact | block | allow  (PII and secrets in what the client sends)
pii_output = "redact"         # redact | allow          (PII and secrets in what the model answers)
blocklist = ["forbidden phrase"]   # output moderation: any of these (case-insensitive) → blocked_output
moderation = "off"            # a provider moderation endpoint plugs in as a Moderator hook (code)
reask_max = 0                 # JSON output: re-ask the model with the validation error up to N times (0-5)

[security.routes.support]     # any key above, for one route (by the route name the router resolves)
injection = "block"
pii_input = "redact"
```

Every key has a default, so a config without ``[security]`` means: flag injections,
pass inputs unchanged, redact PII in outputs, no blocklist, no re-ask (each re-ask
is another paid provider call, so a route opts in).
"""

from __future__ import annotations

from typing import Literal

import msgspec

InjectionPolicy = Literal["block", "flag", "allow"]
PiiInputPolicy = Literal["redact", "block", "allow"]
PiiOutputPolicy = Literal["redact", "allow"]


class RouteSecurity(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A route's overrides; a key left out takes the ``[security]`` value."""

    injection: InjectionPolicy | None = None
    injection_threshold: float | None = None
    pii_input: PiiInputPolicy | None = None
    pii_output: PiiOutputPolicy | None = None
    blocklist: list[str] | None = None
    reask_max: int | None = None


class Policy(msgspec.Struct, kw_only=True, frozen=True):
    """The effective policy for one route."""

    injection: InjectionPolicy = "flag"
    injection_threshold: float = 0.5
    pii_input: PiiInputPolicy = "allow"
    pii_output: PiiOutputPolicy = "redact"
    blocklist: list[str] = []
    reask_max: int = 0


class SecurityConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    injection: InjectionPolicy = "flag"
    injection_threshold: float = 0.5
    pii_input: PiiInputPolicy = "allow"
    pii_output: PiiOutputPolicy = "redact"
    blocklist: list[str] = []
    moderation: Literal["off"] = "off"  # the hook (services.guard.moderation.Moderator) is set in code for now
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
            reask_max=self.reask_max if r.reask_max is None else r.reask_max,
        )

    def problems(self) -> list[str]:
        out = []
        for where, t, n in [("security", self.injection_threshold, self.reask_max)] + [
            (f"security.routes.{k}", v.injection_threshold, v.reask_max) for k, v in self.routes.items()
        ]:
            if t is not None and not 0.0 < t <= 1.0:
                out.append(f"{where}.injection_threshold: must be in (0, 1]")
            if n is not None and not 0 <= n <= 5:
                out.append(f"{where}.reask_max: must be in [0, 5]")
        return out
