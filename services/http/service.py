"""HTTP door wiring: an aiohttp server plus a ``nats.micro`` service named ``http`` (for discovery).

Each replica is stateless: it forwards each call to ``llm.v1.*`` on its own NATS
connection, so the door scales like any other service (more replicas behind a
load balancer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from services.http import anthropic_api, jobs_api, openai_api
from services.http.bridge import Bridge
from services.http.door import Door
from shared import bus
from shared.runtime import Env, Running
from shared.subjects import HTTP

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(door: Door, env: Env) -> web.Application:
    app = web.Application(client_max_size=door.max_body + 1)

    def bind(fn: Callable[[Door, web.Request], Awaitable[web.StreamResponse]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await fn(door, request)

        return handler

    async def healthz(_: web.Request) -> web.Response:
        ok = env.nc.is_connected
        return web.Response(
            status=200 if ok else 503,
            body=bus.encode({"status": "ok" if ok else "nats_disconnected"}),
            content_type="application/json",
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=door.metrics.render(), headers={"Content-Type": door.metrics.content_type})

    app.router.add_post("/v1/chat/completions", bind(openai_api.chat_completions))
    app.router.add_get("/v1/models", bind(openai_api.models))
    app.router.add_post("/v1/messages", bind(anthropic_api.messages))
    app.router.add_post("/v1/jobs", bind(jobs_api.submit))
    app.router.add_get("/v1/jobs/{job_id}", bind(jobs_api.status))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def start(env: Env) -> Running:
    door = Door(Bridge(env.nc, env.names, env.config.gateway.request_timeout_ms), env.config)
    runner = web.AppRunner(build_app(door, env), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, env.config.http.host, env.config.http.port, reuse_address=True)
    await site.start()
    host, port = runner.addresses[0][:2]
    stage = env.stage(HTTP, "OpenAI- and Anthropic-compatible HTTP door")
    await stage.start()
    return Running(HTTP, stage, cleanups=[runner.cleanup], url=f"http://{host}:{port}")
