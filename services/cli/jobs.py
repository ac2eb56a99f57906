"""`lockgate jobs submit FILE.jsonl`: queue a batch, show progress, write the results as JSONL."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.http.jobs_api import parse_batch
from shared import bus
from shared.client import LockgateClient
from shared.errors import InvalidRequest, LockgateError
from shared.schemas.chat import ChatRequest
from shared.schemas.jobs import JobSubmit


def load(path: Path) -> JobSubmit:
    try:
        docs = parse_batch(path.read_bytes())
        return JobSubmit(requests=[msgspec.convert(d, ChatRequest) for d in docs])
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{path}: {exc}") from None


async def submit(nats_url: str, api_key: str, path: Path, out: Path, *, poll_s: float = 0.25) -> int:
    try:
        return await _submit(nats_url, api_key, path, out, poll_s)
    except LockgateError as exc:
        print(f"error: {exc.type}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


async def _submit(nats_url: str, api_key: str, path: Path, out: Path, poll_s: float) -> int:
    job = load(path)
    lg = await LockgateClient.connect(nats_url, api_key)
    try:
        accepted = await lg.submit_job(job)
        print(f"job {accepted.job_id}: {accepted.total} request(s) queued", flush=True)
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        ) as progress:
            task = progress.add_task(accepted.job_id, total=accepted.total)
            while True:
                status = await lg.job_status(accepted.job_id, include_results=False)
                progress.update(task, completed=status.completed + status.failed)
                if status.state in ("completed", "failed"):
                    break
                await asyncio.sleep(poll_s)
        status = await lg.job_status(accepted.job_id)
    finally:
        await lg.close()
    with out.open("wb") as f:
        for item in sorted(status.items, key=lambda i: i.index):
            f.write(bus.encode(item) + b"\n")
    print(f"{status.completed} completed, {status.failed} failed; results in {out}", flush=True)
    return 0 if status.failed == 0 else 1
