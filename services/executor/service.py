"""Executor wiring: mesh.v1.executor.execute."""

from __future__ import annotations

from services.executor.handlers import Executor
from services.executor.providers import Clients
from shared.headers import RequestContext
from shared.runtime import Env, Running
from shared.schemas.mesh import ExecuteRequest, ExecuteResult
from shared.subjects import EXECUTOR, OP_EXECUTE


async def start(env: Env) -> Running:
    clients = Clients()
    executor = Executor(env.nc, clients)
    stage = env.stage(EXECUTOR, "calls providers through the official SDKs, streaming to the client")

    async def execute(req: ExecuteRequest, ctx: RequestContext) -> ExecuteResult:
        return await executor.execute(req, ctx)

    await stage.start()
    await stage.add_typed(
        stage.group(env.names.mesh_group(EXECUTOR)), name=OP_EXECUTE, req_type=ExecuteRequest, handler=execute
    )
    return Running(EXECUTOR, stage, cleanups=[clients.close])
