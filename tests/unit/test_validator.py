"""The validator: parse (with light repair), check the shape, validate against the schema."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.validator.handlers import validate
from shared.errors import InvalidOutput
from shared.schemas.chat import JsonSchemaSpec, ResponseFormat
from shared.schemas.mesh import ValidateRequest

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age"],
}  # fmt: skip
OBJECT = ResponseFormat(type="json_object")


def with_schema(schema: Any) -> ResponseFormat:
    return ResponseFormat(type="json_schema", json_schema=JsonSchemaSpec(schema_=schema))


def check(content: str, fmt: ResponseFormat = OBJECT) -> tuple[str, Any]:
    result = validate(ValidateRequest(content=content, response_format=fmt))
    return result.outcome, msgspec.json.decode(result.content)


def test_valid_json_object_is_returned_unchanged() -> None:
    content = '{"name": "Ada",  "age": 36}'
    result = validate(ValidateRequest(content=content, response_format=with_schema(SCHEMA)))
    assert result.outcome == "valid"
    assert result.content == content


@pytest.mark.parametrize(
    "content",
    [
        '```json\n{"name": "Ada", "age": 36}\n```',
        '```\n{"name": "Ada", "age": 36}\n```',
        'Sure! Here it is: ```JSON {"name": "Ada", "age": 36}``` Enjoy.',
        'Here is the JSON you asked for: {"name": "Ada", "age": 36} -- hope it helps',
        'Result:\n\n{"name": "Ada", "age": 36}',
    ],
)
def test_json_in_fences_or_prose_is_repaired(content: str) -> None:
    outcome, value = check(content, with_schema(SCHEMA))
    assert outcome == "repaired"
    assert value == {"name": "Ada", "age": 36}


@pytest.mark.parametrize(
    "content", ["", "hello", '{"name": "Ada"', "{'name': 'Ada'", "Sure: {not json}", "```json\n{```"]
)
def test_not_json_is_invalid_output(content: str) -> None:
    with pytest.raises(InvalidOutput, match="not valid JSON") as info:
        check(content)
    assert info.value.stage == "validator"


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "42", "null", "true"])
def test_json_object_requires_an_object(content: str) -> None:
    with pytest.raises(InvalidOutput, match="JSON but not an object"):
        check(content)


def test_json_object_accepts_any_object() -> None:
    assert check('{"anything": [1, {"nested": true}]}') == ("valid", {"anything": [1, {"nested": True}]})


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ('{"name": "Ada"}', ["'age' is a required property", "at $"]),
        ('{"name": "Ada", "age": -1}', ["-1 is less than the minimum of 0", "at $.age"]),
        (
            '{"name": 7, "age": "old"}',
            ["7 is not of type 'string' at $.name", "'old' is not of type 'integer' at $.age"],
        ),
        ('{"name": "Ada", "age": 1, "tags": ["a", 2]}', ["2 is not of type 'string' at $.tags[1]"]),
        ("[]", ["is not of type 'object' at $"]),
    ],
)
def test_schema_errors_name_the_path(content: str, needles: list[str]) -> None:
    with pytest.raises(InvalidOutput) as info:
        check(content, with_schema(SCHEMA))
    assert info.value.message.startswith("the model's output does not match the schema")
    for needle in needles:
        assert needle in info.value.message


def test_schema_errors_are_capped() -> None:
    many = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20)}}
    content = msgspec.json.encode({f"p{i}": i for i in range(20)}).decode()
    with pytest.raises(InvalidOutput) as info:
        check(content, with_schema(many))
    assert info.value.message.count("is not of type") == 5


def test_invalid_schema_is_reported_as_such() -> None:
    with pytest.raises(InvalidOutput, match="the request's JSON schema is invalid"):
        check('{"a": 1}', with_schema({"type": "not-a-type"}))


def test_repaired_output_is_re_encoded_compactly() -> None:
    result = validate(ValidateRequest(content='```json\n{ "a" : 1 }\n```', response_format=OBJECT))
    assert result.content == '{"a":1}'


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"name": "Ada", "age": 36,}', {"name": "Ada", "age": 36}),
        ('{"tags": ["a", "b",\n  ],\n "name": "Ada", "age": 1 , }', {"tags": ["a", "b"], "name": "Ada", "age": 1}),
        ('```json\n{"name": "Ada", "age": 36,}\n```', {"name": "Ada", "age": 36}),
        ('Here: {"name": "a,}", "age": 2,} bye', {"name": "a,}", "age": 2}),
        ('{"name": "q\\",]", "age": 3,}', {"name": 'q",]', "age": 3}),
    ],
)
def test_trailing_commas_are_repaired_but_not_inside_strings(content: str, expected: Any) -> None:
    assert check(content, with_schema(SCHEMA)) == ("repaired", expected)


def test_a_comma_before_a_value_is_not_a_trailing_comma() -> None:
    with pytest.raises(InvalidOutput, match="not valid JSON"):
        check('{"a": 1,, "b": 2}')


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{'a': 1, 'b': 'x'}", {"a": 1, "b": "x"}),
        ("{'a': 'it\\'s', 'q': 'say \"hi\"',}", {"a": "it's", "q": 'say "hi"'}),
        ("Sure: {'x': \"don't\"} hope it helps", {"x": "don't"}),
        ("```json\n{'k': ['v', 'w',],}\n```", {"k": ["v", "w"]}),
    ],
)
def test_single_quoted_json_is_repaired(content: str, expected: object) -> None:
    res = validate(ValidateRequest(content=content, response_format=ResponseFormat(type="json_object")))
    assert res.outcome == "repaired"
    assert msgspec.json.decode(res.content) == expected
