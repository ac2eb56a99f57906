"""Background jobs over NATS: submit, run through the guard, retry, dead-letter, survive a killed worker."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import msgspec
import pytest
from nats.aio.msg import Msg

from services import host
from shared import config as cfgmod
from shared import errors, jetstream, keys
from shared.schemas.chat import ChatRequest, Message
from shared.schemas.jobs import JobItem, JobStatus, JobSubmit
from tests.conftest import ALL, Mesh, MeshFactory

FAST_RETRIES = """
[jobs]
ack_wait_s = 2.0
backoff_base_ms = 50
backoff_max_ms = 200
max_deliver = 3
"""


def ask(text: str, model: str = "gpt-4o-mini") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content=text)])


async def announcements(mesh: Mesh, job_id: str) -> tuple[list[JobItem], asyncio.Queue[JobItem]]:
    seen: list[JobItem] = []
    queue: asyncio.Queue[JobItem] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        item = msgspec.json.decode(msg.data, type=JobItem)
        seen.append(item)
        queue.put_nowait(item)

    await mesh.client.nc.subscribe(mesh.names.jobs_done(job_id), cb=on_msg)
    return seen, queue


async def wait_done(mesh: Mesh, job_id: str, timeout_s: float = 20.0) -> JobStatus:
    async with asyncio.timeout(timeout_s):
        while True:
            status = await mesh.client.job_status(job_id)
            if status.state in ("completed", "failed"):
                return status
            await asyncio.sleep(0.1)


async def test_a_job_returns_an_id_at_once_and_its_results_later(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(services=[*ALL, "jobs"])
    accepted = await mesh.client.submit_job(JobSubmit(requests=[ask(f"job item {i}") for i in range(3)]))
    assert accepted.job_id.startswith("job_")
    assert accepted.total == 3
    seen, queue = await announcements(mesh, accepted.job_id)
    status = await wait_done(mesh, accepted.job_id)
    assert status.state == "completed"
    assert (status.completed, status.failed) == (3, 0)
    assert sorted(i.index for i in status.items) == [0, 1, 2]
    for item in status.items:
        assert item.response is not None
        assert item.response.choices[0].message.content
    async with asyncio.timeout(5):
        while len(seen) < 3:
            await queue.get()
    assert sorted(i.index for i in seen) == [0, 1, 2]
    # The job's own key: the submitter's tenant, expiring with the job's results (not a key for ever).
    bucket = await jetstream.ensure_bucket(mesh.client.nc.jetstream(), mesh.names.keys_bucket)
    [job_key] = [p for _, p in await keys.list_keys(bucket) if p.key_id.endswith("/" + accepted.job_id)]
    assert job_key.tenant == "dev"
    ttl_ms = cfgmod.LockgateConfig().jobs.result_ttl_s * 1000
    assert job_key.expires_ms == job_key.created_ms + ttl_ms


async def test_a_job_is_refused_at_submit_when_an_item_is_invalid(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(services=[*ALL, "jobs"])
    bad = ChatRequest(messages=[])
    with pytest.raises(errors.InvalidRequest) as info:
        await mesh.client.submit_job(JobSubmit(requests=[ask("fine"), bad]))
    assert "requests[1]" in info.value.message


async def test_status_of_an_unknown_or_another_tenants_job_is_not_found(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(services=[*ALL, "jobs"])
    accepted = await mesh.client.submit_job(JobSubmit(requests=[ask("mine")]))
    with pytest.raises(errors.NotFound):
        await mesh.client.job_status("job_nope")
    other = await mesh.add_key("acme", ["*"])
    from shared.client import LockgateClient  # noqa: PLC0415

    with pytest.raises(errors.NotFound):
        await LockgateClient(mesh.client.nc, other, names=mesh.names).job_status(accepted.job_id)


async def test_transient_failures_are_retried_then_dead_lettered(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(services=[*ALL, "jobs"], extra_toml=FAST_RETRIES)
    accepted = await mesh.client.submit_job(JobSubmit(requests=[ask("doomed", model="dead-gpt"), ask("fine")]))
    seen, _ = await announcements(mesh, accepted.job_id)
    status = await wait_done(mesh, accepted.job_id)
    assert status.state == "failed"
    assert (status.completed, status.failed) == (1, 1)
    dead = next(i for i in status.items if i.index == 0)
    assert dead.state == "failed"
    assert dead.deliveries == 3  # max_deliver
    assert dead.error is not None
    assert dead.error.type == "upstream_unavailable"
    info = await mesh.nc.jetstream().stream_info(mesh.names.jobs_dead_stream)
    assert info.state.messages == 1
    jobs_info = await mesh.nc.jetstream().stream_info(mesh.names.jobs_stream)
    assert jobs_info.state.messages == 0  # the work queue is empty: everything acked or terminated
    await asyncio.sleep(0.2)
    assert sorted(i.index for i in seen) == [0, 1]  # each item announced once


@pytest.mark.slow
async def test_a_worker_killed_mid_job_loses_nothing(mesh_factory: MeshFactory, tmp_path: Path) -> None:
    mesh = await mesh_factory(services=ALL, extra_toml=FAST_RETRIES)  # no in-process worker yet
    config_file = tmp_path / "lockgate.toml"
    config_file.write_bytes(cfgmod.encode(mesh.config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", "jobs", "--nats", mesh.url, "--config", str(config_file),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        accepted = await mesh.client.submit_job(JobSubmit(requests=[ask("slow one [sim:latency=3000]")]))
        seen, _ = await announcements(mesh, accepted.job_id)
        js = mesh.nc.jetstream()
        durable = mesh.names.consumer("jobs", "work")
        async with asyncio.timeout(15):  # the worker process has taken the item (a 3 s provider call)
            while True:
                try:
                    if (await js.consumer_info(mesh.names.jobs_stream, durable)).num_ack_pending == 1:
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)  # the worker we started, by its PID
        await proc.wait()
    assert (await mesh.client.job_status(accepted.job_id)).state == "queued"
    mesh.running += await host.start(mesh.nc, mesh.config, ["jobs"])  # a new worker takes over
    status = await wait_done(mesh, accepted.job_id)
    assert status.state == "completed"
    assert status.items[0].deliveries == 2  # redelivered once after the kill
    await asyncio.sleep(0.2)
    assert len(seen) == 1  # finished and announced once


async def test_jobs_over_http_accept_jsonl_and_report_results(mesh_factory: MeshFactory) -> None:
    import json  # noqa: PLC0415

    import aiohttp  # noqa: PLC0415

    mesh = await mesh_factory(services=[*ALL, "jobs", "http"])
    url = next(r.url for r in mesh.running if r.name == "http")
    lines = [
        json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "line one"}]}),
        json.dumps({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"messages": [{"role": "user", "content": "line two"}]}}),
    ]  # fmt: skip
    auth = {"Authorization": f"Bearer {mesh.dev_key}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.post(f"{url}/v1/jobs", data="\n".join(lines) + "\n") as resp:
            assert resp.status == 202
            accepted = await resp.json()
        assert accepted["total"] == 2
        async with http.get(f"{url}/v1/jobs/job_unknown") as resp:
            assert resp.status == 404
        states = []
        for _ in range(200):
            async with http.get(f"{url}/v1/jobs/{accepted['job_id']}") as resp:
                assert resp.status == 200
                status = await resp.json()
            states.append(status["state"])
            if status["state"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)
    assert states[-1] == "completed"
    assert [i["index"] for i in sorted(status["items"], key=lambda i: i["index"])] == [0, 1]
