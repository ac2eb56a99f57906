"""Property-based fuzz of ``llm.v1.chat``: random bytes, random JSON and mutated valid requests.

Hypothesis generates the bodies (150 of each kind, derandomized so a failure is
reproducible); they are sent through the running mesh, and every reply must be a
valid error envelope or a valid completion — then the services must still answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import headers
from shared.errors import ERROR_TYPES
from shared.schemas.chat import ChatResponse
from shared.schemas.errors import ErrorEnvelope
from tests.conftest import Mesh
from tests.integration.test_mesh_basic import ask, raw_chat

EXAMPLES = 150
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
ANY = JSON | st.text(max_size=200)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot", ""]) | ANY},
    optional={"content": st.text(max_size=300) | st.lists(JSON, max_size=3) | ANY, "name": ANY, "tool_calls": ANY},
)
VALID_MESSAGE = st.fixed_dictionaries(
    {"role": st.just("user"), "content": st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300)}
)
MUTATED = st.fixed_dictionaries(
    {"messages": st.lists(VALID_MESSAGE, min_size=1, max_size=3) | st.lists(MESSAGE, max_size=4) | ANY},
    optional={
        "model": st.sampled_from(["gpt-4o-mini", "nope", ""]) | ANY,
        "temperature": st.floats(allow_nan=False, allow_infinity=False) | ANY,
        "max_tokens": st.integers() | ANY,
        "top_p": st.floats(allow_nan=False, allow_infinity=False) | ANY,
        "response_format": st.sampled_from([{"type": "json_object"}, {"type": "json_schema"}, {"type": "xml"}]) | ANY,
        "tools": ANY,
        "stop": ANY,
        "seed": ANY,
        "lockgate": st.fixed_dictionaries({}, optional={"route": ANY, "untrusted": ANY, "cache": ANY}) | ANY,
    },
)


def _collect(strategy: st.SearchStrategy[Any]) -> list[Any]:
    found: list[Any] = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def gather(x: Any) -> None:
        found.append(x)

    gather()
    return found


def _check(data: bytes, h: dict[str, str]) -> str:
    if headers.SERVICE_ERROR_CODE in h:
        body = msgspec.json.decode(data, type=ErrorEnvelope).error
        assert body.type in ERROR_TYPES
        assert body.message
        return body.type
    reply = msgspec.json.decode(data, type=ChatResponse)
    assert reply.choices
    return "completed"


@pytest.mark.parametrize("kind", ["bytes", "json", "mutated"])
async def test_every_reply_is_an_envelope_or_a_completion(mesh: Mesh, kind: str) -> None:
    if kind == "bytes":
        bodies = _collect(st.binary(max_size=2_000))
    else:
        bodies = [msgspec.json.encode(x) for x in _collect(JSON if kind == "json" else MUTATED)]
    sem = asyncio.Semaphore(32)

    async def one(body: bytes) -> str:
        async with sem:
            msg = await raw_chat(mesh, body, timeout_s=10.0)
            return _check(msg.data, msg.headers or {})

    outcomes = await asyncio.gather(*(one(b) for b in bodies))
    assert len(outcomes) == len(bodies)
    if kind == "mutated":  # the mutations keep enough valid requests for the completion path to be fuzzed too
        assert "completed" in outcomes
    # ... and the mesh still answers a normal request.
    reply = await mesh.client.chat(ask("still there?", model="gpt-4o-mini"))
    assert reply.choices[0].message.content
