"""The guard's input checks, token estimate and cache key (no NATS)."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.guard import inputs
from shared.config import LimitsConfig
from shared.errors import InvalidRequest
from shared.schemas.chat import (
    ChatRequest,
    ContentPart,
    FunctionCall,
    JsonSchemaSpec,
    LockgateOptions,
    Message,
    ResponseFormat,
    ToolCall,
)

LIMITS = LimitsConfig(max_messages=4, max_message_chars=100, max_total_chars=150, max_output_tokens=1000)


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=list(messages) or [Message(role="user", content="hi")], **kw)


def user(text: str | list[ContentPart] | None) -> Message:
    return Message(role="user", content=text)


def nested(levels: int) -> dict[str, Any]:
    """A JSON object nested ``levels`` deep ({"a": {"a": ... {}}})."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_a_good_request_passes_and_counts_characters() -> None:
    total = inputs.check(req(Message(role="system", content="Be brief."), user("Hello")), LIMITS)
    assert total == len("Be brief.") + len("Hello")


def test_text_parts_are_counted() -> None:
    parts = [ContentPart(type="text", text="ab"), ContentPart(type="image_url", image_url={"url": "x"}),
             ContentPart(type="text", text="cd")]  # fmt: skip
    assert inputs.check(req(user(parts)), LIMITS) == 4


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (ChatRequest(messages=[]), "messages: must contain at least one message"),
        (req(*[user("hi")] * 5), "messages: 5 messages exceed the limit of 4"),
        (req(Message(role="wizard", content="hi")), "messages[0].role: unknown role 'wizard'"),
        (req(Message(role="x" * 500, content="hi")), "messages[0].role: unknown role '" + "x" * 40 + "'"),
        (req(user("x" * 101)), "messages[0].content: 101 characters exceed the limit of 100"),
        (req(user("a\x00b")), "messages[0].content: contains a NUL character at offset 1"),
        (req(user("ok"), user("colour \x1b[31mred")), "messages[1].content: contains the control character U+001B"),
        (req(user("bell\x07")), "messages[0].content: contains the control character U+0007 at offset 4"),
        (req(user("del\x7f")), "messages[0].content: contains the control character U+007F"),
        (req(user("é中🙂\x01")), "messages[0].content: contains the control character U+0001 at offset 3"),
        (
            req(user([ContentPart(type="text", text="a\x0cb")])),
            "messages[0].content: contains the control character U+000C",
        ),
        (req(tools=[nested(33)]), "tools: nested 34 levels deep; the limit is 32"),
        (req(tool_choice=nested(40)), "tool_choice: nested 40 levels deep; the limit is 32"),
        (
            req(
                response_format=ResponseFormat(
                    type="json_schema", json_schema=JsonSchemaSpec(name="s", schema_=nested(33))
                )
            ),
            "response_format.json_schema.schema: nested 33 levels deep; the limit is 32",
        ),
        (
            req(
                user(
                    [ContentPart(type="text", text="look"), ContentPart(type="image_url", image_url={"u": nested(33)})]
                )
            ),
            "messages[0].content[1].image_url: nested 34 levels deep; the limit is 32",
        ),
        (req(user("")), "messages[0].content: empty or whitespace-only"),
        (req(user(" \n\t")), "messages[0].content: empty or whitespace-only"),
        (req(user(None)), "messages[0].content: empty or whitespace-only"),
        (req(Message(role="system", content="sys"), user("  ")), "messages[1].content: empty or whitespace-only"),
        (req(Message(role="assistant", content="")), "messages: no message has any content"),
        (req(user("x" * 80), user("y" * 80)), "messages: 160 characters in total exceed the limit of 150"),
        (req(temperature=2.5), "temperature: 2.5 is outside [0, 2]"),
        (req(temperature=-0.1), "temperature: -0.1 is outside [0, 2]"),
        (req(top_p=1.01), "top_p: 1.01 is outside [0, 1]"),
        (req(max_tokens=0), "max_tokens: 0 is outside [1, 1000]"),
        (req(max_completion_tokens=1001), "max_tokens: 1001 is outside [1, 1000]"),
        (req(response_format=ResponseFormat(type="json_schema")), "response_format.json_schema: required"),
        (req(lockgate=LockgateOptions(max_latency_ms=0)), "lockgate.max_latency_ms: must be positive"),
    ],
)
def test_each_check_refuses_with_a_message_naming_the_field(request_: ChatRequest, needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        inputs.check(request_, LIMITS)
    assert needle in info.value.message
    assert info.value.stage == "guard"


def test_text_and_nesting_that_are_fine_pass() -> None:
    assert inputs.check(req(user("tabs\tnew\nlines\r\n, emoji 🙂, accents é, 中文")), LIMITS) > 0
    schema = JsonSchemaSpec(name="s", schema_=nested(32))
    inputs.check(req(response_format=ResponseFormat(type="json_schema", json_schema=schema)), LIMITS)
    inputs.check(req(tools=[{"type": "function", "function": {"name": "f", "parameters": nested(29)}}]), LIMITS)


def test_depth_counts_levels_without_recursion() -> None:
    assert inputs.depth(1) == 0
    assert inputs.depth([]) == 1
    assert inputs.depth({"a": [1, {"b": []}]}) == 4
    assert inputs.depth(nested(100_000)) == 100_000  # far past Python's recursion limit


def test_boundaries_are_allowed() -> None:
    inputs.check(req(temperature=0.0, top_p=0.0, max_tokens=1), LIMITS)
    inputs.check(req(temperature=2.0, top_p=1.0, max_tokens=1000), LIMITS)
    inputs.check(req(*[user("x" * 100)]), LIMITS)


def test_an_assistant_tool_call_without_text_counts_as_content() -> None:
    call = ToolCall(id="c1", function=FunctionCall(name="f", arguments="{}"))
    inputs.check(req(user("use the tool"), Message(role="assistant", tool_calls=[call])), LIMITS)


def test_prompt_token_estimate_grows_with_text_and_messages() -> None:
    assert inputs.estimate_prompt_tokens(0, 1) > 0
    assert inputs.estimate_prompt_tokens(300, 1) > inputs.estimate_prompt_tokens(30, 1)
    assert inputs.estimate_prompt_tokens(30, 5) > inputs.estimate_prompt_tokens(30, 1)
    # Worst-case-ish: never fewer tokens than a 4-characters-a-token count.
    assert inputs.estimate_prompt_tokens(4_000, 1) >= 1_000


# -- cache key -------------------------------------------------------------------------
BASE = req(user("What is a canal lock?"), model="gpt-4o-mini", temperature=0)


def variant(**changes: Any) -> ChatRequest:
    return msgspec.structs.replace(BASE, **changes)


def test_cache_key_is_stable() -> None:
    assert inputs.cache_key(BASE) == inputs.cache_key(variant())
    rebuilt = msgspec.json.decode(msgspec.json.encode(BASE), type=ChatRequest)
    assert inputs.cache_key(rebuilt) == inputs.cache_key(BASE)
    assert len(inputs.cache_key(BASE)) == 64


def test_cache_key_ignores_what_does_not_change_the_answer() -> None:
    key = inputs.cache_key(BASE)
    assert inputs.cache_key(variant(stream=True)) == key
    assert inputs.cache_key(variant(user="alice")) == key
    assert inputs.cache_key(variant(lockgate=LockgateOptions(priority="high", metadata={"f": "x"}))) == key


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "claude-3-5-haiku"},
        {"messages": [user("What is a canal lock!")]},
        {"messages": [Message(role="system", content="What is a canal lock?")]},
        {"messages": [user("What is a canal lock?"), user("More")]},
        {"max_tokens": 10},
        {"seed": 1},
        {"stop": ["\n"]},
        {"top_p": 0.5},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "auto"},
        {"lockgate": LockgateOptions(route="cheap")},
    ],
    ids=lambda c: next(iter(c)),
)
def test_cache_key_changes_with_what_changes_the_answer(changes: dict[str, Any]) -> None:
    assert inputs.cache_key(variant(**changes)) != inputs.cache_key(BASE)


def test_cache_key_depends_on_the_response_format() -> None:
    schema = ResponseFormat(type="json_schema", json_schema=JsonSchemaSpec(schema_={"type": "object"}))
    other = ResponseFormat(type="json_schema", json_schema=JsonSchemaSpec(schema_={"type": "array"}))
    keys = {
        inputs.cache_key(variant(response_format=f)) for f in (None, ResponseFormat(type="json_object"), schema, other)
    }
    assert len(keys) == 4


def test_cacheable_only_at_temperature_zero_and_not_off() -> None:
    assert inputs.cacheable(BASE)
    assert not inputs.cacheable(variant(temperature=None))
    assert not inputs.cacheable(variant(temperature=0.7))
    assert not inputs.cacheable(variant(lockgate=LockgateOptions(cache="off")))


def test_worst_case_cost_takes_the_dearest_candidate_and_the_output_cap() -> None:
    from services.guard.inputs import estimate_prompt_tokens, worst_case_cost  # noqa: PLC0415
    from shared.schemas.chat import ChatRequest, Message  # noqa: PLC0415
    from shared.schemas.mesh import Deployment  # noqa: PLC0415

    cheap = Deployment(name="a", model="m", provider="p", kind="openai", provider_model="m",
                       price_in_per_mtok=1.0, price_out_per_mtok=2.0, max_output_tokens=1000)  # fmt: skip
    dear = Deployment(name="b", model="m", provider="p", kind="openai", provider_model="m",
                      price_in_per_mtok=10.0, price_out_per_mtok=20.0, max_output_tokens=100)  # fmt: skip
    req = ChatRequest(messages=[Message(role="user", content="x" * 300)], max_tokens=500)
    prompt = estimate_prompt_tokens(300, 1)
    # the dear deployment caps output at 100 tokens; the cheap one allows the requested 500
    expected = max((prompt * 1.0 + 500 * 2.0) / 1e6, (prompt * 10.0 + 100 * 20.0) / 1e6)
    assert worst_case_cost(req, 300, [cheap, dear]) == pytest.approx(expected)
    assert worst_case_cost(req, 300, [cheap]) == pytest.approx((prompt * 1.0 + 500 * 2.0) / 1e6)
    # Each re-ask: the prompt plus the rejected answer, the error and the note (two more messages), and the cap again.
    from services.guard import reask  # noqa: PLC0415

    again = estimate_prompt_tokens(300 + reask.EXTRA_CHARS, 3) * 1.0 + 500 * 2.0
    assert worst_case_cost(req, 300, [cheap], reasks=2) == pytest.approx((prompt * 1.0 + 500 * 2.0 + 2 * again) / 1e6)


@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00\x01\x1b\x7f\t\n\r")))
def test_the_control_character_scan_agrees_with_a_regex(text: str) -> None:
    ref = re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text)
    assert inputs._control_at(text) == (ref.start() if ref else -1)
