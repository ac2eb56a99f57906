"""Anthropic Messages wire format: request parsing, replies, SSE events and error bodies."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from multidict import CIMultiDictProxy

from services.simulator import text

_encode = msgspec.json.encode
_ROLES = frozenset({"user", "assistant"})


class _Message(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]]


class _MessagesRequest(msgspec.Struct):
    model: str
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = None


_decoder = msgspec.json.Decoder(_MessagesRequest)


def block_text(content: str | list[dict[str, Any]] | None) -> str:
    """The text of a message: the string content, or its ``text`` blocks joined."""
    if isinstance(content, str):
        return content
    if not content:
        return ""
    return "".join(b["text"] for b in content if b.get("type") == "text" and isinstance(b.get("text"), str))


@dataclass(slots=True)
class MessagesRequest:
    """A validated Messages request, reduced to what the simulator uses."""

    model: str
    digest: bytes
    prompt_tokens: int
    directive_text: str | None
    stream: bool
    max_tokens: int


def parse(body: bytes, seed: int) -> MessagesRequest:
    """Validate a request body; raises ``ValueError`` with a client-facing message."""
    req = _decoder.decode(body)
    texts = [block_text(m.content) for m in req.messages]
    for i, m in enumerate(req.messages):
        if m.role not in _ROLES:
            raise ValueError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
    directive_text = next(
        (t for m, t in zip(reversed(req.messages), reversed(texts), strict=True) if m.role == "user"), None
    )
    chars = [len(t) for t in texts]
    if req.system:
        chars.append(len(block_text(req.system)))
    return MessagesRequest(
        model=req.model,
        digest=text.request_digest(seed, req.model, _encode((req.system, req.messages))),
        prompt_tokens=text.prompt_tokens(chars),
        directive_text=directive_text,
        stream=bool(req.stream),
        max_tokens=req.max_tokens,
    )


_ERROR_KINDS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> bytes:
    """``{"type": "error", "error": {"type", "message"}}`` as Anthropic sends it."""
    kind = _ERROR_KINDS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return _encode({"type": "error", "error": {"type": kind, "message": message}})


def authorized(headers: CIMultiDictProxy[str]) -> bool:
    """Any non-empty ``x-api-key`` or ``Authorization: Bearer <key>`` is accepted."""
    if headers.get("x-api-key", "").strip():
        return True
    auth = headers.get("Authorization", "")
    return auth[:7].lower() == "bearer " and bool(auth[7:].strip())


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + _encode(data) + b"\n\n"


_PING = _event(b"ping", {"type": "ping"})
_BLOCK_START = _event(
    b"content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
)
_BLOCK_STOP = _event(b"content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_STOP = _event(b"message_stop", {"type": "message_stop"})


class AnthropicWire:
    """Renders Messages replies for one simulator (``seed``, ``words_per_reply``).

    The fault ``output`` mode is ignored except ``echo``: Anthropic replies are always plain text.
    """

    endpoint = "messages"

    def __init__(self, seed: int, words_per_reply: int) -> None:
        self.seed = seed
        self.words = words_per_reply
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    def parse(self, body: bytes) -> MessagesRequest:
        return parse(body, self.seed)

    def error_body(self, status: int, message: str) -> bytes:
        return error_body(status, message)

    def authorized(self, headers: CIMultiDictProxy[str]) -> bool:
        return authorized(headers)

    def content(self, req: MessagesRequest, output: str = "auto") -> tuple[str, str]:
        """``(text, stop_reason)``."""
        reply = text.echo_text(req.directive_text) if output == "echo" else text.reply_text(req.digest, self.words)
        body, cut = text.truncate(reply, req.max_tokens)
        return body, "max_tokens" if cut else "end_turn"

    def _message(
        self, req: MessagesRequest, content: list[dict[str, Any]], stop: str | None, out: int
    ) -> dict[str, Any]:
        return {
            "id": f"msg_sim{self._id_prefix}{next(self._ids):012x}",
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": req.prompt_tokens, "output_tokens": out},
        }

    def respond(self, req: MessagesRequest, output: str) -> bytes:
        """A complete ``message`` JSON body."""
        body, stop = self.content(req, output)
        block = {"type": "text", "text": body}
        return _encode(self._message(req, [block], stop, text.completion_tokens(body)))

    def stream_events(self, req: MessagesRequest, output: str) -> list[bytes]:
        """The SSE events of a streamed reply, each a complete ``event: ...\\ndata: ...\\n\\n`` frame."""
        body, stop = self.content(req, output)
        start = {"type": "message_start", "message": self._message(req, [], None, 1)}
        events = [_event(b"message_start", start), _BLOCK_START, _PING]
        events.extend(
            _event(
                b"content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
            for piece in text.stream_pieces(body)
        )
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": text.completion_tokens(body)},
        }
        events += [_BLOCK_STOP, _event(b"message_delta", delta), _MESSAGE_STOP]
        return events

    def broken_stream(self, req: MessagesRequest) -> bytes:
        """A stream whose first event is cut in the middle of its JSON."""
        return b'event: message_start\ndata: {"type": "message_start", "message": {"id": "msg_\n\n'
