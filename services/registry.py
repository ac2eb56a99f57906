"""The mesh services by name (what `lockgate serve NAME` and `up` start)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.auditor import service as auditor
from services.budgeter import service as budgeter
from services.cache import service as cache
from services.executor import service as executor
from services.guard import service as guard
from services.http import service as http
from services.jobs import service as jobs
from services.router import service as router
from services.validator import service as validator
from shared.runtime import Env, Running

Starter = Callable[[Env], Awaitable[Running]]

# Start order: stages the guard calls come up before the guard takes traffic.
SERVICES: dict[str, Starter] = {
    "auditor": auditor.start,
    "budgeter": budgeter.start,
    "cache": cache.start,
    "router": router.start,
    "validator": validator.start,
    "executor": executor.start,
    "guard": guard.start,
    "jobs": jobs.start,  # background-job workers: items go through the guard like any request
    "http": http.start,  # the HTTP door calls llm.v1.* like any client: last, once the guard is up
}
