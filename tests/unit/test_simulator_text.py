"""Unit tests for the simulator's text/JSON generation and its fault-spec parser."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.simulator import moderations, text
from services.simulator.__main__ import build_config
from services.simulator.anthropic_wire import AnthropicWire
from services.simulator.faults import (
    FaultResolver,
    FaultSpecError,
    fault_from_spec,
    find_directive,
    parse_fault_spec,
    retry_headers,
    status_applies,
)
from services.simulator.openai_wire import OpenAIWire
from shared.schemas.simulator import FaultConfig, SimulatorConfig

DIGEST = text.request_digest(0, "m", b'[{"role":"user","content":"hi"}]')


# ----------------------------------------------------------------------------- text


def test_word_list_is_256_distinct_single_words() -> None:
    assert len(text.WORDS) == 256
    assert len(set(text.WORDS)) == 256
    assert all(w.isalpha() and w.islower() for w in text.WORDS)


def test_digest_depends_on_seed_model_and_messages() -> None:
    base = text.request_digest(0, "m", b"[1]")
    assert base == text.request_digest(0, "m", b"[1]")
    assert len(base) == 64
    others = {
        text.request_digest(1, "m", b"[1]"),
        text.request_digest(0, "n", b"[1]"),
        text.request_digest(0, "m", b"[2]"),
    }
    assert base not in others
    assert len(others) == 3


def test_reply_text_is_prefixed_deterministic_and_sized() -> None:
    reply = text.reply_text(DIGEST, 12)
    assert reply.startswith("Simulated reply: ")
    assert reply == text.reply_text(DIGEST, 12)
    words = reply.split(" ")
    assert len(words) == 14
    assert all(w in text.WORDS for w in words[2:])
    other = text.reply_text(text.request_digest(0, "m", b"[]"), 12)
    assert other != reply


def test_reply_text_longer_than_one_digest() -> None:
    reply = text.reply_text(DIGEST, 200)
    assert text.completion_tokens(reply) == 202
    assert reply.startswith(text.reply_text(DIGEST, 64))


def test_token_estimates() -> None:
    assert text.prompt_tokens([]) == 0
    assert text.prompt_tokens([0]) == 3
    assert text.prompt_tokens([1, 4, 5]) == (1 + 3) + (1 + 3) + (2 + 3)
    assert text.prompt_tokens([400]) == 103
    assert text.completion_tokens("one") == 1
    assert text.completion_tokens("one two three") == 3


def test_truncate() -> None:
    assert text.truncate("a b c", None) == ("a b c", False)
    assert text.truncate("a b c", 3) == ("a b c", False)
    assert text.truncate("a b c", 10) == ("a b c", False)
    assert text.truncate("a b c", 2) == ("a b", True)
    assert text.truncate("a b c", 1) == ("a", True)


@given(st.lists(st.text(alphabet='ab{}"', min_size=0, max_size=4), min_size=1, max_size=20))
def test_stream_pieces_roundtrip_and_count(parts: list[str]) -> None:
    content = " ".join(parts)
    pieces = text.stream_pieces(content)
    assert "".join(pieces) == content
    assert len(pieces) == text.completion_tokens(content)


@given(st.integers(min_value=1, max_value=30), st.integers(min_value=1, max_value=40))
def test_truncate_caps_token_count(words: int, cap: int) -> None:
    content = text.reply_text(DIGEST, words)
    cut, was_cut = text.truncate(content, cap)
    assert text.completion_tokens(cut) == min(cap, words + 2)
    assert was_cut == (words + 2 > cap)
    assert content.startswith(cut)


def test_json_object_and_bad_json() -> None:
    doc = json.loads(text.json_object_text(DIGEST, 5))
    assert doc == {"answer": text.reply_text(DIGEST, 5)}
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.bad_json_text(DIGEST, 5))


# ----------------------------------------------------------------------------- JSON schema

SCHEMAS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "integer", "minimum": 10, "maximum": 12},
    {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 2},
    {"type": "integer", "multipleOf": 7, "minimum": 50},
    {"type": "number", "minimum": 0, "maximum": 1},
    {"type": "number", "exclusiveMinimum": 0.25, "exclusiveMaximum": 0.5},
    {"type": "number", "multipleOf": 0.5},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["null", "string"], "minLength": 40},
    {"type": "string", "maxLength": 3},
    {"type": "string", "format": "date-time"},
    {"enum": ["red", "green"]},
    {"const": {"fixed": [1, 2]}},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3, "uniqueItems": True},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}], "minItems": 2},
    {"type": "array", "maxItems": 0},
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["a", "b"]},
            "nested": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}, "score": {"type": "number"}},
                "required": ["ok", "score"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "age", "tags", "kind", "nested"],
        "additionalProperties": False,
    },
    {"type": "object", "required": ["x", "y"], "additionalProperties": {"type": "integer"}},
    {"type": "object", "minProperties": 3, "additionalProperties": {"type": "string"}},
    {"anyOf": [{"type": "integer", "minimum": 5}, {"type": "string"}]},
    {"oneOf": [{"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"]}, {"type": "null"}]},
    {"allOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]}, {"required": ["b"]}]},
    {"properties": {"inferred": {"items": {"minimum": 3}}}, "required": ["inferred"]},
    {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["value", "children"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/Node",
    },
    {
        "type": "object",
        "properties": {
            "item": {"$ref": "#/definitions/Item"},
            "maybe": {"anyOf": [{"$ref": "#/definitions/Item"}, {"type": "null"}]},
        },
        "required": ["item", "maybe"],
        "definitions": {
            "Item": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}, "required": ["id"]}
        },
    },
    {},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(i) for i in range(len(SCHEMAS))])
def test_schema_instance_validates(schema: dict[str, Any]) -> None:
    doc = text.schema_instance(schema, DIGEST)
    jsonschema.Draft202012Validator(schema).validate(doc)
    # must be JSON-serialisable and deterministic
    assert msgspec.json.encode(doc) == msgspec.json.encode(text.schema_instance(schema, DIGEST))


@pytest.mark.parametrize("schema", SCHEMAS[:-1], ids=[str(i) for i in range(len(SCHEMAS) - 1)])
def test_schema_violation_does_not_validate(schema: dict[str, Any]) -> None:
    doc = text.schema_violation(schema, DIGEST)
    msgspec.json.encode(doc)
    assert not jsonschema.Draft202012Validator(schema).is_valid(doc)


def test_schema_violation_drops_a_required_property() -> None:
    schema = SCHEMAS[17]
    doc = text.schema_violation(schema, DIGEST)
    assert isinstance(doc, dict)
    assert "name" not in doc
    assert "age" in doc


def test_schema_violation_of_unconstrained_schema_returns_the_valid_instance() -> None:
    assert text.schema_violation({}, DIGEST) == text.schema_instance({}, DIGEST)


def test_schema_violation_avoids_every_anyof_branch() -> None:
    schema = {"type": "object", "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}
    doc = text.schema_violation(schema, DIGEST)
    assert type(doc["v"]) not in (str, int)
    assert not jsonschema.Draft202012Validator(schema).is_valid(doc)


_JSON_KEYS = ["type", "properties", "items", "required", "$ref", "anyOf", "enum", "minimum", "minItems", "text"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.sampled_from(["object", "array", "string", "#/x"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(_JSON_KEYS), c, max_size=4),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(_JSON, _JSON, st.sampled_from(["auto", "bad-json", "schema-violation", "echo"]))
def test_wires_only_raise_value_errors(content: Any, schema: Any, output: str) -> None:
    """Arbitrary bodies either parse (and then render) or raise ValueError (-> HTTP 400)."""
    rf = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    bodies = [
        {"model": "m", "messages": [{"role": "user", "content": content}], "response_format": rf},
        {"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": content}], "system": content},
        content,
    ]
    for wire in (OpenAIWire(0, 4), AnthropicWire(0, 4)):
        for body in bodies:
            try:
                req: Any = wire.parse(msgspec.json.encode(body))
            except ValueError:
                continue
            assert wire.respond(req, output).startswith(b"{")
            assert wire.stream_events(req, output)[-1].endswith(b"\n\n")


def test_schema_generation_rejects_huge_schemas() -> None:
    with pytest.raises(ValueError, match="minLength"):
        text.schema_instance({"type": "string", "minLength": 10**9}, DIGEST)
    with pytest.raises(ValueError, match="too large"):
        text.schema_instance({"type": "array", "items": {"type": "string"}, "minItems": 10**9}, DIGEST)
    bomb: dict[str, Any] = {"$defs": {"A": {"allOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/A"}]}}}
    bomb["$ref"] = "#/$defs/A"
    with pytest.raises(ValueError, match="too large"):
        text.schema_instance(bomb, DIGEST)


@pytest.mark.parametrize(
    ("schema", "kind"),
    [
        ({"type": 5}, str),
        ({"properties": []}, dict),
        ({"$ref": "http://example.com/remote"}, str),
        ({"$ref": "#/nope"}, str),
        ({"items": 3}, list),
        ({"type": "object", "required": "name"}, dict),
        (True, str),
    ],
)
def test_schema_generation_survives_garbage(schema: Any, kind: type) -> None:
    doc = text.schema_instance(schema, DIGEST)
    assert isinstance(doc, kind)
    assert msgspec.json.decode(msgspec.json.encode(doc)) == doc


# ----------------------------------------------------------------------------- fault specs


def test_parse_full_spec() -> None:
    spec = "latency=1000,status=429,retry_after=2,hang,malformed,chunk_delay=50,output=bad-json,error_rate=0.5"
    assert parse_fault_spec(spec) == {
        "latency_ms": 1000,
        "status": 429,
        "retry_after_s": 2.0,
        "hang": True,
        "malformed": True,
        "chunk_delay_ms": 50,
        "output": "bad-json",
        "error_rate": 0.5,
    }


def test_parse_tolerates_whitespace_case_aliases_and_brackets() -> None:
    assert parse_fault_spec("  Latency_ms = 5 , , HANG=false, output=schema_violation ") == {
        "latency_ms": 5,
        "hang": False,
        "output": "schema-violation",
    }
    assert parse_fault_spec("[sim:status=503]") == {"status": 503}
    assert parse_fault_spec("") == {}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("bogus", "unknown fault"),
        ("latency=abc", "integer"),
        ("latency=-1", ">= 0"),
        ("latency", "needs a value"),
        ("status=200", "400-599"),
        ("status=600", "400-599"),
        ("retry_after=-2", ">= 0"),
        ("retry_after=nan", ">= 0"),
        ("error_rate=1.5", "[0, 1]"),
        ("hang=maybe", "flag"),
        ("output=xml", "bad-json"),
    ],
)
def test_parse_errors(spec: str, needle: str) -> None:
    with pytest.raises(FaultSpecError) as exc:
        parse_fault_spec(spec)
    assert needle in str(exc.value)


def test_find_directive() -> None:
    assert find_directive("plain text") is None
    assert find_directive("hello [sim:status=429] world [sim:hang]") == "status=429"
    with pytest.raises(FaultSpecError, match="unterminated"):
        find_directive("oops [sim:status=429")


def test_resolver_merges_field_by_field_later_wins() -> None:
    base = FaultConfig(latency_ms=10, status=503)
    resolver = FaultResolver()
    assert resolver.resolve(base, None, "no directive") is base
    merged = resolver.resolve(base, "status=500,hang", "x [sim:status=429,retry_after=1]")
    assert merged == FaultConfig(latency_ms=10, status=429, hang=True, retry_after_s=1.0)
    assert resolver.resolve(base, "status=0", None) == FaultConfig(latency_ms=10)
    with pytest.raises(FaultSpecError):
        resolver.resolve(base, "status=abc", None)


def test_status_applies_rule() -> None:
    rng = random.Random(0)
    assert not status_applies(FaultConfig(), rng)
    assert not status_applies(FaultConfig(error_rate=1.0), rng)
    assert all(status_applies(FaultConfig(status=500), rng) for _ in range(50))
    assert all(status_applies(FaultConfig(status=500, error_rate=1.0), rng) for _ in range(50))
    hits = sum(status_applies(FaultConfig(status=500, error_rate=0.3), rng) for _ in range(1000))
    assert 200 < hits < 400


def test_retry_headers() -> None:
    assert retry_headers(FaultConfig()) == {}
    assert retry_headers(FaultConfig(retry_after_s=2)) == {"Retry-After": "2", "retry-after-ms": "2000"}
    assert retry_headers(FaultConfig(retry_after_s=0.25)) == {"Retry-After": "1", "retry-after-ms": "250"}


def test_fault_from_spec_and_config_validation() -> None:
    assert fault_from_spec("status=429", FaultConfig(latency_ms=3)) == FaultConfig(latency_ms=3, status=429)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"error_rate": 2}, FaultConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"lateny_ms": 2}, FaultConfig)
    cfg = msgspec.convert({"profiles": {"slow": {"latency_ms": 5}}}, SimulatorConfig)
    assert cfg.profiles["slow"].latency_ms == 5
    assert cfg.default == FaultConfig()


def test_cli_config() -> None:
    cfg = build_config(
        ["--port", "0", "--seed", "7", "--fault", "latency=5", "--profile", "flaky=status=503,error_rate=0.5"]
    )
    assert cfg.port == 0
    assert cfg.seed == 7
    assert cfg.default == FaultConfig(latency_ms=5)
    assert cfg.profiles == {"flaky": FaultConfig(status=503, error_rate=0.5)}
    assert build_config([]).port == 8090
    with pytest.raises(FaultSpecError):
        build_config(["--profile", "nospec"])
    with pytest.raises(msgspec.ValidationError):
        build_config(["--port", "70000"])
    assert math.isclose(cfg.profiles["flaky"].error_rate, 0.5)


def test_output_tool_call_calls_the_chosen_tool_with_valid_arguments() -> None:
    wire = OpenAIWire(seed=0, words_per_reply=5)
    tools = [
        {"type": "function", "function": {"name": "lookup"}},
        {"type": "function", "function": {"name": "pay", "parameters": {
            "type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]}}},
    ]  # fmt: skip
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools}
    first = json.loads(wire.respond(wire.parse(json.dumps(body).encode()), "tool-call"))["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    assert first["message"]["content"] is None
    assert first["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    chosen = {**body, "tool_choice": {"type": "function", "function": {"name": "pay"}}}
    call = json.loads(wire.respond(wire.parse(json.dumps(chosen).encode()), "tool-call"))["choices"][0]["message"]
    assert "amount" in json.loads(call["tool_calls"][0]["function"]["arguments"])
    plain = json.loads(wire.respond(wire.parse(json.dumps({**body, "tools": None}).encode()), "tool-call"))
    assert plain["choices"][0]["message"]["content"].startswith("Simulated reply")  # no tools: text


# ----------------------------------------------------------------------------- output=echo, moderations


def test_output_echo_says_the_last_user_message_without_the_directive() -> None:
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "[sim:output=echo] you idiot, I will hurt you "},
    ]
    body = json.dumps({"model": "m", "messages": messages}).encode()
    wire = OpenAIWire(seed=0, words_per_reply=5)
    reply = json.loads(wire.respond(wire.parse(body), "echo"))["choices"][0]
    assert reply["message"]["content"] == "you idiot, I will hurt you"
    assert reply["finish_reason"] == "stop"
    pieces = [json.loads(e[6:])["choices"] for e in wire.stream_events(wire.parse(body), "echo")[:-1]]
    assert "".join(c[0]["delta"].get("content") or "" for c in pieces if c) == "you idiot, I will hurt you"
    ant = AnthropicWire(seed=0, words_per_reply=5)
    msg = json.loads(
        ant.respond(ant.parse(json.dumps({"model": "m", "max_tokens": 50, "messages": messages}).encode()), "echo")
    )
    assert msg["content"][0]["text"] == "you idiot, I will hurt you"
    assert parse_fault_spec("output=echo") == {"output": "echo"}
    assert text.echo_text("a [sim:status=0] b [sim:latency=1]") == "a  b"
    assert text.echo_text(None) == ""


def test_moderation_word_list_flags_whole_words_per_category() -> None:
    flags = moderations.classify("You IDIOT, I will hurt you.")
    assert set(moderations.CATEGORIES) == set(flags)
    assert {c for c, on in flags.items() if on} == {"harassment", "violence"}
    assert not any(moderations.classify("skill hurtle idiotic killer self").values())  # whole words only
    assert moderations.classify("no self-harm here")["self-harm"]
    assert not any(moderations.classify(" ".join(text.WORDS)).values())  # simulated replies stay clean


def test_moderation_response_has_openai_shape() -> None:
    model, inputs = moderations.parse(b'{"model": "omni-moderation-latest", "input": ["kill", "fine"]}')
    body = json.loads(moderations.ModerationsWire().respond(model, inputs))
    assert body["id"].startswith("modr-")
    assert body["model"] == "omni-moderation-latest"
    first, second = body["results"]
    assert first["flagged"]
    assert first["categories"]["violence"]
    assert first["category_scores"]["violence"] > 0.5 > first["category_scores"]["hate"]
    assert not second["flagged"]
    for bad in (b"{}", b'{"input": 3}', b'{"input": []}', b"nope"):
        with pytest.raises(ValueError, match=r"."):  # msgspec's message -> HTTP 400
            moderations.parse(bad)
