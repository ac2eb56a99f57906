"""``POST /v1/jobs`` and ``GET /v1/jobs/{id}``: background jobs over HTTP.

The body is one chat request (JSON), ``{"requests": [...]}``, or JSONL: one chat
request per line, or OpenAI batch-file lines (``{"custom_id", "method", "url",
"body"}``: the ``body`` is the request). The answer is 202 with the job id at once;
``GET /v1/jobs/{id}`` reports the state and, as they finish, the results.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from services.http import errors as http_errors
from services.http.door import Door
from shared import bus
from shared.errors import InvalidRequest, LockgateError, validation_message
from shared.schemas.jobs import JobStatusRequest
from shared.subjects import HTTP


def parse_batch(body: bytes) -> list[Any]:
    lines = [line for line in body.splitlines() if line.strip()]
    try:
        docs = [msgspec.json.decode(line) for line in lines] if len(lines) > 1 else [msgspec.json.decode(body)]
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"body is neither JSON nor JSONL: {validation_message(exc)}", stage=HTTP) from None
    if len(docs) == 1 and isinstance(docs[0], dict) and isinstance(docs[0].get("requests"), list):
        docs = docs[0]["requests"]
    out = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise InvalidRequest(f"line {i + 1}: expected a JSON object", stage=HTTP)
        out.append(doc["body"] if isinstance(doc.get("body"), dict) else doc)
    return out


async def submit(door: Door, request: web.Request) -> web.Response:
    rid = door.request_id(request)
    try:
        payload = bus.encode({"requests": parse_batch(await door.body(request, chat=False))})
        data = await door.bridge.jobs_submit(payload, door.api_key(request), rid)
    except LockgateError as err:
        door.metrics.requests.labels("jobs_submit", str(http_errors.status_of(err))).inc()
        return http_errors.openai_response(err, rid)
    door.metrics.requests.labels("jobs_submit", "202").inc()
    return web.Response(status=202, body=data, content_type="application/json", headers=door.info_headers(rid, None))


async def status(door: Door, request: web.Request) -> web.Response:
    rid = door.request_id(request)
    include = request.query.get("results", "true").lower() != "false"
    try:
        body = bus.encode(JobStatusRequest(job_id=request.match_info["job_id"], include_results=include))
        data = await door.bridge.jobs_status(body, door.api_key(request), rid)
    except LockgateError as err:
        door.metrics.requests.labels("jobs_status", str(http_errors.status_of(err))).inc()
        return http_errors.openai_response(err, rid)
    door.metrics.requests.labels("jobs_status", "200").inc()
    return web.Response(body=data, content_type="application/json", headers=door.info_headers(rid, None))
