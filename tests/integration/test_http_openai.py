"""The HTTP door as the official ``openai`` SDK sees it: sync, async, streaming and errors."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.conftest import ALL, Mesh, MeshFactory
from tests.http_strict import strict

POOR = """
[tenants.poor]
daily_budget_usd = 0.000001
"""


def door_url(mesh: Mesh) -> str:
    return next(r.url for r in mesh.running if r.name == "http")


async def door(mesh_factory: MeshFactory, extra_toml: str = "") -> tuple[Mesh, str]:
    mesh = await mesh_factory(services=[*ALL, "http"], extra_toml=extra_toml)
    return mesh, door_url(mesh)


def sync_client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, _strict_response_validation=True)


def async_client(url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, _strict_response_validation=True)


async def test_async_completion_is_a_strict_chat_completion_with_our_block(mesh_factory: MeshFactory) -> None:
    mesh, url = await door(mesh_factory)
    client = async_client(url, mesh.dev_key)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello door"}],
        extra_headers={"x-request-id": "rq-1"},
    )
    assert raw.status_code == 200
    assert raw.headers["x-request-id"] == "rq-1"
    assert raw.headers["x-lockgate-deployment"] == "sim-gpt"
    data = json.loads(raw.content)
    completion = strict(ChatCompletion, data)
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert data["lockgate"]["request_id"] == "rq-1"
    parsed = raw.parse()  # the SDK's own parsing works
    assert parsed.choices[0].message.content == completion.choices[0].message.content
    await client.close()


async def test_sync_client_completion_and_models(mesh_factory: MeshFactory) -> None:
    import asyncio  # noqa: PLC0415

    mesh, url = await door(mesh_factory)

    def use_sync() -> tuple[str, list[str]]:
        with sync_client(url, mesh.dev_key) as client:
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
            models = client.models.list()
            for m in models.data:
                strict(Model, m.model_dump())
            return reply.choices[0].message.content or "", [m.id for m in models.data]

    content, ids = await asyncio.to_thread(use_sync)
    assert content
    assert "gpt-4o-mini" in ids


async def test_stream_chunks_are_strict_and_end_with_usage_and_done(mesh_factory: MeshFactory) -> None:
    mesh, url = await door(mesh_factory)
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {mesh.dev_key}"}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = await resp.text()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [strict(ChatCompletionChunk, json.loads(e[6:])) for e in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


async def test_sdk_streaming_sync_and_async(mesh_factory: MeshFactory) -> None:
    import asyncio  # noqa: PLC0415

    mesh, url = await door(mesh_factory)
    client = async_client(url, mesh.dev_key)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream please"}], stream=True
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts)
    await client.close()

    def use_sync() -> str:
        with sync_client(url, mesh.dev_key) as sc:
            out = sc.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream"}], stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in out if c.choices)

    assert await asyncio.to_thread(use_sync)


@pytest.mark.parametrize(
    ("case", "exc", "status"),
    [
        ("bad_key", openai.AuthenticationError, 401),
        ("unknown_model", openai.NotFoundError, 404),
        ("bad_body", openai.BadRequestError, 400),
        ("forbidden", openai.PermissionDeniedError, 403),
        ("dead", openai.InternalServerError, 503),
    ],
)
async def test_errors_raise_the_sdks_own_classes(
    mesh_factory: MeshFactory, case: str, exc: type[openai.APIStatusError], status: int
) -> None:
    mesh, url = await door(mesh_factory)
    key = {"bad_key": "lg-wrong", "forbidden": await mesh.add_key("acme", ["cheap"])}.get(case, mesh.dev_key)
    model = {"unknown_model": "no-such-model", "forbidden": "claude-3-5-haiku", "dead": "dead-gpt"}.get(
        case, "gpt-4o-mini"
    )
    messages: list[dict[str, str]] = [] if case == "bad_body" else [{"role": "user", "content": "x"}]
    client = async_client(url, key)
    with pytest.raises(exc) as info:
        await client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    await client.close()
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}  # the SDK hands us the `error` object
    assert info.value.response.headers["x-request-id"]


async def test_budget_refusal_is_429_with_retry_after(mesh_factory: MeshFactory) -> None:
    mesh, url = await door(mesh_factory, POOR)
    key = await mesh.add_key("poor", ["*"])
    client = async_client(url, key)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "pricey"}])
    await client.close()
    h = info.value.response.headers
    assert int(h["Retry-After"]) >= 1
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert info.value.code == "insufficient_quota"


@pytest.mark.parametrize("over", ["guard_limit", "door_limit"])
async def test_oversized_body_is_413(mesh_factory: MeshFactory, over: str) -> None:
    """Over the guard's request limit (1 MiB by default) is 413 too, not the guard's 400."""
    mesh, url = await door(mesh_factory)
    limit = mesh.config.limits.max_request_bytes if over == "guard_limit" else mesh.config.http.max_body_bytes
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * (limit + 1)}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/chat/completions", json=big, headers={"Authorization": f"Bearer {mesh.dev_key}"}) as resp,
    ):
        assert resp.status == 413
        data = await resp.json()
    assert data["error"]["type"] == "invalid_request_error"
    assert str(mesh.config.limits.max_request_bytes) in data["error"]["message"]


async def test_healthz_and_metrics(mesh_factory: MeshFactory) -> None:
    mesh, url = await door(mesh_factory)
    client = async_client(url, mesh.dev_key)
    await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "count me"}])
    await client.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    assert 'lockgate_http_requests_total{endpoint="chat_completions",status="200"} 1.0' in text
    assert "lockgate_http_request_seconds_bucket" in text


async def test_client_leaving_mid_stream_cancels_the_provider_call_and_is_audited(mesh_factory: MeshFactory) -> None:
    from tests.integration.test_mesh_audit import audit_records  # noqa: PLC0415

    mesh, url = await door(mesh_factory)
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "a long story [sim:chunk_delay=150]"}],
    }
    headers = {"Authorization": f"Bearer {mesh.dev_key}", "x-request-id": "leaver-1"}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        assert resp.status == 200
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        resp.close()  # the client leaves after the first chunk; the stream would run for seconds more
    records = await audit_records(mesh, 1)
    [(subject, rec)] = [(s, r) for s, r in records if r.request_id == "leaver-1"]
    assert subject == mesh.names.audit("dev", "failed")
    assert rec.error_stage == "executor"
    assert "client went away" in rec.error_message
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as m:
        assert "lockgate_http_client_disconnects_total 1.0" in await m.text()


async def test_idempotency_key_header_reaches_the_executor(mesh_factory: MeshFactory) -> None:
    """A retried POST with the same Idempotency-Key gets the first answer, not a second provider call."""
    mesh, url = await door(mesh_factory)
    client = async_client(url, mesh.dev_key)
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "charge the card once"}]}
    key = {"Idempotency-Key": f"order-{mesh.names.namespace}"}
    first = await client.chat.completions.with_raw_response.create(**ask, extra_headers=key)  # type: ignore[call-overload]
    again = await client.chat.completions.with_raw_response.create(**ask, extra_headers=key)  # type: ignore[call-overload]
    other = await client.chat.completions.with_raw_response.create(**ask)  # type: ignore[call-overload]
    first_data, again_data, other_data = (json.loads(r.content) for r in (first, again, other))
    assert again_data["choices"][0]["message"]["content"] == first_data["choices"][0]["message"]["content"]
    assert [a["outcome"] for a in again_data["lockgate"]["attempts"]] == ["idempotent_replay"]
    assert [a["outcome"] for a in other_data["lockgate"]["attempts"]] == ["ok"]  # no key: a call of its own
    await client.close()


async def test_timeout_header_sets_the_deadline_and_a_bad_one_is_400(mesh_factory: MeshFactory) -> None:
    mesh, url = await door(mesh_factory)
    hdr = {"Authorization": f"Bearer {mesh.dev_key}", "x-lockgate-timeout-ms": "700"}
    hang = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "wait [sim:hang]"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/chat/completions", json=hang, headers=hdr) as resp:
            assert resp.status == 504  # the request's own 0.7 s deadline, not the door's 60 s default
            assert (await resp.json())["error"]["code"] == "deadline_exceeded"
        for bad in ("soon", "0", "-5", str(10**12)):
            async with http.post(
                f"{url}/v1/chat/completions", json=hang, headers={**hdr, "x-lockgate-timeout-ms": bad}
            ) as resp:
                assert resp.status == 400, bad
                body = await resp.json()
                assert body["error"]["code"] == "invalid_request"
                assert "x-lockgate-timeout-ms" in body["error"]["message"]
