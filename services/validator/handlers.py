"""Check JSON output: parse (with light repair), then validate against the schema."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jsonschema
import msgspec

from shared.errors import InvalidOutput
from shared.schemas.mesh import ValidateRequest, ValidateResult
from shared.subjects import VALIDATOR

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
MAX_ERRORS = 5


def _parse(content: str) -> tuple[Any, bool]:
    """The JSON value and whether it had to be repaired (fences, prose around it, trailing commas, single quotes)."""
    try:
        return msgspec.json.decode(content), False
    except msgspec.DecodeError:
        pass
    for text in _candidates(content):
        for attempt in (text, _without_trailing_commas(text), _without_trailing_commas(_double_quoted(text))):
            try:
                value, _ = _json.raw_decode(attempt)
                return value, True
            except json.JSONDecodeError:
                pass
    raise InvalidOutput("the model's output is not valid JSON", stage=VALIDATOR)


_json = json.JSONDecoder()


def _candidates(content: str) -> list[str]:
    """Where the JSON may be: inside a code fence, or from the first ``{``/``[`` on (prose around it)."""
    found = []
    m = _FENCE.search(content)
    if m:
        found.append(m.group(1).strip())
    start = min((i for i in (content.find("{"), content.find("[")) if i >= 0), default=-1)
    if start >= 0:
        found.append(content[start:])
    return found


def _without_trailing_commas(text: str) -> str:
    """Drop a ``,`` that only whitespace separates from a closing ``}``/``]`` (never inside a string)."""
    out: list[str] = []
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == ",":
            nxt = _SPACE.match(text, i + 1).end()  # type: ignore[union-attr]  # \s* always matches
            if text[nxt : nxt + 1] in ("}", "]"):
                continue
        out.append(ch)
    return "".join(out)


_SPACE = re.compile(r"\s*")


def _double_quoted(text: str) -> str:
    """Python-style ``{'a': 'it\\'s'}`` as JSON: single-quoted strings become double-quoted ones.

    A ``"`` inside a single-quoted string is escaped, ``\\'`` becomes ``'``; double-quoted
    strings are copied as they are (an apostrophe in them is just a character).
    """
    out: list[str] = []
    quote = ""  # the quote character of the string we are in, "" outside strings
    escaped = False
    for ch in text:
        if not quote:
            if ch in "'\"":
                quote = ch
                out.append('"')
            else:
                out.append(ch)
            continue
        if escaped:
            escaped = False
            out.append("'" if ch == "'" else "\\" + ch)  # JSON has no \\' escape
            continue
        if ch == "\\":
            escaped = True
        elif ch == quote:
            quote = ""
            out.append('"')
        elif ch == '"':  # only reachable inside a single-quoted string
            out.append('\\"')
        else:
            out.append(ch)
    return "".join(out)


@lru_cache(maxsize=256)
def _validator(schema_json: bytes) -> jsonschema.protocols.Validator:
    schema = msgspec.json.decode(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(req: ValidateRequest) -> ValidateResult:
    value, repaired = _parse(req.content)
    fmt = req.response_format
    if fmt.type == "json_object" and not isinstance(value, dict):
        raise InvalidOutput("the model's output is JSON but not an object", stage=VALIDATOR)
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        try:
            validator = _validator(msgspec.json.encode(fmt.json_schema.schema_, order="sorted"))
        except jsonschema.SchemaError as exc:
            raise InvalidOutput(f"the request's JSON schema is invalid: {exc.message}", stage=VALIDATOR) from None
        problems = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))[:MAX_ERRORS]
        if problems:
            detail = "; ".join(f"{e.message} at {e.json_path}" for e in problems)
            raise InvalidOutput(f"the model's output does not match the schema: {detail}", stage=VALIDATOR)
    content = msgspec.json.encode(value).decode() if repaired else req.content
    return ValidateResult(outcome="repaired" if repaired else "valid", content=content)
