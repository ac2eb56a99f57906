"""The guard's job desk: ``llm.v1.jobs.submit`` and ``llm.v1.jobs.status``.

Submit admits the batch like a chat request would be admitted (key, body size,
each request's input checks), mints the job's own API key (same tenant, routes
and tier as the submitter's, registered in the keys bucket, expiring with the
job's results after ``jobs.result_ttl_s``) so that each item later
passes the guard in full, queues one work item per request on the JOBS work queue
(``Nats-Msg-Id`` = ``<job>.<index>``: a retried submit queues nothing twice) and
answers with the job id at once. Status is for the submitting tenant only.
"""

from __future__ import annotations

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.micro.request import Request

from services.guard import inputs
from shared import bus, headers, keys
from shared.bus import Stage
from shared.config import LockgateConfig
from shared.errors import DECODE_ERRORS, InvalidRequest, NotFound, validation_message
from shared.headers import RequestContext, new_id, now_ms
from shared.jobstore import JobStore
from shared.keys import KeyStore, Principal
from shared.schemas.jobs import JobAccepted, JobMeta, JobStatusRequest, JobSubmit, JobWork
from shared.subjects import GUARD, Names

_submit = msgspec.json.Decoder(JobSubmit)
_status = msgspec.json.Decoder(JobStatusRequest)


class JobDesk:
    def __init__(
        self, stage: Stage, js: JetStreamContext, config: LockgateConfig, names: Names, keystore: KeyStore,
        keys_bucket: KeyValue, store: JobStore,
    ) -> None:  # fmt: skip
        self.stage = stage
        self.js = js
        self.config = config
        self.names = names
        self.keystore = keystore
        self.keys_bucket = keys_bucket
        self.store = store

    def _ctx(self, request: Request) -> RequestContext:
        return RequestContext.from_headers(request.headers, default_timeout_ms=self.config.gateway.request_timeout_ms)

    async def submit(self, request: Request) -> None:
        ctx = self._ctx(request)
        try:
            principal = await self.keystore.resolve((request.headers or {}).get(headers.AUTHORIZATION))
            accepted = await self._submit(request.data, principal)
            await request.respond(bus.encode(accepted))
        except Exception as exc:
            await self.stage.respond_error(request, exc, ctx)

    async def _submit(self, data: bytes, principal: Principal) -> JobAccepted:
        limit = self.config.limits.max_request_bytes * 16
        if len(data) > limit:
            raise InvalidRequest(f"job body is {len(data)} bytes; the limit is {limit}", stage=GUARD)
        try:
            job = _submit.decode(data)
        except DECODE_ERRORS as exc:
            raise InvalidRequest(f"invalid job: {validation_message(exc)}", stage=GUARD) from None
        if not job.requests:
            raise InvalidRequest("requests: must contain at least one request", stage=GUARD)
        if len(job.requests) > self.config.jobs.max_items:
            raise InvalidRequest(
                f"requests: {len(job.requests)} items; the limit is {self.config.jobs.max_items}", stage=GUARD
            )
        for i, req in enumerate(job.requests):
            try:
                inputs.check(req, self.config.limits)
            except InvalidRequest as exc:
                raise type(exc)(f"requests[{i}]: {exc.message}", stage=GUARD) from None
        job_id = f"job_{new_id()}"
        token = keys.generate()
        created = now_ms()
        job_key = Principal(
            key_id=f"{principal.key_id}/{job_id}", tenant=principal.tenant, routes=list(principal.routes),
            tier=principal.tier, created_ms=created, expires_ms=created + self.config.jobs.result_ttl_s * 1000,
        )  # fmt: skip
        await keys.register(self.keys_bucket, token, job_key)
        await self.store.put_meta(
            JobMeta(job_id=job_id, tenant=principal.tenant, total=len(job.requests), created_ms=created)
        )
        for i, req in enumerate(job.requests):
            work = JobWork(job_id=job_id, index=i, request=msgspec.structs.replace(req, stream=False), token=token)
            await self.js.publish(
                self.names.jobs_work(job_id, i), bus.encode(work), headers={headers.MSG_ID: f"{job_id}.{i}"}
            )
        return JobAccepted(job_id=job_id, total=len(job.requests))

    async def status(self, request: Request) -> None:
        ctx = self._ctx(request)
        try:
            principal = await self.keystore.resolve((request.headers or {}).get(headers.AUTHORIZATION))
            try:
                req = _status.decode(request.data)
            except DECODE_ERRORS as exc:
                raise InvalidRequest(f"invalid request: {validation_message(exc)}", stage=GUARD) from None
            meta = await self.store.meta(req.job_id) if req.job_id.startswith("job_") else None
            if meta is None or meta.tenant != principal.tenant:  # another tenant's job does not exist for you
                raise NotFound(f"no job {req.job_id!r}", stage=GUARD)
            await request.respond(bus.encode(await self.store.status(meta, req.include_results)))
        except Exception as exc:
            await self.stage.respond_error(request, exc, ctx)
