"""Router wiring: mesh.v1.router.route and llm.v1.models; watches the breaker bucket."""

from __future__ import annotations

from nats.micro.request import Request

from services.router.capacity import Capacity
from services.router.handlers import RouteTable
from shared import breakers, bus, headers, jetstream
from shared.breakers import BreakerView
from shared.headers import RequestContext
from shared.keys import KeyStore
from shared.runtime import Env, Running
from shared.schemas.mesh import RoutePlan, RouteRequest
from shared.subjects import OP_CAPACITY, OP_ROUTE, ROUTER


async def start(env: Env) -> Running:
    view = BreakerView(await breakers.bucket(env.js, env.names))
    watch = await view.start()
    capacity = Capacity.from_config(env.config)
    await jetstream.ensure_events(env.js, env.names)
    stop_following = await capacity.follow(env.js, env.names)
    table = RouteTable(env.config, is_open=view.is_open, has_headroom=capacity.has_headroom)
    keys = KeyStore(env.config, await jetstream.ensure_bucket(env.js, env.names.keys_bucket))
    stage = env.stage(ROUTER, "resolves models and routes to ordered candidate deployments")

    async def route(req: RouteRequest, _: RequestContext) -> RoutePlan:
        return table.plan(req)

    async def models(request: Request) -> None:
        ctx = RequestContext.from_headers(request.headers, default_timeout_ms=5_000)
        try:
            principal = await keys.resolve((request.headers or {}).get(headers.AUTHORIZATION))
            await request.respond(bus.encode(table.models_for(principal)))
        except Exception as exc:
            await stage.respond_error(request, exc, ctx)

    await stage.start()
    await stage.add_typed(
        stage.group(env.names.mesh_group(ROUTER)), name=OP_ROUTE, req_type=RouteRequest, handler=route
    )
    await stage.add_raw(stage.service, name="models", subject=env.names.models, handler=models)

    async def report(request: Request) -> None:
        await request.respond(bus.encode(capacity.usage()))

    await stage.add_raw(stage.service, name=OP_CAPACITY, subject=env.names.mesh(ROUTER, OP_CAPACITY), handler=report)
    return Running(ROUTER, stage, tasks=[watch], cleanups=[stop_following])
