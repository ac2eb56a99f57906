"""Background jobs: submit a batch of chat requests, get a job id at once, read results later."""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.schemas.chat import ChatRequest, ChatResponse
from shared.schemas.errors import ErrorBody

ItemState = Literal["queued", "completed", "failed"]
JobState = Literal["queued", "running", "completed", "failed"]


class JobSubmit(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    requests: list[ChatRequest]
    metadata: dict[str, str] = {}


class JobAccepted(msgspec.Struct, kw_only=True, frozen=True):
    job_id: str
    total: int
    state: JobState = "queued"


class JobStatusRequest(msgspec.Struct, kw_only=True, frozen=True):
    job_id: str
    include_results: bool = True


class JobWork(msgspec.Struct, kw_only=True, frozen=True):
    """One item on the work queue. ``token`` is the job's own API key (minted at submit,
    same tenant and routes as the submitter's key), so each item passes the guard like
    any request: budget, limits and audit included."""

    job_id: str
    index: int
    request: ChatRequest
    token: str


class JobMeta(msgspec.Struct, kw_only=True, frozen=True):
    job_id: str
    tenant: str
    total: int
    created_ms: int


class JobItem(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    job_id: str
    index: int
    state: ItemState
    deliveries: int = 0
    response: ChatResponse | None = None
    error: ErrorBody | None = None


class JobStatus(msgspec.Struct, kw_only=True, frozen=True):
    job_id: str
    state: JobState
    total: int
    completed: int
    failed: int
    items: list[JobItem] = []
