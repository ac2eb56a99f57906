"""Re-asking the model when its JSON fails validation, and the repairs the validator makes."""

from __future__ import annotations

import msgspec
import pytest

from services.guard import inputs
from shared import config as cfgmod
from shared import errors
from shared.client import LockgateClient
from shared.schemas.chat import ChatRequest, LockgateOptions, Message
from tests.conftest import BASE_TOML, MeshFactory

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


async def test_the_budget_hold_covers_every_reask_the_request_may_make(mesh_factory: MeshFactory) -> None:
    """A re-ask is another paid call: a budget that fits one call but not the re-asks refuses up front."""
    req = msgspec.convert(
        {"model": "gpt-4o-mini", "max_tokens": 50, "response_format": FORMAT,
         "messages": [{"role": "user", "content": "Any JSON please"}]},
        ChatRequest,
    )  # fmt: skip
    cfg = cfgmod.parse(BASE_TOML + REASK)
    chars = inputs.check(req, cfg.limits)
    deps = [cfgmod.deployment(cfg, "gpt-4o-mini", "sim-gpt")]
    one, all_calls = inputs.worst_case_cost(req, chars, deps), inputs.worst_case_cost(req, chars, deps, 2)
    assert all_calls > 3 * one  # each re-ask's prompt also carries the rejected answer and the error
    mesh = await mesh_factory(extra_toml=REASK + f"[tenants.thrifty]\ndaily_budget_usd = {one * 1.5:.12f}\n")
    client = LockgateClient(mesh.client.nc, await mesh.add_key("thrifty", ["*"]), names=mesh.names)
    with pytest.raises(errors.BudgetExceeded):
        await client.chat(req)  # JSON with up to 2 re-asks: more than the budget could ever pay
    plain = msgspec.structs.replace(req, response_format=None)
    assert (await client.chat(plain)).choices[0].message.content  # one call fits
