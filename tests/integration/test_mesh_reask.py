"""Re-asking the model when its JSON fails validation, and the repairs the validator makes."""

from __future__ import annotations

import pytest

from shared import errors
from shared.schemas.chat import ChatRequest, LockgateOptions, Message
from tests.conftest import MeshFactory

FORMAT = {"type": "json_object"}
REASK = """
[security]
reask_max = 2

[providers.sim-badjson]
kind = "openai"
simulated = true
profile = "bad-json"

[deployments.sim-gpt-badjson]
provider = "sim-badjson"
model = "gpt-4o-mini"

[models.badjson-gpt]
deployments = ["sim-gpt-badjson"]

[routes.badjson]
models = ["badjson-gpt"]
"""


def _ask(text: str, route: str = "default", *, stream: bool = False) -> ChatRequest:
    return ChatRequest(
        messages=[Message(role="user", content=text)], response_format=FORMAT, stream=stream,  # type: ignore[arg-type]
        lockgate=LockgateOptions(route=route),
    )  # fmt: skip


async def test_a_bad_answer_is_reasked_with_the_error_and_the_reply_says_so(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=REASK)
    # The simulator honours a directive in the last user message only: the re-ask (a new last message) is clean.
    reply = await mesh.client.chat(_ask("Any JSON [sim:output=bad-json]"))
    assert reply.lockgate.validation == "reasked+valid"
    assert len(reply.lockgate.attempts) == 2
    assert reply.choices[0].message.content


async def test_it_gives_up_after_reask_max_with_the_errors(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory(extra_toml=REASK)
    with pytest.raises(errors.InvalidOutput, match=r"not valid JSON \(after 2 re-asks\)"):
        await mesh.client.chat(_ask("Any JSON", route="badjson"))


async def test_without_reask_the_first_failure_is_final(mesh_factory: MeshFactory) -> None:
    mesh = await mesh_factory()
    with pytest.raises(errors.InvalidOutput, match=r"not valid JSON$"):
        await mesh.client.chat(_ask("Any JSON [sim:output=bad-json]"))
