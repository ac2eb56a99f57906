"""Resolve a requested model or route to an ordered list of candidate deployments."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shared import config as cfgmod
from shared.config import LockgateConfig
from shared.errors import InvalidRequest, NotFound, UpstreamUnavailable
from shared.keys import Principal
from shared.schemas.chat import ModelInfo, ModelList
from shared.schemas.mesh import DegradePlan, Deployment, RoutePlan, RouteRequest
from shared.subjects import ROUTER


class RouteTable:
    """Built once from config: enabled deployments per model, models per route."""

    def __init__(
        self,
        config: LockgateConfig,
        env: Mapping[str, str] | None = None,
        is_open: Callable[[str], bool] | None = None,
        has_headroom: Callable[[str], bool] | None = None,
    ) -> None:
        self.default_route = config.gateway.default_route
        self.is_open = is_open or (lambda _: False)  # a deployment whose circuit breaker is open
        self.has_headroom = has_headroom or (lambda _: True)  # under 90 % of its rpm/tpm (capacity.py)
        enabled = {name for name in config.providers if cfgmod.provider_enabled(config, name, env)}
        self.by_model: dict[str, list[Deployment]] = {
            model: [
                cfgmod.deployment(config, model, dep)
                for dep in m.deployments
                if config.deployments[dep].provider in enabled
            ]
            for model, m in config.models.items()
        }
        self.routes: dict[str, list[str]] = {name: list(r.models) for name, r in config.routes.items()}
        self.degrade: dict[str, DegradePlan] = {}
        for name, r in config.routes.items():
            cheaper = self.by_model.get(r.degrade_model or "", []) if "cheaper_model" in r.degrade else []
            template = r.degrade_template if "template" in r.degrade else None
            similar = r.degrade_similarity if "similar" in r.degrade else None
            if cheaper or template is not None or similar is not None:
                self.degrade[name] = DegradePlan(similar_min=similar, cheaper=cheaper, template=template)

    def plan(self, req: RouteRequest) -> RoutePlan:
        if req.model:
            if req.model in self.by_model:
                if req.route:
                    # The route names the plan (and what a key's access is checked against), so the
                    # model must be one of the route's: a route label must not unlock other models.
                    if req.route not in self.routes:
                        raise NotFound(self._unknown_route(req.route), stage=ROUTER)
                    if req.model not in self.routes[req.route]:
                        raise InvalidRequest(
                            f"model {req.model!r} is not in route {req.route!r} "
                            f"(its models: {', '.join(self.routes[req.route])})",
                            stage=ROUTER,
                        )
                return self._plan(req.route or req.model, [req.model])
            if req.model in self.routes:  # a route may be asked for by name in `model`
                return self._plan(req.model, self.routes[req.model])
            raise NotFound(
                f"unknown model {req.model!r}; known models: {', '.join(sorted(self.by_model))}", stage=ROUTER
            )
        name = req.route or self.default_route
        if name not in self.routes:
            raise NotFound(self._unknown_route(name), stage=ROUTER)
        return self._plan(name, self.routes[name])

    def _unknown_route(self, name: str) -> str:
        return f"unknown route {name!r}; known routes: {', '.join(sorted(self.routes))}"

    def _plan(self, route: str, models: list[str]) -> RoutePlan:
        candidates = [d for m in models for d in self.by_model[m]]
        if not candidates:
            raise UpstreamUnavailable(
                f"no enabled deployment serves {route!r}: set the provider's API key or enable simulation",
                stage=ROUTER,
                retryable=False,
            )
        # Skip deployments whose breaker is open. When that leaves none, the executor gets them all:
        # its breakers answer at once (with when to retry), or the route's degradation steps run.
        closed = [d for d in candidates if not self.is_open(d.name)] or candidates
        # Deployments near their quota go behind those with headroom, in their order: never out of the plan.
        room = [self.has_headroom(d.name) for d in closed]
        ordered = [d for d, ok in zip(closed, room, strict=True) if ok] + [
            d for d, ok in zip(closed, room, strict=True) if not ok
        ]
        return RoutePlan(route=route, candidates=ordered, degrade=self.degrade.get(route))

    def models_for(self, principal: Principal) -> ModelList:
        names = [m for m, deps in self.by_model.items() if deps and principal.may_use(m)]
        names += [r for r in self.routes if principal.may_use(r)]
        return ModelList(data=[ModelInfo(id=n) for n in names])
