"""The public chat contract: OpenAI-shaped request and reply plus a ``lockgate`` block.

Evolution rules (msgspec): new fields get defaults, existing fields are never
retyped, unknown fields are tolerated so OpenAI clients' extra parameters pass.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from shared.schemas.ratelimit import RateLimitInfo


class ContentPart(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    type: str
    text: str | None = None
    image_url: dict[str, Any] | None = None


class FunctionCall(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    name: str
    arguments: str = ""


class ToolCall(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    id: str
    type: str = "function"
    function: FunctionCall


class Message(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None

    def text(self) -> str:
        """The text of the message (text parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class JsonSchemaSpec(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    name: str = "response"
    schema_: dict[str, Any] = msgspec.field(name="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @property
    def wants_json(self) -> bool:
        return self.type != "text"


class StreamOptions(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    include_usage: bool = False


class LockgateOptions(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Lockgate's own request options (all optional)."""

    route: str | None = None
    priority: Literal["low", "normal", "high"] = "normal"
    max_latency_ms: int | None = None
    cache: Literal["auto", "off"] = "auto"
    degrade: bool = False
    metadata: dict[str, str] = {}
    untrusted: list[int] = []  # indexes of messages holding untrusted data (documents, retrieved context)
    requires_approval: bool = False  # a human approves the request (`lockgate approvals`) before it runs


class ChatRequest(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    messages: list[Message]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    lockgate: LockgateOptions = LockgateOptions()

    @property
    def output_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class PromptTokensDetails(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's prompt cache (priced lower)


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    prompt_tokens: int = 0  # all input tokens, cached ones included
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None  # OpenAI's shape; set when the provider cached

    @property
    def cached_prompt_tokens(self) -> int:
        return self.prompt_tokens_details.cached_tokens if self.prompt_tokens_details else 0


def cached_details(cached: int) -> PromptTokensDetails | None:
    """The usage detail for ``cached`` prompt tokens (None when there are none: the common case)."""
    return PromptTokensDetails(cached_tokens=cached) if cached else None


class Attempt(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One provider attempt: which deployment, how it ended, how long it took."""

    deployment: str
    outcome: str  # "ok" or an error type
    latency_ms: float
    error: str | None = None


class LockgateInfo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What Lockgate did for this request."""

    request_id: str
    route: str = ""
    deployment: str = ""
    provider: str = ""
    attempts: list[Attempt] = []
    fallbacks: int = 0
    cached: Literal["", "exact", "semantic"] = ""
    cost_usd: float = 0.0
    latency_ms: dict[str, float] = {}
    validation: str = ""  # "", "valid", "repaired"
    redactions: int = 0
    degraded: str = ""
    security: list[str] = []  # what the input and output checks found ("injection:override", "pii_input:email"…)
    rate_limit: RateLimitInfo | None = None  # the most constraining rate-limit scope's figures (None: no limits)


class AssistantMessage(msgspec.Struct, kw_only=True, frozen=True):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(msgspec.Struct, kw_only=True, frozen=True):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatResponse(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    lockgate: LockgateInfo


class ChunkDelta(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(msgspec.Struct, kw_only=True, frozen=True):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatChunk(msgspec.Struct, kw_only=True, frozen=True):
    """One streamed chunk (OpenAI ``chat.completion.chunk`` shape)."""

    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]


class StreamDone(msgspec.Struct, kw_only=True, frozen=True):
    """The last message of a stream: usage, cost and how many chunks preceded it."""

    id: str
    model: str
    finish_reason: str | None
    usage: Usage
    chunks: int
    lockgate: LockgateInfo


class ModelInfo(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "lockgate"


class ModelList(msgspec.Struct, kw_only=True, frozen=True):
    object: str = "list"
    data: list[ModelInfo]
