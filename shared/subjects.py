"""Every subject, stream, bucket and micro-service name in one place.

A ``Names`` instance carries an optional namespace so that several meshes can
share one NATS deployment (tests run one mesh per test on a single server; a
staging and a production mesh can share a cluster). With the empty namespace
the names are exactly the ones in DESIGN.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# Stage names: micro service names, log field values, the `stage` of an error.
GUARD: Final = "guard"
ROUTER: Final = "router"
BUDGETER: Final = "budgeter"
CACHE: Final = "cache"
EXECUTOR: Final = "executor"
VALIDATOR: Final = "validator"
AUDITOR: Final = "auditor"
JOBS: Final = "jobs"  # background-job workers (executor side)
HTTP: Final = "http"  # the HTTP door (a mesh member that calls llm.v1.* like any client)
STAGES: Final = (GUARD, ROUTER, BUDGETER, CACHE, EXECUTOR, VALIDATOR, AUDITOR)

# Operations (micro endpoint names) per stage.
OP_ROUTE: Final = "route"
OP_RESERVE: Final = "reserve"
OP_LOOKUP: Final = "lookup"
OP_SIMILAR: Final = "similar"
OP_EXECUTE: Final = "execute"
OP_VALIDATE: Final = "validate"
OP_CAPACITY: Final = "capacity"  # mesh.v1.router.capacity: deployments' last minute (lockgate status)
OP_SETTLE: Final = "settle"  # mesh.v1.budgeter.own.<id>.settle: a settlement forwarded to the key's owner
OP_MEMBERS: Final = "members"  # mesh.v1.<stage>.members: every replica answers its instance id (shared.owners)
OP_CANCEL: Final = "cancel"  # mesh.v1.executor.cancel: body = a request id (see shared.bus.Stage.cancel_on)

# Event kinds on events.v1.<kind>.<tenant>.
EV_USAGE: Final = "usage"
EV_COMPLETION: Final = "completion"
EV_BREAKER: Final = "breaker"
EV_ALERT: Final = "alert"


ANONYMOUS: Final = "_anonymous"  # the tenant token of a request refused before its key resolved
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def token(value: str) -> str:
    """A value (a tenant) made safe as exactly one subject token: never empty, no ``.``, ``*``, ``>``."""
    return _NOT_TOKEN.sub("_", value)[:64] or ANONYMOUS


@dataclass(frozen=True, slots=True)
class Names:
    """Subject, stream and bucket names for one mesh (one namespace)."""

    namespace: str = ""

    def _s(self, subject: str) -> str:
        return f"{self.namespace}.{subject}" if self.namespace else subject

    def _upper(self, name: str) -> str:
        return f"{self.namespace.upper()}_{name}" if self.namespace else name

    # -- public API subjects (clients publish here) ---------------------------------
    @property
    def chat(self) -> str:
        return self._s("llm.v1.chat")

    @property
    def models(self) -> str:
        return self._s("llm.v1.models")

    @property
    def jobs_submit(self) -> str:
        return self._s("llm.v1.jobs.submit")

    @property
    def jobs_status(self) -> str:
        return self._s("llm.v1.jobs.status")

    def jobs_done(self, job_id: str) -> str:
        """Each finished item of a job is announced here (once)."""
        return self._s(f"llm.v1.jobs.done.{token(job_id)}")

    @property
    def public_prefix(self) -> str:
        return self._s("llm.v1")

    # -- internal request/reply: mesh.v1.<stage>.<op> -------------------------------
    def mesh_group(self, stage: str) -> str:
        return self._s(f"mesh.v1.{stage}")

    def mesh(self, stage: str, op: str) -> str:
        return f"{self.mesh_group(stage)}.{op}"

    def owned(self, stage: str, member: str, op: str) -> str:
        """One replica's own subject for ``op`` (``mesh.v1.<stage>.own.<id>.<op>``; see shared.owners)."""
        return f"{self.mesh_group(stage)}.own.{token(member)}.{op}"

    # -- events (JetStream stream EVENTS) --------------------------------------------
    def event(self, kind: str, tenant: str) -> str:
        return self._s(f"events.v1.{kind}.{token(tenant)}")

    def events_of(self, kind: str) -> str:
        return self._s(f"events.v1.{kind}.*")

    @property
    def events_all(self) -> str:
        return self._s("events.v1.>")

    # -- audit (JetStream stream AUDIT) ----------------------------------------------
    def audit(self, tenant: str, kind: str) -> str:
        return self._s(f"audit.v1.{token(tenant)}.{kind}")

    def audit_of(self, tenant: str | None = None) -> str:
        return self._s(f"audit.v1.{token(tenant)}.>") if tenant else self._s("audit.v1.>")

    # -- streams, consumers and buckets ----------------------------------------------
    @property
    def events_stream(self) -> str:
        return self._upper("EVENTS")

    @property
    def audit_stream(self) -> str:
        return self._upper("AUDIT")

    def consumer(self, stage: str, purpose: str) -> str:
        return f"{stage}-{purpose}"

    @property
    def keys_bucket(self) -> str:
        return self._upper("LOCKGATE_KEYS")

    @property
    def budgets_bucket(self) -> str:
        return self._upper("LOCKGATE_BUDGETS")

    @property
    def rates_bucket(self) -> str:
        return self._upper("LOCKGATE_RATES")

    @property
    def budget_limits_bucket(self) -> str:
        """Runtime budget limits by entity key (`lockgate budget set`), watched by the budgeters."""
        return self._upper("LOCKGATE_BUDGET_LIMITS")

    @property
    def breakers_bucket(self) -> str:
        return self._upper("LOCKGATE_BREAKERS")

    @property
    def idempotency_bucket(self) -> str:
        return self._upper("LOCKGATE_IDEMPOTENCY")

    @property
    def approvals_bucket(self) -> str:
        """Parked approvals and their one decision (``shared.approvals``)."""
        return self._upper("LOCKGATE_APPROVALS")

    # -- background jobs (JetStream work queue JOBS, dead letters JOBS_DEAD, KV results) --
    def jobs_work(self, job_id: str, index: int) -> str:
        return self._s(f"jobs.v1.work.{token(job_id)}.{index}")

    @property
    def jobs_work_all(self) -> str:
        return self._s("jobs.v1.work.>")

    def jobs_dead(self, job_id: str, index: int) -> str:
        return self._s(f"jobs.v1.dead.{token(job_id)}.{index}")

    @property
    def jobs_dead_all(self) -> str:
        return self._s("jobs.v1.dead.>")

    @property
    def jobs_stream(self) -> str:
        return self._upper("JOBS")

    @property
    def jobs_dead_stream(self) -> str:
        return self._upper("JOBS_DEAD")

    @property
    def jobs_bucket(self) -> str:
        return self._upper("LOCKGATE_JOBS")
