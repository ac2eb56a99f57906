"""The HTTP door as the official ``anthropic`` SDK sees it: messages, streamed events, errors."""

from __future__ import annotations

import json

import aiohttp
import anthropic
import pytest
from anthropic.types import (
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)

from tests.conftest import MeshFactory
from tests.http_strict import strict
from tests.integration.test_http_openai import door

EVENTS = {
    "message_start": RawMessageStartEvent,
    "content_block_start": RawContentBlockStartEvent,
    "content_block_delta": RawContentBlockDeltaEvent,
    "content_block_stop": RawContentBlockStopEvent,
    "message_delta": RawMessageDeltaEvent,
    "message_stop": RawMessageStopEvent,
}


def client(url: str, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0, _strict_response_validation=True)


async def test_message_is_a_strict_anthropic_message(mesh_factory: MeshFactory) -> None:
    mesh, url = await door(mesh_factory)
    c = client(url, mesh.dev_key)
    raw = await c.messages.with_raw_response.create(
        model="claude-3-5-haiku", max_tokens=64, system="Be brief.",
        messages=[{"role": "user", "content": "Hello Claude"}], extra_headers={"x-request-id": "am-1"},
    )  # fmt: skip
    assert raw.headers["x-request-id"] == "am-1"
    data = json.loads(await raw.read())
    msg = strict(Message, data)
    assert msg.content
    assert msg.content[0].type == "text"
    assert msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.output_tokens > 0
    assert data["lockgate"]["deployment"] == "sim-claude"
    assert (await raw.parse()).id == msg.id
    await c.close()


async def test_stream_events_are_strict_and_in_order(mesh_factory: MeshFactory) -> None:
    mesh, url = await door(mesh_factory)
    body = {"model": "claude-3-5-haiku", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Stream to me"}]}]}  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/messages", json=body, headers={"x-api-key": mesh.dev_key}) as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    kinds: list[str] = []
    deltas: list[str] = []
    for block in filter(None, text.split("\n\n")):
        head, data_line = block.split("\n")
        kind = head.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == kind
        kinds.append(kind)
        if kind in EVENTS:
            allowed_extra = kind == "message_delta"  # our lockgate block rides on the last delta
            if allowed_extra:
                data.pop("lockgate")
            event = strict(EVENTS[kind], data)
            if isinstance(event, RawContentBlockDeltaEvent) and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "".join(deltas)

    c = client(url, mesh.dev_key)
    async with c.messages.stream(
        model="claude-3-5-haiku", max_tokens=64, messages=[{"role": "user", "content": "again"}]
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text
    await c.close()


@pytest.mark.parametrize(
    ("case", "exc", "status"),
    [
        ("bad_key", anthropic.AuthenticationError, 401),
        ("unknown_model", anthropic.NotFoundError, 404),
        ("bad_role", anthropic.BadRequestError, 400),
    ],
)
async def test_errors_raise_the_sdks_own_classes(
    mesh_factory: MeshFactory, case: str, exc: type[anthropic.APIStatusError], status: int
) -> None:
    mesh, url = await door(mesh_factory)
    c = client(url, "lg-wrong" if case == "bad_key" else mesh.dev_key)
    model = "no-such-model" if case == "unknown_model" else "claude-3-5-haiku"
    role = "system" if case == "bad_role" else "user"
    with pytest.raises(exc) as info:
        await c.messages.create(model=model, max_tokens=16, messages=[{"role": role, "content": "x"}])  # type: ignore[misc,list-item]
    await c.close()
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "error"
    assert set(info.value.body["error"]) == {"type", "message"}
