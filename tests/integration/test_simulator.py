"""The simulated provider driven over HTTP by the real openai and anthropic SDKs."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import jsonschema
import openai
import pytest
import pytest_asyncio
from anthropic.types import (
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from services.simulator import FaultConfig, SimulatorConfig, SimulatorServer

REPO = Path(__file__).resolve().parents[2]
KEY = {"Authorization": "Bearer sk-test"}
PROFILES = {
    "slow": FaultConfig(latency_ms=150),
    "flaky": FaultConfig(status=503, retry_after_s=1),
}


def estimate(*texts: str) -> int:
    """The documented prompt estimate: ceil(chars / 4) + 3 per message."""
    return sum(math.ceil(len(t) / 4) + 3 for t in texts)


def user(content: str) -> list[Any]:
    return [{"role": "user", "content": content}]


@pytest_asyncio.fixture(scope="module")
async def sim() -> AsyncIterator[SimulatorServer]:
    server = SimulatorServer(SimulatorConfig(profiles=PROFILES))
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module")
async def oai(sim: SimulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0)
    yield client
    await client.close()


@pytest_asyncio.fixture(scope="module")
async def ant(sim: SimulatorServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=sim.url, api_key="sk-test", max_retries=0)
    yield client
    await client.close()


@pytest_asyncio.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body."""
    out: list[tuple[str | None, str]] = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((name, "\n".join(data)))
    return out


# ----------------------------------------------------------------------------- OpenAI


async def test_openai_completion(oai: openai.AsyncOpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    r = await oai.chat.completions.create(model="gpt-sim", messages=messages)  # type: ignore[arg-type]
    ChatCompletion.model_validate(r.model_dump())
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == "gpt-sim"
    assert r.created > 1_600_000_000
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    content = choice.message.content or ""
    assert content.startswith("Simulated reply: ")
    assert len(content.split(" ")) == 14
    assert r.usage is not None
    assert r.usage.prompt_tokens == estimate("Be brief.", "Hello there")
    assert r.usage.completion_tokens == 14
    assert r.usage.total_tokens == r.usage.prompt_tokens + 14


async def test_openai_stream_matches_completion(oai: openai.AsyncOpenAI) -> None:
    msgs: Any = user("stream me")
    full = await oai.chat.completions.create(model="gpt-sim", messages=msgs)
    stream = await oai.chat.completions.create(
        model="gpt-sim", messages=msgs, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert all(isinstance(c, ChatCompletionChunk) and c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1])
    assert len(finishes) > 5  # really split into several chunks
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == {
        "prompt_tokens": estimate("stream me"),
        "completion_tokens": 14,
        "total_tokens": estimate("stream me") + 14,
    }


async def test_openai_raw_stream_validates_and_ends_with_done(
    sim: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    body = {"model": "m", "messages": user("raw"), "stream": True}
    async with http.post(sim.url + "/v1/chat/completions", json=body, headers=KEY) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.text()
    events = sse_events(raw)
    assert events[-1] == (None, "[DONE]")
    chunks = [ChatCompletionChunk.model_validate(json.loads(data)) for _, data in events[:-1]]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # no usage chunk without stream_options.include_usage


async def test_openai_determinism(oai: openai.AsyncOpenAI) -> None:
    async def ask(model: str, content: str) -> str:
        r = await oai.chat.completions.create(model=model, messages=user(content))
        return r.choices[0].message.content or ""

    a, b = await ask("m", "same question"), await ask("m", "same question")
    assert a == b
    assert await ask("m", "another question") != a
    assert await ask("other-model", "same question") != a


async def test_openai_max_tokens_cut(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="m", messages=user("cut"), max_tokens=3)
    content = r.choices[0].message.content or ""
    assert r.choices[0].finish_reason == "length"
    assert content.startswith("Simulated reply: ")
    assert len(content.split(" ")) == 3
    assert r.usage is not None
    assert r.usage.completion_tokens == 3
    stream = await oai.chat.completions.create(model="m", messages=user("cut"), max_completion_tokens=4, stream=True)
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks).count(" ") == 3
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_openai_json_object(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="m", messages=user("json"), response_format={"type": "json_object"})
    doc = json.loads(r.choices[0].message.content or "")
    assert isinstance(doc, dict)
    assert doc["answer"].startswith("Simulated reply: ")


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "email": {"type": "string", "format": "email"},
        "role": {"enum": ["admin", "user"]},
        "scores": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 3},
        "address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
        "active": {"type": "boolean"},
        "nothing": {"type": "null"},
        "version": {"const": 2},
    },
    "required": ["name", "age", "email", "role", "scores", "address", "active", "nothing", "version"],
    "additionalProperties": False,
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "string", "maxLength": 5}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        }
    },
}


def schema_format(schema: dict[str, Any]) -> Any:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


async def test_openai_json_schema(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="m", messages=user("person"), response_format=schema_format(PERSON))
    doc = json.loads(r.choices[0].message.content or "")
    jsonschema.Draft202012Validator(PERSON).validate(doc)
    assert len(doc["scores"]) >= 3
    assert doc["address"] is not None  # first anyOf branch


async def test_openai_json_schema_stream(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="m", messages=user("person"), response_format=schema_format(PERSON), stream=True
    )
    content = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    jsonschema.Draft202012Validator(PERSON).validate(json.loads(content))


async def test_openai_bad_json_and_schema_violation(oai: openai.AsyncOpenAI) -> None:
    fmt = schema_format(PERSON)
    bad = await oai.chat.completions.create(model="m", messages=user("x [sim:output=bad-json]"), response_format=fmt)
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad.choices[0].message.content or "")
    viol = await oai.chat.completions.create(
        model="m", messages=user("x"), response_format=fmt, extra_headers={"x-sim-fault": "output=schema-violation"}
    )
    doc = json.loads(viol.choices[0].message.content or "")
    assert not jsonschema.Draft202012Validator(PERSON).is_valid(doc)
    obj = await oai.chat.completions.create(
        model="m", messages=user("x [sim:output=schema-violation]"), response_format={"type": "json_object"}
    )
    assert not isinstance(json.loads(obj.choices[0].message.content or ""), dict)


async def test_openai_unusable_schema_falls_back(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="m", messages=user("x"), response_format=schema_format({"type": "string", "minLength": 10**9})
    )
    assert json.loads(r.choices[0].message.content or "")["answer"].startswith("Simulated reply")


async def test_models_and_health(oai: openai.AsyncOpenAI, sim: SimulatorServer, http: aiohttp.ClientSession) -> None:
    models = [m.id async for m in oai.models.list()]
    assert models == ["sim-gpt", "sim-claude"]
    async with http.get(sim.url + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


# ----------------------------------------------------------------------------- Anthropic


async def test_anthropic_message(ant: anthropic.AsyncAnthropic) -> None:
    m = await ant.messages.create(
        model="claude-sim", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Hi"}]
    )
    Message.model_validate(m.model_dump())
    assert m.id.startswith("msg_")
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.model == "claude-sim"
    assert m.stop_reason == "end_turn"
    assert m.content[0].type == "text"
    text = m.content[0].text
    assert text.startswith("Simulated reply: ")
    assert m.usage.input_tokens == estimate("Hi", "Be brief.")
    assert m.usage.output_tokens == len(text.split(" ")) == 14


async def test_anthropic_stream(ant: anthropic.AsyncAnthropic) -> None:
    msgs: Any = [{"role": "user", "content": [{"type": "text", "text": "stream please"}]}]
    full = await ant.messages.create(model="c", max_tokens=100, messages=msgs)
    stream = await ant.messages.create(model="c", max_tokens=100, messages=msgs, stream=True)
    events = [e async for e in stream]
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [e for e in events if isinstance(e, RawContentBlockDeltaEvent)]
    assert len(deltas) == 14
    text = "".join(d.delta.text for d in deltas if d.delta.type == "text_delta")
    assert full.content[0].type == "text"
    assert text == full.content[0].text
    delta = events[-2]
    assert isinstance(delta, RawMessageDeltaEvent)
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == 14
    start = events[0]
    assert isinstance(start, RawMessageStartEvent)
    assert start.message.usage.input_tokens == estimate("stream please")


async def test_anthropic_stream_helper_final_message(ant: anthropic.AsyncAnthropic) -> None:
    async with ant.messages.stream(model="c", max_tokens=4, messages=user("helper")) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text.startswith("Simulated reply: ")
    assert len(text.split(" ")) == 4
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 4
    assert final.usage.input_tokens == estimate("helper")


async def test_anthropic_raw_stream_events_validate(sim: SimulatorServer, http: aiohttp.ClientSession) -> None:
    body = {"model": "c", "max_tokens": 50, "messages": user("raw"), "stream": True}
    async with http.post(sim.url + "/v1/messages", json=body, headers={"x-api-key": "k"}) as resp:
        assert resp.status == 200
        raw = await resp.text()
    kinds: dict[str, Any] = {
        "message_start": RawMessageStartEvent,
        "content_block_start": RawContentBlockStartEvent,
        "content_block_delta": RawContentBlockDeltaEvent,
        "content_block_stop": RawContentBlockStopEvent,
        "message_delta": RawMessageDeltaEvent,
        "message_stop": RawMessageStopEvent,
    }
    names = []
    for name, data in sse_events(raw):
        assert name is not None
        payload = json.loads(data)
        assert payload["type"] == name
        names.append(name)
        if name != "ping":
            kinds[name].model_validate(payload)
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names.count("content_block_delta") == 14


async def test_anthropic_determinism_and_bearer_auth(ant: anthropic.AsyncAnthropic, sim: SimulatorServer) -> None:
    a = await ant.messages.create(model="c", max_tokens=50, messages=user("same"))
    b = await ant.messages.create(model="c", max_tokens=50, messages=user("same"))
    c = await ant.messages.create(model="c", max_tokens=50, messages=user("different"))
    assert a.content == b.content
    assert a.content != c.content
    assert a.id != b.id
    bearer = anthropic.AsyncAnthropic(base_url=sim.url, auth_token="tok", max_retries=0)
    try:
        d = await bearer.messages.create(model="c", max_tokens=50, messages=user("same"))
    finally:
        await bearer.close()
    assert d.content == a.content


# ----------------------------------------------------------------------------- faults


async def test_latency_fault(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    t0 = time.perf_counter()
    await oai.chat.completions.create(model="m", messages=user("x"), extra_headers={"x-sim-fault": "latency=200"})
    assert time.perf_counter() - t0 >= 0.2
    t0 = time.perf_counter()
    await ant.messages.create(model="c", max_tokens=5, messages=user("x [sim:latency=150]"))
    assert time.perf_counter() - t0 >= 0.15


async def test_rate_limit_fault(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(openai.RateLimitError) as oexc:
        await oai.chat.completions.create(model="m", messages=user("hi [sim:status=429,retry_after=2]"))
    assert oexc.value.status_code == 429
    assert oexc.value.response.headers["retry-after"] == "2"
    assert oexc.value.response.headers["retry-after-ms"] == "2000"
    assert isinstance(oexc.value.body, dict)
    assert oexc.value.body["type"] == "rate_limit_error"
    with pytest.raises(anthropic.RateLimitError) as aexc:
        await ant.messages.create(
            model="c", max_tokens=5, messages=user("hi"), extra_headers={"x-sim-fault": "status=429,retry_after=0.5"}
        )
    assert aexc.value.response.headers["retry-after"] == "1"
    assert aexc.value.response.headers["retry-after-ms"] == "500"
    assert aexc.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Simulated fault: HTTP 429"},
    }


async def test_server_error_faults(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    for status in (500, 503):
        with pytest.raises(openai.InternalServerError) as oexc:
            await oai.chat.completions.create(model="m", messages=user(f"x [sim:status={status}]"))
        assert oexc.value.status_code == status
        assert isinstance(oexc.value.body, dict)
        assert oexc.value.body["type"] == "server_error"
        with pytest.raises(anthropic.InternalServerError) as aexc:
            await ant.messages.create(model="c", max_tokens=5, messages=user(f"x [sim:status={status}]"))
        assert aexc.value.status_code == status
        assert "retry-after" not in aexc.value.response.headers
    with pytest.raises(anthropic.OverloadedError) as over:
        await ant.messages.create(model="c", max_tokens=5, messages=user("x [sim:status=529]"))
    assert isinstance(over.value.body, dict)
    assert over.value.body["error"]["type"] == "overloaded_error"


async def test_stream_request_gets_error_status(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(model="m", messages=user("x [sim:status=429]"), stream=True)


async def test_hang_fault_times_out_and_server_recovers(
    sim: SimulatorServer, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(openai.APITimeoutError):
        await oai.with_options(timeout=0.3).chat.completions.create(model="m", messages=user("x [sim:hang]"))
    with pytest.raises(anthropic.APITimeoutError):
        await ant.with_options(timeout=0.3).messages.create(
            model="c", max_tokens=5, messages=user("x"), extra_headers={"x-sim-fault": "hang"}
        )
    for _ in range(100):  # the server notices the disconnects and releases the handlers
        if sim.stats["hanging"] == 0:
            break
        await asyncio.sleep(0.01)
    assert sim.stats["hanging"] == 0
    r = await oai.chat.completions.create(model="m", messages=user("still alive?"))
    assert (r.choices[0].message.content or "").startswith("Simulated reply")


async def test_malformed_fault(
    sim: SimulatorServer, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic, http: aiohttp.ClientSession
) -> None:
    with pytest.raises((json.JSONDecodeError, openai.APIError)):
        await oai.chat.completions.create(model="m", messages=user("x [sim:malformed]"))
    with pytest.raises((json.JSONDecodeError, anthropic.APIError)):
        await ant.messages.create(model="c", max_tokens=5, messages=user("x [sim:malformed]"))

    async def drain_openai() -> None:
        stream = await oai.chat.completions.create(model="m", messages=user("x [sim:malformed]"), stream=True)
        _ = [c async for c in stream]

    async def drain_anthropic() -> None:
        stream = await ant.messages.create(model="c", max_tokens=5, messages=user("x [sim:malformed]"), stream=True)
        _ = [e async for e in stream]

    with pytest.raises((json.JSONDecodeError, openai.APIError)):
        await drain_openai()
    with pytest.raises((json.JSONDecodeError, anthropic.APIError)):
        await drain_anthropic()
    async with http.post(
        sim.url + "/v1/chat/completions", json={"model": "m", "messages": user("x [sim:malformed]")}, headers=KEY
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        raw = await resp.read()
    assert raw.startswith(b'{"id":"chatcmpl-')
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)


async def test_chunk_delay(oai: openai.AsyncOpenAI) -> None:
    t0 = time.perf_counter()
    stream = await oai.chat.completions.create(
        model="m", messages=user("slow stream [sim:chunk_delay=15]"), stream=True, max_tokens=5
    )
    chunks = [c async for c in stream]
    elapsed = time.perf_counter() - t0
    # role chunk + 5 content chunks + finish chunk + [DONE]: 7 gaps of 15 ms
    assert elapsed >= 7 * 0.015
    assert "".join(c.choices[0].delta.content or "" for c in chunks).count(" ") == 4


async def test_fault_sources_precedence(oai: openai.AsyncOpenAI, sim: SimulatorServer) -> None:
    flaky = oai.with_options(base_url=sim.url + "/p/flaky/v1")
    with pytest.raises(openai.InternalServerError) as exc:  # the profile alone
        await flaky.chat.completions.create(model="m", messages=user("x"))
    assert exc.value.status_code == 503
    assert exc.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.RateLimitError):  # header overrides the profile
        await flaky.chat.completions.create(model="m", messages=user("x"), extra_headers={"x-sim-fault": "status=429"})
    r = await flaky.chat.completions.create(  # the directive overrides the header
        model="m", messages=user("x [sim:status=0]"), extra_headers={"x-sim-fault": "status=429"}
    )
    assert r.choices[0].finish_reason == "stop"
    # only the LAST user message's directive counts
    history: Any = [
        {"role": "user", "content": "old [sim:status=500]"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "new"},
    ]
    r = await oai.chat.completions.create(model="m", messages=history)
    assert r.choices[0].finish_reason == "stop"


async def test_profiles(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic, sim: SimulatorServer) -> None:
    slow = oai.with_options(base_url=sim.url + "/p/slow/v1")
    t0 = time.perf_counter()
    await slow.chat.completions.create(model="m", messages=user("x"))
    assert time.perf_counter() - t0 >= 0.15
    with pytest.raises(openai.NotFoundError) as oexc:
        await oai.with_options(base_url=sim.url + "/p/nope/v1").chat.completions.create(model="m", messages=user("x"))
    assert "nope" in str(oexc.value)
    with pytest.raises(anthropic.NotFoundError) as aexc:
        await ant.with_options(base_url=sim.url + "/p/nope").messages.create(
            model="c", max_tokens=5, messages=user("x")
        )
    assert isinstance(aexc.value.body, dict)
    assert aexc.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.InternalServerError):
        await ant.with_options(base_url=sim.url + "/p/flaky").messages.create(
            model="c", max_tokens=5, messages=user("x")
        )


async def test_bad_fault_spec(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as oexc:
        await oai.chat.completions.create(model="m", messages=user("x"), extra_headers={"x-sim-fault": "latency=soon"})
    assert "latency" in str(oexc.value)
    with pytest.raises(anthropic.BadRequestError) as aexc:
        await ant.messages.create(model="c", max_tokens=5, messages=user("x [sim:explode]"))
    assert "explode" in str(aexc.value)
    with pytest.raises(openai.BadRequestError, match="unterminated"):
        await oai.chat.completions.create(model="m", messages=user("x [sim:hang"))


# ----------------------------------------------------------------------------- bad requests


OPENAI_BAD = [
    b"{not json",
    b"",
    b"[]",
    b"null",
    b'{"messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "m"}',
    b'{"model": "m", "messages": []}',
    b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "m", "messages": "hello"}',
    b'{"model": "m", "messages": [{"content": "x"}]}',
    b'{"model": "m", "messages": [{"role": "user", "content": 7}]}',
    b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
    b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
    b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}',
    b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}',
    b'{"model": "m", "messages": [{"role": "user", "content": [5]}]}',
]
ANTHROPIC_BAD = [
    b"{not json",
    b'{"model": "c", "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "c", "max_tokens": 5, "messages": []}',
    b'{"model": "c", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}',
    b'{"model": "c", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}',
    b'{"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "c", "max_tokens": 5, "messages": [{"role": "user"}]}',
]


@pytest.mark.parametrize("body", OPENAI_BAD)
async def test_openai_bad_requests(sim: SimulatorServer, http: aiohttp.ClientSession, body: bytes) -> None:
    headers = {**KEY, "Content-Type": "application/json"}
    async with http.post(sim.url + "/v1/chat/completions", data=body, headers=headers) as resp:
        assert resp.status == 400
        doc = await resp.json()
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["message"]
    assert set(doc["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("body", ANTHROPIC_BAD)
async def test_anthropic_bad_requests(sim: SimulatorServer, http: aiohttp.ClientSession, body: bytes) -> None:
    headers = {"x-api-key": "k", "Content-Type": "application/json"}
    async with http.post(sim.url + "/v1/messages", data=body, headers=headers) as resp:
        assert resp.status == 400
        doc = await resp.json()
    assert doc["type"] == "error"
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["message"]


async def test_missing_api_key(sim: SimulatorServer, http: aiohttp.ClientSession) -> None:
    ok_body = {"model": "m", "max_tokens": 5, "messages": user("x")}
    async with http.post(sim.url + "/v1/chat/completions", json=ok_body) as resp:
        assert resp.status == 401
        doc = await resp.json()
        assert doc["error"]["code"] == "invalid_api_key"
    async with http.post(sim.url + "/v1/chat/completions", json=ok_body, headers={"Authorization": "Bearer "}) as resp:
        assert resp.status == 401
    async with http.post(sim.url + "/v1/messages", json=ok_body) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["type"] == "authentication_error"
    async with http.post(sim.url + "/v1/messages", json=ok_body, headers=KEY) as resp:
        assert resp.status == 200
    async with http.get(sim.url + "/v1/models") as resp:
        assert resp.status == 401


async def test_unknown_route_is_json_404(sim: SimulatorServer, http: aiohttp.ClientSession) -> None:
    async with http.get(sim.url + "/v2/whatever") as resp:
        assert resp.status == 404
        assert "Unknown simulator route" in (await resp.json())["error"]["message"]


# ----------------------------------------------------------------------------- stats, lifecycle


async def test_stats_and_reset() -> None:
    async with SimulatorServer(SimulatorConfig(profiles={"flaky": FaultConfig(status=500)})) as own:
        client = openai.AsyncOpenAI(base_url=own.url + "/v1", api_key="k", max_retries=0)
        ant = anthropic.AsyncAnthropic(base_url=own.url, api_key="k", max_retries=0)
        try:
            await client.chat.completions.create(model="m", messages=user("a"))
            await ant.messages.create(model="c", max_tokens=5, messages=user("b [sim:latency=1]"))
            with pytest.raises(openai.InternalServerError):
                await client.with_options(base_url=own.url + "/p/flaky/v1").chat.completions.create(
                    model="m", messages=user("c")
                )
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(model="m", messages=user("[sim:nope]"))
        finally:
            await client.close()
            await ant.close()
        stats = own.stats
        assert stats["requests"] == 4
        assert stats["by_endpoint"] == {"chat.completions": 3, "messages": 1}
        assert stats["by_profile"] == {"default": 3, "flaky": 1}
        assert stats["successes"] == 2
        assert stats["client_errors"] == 1
        assert stats["faulted"] == 2
        assert stats["faults"] == {"latency": 1, "status": 1}
        async with aiohttp.ClientSession() as http:
            async with http.get(own.url + "/_sim/stats") as resp:
                assert await resp.json() == stats
            async with http.post(own.url + "/_sim/reset") as resp:
                assert resp.status == 200
            async with http.get(own.url + "/_sim/stats") as resp:
                zero = await resp.json()
        assert zero["requests"] == 0
        assert zero["by_endpoint"] == {}
        assert zero["faults"] == {}
        assert own.stats == zero


async def test_error_rate_is_seeded() -> None:
    async def failures(seed: int) -> list[bool]:
        cfg = SimulatorConfig(seed=seed, default=FaultConfig(status=503, error_rate=0.5))
        async with SimulatorServer(cfg) as own:
            client = openai.AsyncOpenAI(base_url=own.url + "/v1", api_key="k", max_retries=0)
            out = []
            try:
                for _ in range(30):
                    try:
                        await client.chat.completions.create(model="m", messages=user("x"))
                        out.append(False)
                    except openai.InternalServerError:
                        out.append(True)
            finally:
                await client.close()
        return out

    first = await failures(3)
    assert 5 <= sum(first) <= 25
    assert await failures(3) == first


async def test_stop_releases_hanging_requests_quickly() -> None:
    own = SimulatorServer(SimulatorConfig(default=FaultConfig(hang=True)))
    url = await own.start()
    async with aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(
            http.post(url + "/v1/chat/completions", json={"model": "m", "messages": user("x")}, headers=KEY)
        )
        for _ in range(100):
            if own.stats["hanging"]:
                break
            await asyncio.sleep(0.01)
        assert own.stats["hanging"] == 1
        t0 = time.perf_counter()
        await own.stop()
        assert time.perf_counter() - t0 < 1.0
        with pytest.raises(aiohttp.ClientError):
            await pending
    with pytest.raises(RuntimeError):
        _ = own.url


async def test_binds_the_configured_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with SimulatorServer(SimulatorConfig(port=port)) as own:
        assert own.url == f"http://127.0.0.1:{port}"
        with pytest.raises(OSError, match="in use"):
            await SimulatorServer(SimulatorConfig(port=port)).start()
        async with aiohttp.ClientSession() as http, http.get(own.url + "/healthz") as resp:
            assert resp.status == 200


async def test_standalone_main() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.simulator",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("simulator http://127.0.0.1:")
        url = line.split()[1]
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
