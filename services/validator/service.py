"""Validator wiring: mesh.v1.validator.validate."""

from __future__ import annotations

from services.validator import handlers
from shared.headers import RequestContext
from shared.runtime import Env, Running
from shared.schemas.mesh import ValidateRequest, ValidateResult
from shared.subjects import OP_VALIDATE, VALIDATOR


async def start(env: Env) -> Running:
    stage = env.stage(VALIDATOR, "parses, repairs and schema-checks JSON output")

    async def validate(req: ValidateRequest, _: RequestContext) -> ValidateResult:
        return handlers.validate(req)

    await stage.start()
    await stage.add_typed(
        stage.group(env.names.mesh_group(VALIDATOR)), name=OP_VALIDATE, req_type=ValidateRequest, handler=validate
    )
    return Running(VALIDATOR, stage)
