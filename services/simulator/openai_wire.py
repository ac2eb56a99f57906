"""OpenAI Chat Completions wire format: request parsing, replies, SSE chunks and error bodies."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from multidict import CIMultiDictProxy

from services.simulator import text

_encode = msgspec.json.encode
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class _Message(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]] | None = None


class _ChatRequest(msgspec.Struct):
    model: str
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


_decoder = msgspec.json.Decoder(_ChatRequest)


def message_text(content: str | list[dict[str, Any]] | None) -> str:
    """The text of a message: the string content, or its ``text`` parts joined."""
    if isinstance(content, str):
        return content
    if not content:
        return ""
    return "".join(p["text"] for p in content if p.get("type") == "text" and isinstance(p.get("text"), str))


@dataclass(slots=True)
class ChatRequest:
    """A validated Chat Completions request, reduced to what the simulator uses."""

    model: str
    digest: bytes
    prompt_tokens: int
    directive_text: str | None
    stream: bool
    include_usage: bool
    max_tokens: int | None
    mode: str  # "text" | "json_object" | "json_schema"
    schema: Any
    tool: tuple[str, Any] | None = None  # the tool output "tool-call" calls: (name, parameters schema)


def _pick_tool(tools: list[dict[str, Any]] | None, choice: str | dict[str, Any] | None) -> tuple[str, Any] | None:
    """The tool ``tool_choice`` names, else the first one offered."""
    offered = [t["function"] for t in tools or () if isinstance(t.get("function"), dict) and t["function"].get("name")]
    named = choice.get("function") if isinstance(choice, dict) else None
    wanted = named.get("name") if isinstance(named, dict) else None
    for fn in offered:
        if wanted is None or fn["name"] == wanted:
            return str(fn["name"]), fn.get("parameters") or {"type": "object"}
    return None


def parse(body: bytes, seed: int) -> ChatRequest:
    """Validate a request body; raises ``ValueError`` with a client-facing message."""
    req = _decoder.decode(body)
    texts = [message_text(m.content) for m in req.messages]
    directive_text = next(
        (t for m, t in zip(reversed(req.messages), reversed(texts), strict=True) if m.role == "user"), None
    )
    mode, schema = "text", None
    rf = req.response_format
    if rf is not None:
        kind = rf.get("type")
        if kind == "json_object":
            mode = "json_object"
        elif kind == "json_schema":
            spec = rf.get("json_schema")
            if not isinstance(spec, dict):
                raise ValueError("'response_format.json_schema' must be an object - at `$.response_format`")
            schema = spec.get("schema", {})
            if not isinstance(schema, dict | bool):
                raise ValueError("'response_format.json_schema.schema' must be an object")
            mode = "json_schema"
        elif kind != "text":
            raise ValueError(f"Invalid value for 'response_format.type': {kind!r} (text, json_object or json_schema)")
    opts = req.stream_options
    return ChatRequest(
        model=req.model,
        digest=text.request_digest(seed, req.model, _encode(req.messages)),
        prompt_tokens=text.prompt_tokens(len(t) for t in texts),
        directive_text=directive_text,
        stream=bool(req.stream),
        include_usage=bool(opts and opts.get("include_usage") is True),
        max_tokens=req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens,
        mode=mode,
        schema=schema,
        tool=_pick_tool(req.tools, req.tool_choice),
    )


_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def error_body(status: int, message: str) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends it."""
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return _encode({"error": {"message": message, "type": kind, "param": None, "code": code}})


def authorized(headers: CIMultiDictProxy[str]) -> bool:
    """Any non-empty ``Authorization: Bearer <key>`` is accepted."""
    auth = headers.get("Authorization", "")
    return auth[:7].lower() == "bearer " and bool(auth[7:].strip())


class OpenAIWire:
    """Renders Chat Completions replies for one simulator (``seed``, ``words_per_reply``)."""

    endpoint = "chat.completions"

    def __init__(self, seed: int, words_per_reply: int) -> None:
        self.seed = seed
        self.words = words_per_reply
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    def parse(self, body: bytes) -> ChatRequest:
        return parse(body, self.seed)

    def error_body(self, status: int, message: str) -> bytes:
        return error_body(status, message)

    def authorized(self, headers: CIMultiDictProxy[str]) -> bool:
        return authorized(headers)

    def content(self, req: ChatRequest, output: str) -> tuple[str, str]:
        """``(content, finish_reason)`` for ``req`` under the fault ``output`` mode."""
        if output == "echo":
            body = text.echo_text(req.directive_text)
        elif output == "bad-json":
            body = text.bad_json_text(req.digest, self.words)
        elif output == "schema-violation":
            schema = req.schema if req.mode == "json_schema" else {"type": "object"}
            try:
                body = _encode(text.schema_violation(schema, req.digest)).decode()
            except (TypeError, ValueError, OverflowError, RecursionError):
                body = '["schema-violation"]'
        elif req.mode == "json_object":
            body = text.json_object_text(req.digest, self.words)
        elif req.mode == "json_schema":
            try:
                body = _encode(text.schema_instance(req.schema, req.digest)).decode()
            except (TypeError, ValueError, OverflowError, RecursionError):  # unusable schema
                body = text.json_object_text(req.digest, self.words)
        else:
            body = text.reply_text(req.digest, self.words)
        body, cut = text.truncate(body, req.max_tokens)
        return body, "length" if cut else "stop"

    def _id(self) -> str:
        return f"chatcmpl-sim{self._id_prefix}{next(self._ids):012x}"

    def _usage(self, req: ChatRequest, content: str) -> dict[str, int]:
        completion = text.completion_tokens(content)
        return {
            "prompt_tokens": req.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": req.prompt_tokens + completion,
        }

    def tool_call(self, req: ChatRequest) -> dict[str, Any] | None:
        """Output ``tool-call``: one call of the picked tool, arguments valid for its schema."""
        if req.tool is None:
            return None
        name, schema = req.tool
        try:
            args = _encode(text.schema_instance(schema, req.digest)).decode()
        except (TypeError, ValueError, OverflowError, RecursionError):
            args = "{}"
        return {
            "id": f"call_sim{req.digest.hex()[:16]}",
            "type": "function",
            "function": {"name": name, "arguments": args},
        }

    def respond(self, req: ChatRequest, output: str) -> bytes:
        """A complete ``chat.completion`` JSON body."""
        call = self.tool_call(req) if output == "tool-call" else None
        if call is not None:
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
            content, finish = "", "tool_calls"
        else:
            content, finish = self.content(req, output)
            message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        return _encode(
            {
                "id": self._id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": self._usage(req, content),
                "service_tier": "default",
                "system_fingerprint": "fp_lockgate_sim",
            }
        )

    def stream_events(self, req: ChatRequest, output: str) -> list[bytes]:
        """The SSE events of a streamed reply, each a complete ``data: ...\\n\\n`` frame."""
        content, finish = self.content(req, output)
        head = {
            "id": self._id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": req.model,
            "service_tier": "default",
            "system_fingerprint": "fp_lockgate_sim",
        }
        if req.include_usage:
            head["usage"] = None

        def frame(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return b"data: " + _encode({**head, "choices": [choice]}) + b"\n\n"

        call = self.tool_call(req) if output == "tool-call" else None
        if call is not None:
            content, finish = "", "tool_calls"
            events = [frame({"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]})]
        else:
            events = [frame({"role": "assistant", "content": "", "refusal": None})]
            events.extend(frame({"content": piece}) for piece in text.stream_pieces(content))
        events.append(frame({}, finish))
        if req.include_usage:
            usage = {**head, "choices": [], "usage": self._usage(req, content)}
            events.append(b"data: " + _encode(usage) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events

    def broken_stream(self, req: ChatRequest) -> bytes:
        """A stream whose first event is cut in the middle of its JSON."""
        return b'data: {"id": "' + self._id().encode() + b'", "object": "chat.completion.chunk", "choices": [{\n\n'
