"""JSON output: the validator checks what the model wrote against the request's schema."""

from __future__ import annotations

import json

import jsonschema
import msgspec
import pytest

from shared import errors, headers
from shared.schemas.chat import ChatChunk
from tests.conftest import Mesh
from tests.integration.test_mesh_basic import ask, error_of
from tests.integration.test_mesh_chat import stream_raw

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "population": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["city", "population"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}


async def test_json_schema_reply_validates(mesh: Mesh) -> None:
    reply = await mesh.client.chat(ask("Describe a city", model="gpt-4o-mini", response_format=FORMAT))
    content = reply.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), SCHEMA)
    assert reply.lockgate.validation == "valid"


async def test_json_object_reply_is_an_object(mesh: Mesh) -> None:
    reply = await mesh.client.chat(ask("Any JSON", model="gpt-4o-mini", response_format={"type": "json_object"}))
    content = reply.choices[0].message.content
    assert content is not None
    assert isinstance(json.loads(content), dict)
    assert reply.lockgate.validation == "valid"


async def test_plain_text_is_not_validated(mesh: Mesh) -> None:
    reply = await mesh.client.chat(ask("Just text", model="gpt-4o-mini"))
    assert reply.lockgate.validation == ""


@pytest.mark.parametrize(
    ("directive", "needle"),
    [
        pytest.param("[sim:output=schema-violation]", "does not match the schema", id="schema-violation"),
        pytest.param("[sim:output=bad-json]", "not valid json", id="bad-json"),
    ],
)
async def test_output_that_fails_the_schema_is_invalid_output(mesh: Mesh, directive: str, needle: str) -> None:
    with pytest.raises(errors.InvalidOutput) as info:
        await mesh.client.chat(ask(f"Describe a city {directive}", model="gpt-4o-mini", response_format=FORMAT))
    assert info.value.stage == "validator"
    assert needle in info.value.message.lower()


async def test_schema_violation_names_the_path(mesh: Mesh) -> None:
    with pytest.raises(errors.InvalidOutput, match=r"at \$"):
        await mesh.client.chat(
            ask("Describe a city [sim:output=schema-violation]", model="gpt-4o-mini", response_format=FORMAT)
        )


async def test_json_object_with_bad_json_is_invalid_output(mesh: Mesh) -> None:
    with pytest.raises(errors.InvalidOutput):
        await mesh.client.chat(
            ask("Anything [sim:output=bad-json]", model="gpt-4o-mini", response_format={"type": "json_object"})
        )


async def test_streamed_json_is_validated_before_done(mesh: Mesh) -> None:
    stream = await mesh.client.stream(ask("Describe a city", model="gpt-4o-mini", response_format=FORMAT))
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert stream.done is not None
    assert stream.done.lockgate.validation == "valid"
    jsonschema.validate(json.loads(text), SCHEMA)


async def test_streamed_schema_violation_ends_with_an_error_not_done(mesh: Mesh) -> None:
    req = ask("Describe a city [sim:output=schema-violation]", model="gpt-4o-mini", response_format=FORMAT, stream=True)
    msgs = await stream_raw(mesh, req)
    kinds = [(m.headers or {}).get(headers.EVENT) for m in msgs]
    assert kinds[-1] == headers.EVENT_ERROR
    assert headers.EVENT_DONE not in kinds
    assert kinds.count(headers.EVENT_ERROR) == 1
    chunks = [msgspec.json.decode(m.data, type=ChatChunk) for m in msgs[:-1]]
    assert chunks  # the chunks had already gone out when the validator saw the whole text
    err = error_of(msgs[-1], "invalid_output")
    assert err.stage == "validator"
    # The client surfaces the same thing as a typed error after the chunks.
    stream = await mesh.client.stream(req)
    seen: list[ChatChunk] = []

    async def drain() -> None:
        async for c in stream:
            seen.append(c)

    with pytest.raises(errors.InvalidOutput):
        await drain()
    assert len(seen) == len(chunks)
    assert stream.done is None
